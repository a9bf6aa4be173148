"""``App(df)``: the batch table, the parameter grid and the viewer of the selected item, linked.

Selecting one row opens it in the viewer of its algorithm; a viewer of that kind is created
once and then reused through ``set_row``, so the page is not rebuilt when the selection moves.
Items of other algorithms, and items that cannot be shown, get a message in the viewer area.
Selected done items are offered to the ParamGrid as inputs (e.g. a cnmf grid over mcorr items).
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import pandas as pd

from .batch_table import BatchTable
from .messages import describe_error, html_message
from .param_grid import ParamGrid
from .viewer_base import ViewerBase

__all__ = ["App", "app_for_path", "viewer_class_for"]


def viewer_class_for(algo: str) -> type[ViewerBase] | None:
    """The viewer class that shows items of ``algo`` (None: no viewer)."""
    from .cnmf_viewer import CNMFViewer
    from .mcorr_viewer import McorrViewer

    return {"mcorr": McorrViewer, "cnmf": CNMFViewer, "cnmfe": CNMFViewer, "onacid": CNMFViewer}.get(str(algo))


class App(widgets.VBox):
    """BatchTable + ParamGrid + the viewer of the selected row."""

    def __init__(self, df: pd.DataFrame, *, table_view: str = "auto", grid_algo: str = "cnmf",
                 viewer_kwargs: dict[str, dict[str, Any]] | None = None) -> None:
        self.df = df
        self.viewer_kwargs = viewer_kwargs or {}
        self.table = BatchTable(df, view=table_view)
        self.grid = ParamGrid(df, algo=grid_algo)
        self.viewers: dict[type, ViewerBase] = {}
        self.viewer: ViewerBase | None = None
        self.viewer_message = widgets.HTML(html_message("select an item in the table to view it"))
        self.viewer_box = widgets.VBox([self.viewer_message])
        self.grid_accordion = widgets.Accordion(children=[self.grid], titles=("add items (parameter grid)",))
        self.grid_accordion.selected_index = None
        self.table.on_selection(self._selection_changed)
        self.table.on_open(self.open_row)
        self.grid.on_added(lambda rows: self.table.refresh())
        super().__init__(children=[self.table, self.grid_accordion, self.viewer_box])

    def _selection_changed(self, rows: list[pd.Series]) -> None:
        done = [r for r in rows if r.get("status") == "done"]
        if done:
            try:
                self.grid.set_inputs(done)
            except Exception as e:  # the grid reports its own problems; never break the table
                self.viewer_message.value = html_message(describe_error(e), "error")
        if len(rows) == 1:
            self.open_row(rows[0])

    def open_row(self, row: pd.Series) -> ViewerBase | None:
        """Show ``row`` in the viewer of its algorithm (reused when one of that kind exists)."""
        cls = viewer_class_for(row.get("algo"))
        if cls is None:
            self._show_message(f"item {row.get('item_name')!r} is a {row.get('algo')!r} item: there is "
                               "no viewer for this algorithm (mcorr, cnmf/cnmfe and onacid have one)")
            return None
        viewer = self.viewers.get(cls)
        try:
            if viewer is None:
                viewer = cls(**self.viewer_kwargs.get(cls.__name__, {}))
                self.viewers[cls] = viewer
            viewer.set_row(row)
        except Exception as e:  # set_row reports item problems itself; this is a last resort
            self._show_message(describe_error(e))
            return None
        self.viewer = viewer
        self.viewer_message.value = ""
        if list(self.viewer_box.children) != [self.viewer_message, viewer]:
            self.viewer_box.children = [self.viewer_message, viewer]
        return viewer

    def _show_message(self, text: str) -> None:
        self.viewer = None
        self.viewer_message.value = html_message(text, "error")
        self.viewer_box.children = [self.viewer_message]

    @property
    def message(self) -> str:
        """What the viewer area says (its own message or the shown viewer's)."""
        import re

        own = re.sub("<[^>]+>", "", self.viewer_message.value)
        return own or (self.viewer.last_message if self.viewer is not None else "")

    def show(self, sidecar: bool = False, title: str = "mesmerize") -> Any:
        """Display the app; ``sidecar=True`` opens it in a JupyterLab sidecar."""
        from IPython.display import display

        if sidecar:
            from sidecar import Sidecar

            self._sidecar = Sidecar(title=title)
            with self._sidecar:
                display(self)
            return self._sidecar
        display(self)
        return self

    def close(self) -> None:
        self.table.close()
        super().close()


def app_for_path(batch_path: Any, raw_data_path: Any = None, **kwargs: Any) -> widgets.Widget:
    """An ``App`` over the batch at ``batch_path``; a readable message widget if it cannot be opened.

    ``raw_data_path`` is set as the parent raw data path when given. For the Voila app: a
    missing, empty or corrupt batch shows what is wrong, never a traceback.
    """
    from ..api import load_batch
    from ..store.paths import set_parent_raw_data_path

    try:
        if raw_data_path:
            set_parent_raw_data_path(raw_data_path)
        df = load_batch(batch_path)
    except Exception as e:
        text = f"cannot open the batch {str(batch_path)!r}: {describe_error(e)}"
        msg = widgets.HTML(f"<h3>mesmerize app</h3><p>{html_message(text, 'error')}</p>"
                           "<p>Start the app on a batch directory: <code>mesmerize-widgets app BATCH_DIR</code>"
                           " (or set <code>MESMERIZE_BATCH</code>); <code>make demo</code> builds one.</p>")
        msg.add_class("mesmerize-app-error")
        return msg
    return App(df, **kwargs)
