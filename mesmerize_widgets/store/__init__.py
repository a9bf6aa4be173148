"""The batch on disk: SQLite store, JSON codec, stored paths and the legacy pickle importer."""

from .batch_store import ACTIVE, COLUMNS, FINISHED, STATUSES, BatchStore
from .paths import get_parent_raw_data_path, set_parent_raw_data_path

__all__ = [
    "ACTIVE",
    "COLUMNS",
    "FINISHED",
    "STATUSES",
    "BatchStore",
    "get_parent_raw_data_path",
    "set_parent_raw_data_path",
]
