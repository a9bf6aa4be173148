"""``CNMFViewer``: input, A⊗C, b⊗f and residuals in time; contours, traces, live evaluation.

* One ImageWidget, four panels, one time slider, over exactly windowed frames (:mod:`.frames`);
  the residual panel reuses the other panels' windows (means are linear).
* All contours are ONE line graphic (NaN-separated outlines) over the input panel, coloured
  accepted/rejected or by SNR / r-value; recolouring writes one per-vertex colour array.
* Evaluation is the item's :class:`~mesmerize_widgets.accessors.evaluation.EvaluationSession`
  (``viewer.evaluation``, the object ``row.cnmf.evaluation()`` gives a script): the sliders and
  the accept / reject buttons change it, the viewer draws what it holds (also after a change
  made from code), and "save evaluation" is its ``save()``, i.e. ``row.cnmf.run_eval`` with the
  manual overrides: one atomic rewrite of the CNMF HDF5 and ``params["eval"]`` in the store.
* Live view: an ``onacid`` item that is queued or running shows its input movie with the
  contours of its live snapshot (:mod:`mesmerize_widgets.algorithms.onacid.live`), one graphic,
  and a label ("running: frame 640/2000, 37 components"). The viewer subscribes to the batch's
  watcher (:func:`mesmerize_widgets.accessors.watch.watch_batch`, one thread per batch, shared
  with the batch table) every ``poll_interval`` seconds, computes the new outlines on that
  thread, and hands the graphics change to the kernel's asyncio loop when one runs (Jupyter),
  else applies it under the viewer's lock; when the item finishes the viewer switches to the
  finished view by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastplotlib as fpl
import ipywidgets as widgets
import numpy as np
import pandas as pd

from ..accessors import live as onacid_live
from ..accessors.evaluation import EvaluationSession
from ..accessors.watch import BatchChange, Subscription, watch_batch
from . import _fpl
from .frames import FrameCache, ProcessedMovie, ResidualMovie
from .messages import describe_error
from .trace_panel import TracePanel, heatmap_rows, trace_envelope
from .viewer_base import FrameApply, ViewerBase

__all__ = ["CNMFViewer", "metric_colors", "trace_envelope"]

ACCEPTED = np.array([0.25, 1.0, 0.35, 1.0], np.float32)
REJECTED = np.array([1.0, 0.25, 0.25, 1.0], np.float32)
LIVE = np.array([0.3, 0.85, 1.0, 1.0], np.float32)  # contours of a running item: not classified yet
EVAL_KEYS = ("min_SNR", "rval_thr", "SNR_lowest", "rval_lowest")
_EVAL_RANGES = {"min_SNR": (0.0, 20.0, 0.1), "rval_thr": (-1.0, 1.0, 0.01),
                "SNR_lowest": (0.0, 10.0, 0.1), "rval_lowest": (-1.0, 1.0, 0.01)}
# a perceptual-ish ramp (dark blue -> teal -> yellow) for metric colouring
_RAMP = np.array([[0.27, 0.0, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38],
                  [0.99, 0.91, 0.14]], np.float32)


def metric_colors(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """RGBA per value on a blue-to-yellow ramp between ``lo`` and ``hi`` (NaN: grey)."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    lo = float(np.nanmin(v)) if lo is None and finite.any() else (lo or 0.0)
    hi = float(np.nanmax(v)) if hi is None and finite.any() else (hi if hi is not None else 1.0)
    x = np.clip((v - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    x = np.where(finite, x, 0)
    pos = x * (len(_RAMP) - 1)
    i = np.minimum(pos.astype(int), len(_RAMP) - 2)
    w = (pos - i)[:, None]
    rgb = _RAMP[i] * (1 - w) + _RAMP[i + 1] * w
    rgb[~finite] = 0.5
    return np.column_stack([rgb, np.ones(len(v))]).astype(np.float32)


class _Zeros:
    """A (t, y, x) movie of zeros (a result without background)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape, self.ndim, self.dtype = tuple(shape), 3, np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.zeros(self.shape, np.float32)[key]

    def window(self, t: int, size: int, func: Any = "mean") -> np.ndarray:
        return np.zeros(self.shape[1:], np.float32)


def _bboxes(coords: list[np.ndarray]) -> np.ndarray:
    """(row min, row max, col min, col max) of each outline (NaN for an empty one): click picking."""
    return np.array([[np.nanmin(c[:, 0]), np.nanmax(c[:, 0]), np.nanmin(c[:, 1]), np.nanmax(c[:, 1])]
                     if np.isfinite(c).any() else [np.nan] * 4 for c in coords]).reshape(-1, 4)


@dataclass
class _Item:
    """What the viewer shows of one finished item, all read before anything on screen changes."""

    movie: Any
    rcm: Any
    rcb: Any
    residuals: Any
    has_bg: bool
    K: int
    C: np.ndarray
    YrA: np.ndarray | None
    coords: list[np.ndarray]
    centers: np.ndarray
    heat_rows: tuple[np.ndarray, int]
    evaluation: EvaluationSession


def _read_item(row: pd.Series, heat_cols: int) -> _Item:
    """Open the item's movies and result; raises (with the reason) when it cannot be shown."""
    out = row.cnmf.get_output(return_copy=False)
    e = out.estimates
    rcm = row.cnmf.get_rcm()
    try:
        movie = row.caiman.get_input_movie()
    except (FileNotFoundError, ValueError, OSError):
        movie = row.cnmf.get_cnmf_memmap()
    if tuple(movie.shape) != tuple(rcm.shape):
        raise ValueError(f"the input movie has shape {tuple(movie.shape)} but the CNMF result is "
                         f"{tuple(rcm.shape)} (frames, rows, cols): not this item's movie")
    ring = getattr(e, "W", None) is not None and getattr(e, "b0", None) is not None  # CNMF-E, nb=0
    has_bg = ring or (e.b is not None and e.f is not None and np.size(e.b) > 0)
    C = np.asarray(e.C)  # the loaded result's own array (read only here): no K x T copy
    coords, centers = row.cnmf.get_contours()
    return _Item(
        movie=movie, rcm=rcm, rcb=row.cnmf.get_rcb() if has_bg else _Zeros(rcm.shape),
        residuals=row.cnmf.get_residuals(), has_bg=has_bg, K=int(np.shape(e.C)[0]) if e.C is not None else 0,
        C=C, YrA=None if e.YrA is None else np.asarray(e.YrA), coords=coords,
        centers=np.asarray(centers, dtype=np.float64).reshape(-1, 2), heat_rows=heatmap_rows(C, heat_cols),
        evaluation=row.cnmf.evaluation(),
    )


class CNMFViewer(ViewerBase):
    """Viewer of one cnmf/cnmfe/onacid item; ``set_row(row)`` shows another.

    A queued or running onacid item is shown live (see the module docstring).
    """

    algos = ("cnmf", "cnmfe", "onacid")
    #: heatmap columns at most (time is averaged in blocks beyond this); None: the canvas width,
    #: as a texture wider than the pixels showing it only costs memory, upload and sampling
    heatmap_max_cols: int | None = None
    #: trace vertices at most (min/max per block of frames beyond this); None: 2 per canvas pixel
    trace_max_points: int | None = None

    def __init__(self, row: pd.Series | None = None, *,
                 frame_apply: FrameApply | dict[str, FrameApply] | None = None,
                 size: tuple[int, int] = (900, 640), poll_interval: float = 0.5) -> None:
        super().__init__(frame_apply=frame_apply, size=size)
        self.poll_interval = float(poll_interval)
        self._init_state()
        self._build_controls()
        self._connect_controls()
        self._build_layout()
        self._time_listeners.append(self._move_marker)
        if row is not None:
            self.set_row(row)

    def _init_state(self) -> None:
        # live view (a running onacid item)
        self._live_uuid: str | None = None
        self._live_row: pd.Series | None = None
        self._live_key: tuple | None = None
        self._live_watch: Subscription | None = None
        self._live_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.live_components = 0
        self.live_frame: int | None = None
        # the item shown; its classification lives in self.evaluation
        self.evaluation: EvaluationSession | None = None
        self.n_components = 0
        self.coords: list[np.ndarray] = []
        self.centers = np.zeros((0, 2))
        self._bbox = np.zeros((0, 4))
        self.C = np.zeros((0, 1))
        self.YrA: np.ndarray | None = None
        self._heat_rows: tuple[np.ndarray, int] = (np.zeros((0, 1), np.float32), 1)
        self.selected: int | None = None
        # graphics
        self.contours: _fpl.ContourSet | None = None
        self.outlines: list[fpl.LineGraphic] = []
        self.traces = TracePanel((self.size[0], 300), self.set_time, lambda x, y: self._guard(
            lambda: self.click_heatmap(x, y)))
        self._loading = False
        self._syncing_sliders = False

    def _build_controls(self) -> None:
        self.color_by = widgets.Dropdown(options=["accepted / rejected", "SNR", "r-value"],
                                         value="accepted / rejected", description="colour by")
        self.show_contours = widgets.Checkbox(value=True, description="contours", indent=False)
        self.order_by = widgets.Dropdown(options=["good first", "index", "SNR", "r-value"], value="good first",
                                         description="heatmap", tooltip="order of the heatmap's rows")
        self.trace_kind = widgets.Dropdown(options=["C", "C + residuals"], value="C", description="trace")
        self.eval_sliders = {
            k: widgets.FloatSlider(value=lo, min=lo, max=hi, step=st, description=k, continuous_update=True,
                                   readout_format=".2f", style={"description_width": "90px"})
            for k, (lo, hi, st) in _EVAL_RANGES.items()
        }
        self.component_box = widgets.BoundedIntText(value=0, min=0, max=0, description="component",
                                                    layout=widgets.Layout(width="180px"))
        self.accept_button = widgets.Button(description="accept", icon="check", button_style="success",
                                            tooltip="accept the selected component (overrides the thresholds)")
        self.reject_button = widgets.Button(description="reject", icon="times", button_style="danger",
                                            tooltip="reject the selected component (overrides the thresholds)")
        self.clear_button = widgets.Button(description="clear override", icon="undo",
                                           tooltip="let the thresholds decide for the selected component")
        self.save_button = widgets.Button(description="save evaluation", icon="save", button_style="warning",
                                          tooltip="write the classification to the item's output and the batch")
        self.counts = widgets.HTML()
        self.component_info = widgets.HTML()

    def _connect_controls(self) -> None:
        self.color_by.observe(lambda _: self._guard(self.recolor), names="value")
        self.show_contours.observe(lambda ch: self._guard(lambda: self._contours_visible(ch["new"])), names="value")
        self.order_by.observe(lambda _: self._guard(self._draw_heatmap), names="value")
        self.trace_kind.observe(lambda _: self._guard(self._draw_trace), names="value")
        for s in self.eval_sliders.values():
            s.observe(lambda _: self._guard(self._eval_changed), names="value")
        self.component_box.observe(lambda ch: self._guard(lambda: self.select_component(ch["new"])), names="value")
        self.accept_button.on_click(lambda _: self._guard(lambda: self.set_override(True)))
        self.reject_button.on_click(lambda _: self._guard(lambda: self.set_override(False)))
        self.clear_button.on_click(lambda _: self._guard(lambda: self.set_override(None)))
        self.save_button.on_click(lambda _: self._guard(self.save_evaluation))

    def _build_layout(self) -> None:
        self.trace_box = self.traces.box
        self.live_label = widgets.HTML(layout=widgets.Layout(display="none"))
        wrap = widgets.Layout(flex_flow="row wrap")
        self.finished_box = widgets.VBox([
            widgets.HBox([self.color_by, self.show_contours, self.counts], layout=wrap),
            widgets.HBox(list(self.eval_sliders.values()), layout=wrap),
            widgets.HBox([self.component_box, self.accept_button, self.reject_button, self.clear_button,
                          self.save_button], layout=wrap),
            self.component_info,
            widgets.HBox([self.trace_kind, self.order_by]),
            self.trace_box,
        ])
        self.body.children = [self.movie_box, self.live_label, self.finished_box]

    # -- what the evaluation holds -------------------------------------------------------------------------
    @property
    def accepted(self) -> np.ndarray:
        """Accepted mask per component (thresholds, then manual overrides)."""
        ev = self.evaluation
        return np.zeros(self.n_components, bool) if ev is None else ev.accepted

    @property
    def overrides(self) -> dict[int, bool]:
        """Components accepted (True) or rejected (False) by hand."""
        return {} if self.evaluation is None else self.evaluation.overrides

    @property
    def snr(self) -> np.ndarray:
        return np.zeros(self.n_components) if self.evaluation is None else self.evaluation.snr

    @property
    def rval(self) -> np.ndarray:
        return np.zeros(self.n_components) if self.evaluation is None else self.evaluation.rval

    @property
    def has_metrics(self) -> bool:
        return self.evaluation is not None and self.evaluation.has_metrics

    # -- loading -----------------------------------------------------------------------------------------
    def set_row(self, row: pd.Series) -> bool:
        """Show another item; a queued or running onacid item is shown live until it finishes."""
        with self._lock:
            if _is_live(row):
                return self._start_live(row)
            self._stop_live()
            ok = super().set_row(row)
            if ok:
                self.live_label.layout.display = "none"
                self.finished_box.layout.display = None
            return ok

    def _image_widget_dropped(self) -> None:
        self.contours = None
        self.outlines = []

    def _load(self, row: pd.Series) -> None:
        item = _read_item(row, self.heatmap_max_cols or int(self.size[0]))  # everything that can fail
        self._loading = True
        try:
            self._show_item(row, item)
        finally:
            self._loading = False
        self.row = row
        self.recolor()
        if item.K:
            self.select_component(0)

    def _show_item(self, row: pd.Series, item: _Item) -> None:
        """Swap the viewer's state and graphics to ``item`` (read already, so nothing fails halfway)."""
        self._set_evaluation(item.evaluation)
        self.n_components = item.K
        self.C, self.YrA, self._heat_rows = item.C, item.YrA, item.heat_rows
        self.coords, self.centers, self._bbox = item.coords, item.centers, _bboxes(item.coords)
        self.selected = None
        cache = FrameCache()
        self.cache = cache
        pm = ProcessedMovie(item.movie, self.settings, cache, name="input")
        prcm = ProcessedMovie(item.rcm, self.settings, cache, name="A*C")
        prcb = ProcessedMovie(item.rcb, self.settings, cache, name="b*f")
        pres = ResidualMovie(item.residuals, pm, prcm, prcb if item.has_bg else None, self.settings, cache)
        T, h, w = item.rcm.shape
        self.header.value = (f"<b>{row['item_name']}</b> · {row['algo']} · {item.K} components · "
                             f"{T} frames of {h}x{w}")
        self._set_movies([item.movie, item.rcm, item.rcb, item.residuals], ["input", "A*C", "b*f", "residuals"],
                         [pm, prcm, prcb, pres], figure_shape=(2, 2))
        self._draw_contours()
        self.component_box.max = max(item.K - 1, 0)
        self._draw_trace_figure()

    def _set_evaluation(self, session: EvaluationSession | None) -> None:
        if self.evaluation is not None:
            self.evaluation.on_change(self._evaluation_changed, remove=True)
        self.evaluation = session
        if session is not None:
            session.on_change(self._evaluation_changed)
            self._sync_sliders()

    # -- live view (a running onacid item) -------------------------------------------------------------------
    @property
    def live(self) -> bool:
        """True while the viewer shows a queued/running item live."""
        return self._live_uuid is not None

    def _start_live(self, row: pd.Series) -> bool:
        try:
            movie = row.caiman.get_input_movie()
            if len(movie.shape) != 3:
                raise ValueError(f"the input movie has shape {tuple(movie.shape)}, not (frames, rows, cols)")
        except Exception as e:
            self._stop_live()
            self._fail(row, describe_error(e))
            return False
        self._live_uuid = str(row["uuid"])
        self._live_row = row
        self._live_key = None
        self._loading = True
        try:
            self._show_live_movie(row, movie)
        finally:
            self._loading = False
        self.row = row
        self.body.layout.display = None
        self.finished_box.layout.display = "none"
        self.live_label.layout.display = None
        self.live_label.value = "waiting for first components"
        self._say("")
        self.poll_live(apply_now=True)
        self._ensure_live_polling()
        return True

    def _show_live_movie(self, row: pd.Series, movie: Any) -> None:
        """The input movie alone, no contours yet: what a live item shows until its first snapshot."""
        self._set_evaluation(None)
        self.n_components = 0
        self.coords, self.centers, self._bbox = [], np.zeros((0, 2)), np.zeros((0, 4))
        self.selected = None
        self.live_components, self.live_frame = 0, None
        cache = FrameCache()
        self.cache = cache
        pm = ProcessedMovie(movie, self.settings, cache, name="input")
        self._set_movies([movie], ["input"], [pm], figure_shape=(1, 1))
        if self.contours is not None:
            self.contours.remove()
            self.contours = None
        for sp, g in zip(self.iw.figure, self.outlines, strict=False):
            _fpl.delete_graphic(sp, g)
        self.outlines = []
        T, h, w = (int(x) for x in movie.shape)
        self.header.value = f"<b>{row['item_name']}</b> · {row['algo']} · live · {T} frames of {h}x{w}"

    def _stop_live(self) -> None:
        self._live_uuid = None  # a watcher call under way sees it and does nothing
        self._live_row = None
        watch, self._live_watch = self._live_watch, None
        if watch is not None:
            watch.cancel()

    def _ensure_live_polling(self) -> None:
        if self._live_watch is not None or self._live_row is None:
            return
        try:  # in a kernel the graphics are changed on its loop, between draws
            self._live_loop = asyncio.get_running_loop()
        except RuntimeError:
            self._live_loop = None
        self._live_watch = watch_batch(self._live_row).subscribe(self._live_changed, interval=self.poll_interval)

    def _live_changed(self, change: BatchChange) -> None:
        """The batch watcher's call (its thread)."""
        if self._closed or self._live_uuid is None:
            return
        try:
            self.poll_live()
        except Exception as e:  # a transient read error must not end the live view
            self._say(f"live refresh failed: {describe_error(e)}", "error")

    def poll_live(self, apply_now: bool = False) -> bool:
        """One live refresh: read the record and snapshot, redraw the contours if they changed.

        The outlines are computed here (the watcher's thread); only the graphics change goes to
        the kernel's loop (or runs under the lock). Returns True while the item is still active.
        """
        uuid, row = self._live_uuid, self._live_row
        if uuid is None or row is None:
            return False
        state = onacid_live.live_state(row.caiman.store, uuid)
        if not state.active:
            self._dispatch(lambda: self._finish_live(uuid), apply_now)
            return False
        contours = None
        if state.snapshot is not None and state.key() != self._live_key:
            contours = self._live_contours(state.snapshot)
        self._dispatch(lambda: self._apply_live(uuid, state, contours), apply_now)
        return True

    def _live_contours(self, snap: dict[str, Any]) -> tuple[list[np.ndarray], np.ndarray]:
        dims = snap["dims"]
        shape = self.movies[0].shape[1:] if self.movies else dims
        scale = (shape[0] / dims[0], shape[1] / dims[1])  # a ds_factor > 1 snapshot onto the movie
        return onacid_live.contours_of(snap["A"], dims, scale=scale)

    def _dispatch(self, action: Callable[[], None], now: bool = False) -> None:
        def run() -> None:
            with self._lock:
                self._guard(action)

        loop = self._live_loop
        in_kernel = self.iw is not None and not _fpl.is_offscreen(self.iw.figure)
        if not now and in_kernel and loop is not None and loop.is_running():
            loop.call_soon_threadsafe(run)
        else:
            run()

    def _apply_live(self, uuid: str, state: onacid_live.LiveState,
                    contours: tuple[list[np.ndarray], np.ndarray] | None) -> None:
        if self._live_uuid != uuid or self.iw is None:
            return
        self.live_label.value = onacid_live.live_label(state)
        if contours is None:
            return
        self._live_key = state.key()
        coords, centers = contours
        if self.contours is not None:
            self.contours.remove()
        self.contours = _fpl.ContourSet(self.iw.figure[0, 0], coords)
        self.contours.set_colors(np.tile(LIVE, (len(coords), 1)))
        self.contours.set_visible(self.show_contours.value)
        self.coords, self.centers = coords, centers
        self.live_components = len(coords)
        self.live_frame = int(state.snapshot["frame"]) if state.snapshot else None
        _fpl.request_draw(self.iw)

    def _finish_live(self, uuid: str) -> None:
        """The item is no longer active: the finished view (or why there is none)."""
        if self._live_uuid != uuid or self._live_row is None:
            return
        row = self._live_row
        rec = row.caiman.store.get(uuid)
        for key, value in rec.items():
            if key in row.index:
                row[key] = value
        self.set_row(row)  # no longer active: the finished view, or a message saying why not
        for f in self.figures():
            _fpl.request_draw(f)

    def wait_live(self, timeout: float = 60.0) -> None:
        """Block until the live view has switched to the finished view (scripts and tests)."""
        deadline = time.monotonic() + timeout
        while self.live:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the item was still live after {timeout} s")
            time.sleep(0.02)
        with self._lock:  # a switch under way (it holds the lock) has completed
            pass

    def close(self) -> None:
        """Stop the live refresh and close the widgets."""
        self._closed = True
        watch = self._live_watch
        self._stop_live()
        if watch is not None:
            watch.cancel(wait=True)  # a refresh under way ends before the widgets close
        self._set_evaluation(None)
        super().close()

    # -- contours ----------------------------------------------------------------------------------------
    def _draw_contours(self) -> None:
        sps = list(self.iw.figure)
        if self.contours is not None:
            self.contours.remove()
        for sp, g in zip(sps, self.outlines, strict=False):
            _fpl.delete_graphic(sp, g)
        self.outlines = []
        self.contours = _fpl.ContourSet(sps[0], self.coords)
        self.contours.set_visible(self.show_contours.value)

    def _contours_visible(self, visible: bool) -> None:
        if self.contours is not None:
            self.contours.set_visible(visible)

    def component_colors(self) -> np.ndarray:
        """RGBA per component for the current colour mode and classification."""
        mode = self.color_by.value
        if mode == "SNR":
            return metric_colors(np.log10(np.maximum(self.snr, 1e-3)))
        if mode == "r-value":
            return metric_colors(self.rval, -1.0, 1.0)
        return np.where(self.accepted[:, None], ACCEPTED, REJECTED).astype(np.float32)

    def recolor(self) -> None:
        """Colour the contours and update the counts."""
        if self.contours is None or self._loading:
            return
        self.contours.set_colors(self.component_colors())
        n_ok = int(self.accepted.sum())
        manual = f", {len(self.overrides)} set by hand" if self.overrides else ""
        self.counts.value = f"{n_ok} accepted, {self.n_components - n_ok} rejected{manual}"

    # -- evaluation: the user's actions go to self.evaluation, its changes come back here -----------------
    def eval_params(self) -> dict[str, float]:
        """The thresholds the sliders hold."""
        return {k: float(s.value) for k, s in self.eval_sliders.items()}

    def classify(self, params: dict[str, float] | None = None) -> np.ndarray:
        """Accepted mask for these thresholds (over the current ones) and the overrides; nothing changes."""
        if self.evaluation is None:
            raise ValueError("no item loaded")
        return self.evaluation.classify(params)

    def set_eval(self, **params: float) -> None:
        """Move evaluation sliders (``min_SNR=3, rval_thr=0.8, ...``) and re-classify."""
        bad = set(params) - set(EVAL_KEYS)
        if bad:
            raise KeyError(f"unknown evaluation params {sorted(bad)}; the sliders are {list(EVAL_KEYS)}")
        for k, v in params.items():
            self.eval_sliders[k].value = float(v)

    def _eval_changed(self) -> None:
        if self._loading or self._syncing_sliders or self.evaluation is None or self.n_components == 0:
            return
        self.evaluation.set_thresholds(**self.eval_params())

    def _sync_sliders(self) -> None:
        """Sliders showing the session's thresholds (clipped to their range), without re-classifying."""
        self._syncing_sliders = True
        try:
            for k, s in self.eval_sliders.items():
                value = self.evaluation.thresholds.get(k) if self.evaluation is not None else None
                if value is not None:
                    s.value = float(np.clip(value, s.min, s.max))
        finally:
            self._syncing_sliders = False

    def _evaluation_changed(self, session: EvaluationSession) -> None:
        if self._loading or session is not self.evaluation:
            return
        self._sync_sliders()
        self.recolor()
        if self.order_by.value == "good first":
            self._draw_heatmap()
        self._update_info()

    def set_override(self, accept: bool | None, component: int | None = None) -> None:
        """Accept (True) / reject (False) a component by hand, or clear its override (None)."""
        k = self.selected if component is None else int(component)
        if k is None or self.evaluation is None:
            raise ValueError("select a component first")
        self.evaluation.set_override(k, accept)

    def save_evaluation(self) -> dict[str, Any]:
        """Write the classification (thresholds and manual overrides): ``self.evaluation.save()``."""
        if self.row is None or self.evaluation is None:
            raise ValueError("no item loaded")
        out = self.evaluation.save()
        n_ok, by_hand = len(out["accepted"]), len(out["overrides"])
        self._say(f"evaluation saved: {n_ok} accepted, {self.n_components - n_ok} rejected"
                  + (f" ({by_hand} by hand)" if by_hand else ""), "ok")
        return out

    # -- selection -------------------------------------------------------------------------------------------
    def component_at(self, x: float, y: float) -> int | None:
        """The component under data point (x=col, y=row): nearest centre among outlines around it."""
        if self.n_components == 0:
            return None
        r, c = float(y), float(x)
        b = self._bbox
        inside = (b[:, 0] - 1 <= r) & (r <= b[:, 1] + 1) & (b[:, 2] - 1 <= c) & (c <= b[:, 3] + 1)
        d = np.hypot(self.centers[:, 0] - r, self.centers[:, 1] - c)
        d = np.where(np.isfinite(d), d, np.inf)
        if inside.any():
            cand = np.flatnonzero(inside)
            return int(cand[np.argmin(d[cand])])
        k = int(np.argmin(d))
        return k if d[k] <= 3 else None

    def _iw_clicked(self, panel: int, x: float, y: float, button: int) -> None:
        self._guard(lambda: self.click(x, y, panel))

    def click(self, x: float, y: float, panel: int = 0) -> int | None:
        """A click on a movie panel at data coordinates: selects the component there."""
        k = self.component_at(x, y)
        if k is None:
            self._say(f"no component at x={x:.0f}, y={y:.0f}")
            return None
        self.select_component(k)
        return k

    def click_heatmap(self, x: float, y: float) -> int | None:
        """A click on the heatmap (x in frames, y the row): selects that row's component, moves time."""
        k = self.traces.component_at_row(y)
        if k is None:
            return None
        self.select_component(k)
        self.set_time(x)
        return k

    def select_component(self, k: int) -> None:
        """Highlight component ``k`` (outline on the input and A⊗C panels) and show its trace."""
        k = int(k)
        if not 0 <= k < self.n_components:
            raise IndexError(f"component {k} out of range: this item has {self.n_components}")
        if self.selected == k and self.outlines:
            return
        self.selected = k
        sps = list(self.iw.figure)
        for sp, g in zip(sps, self.outlines, strict=False):
            _fpl.delete_graphic(sp, g)
        self.outlines = [_fpl.add_outline(sps[i], self.coords[k]) for i in (0, 1)]
        if self.component_box.value != k:
            self.component_box.value = k
        self._draw_trace()
        self._update_info()

    def _update_info(self) -> None:
        k = self.selected
        if k is None:
            self.component_info.value = ""
            return
        state = "accepted" if self.accepted[k] else "rejected"
        if k in self.overrides:
            state += " (by hand)"
        self.component_info.value = (f"component <b>{k}</b>: SNR {self.snr[k]:.2f}, r {self.rval[k]:.2f}, "
                                     f"{state}")

    # -- traces ---------------------------------------------------------------------------------------------
    @property
    def trace_fig(self) -> fpl.Figure | None:
        return self.traces.fig

    @property
    def trace_line(self) -> fpl.LineGraphic | None:
        return self.traces.line

    @property
    def marker(self) -> fpl.LinearSelector | None:
        return self.traces.marker

    @property
    def heatmap_order(self) -> np.ndarray:
        return self.traces.order

    @property
    def marker_time(self) -> float | None:
        return self.traces.marker_time

    def trace(self, k: int) -> np.ndarray:
        """The trace shown for component ``k``."""
        y = np.asarray(self.C[k], dtype=np.float32)
        if self.trace_kind.value == "C + residuals" and self.YrA is not None:
            y = y + np.asarray(self.YrA[k], dtype=np.float32)
        return y

    def _draw_trace_figure(self) -> None:
        y = self.trace(self.selected or 0) if self.n_components else np.zeros(self.n_frames, np.float32)
        self.traces.set_trace(self._trace_xy(y), self.time)
        self._draw_heatmap()

    def _draw_trace(self) -> None:
        if self.trace_line is None or self.selected is None:
            return
        self.traces.set_trace(self._trace_xy(self.trace(self.selected)), self.time)

    def _trace_xy(self, y: np.ndarray) -> np.ndarray:
        return trace_envelope(y, self.trace_max_points or 2 * int(self.size[0]))

    def heatmap_rows(self) -> np.ndarray:
        """Component order of the heatmap's rows."""
        K = self.n_components
        mode = self.order_by.value
        if mode == "good first":
            return np.concatenate([np.flatnonzero(self.accepted), np.flatnonzero(~self.accepted)]).astype(np.int64)
        if mode == "SNR":
            return np.argsort(-np.nan_to_num(self.snr, nan=-np.inf), kind="stable")
        if mode == "r-value":
            return np.argsort(-np.nan_to_num(self.rval, nan=-np.inf), kind="stable")
        return np.arange(K)

    def _draw_heatmap(self) -> None:
        if self.trace_fig is None or self.n_components == 0:
            return
        order = self.heatmap_rows()
        rows, b = self._heat_rows
        self.traces.set_heatmap(rows[order], order, b)

    def _move_marker(self, t: int) -> None:
        self.traces.move_marker(t)

    def render(self) -> None:
        """Draw every figure whose content changed (the trace figure only when its marker moved on
        screen, by half a pixel: at 30,000 frames a +1 step moves it 0.03 px)."""
        with self._lock:
            for f in self.figures():
                if f is self.trace_fig:
                    self.traces.render()
                else:
                    _fpl.render_now(f)

    def figures(self) -> list[_fpl.FigureLike]:
        if self.live:  # the trace figure is hidden: nothing to draw there
            return [] if self.iw is None else [self.iw]
        return [f for f in (self.iw, self.trace_fig) if f is not None]


def _is_live(row: Any) -> bool:
    """A queued or running onacid item (shown live); False when the record cannot be read."""
    try:
        rec = row.caiman.record()
    except Exception:
        return False
    return rec.get("algo") == "onacid" and rec.get("status") in onacid_live.ACTIVE
