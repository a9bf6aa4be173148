"""Jupyter widgets over the batch model: the batch table and the parameter-grid form.

Only this package imports ipywidgets (and, in its viewer modules, fastplotlib); the pure grid
functions live in :mod:`mesmerize_widgets.accessors.grid`, which imports neither.
"""

from .batch_table import BatchTable
from .param_grid import ParamGrid

__all__ = ["BatchTable", "ParamGrid"]
