"""mesmerize_widgets: calcium-imaging batches, algorithms, lazy arrays and Jupyter widgets.

The names below load their modules on first use (see ``_lazy``), so a worker or an item
process that needs one algorithm does not import pandas and every accessor. ``create_batch``
and ``load_batch`` register the pandas accessors (``df.caiman``, ``row.caiman``), as does
``import mesmerize_widgets.accessors``. Nothing here imports ipywidgets or fastplotlib; the
widgets live in ``mesmerize_widgets.widgets``.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from .errors import (
    BackendUnavailableError,
    DependencyError,
    ItemNotFoundError,
    MesmerizeError,
    NotABatchError,
    ParamError,
    SchemaTooNewError,
    UnknownAlgorithmError,
    UnsafePickleError,
)

if TYPE_CHECKING:
    from .algorithms import get_default_backend, set_default_backend
    from .api import create_batch, load_batch
    from .store import get_parent_raw_data_path, set_parent_raw_data_path

__version__ = "0.1.0"

__getattr__, __dir__ = lazy_exports(__name__, {
    "get_default_backend": ".algorithms",
    "set_default_backend": ".algorithms",
    "create_batch": ".api",
    "load_batch": ".api",
    "get_parent_raw_data_path": ".store.paths",
    "set_parent_raw_data_path": ".store.paths",
})

__all__ = [
    "BackendUnavailableError",
    "DependencyError",
    "ItemNotFoundError",
    "MesmerizeError",
    "NotABatchError",
    "ParamError",
    "SchemaTooNewError",
    "UnknownAlgorithmError",
    "UnsafePickleError",
    "create_batch",
    "get_default_backend",
    "get_parent_raw_data_path",
    "load_batch",
    "set_default_backend",
    "set_parent_raw_data_path",
]
