"""mesmerize_widgets: calcium-imaging batches, algorithms, lazy arrays and Jupyter widgets.

``import mesmerize_widgets`` registers the pandas accessors (``df.caiman``, ``row.caiman``) and
never imports ipywidgets or fastplotlib; the widgets live in ``mesmerize_widgets.widgets``.
"""

from .algorithms import get_default_backend, set_default_backend
from .api import create_batch, load_batch
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
from .store import get_parent_raw_data_path, set_parent_raw_data_path

__version__ = "0.1.0"

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
