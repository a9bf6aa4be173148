"""The batch on disk: SQLite store, JSON codec, stored paths and the legacy pickle importer.

Lazy (see ``.._lazy``): the codec and the paths serve item processes, which never need the
store's pandas side.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .batch_store import ACTIVE, COLUMNS, FINISHED, STATUSES, BatchStore
    from .paths import get_parent_raw_data_path, set_parent_raw_data_path

__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(("ACTIVE", "COLUMNS", "FINISHED", "STATUSES", "BatchStore"), ".batch_store"),
    **dict.fromkeys(("get_parent_raw_data_path", "set_parent_raw_data_path"), ".paths"),
})

__all__ = [
    "ACTIVE",
    "COLUMNS",
    "FINISHED",
    "STATUSES",
    "BatchStore",
    "get_parent_raw_data_path",
    "set_parent_raw_data_path",
]
