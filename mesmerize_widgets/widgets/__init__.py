"""Jupyter widgets over the batch model: the batch table, the parameter-grid form and the viewers.

Only this package imports ipywidgets (and, through ``_fpl``, fastplotlib); the pure grid
functions live in :mod:`mesmerize_widgets.accessors.grid`, which imports neither. The viewers
and the App are imported on first use, so the table and the grid load without fastplotlib.
"""

from typing import Any

from .batch_table import BatchTable
from .param_grid import ParamGrid

__all__ = ["App", "BatchTable", "CNMFViewer", "McorrViewer", "ParamGrid"]

_LAZY = {"App": ".app", "CNMFViewer": ".cnmf_viewer", "McorrViewer": ".mcorr_viewer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
