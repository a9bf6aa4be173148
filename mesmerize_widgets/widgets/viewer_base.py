"""What McorrViewer and CNMFViewer share: movie controls, the time link, messages, showing.

One ImageWidget per viewer, created for the first item that loads and reused by ``set_row``
(its arrays are swapped, the page is not rebuilt). Time is one value, ``viewer.time``, kept in
step across the ImageWidget's slider, the ipywidgets slider and every time marker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import fastplotlib as fpl
import ipywidgets as widgets
import numpy as np
import pandas as pd

from . import _fpl
from .frames import FRAME_APPLY, WINDOW_FUNCS, FrameCache, ProcessedMovie, WindowSettings
from .messages import describe_error, html_message

FrameApply = Callable[[np.ndarray], np.ndarray]


class ViewerBase(widgets.VBox):
    """Base of the viewers: subclasses build their panels in ``_load`` and list their figures."""

    algos: tuple[str, ...] = ()

    def __init__(self, *, frame_apply: FrameApply | dict[str, FrameApply] | None = None,
                 size: tuple[int, int] = (900, 560)) -> None:
        self.size = size
        self._lock = threading.RLock()  # graphics are changed by a poll thread (live view) and drawn here
        self.row: pd.Series | None = None
        self.last_message = ""
        self.settings = WindowSettings()
        self.cache = FrameCache()
        self.iw: fpl.ImageWidget | None = None
        self.movies: list[ProcessedMovie] = []
        self._time = 0
        self._n_frames = 1
        self._syncing = False
        self._quiet = False
        self._time_listeners: list[Callable[[int], None]] = []
        self._user_apply: dict[str, FrameApply] = {}
        if callable(frame_apply):
            self._user_apply[getattr(frame_apply, "__name__", "custom")] = frame_apply
        elif isinstance(frame_apply, dict):
            self._user_apply.update(frame_apply)

        self.header = widgets.HTML()
        self.message = widgets.HTML()
        self.window_func = widgets.Dropdown(options=list(WINDOW_FUNCS), value="none", description="window",
                                            tooltip="function over a window of frames centred on the current one")
        self.window_size = widgets.BoundedIntText(value=10, min=1, max=10_000, description="size",
                                                  tooltip="window size in frames (exact)",
                                                  layout=widgets.Layout(width="150px"))
        self.apply_dropdown = widgets.Dropdown(options=[*FRAME_APPLY, *self._user_apply], value="none",
                                               description="filter", tooltip="spatial filter of each frame")
        self.sigma = widgets.BoundedFloatText(value=3.0, min=0.1, max=100.0, step=0.5, description="sigma",
                                              tooltip="Gaussian sigma (pixels) of the filter",
                                              layout=widgets.Layout(width="150px"))
        self.time_slider = widgets.IntSlider(value=0, min=0, max=0, description="frame", continuous_update=True,
                                             layout=widgets.Layout(width="60%"))
        self.contrast_button = widgets.Button(description="auto contrast", icon="adjust",
                                              tooltip="set the colour limits from the frames shown")
        for w in (self.window_func, self.window_size, self.apply_dropdown, self.sigma):
            w.observe(lambda _: self._controls_changed(), names="value")
        self.time_slider.observe(lambda ch: self._guard(lambda: self.set_time(ch["new"])), names="value")
        self.contrast_button.on_click(lambda _: self._guard(self.auto_contrast))
        self.movie_controls = widgets.VBox([
            widgets.HBox([self.window_func, self.window_size, self.apply_dropdown, self.sigma,
                          self.contrast_button], layout=widgets.Layout(flex_flow="row wrap")),
            self.time_slider,
        ])
        self.movie_box = widgets.VBox()
        self.body = widgets.VBox()
        super().__init__(children=[self.header, self.message, self.body])

    # -- messages ------------------------------------------------------------------------------------
    def _say(self, text: str, kind: str = "info") -> None:
        self.last_message = text
        self.message.value = html_message(text, kind) if text else ""

    def _guard(self, action: Callable[[], Any]) -> Any:
        """Run a control's action; an error becomes a message in the widget, never a traceback."""
        try:
            return action()
        except Exception as e:
            self._say(describe_error(e), "error")
            return None

    # -- rows ----------------------------------------------------------------------------------------------
    def set_row(self, row: pd.Series) -> bool:
        """Show another item, reusing the figures; False (and a message) when it cannot be shown."""
        from .messages import item_problem

        problem = item_problem(row, self.algos)
        if problem is not None:
            self._fail(row, problem)
            return False
        try:
            self._load(row)
        except Exception as e:
            self._fail(row, describe_error(e))
            return False
        self.row = row
        self.body.layout.display = None
        self._say("")
        return True

    def _fail(self, row: Any, text: str) -> None:
        self.row = None
        name = row.get("item_name") if isinstance(row, pd.Series) else None
        self.header.value = f"<b>{'' if name is None else name}</b>"
        self.body.layout.display = "none"  # nothing stale under the message
        self._say(text, "error")

    def _load(self, row: pd.Series) -> None:
        raise NotImplementedError

    # -- the movie panels ---------------------------------------------------------------------------------
    def _set_movies(self, sources: Sequence[Any], names: Sequence[str], movies: Sequence[ProcessedMovie],
                    figure_shape: tuple[int, int] | None = None) -> None:
        """Show these processed movies in the ImageWidget (created once, then its arrays swapped)."""
        n = max(int(m.shape[0]) for m in movies)
        self.cache.clear()
        self.movies = list(movies)
        self._n_frames = n
        t = min(self._time, n - 1)
        if self.iw is not None and len(self.iw.managed_graphics) != len(self.movies):
            self._drop_image_widget()  # another panel count (live view <-> finished view)
        if self.iw is None:
            self.iw = _fpl.image_widget(self.movies, names, size=self.size, figure_shape=figure_shape)
            self.iw.add_event_handler(lambda idx: self._on_iw_index(int(idx["t"])), "current_index")
            _fpl.on_click(self.iw, self._iw_clicked)
            canvas = _fpl.as_widget(self.iw)
            self.movie_box.children = [self.movie_controls] + ([canvas] if canvas is not None else [])
        else:
            _fpl.set_image_arrays(self.iw, self.movies)
        self._syncing = True
        try:
            self.time_slider.max = n - 1
        finally:
            self._syncing = False
        self._time = -1
        self.set_time(t)
        self.auto_contrast()

    def _drop_image_widget(self) -> None:
        """Close the ImageWidget (its panels no longer fit); subclasses forget their graphics on it."""
        iw, self.iw = self.iw, None
        self.movie_box.children = [self.movie_controls]
        self._image_widget_dropped()
        _fpl.close(iw)

    def _image_widget_dropped(self) -> None:
        """Hook: the ImageWidget and every graphic on it are gone."""

    def _iw_clicked(self, panel: int, x: float, y: float, button: int) -> None:
        """A click on a movie panel at data coordinates (subclasses pick things there)."""

    def auto_contrast(self) -> None:
        """Colour limits of each panel from its frame shown now."""
        if self.iw is None:
            return
        for g, m in zip(self.iw.managed_graphics, self.movies, strict=True):
            _fpl.set_clim(g, *m.clim(min(self._time, m.shape[0] - 1)))

    def _processing_changed(self) -> None:
        s = self.settings
        s.func = self.window_func.value
        s.size = int(self.window_size.value)
        name = self.apply_dropdown.value
        s.apply_name = name
        sigma = float(self.sigma.value)
        if name in self._user_apply:
            s.apply = self._user_apply[name]
        else:
            base = FRAME_APPLY[name]
            s.apply = None if base is None else (lambda f, _b=base, _s=sigma: _b(f, _s))
        self.cache.clear()
        if self.iw is not None:
            _fpl.sync(self.iw)
            self.auto_contrast()

    def set_window(self, func: str = "mean", size: int = 10) -> None:
        """Window function ('none', 'mean', 'max', 'min', 'std', 'median') over ``size`` frames."""
        if func not in WINDOW_FUNCS:
            raise ValueError(f"window function must be one of {WINDOW_FUNCS}, got {func!r}")
        with self.hold_sync():
            self.window_func.value = func
            self.window_size.value = int(size)
        self._processing_changed()

    def set_frame_apply(self, name: str, sigma: float | None = None) -> None:
        """'none', 'spatial high-pass', 'gaussian blur' or the name of a callable given at creation."""
        if name not in self.apply_dropdown.options:
            raise ValueError(f"frame_apply must be one of {list(self.apply_dropdown.options)}, got {name!r}")
        with self.hold_sync():
            if sigma is not None:
                self.sigma.value = float(sigma)
            self.apply_dropdown.value = name
        self._processing_changed()

    def hold_sync(self) -> Any:
        """Context in which control changes do not re-render (several set at once)."""
        import contextlib

        @contextlib.contextmanager
        def hold() -> Any:
            self._quiet = True
            try:
                yield
            finally:
                self._quiet = False

        return hold()

    def _controls_changed(self) -> None:
        if not self._quiet:
            self._guard(self._processing_changed)

    # -- time ------------------------------------------------------------------------------------------
    @property
    def time(self) -> int:
        """The frame shown."""
        return self._time

    @property
    def n_frames(self) -> int:
        return self._n_frames

    def set_time(self, t: float) -> None:
        """Show frame ``t`` everywhere: movie panels, slider, markers."""
        if self._syncing or self.iw is None:
            return
        t = int(np.clip(round(float(t)), 0, self._n_frames - 1))
        if t == self._time:
            return
        self._syncing = True
        try:
            self._time = t
            _fpl.set_index(self.iw, t)
            self.time_slider.value = t
            for f in self._time_listeners:
                f(t)
        finally:
            self._syncing = False

    def _on_iw_index(self, t: int) -> None:
        """The ImageWidget's own slider (or play button) moved."""
        if self._syncing:
            return
        self._syncing = True
        try:
            self._time = int(t)
            self.time_slider.value = int(t)
            for f in self._time_listeners:
                f(int(t))
        finally:
            self._syncing = False

    # -- rendering ------------------------------------------------------------------------------------------
    def figures(self) -> list[_fpl.FigureLike]:
        """Every figure of the viewer (the ImageWidget first)."""
        return [] if self.iw is None else [self.iw]

    def render(self) -> None:
        """Draw every figure now (offscreen: synchronously; in Jupyter: request a frame)."""
        with self._lock:
            for f in self.figures():
                _fpl.render_now(f)

    def snapshot(self, which: int = 0) -> np.ndarray:
        """RGBA pixels of one of :meth:`figures`, drawn now."""
        with self._lock:
            return _fpl.snapshot(self.figures()[which])

    def shown_frame(self, panel: int = 0) -> np.ndarray:
        """The frame a movie panel holds now (what is on screen)."""
        return np.asarray(self.iw.managed_graphics[panel].data.value)

    def show(self, sidecar: bool = False, title: str | None = None) -> Any:
        """Display the viewer; ``sidecar=True`` opens it in a JupyterLab sidecar."""
        from IPython.display import display

        if sidecar:
            from sidecar import Sidecar

            self._sidecar = Sidecar(title=title or type(self).__name__)
            with self._sidecar:
                display(self)
            return self._sidecar
        display(self)
        return self
