"""``CNMFViewer``: input, A⊗C, b⊗f and residuals in time; contours, traces, live evaluation.

* One ImageWidget, four panels, one time slider, over exactly windowed frames (:mod:`.frames`);
  the residual panel reuses the other panels' windows (means are linear).
* All contours are ONE line graphic (NaN-separated outlines) over the input panel, coloured
  accepted/rejected or by SNR / r-value; recolouring writes one per-vertex colour array.
* Evaluation sliders re-classify in memory with CaImAn's rule
  (:func:`mesmerize_widgets.accessors.cnmf.select_components`); nothing is written until
  "save evaluation".
* Saving: ``row.cnmf.run_eval(thresholds)`` writes the new classification and records
  ``params["eval"]``; manual accept/reject overrides are then applied to ``idx_components`` /
  ``idx_components_bad`` in one more atomic rewrite of the CNMF HDF5
  (:func:`mesmerize_widgets.formats.cnmf_hdf5.save_cnmf`: temp file, fsync, rename) and recorded
  as ``params["eval"]["manual"] = {"accepted": [...], "rejected": [...]}`` in the store.
* Live view: an ``onacid`` item that is queued or running shows its input movie with the
  contours of its live snapshot (:mod:`mesmerize_widgets.algorithms.onacid.live`), one graphic,
  and a label ("running: frame 640/2000, 37 components"). A daemon thread polls the store and
  the snapshot every ``poll_interval`` seconds (as the batch table does), computes the new
  outlines off the kernel's loop, and hands the graphics change to the kernel's asyncio loop
  when one runs (Jupyter), else applies it under the viewer's lock; when the item finishes the
  viewer switches to the finished view by itself.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd

from ..accessors.cnmf import select_components
from ..algorithms.onacid import live as onacid_live
from . import _fpl
from .frames import FrameCache, ProcessedMovie, ResidualMovie
from .messages import describe_error
from .viewer_base import FrameApply, ViewerBase

__all__ = ["CNMFViewer", "metric_colors"]

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


def trace_envelope(y: np.ndarray, max_points: int) -> np.ndarray:
    """(x, y) points to draw a trace: itself when short, else its min/max per block of frames.

    A 30,000-frame trace drawn as 30,000 vertices cost ~200 ms per draw on the CPU renderer,
    for a plot ~900 px wide; min and max of each block (2 points per block, at most
    ``max_points``) look the same on screen, peaks included, for 2 % of the vertices.
    """
    y = np.asarray(y, dtype=np.float32).ravel()
    T = len(y)
    if T <= max_points:
        return np.column_stack([np.arange(T, dtype=np.float32), y])
    b = int(np.ceil(T / max(max_points // 2, 1)))
    starts = np.arange(0, T, b)
    ends = np.minimum(starts + b, T) - 1
    lo = np.minimum.reduceat(y, starts)
    hi = np.maximum.reduceat(y, starts)
    x = np.column_stack([starts, ends]).ravel().astype(np.float32)
    return np.column_stack([x, np.column_stack([lo, hi]).ravel()])


def _heatmap_rows(C: np.ndarray, max_cols: int) -> tuple[np.ndarray, int]:
    """Each trace averaged over blocks of frames (at most ``max_cols`` columns), scaled to [0, 1].

    Computed once per item, block by block of components, so a 2,000 x 30,000 C is never
    copied whole; reordering rows for the heatmap is then cheap.
    """
    K, T = C.shape
    b = max(1, int(np.ceil(T / max_cols)))
    n = max(T // b, 1)
    out = np.empty((K, n), np.float32)
    for s in range(0, K, 256):
        block = np.asarray(C[s : s + 256, : n * b], dtype=np.float32)
        block = block.reshape(len(block), n, b).mean(axis=2) if b > 1 else block
        lo = block.min(axis=1, keepdims=True)
        span = block.max(axis=1, keepdims=True) - lo
        out[s : s + 256] = (block - lo) / np.where(span > 0, span, 1)
    return out, b


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
        self._live_uuid: str | None = None
        self._live_row: pd.Series | None = None
        self._live_key: tuple | None = None
        self._live_thread: threading.Thread | None = None
        self._live_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.live_components = 0
        self.live_frame: int | None = None
        self.n_components = 0
        self.snr = np.zeros(0)
        self.fast: np.ndarray | None = None
        self.rval = np.zeros(0)
        self.coords: list[np.ndarray] = []
        self.centers = np.zeros((0, 2))
        self.C = np.zeros((0, 1))
        self.accepted = np.zeros(0, bool)
        self.overrides: dict[int, bool] = {}
        self.selected: int | None = None
        self.contours: Any = None
        self.outlines: list[Any] = []
        self.trace_fig: Any = None
        self.trace_line: Any = None
        self.marker: Any = None
        self.heatmap: Any = None
        self.heatmap_order = np.zeros(0, np.int64)
        self._heat_bin = 1
        self._trace_version = 0  # bumped whenever the trace figure's graphics change
        self._trace_drawn: tuple | None = None
        self._bbox = np.zeros((0, 4))
        self._loading = False

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

        self.trace_box = widgets.VBox()
        self.live_label = widgets.HTML(layout=widgets.Layout(display="none"))
        self.finished_box = widgets.VBox([
            widgets.HBox([self.color_by, self.show_contours, self.counts], layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox(list(self.eval_sliders.values()), layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([self.component_box, self.accept_button, self.reject_button, self.clear_button,
                          self.save_button], layout=widgets.Layout(flex_flow="row wrap")),
            self.component_info,
            widgets.HBox([self.trace_kind, self.order_by]),
            self.trace_box,
        ])
        self.body.children = [self.movie_box, self.live_label, self.finished_box]
        self._time_listeners.append(self._move_marker)
        if row is not None:
            self.set_row(row)

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
        rcb = row.cnmf.get_rcb() if has_bg else _Zeros(rcm.shape)
        residuals = row.cnmf.get_residuals()
        K = int(np.shape(e.C)[0]) if e.C is not None else 0
        snr = np.asarray(e.SNR_comp if e.SNR_comp is not None else np.full(K, np.nan), dtype=np.float64).ravel()
        rval = np.asarray(e.r_values if e.r_values is not None else np.full(K, np.nan), dtype=np.float64).ravel()
        fast = e.extra.get("fast_fraction")  # the builtin's kinetics metric (None for CaImAn's results)
        coords, centers = row.cnmf.get_contours()
        C = np.asarray(e.C)  # the loaded result's own array (read only here): no K x T copy
        quality = dict(out.params.quality) if hasattr(out.params, "quality") else {}

        # data in hand: now swap everything
        self._loading = True
        try:
            self.n_components = K
            self.snr, self.rval, self.C = snr, rval, C
            self.fast = None if fast is None else np.asarray(fast, dtype=np.float64).ravel()
            self.YrA = None if e.YrA is None else np.asarray(e.YrA)
            self._heat_rows = _heatmap_rows(C, self.heatmap_max_cols or int(self.size[0]))
            self.coords = coords
            self.centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
            self._bbox = np.array([[np.nanmin(c[:, 0]), np.nanmax(c[:, 0]), np.nanmin(c[:, 1]), np.nanmax(c[:, 1])]
                                   if np.isfinite(c).any() else [np.nan] * 4 for c in coords]).reshape(-1, 4)
            self.overrides = {}
            self.selected = None
            self.quality = quality
            for k, s in self.eval_sliders.items():
                if k in quality and quality[k] is not None:
                    s.value = float(np.clip(quality[k], s.min, s.max))
            idx = e.idx_components
            self.accepted = np.zeros(K, bool)
            self.accepted[np.arange(K) if idx is None else np.asarray(idx, dtype=np.int64)] = True
            self.has_metrics = e.SNR_comp is not None and e.r_values is not None
            cache = FrameCache()
            self.cache = cache
            pm = ProcessedMovie(movie, self.settings, cache, name="input")
            prcm = ProcessedMovie(rcm, self.settings, cache, name="A*C")
            prcb = ProcessedMovie(rcb, self.settings, cache, name="b*f")
            pres = ResidualMovie(residuals, pm, prcm, prcb if has_bg else None, self.settings, cache)
            self.header.value = (f"<b>{row['item_name']}</b> · {row['algo']} · {K} components · "
                                 f"{rcm.shape[0]} frames of {rcm.shape[1]}x{rcm.shape[2]}")
            self._set_movies([movie, rcm, rcb, residuals], ["input", "A*C", "b*f", "residuals"],
                             [pm, prcm, prcb, pres], figure_shape=(2, 2))
            self._draw_contours()
            self.component_box.max = max(K - 1, 0)
            self._draw_trace_figure()
        finally:
            self._loading = False
        self.row = row
        self.recolor()
        if K:
            self.select_component(0)

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
            self.n_components = 0
            self.coords, self.centers, self._bbox = [], np.zeros((0, 2)), np.zeros((0, 4))
            self.accepted, self.snr, self.rval, self.fast = np.zeros(0, bool), np.zeros(0), np.zeros(0), None
            self.overrides, self.selected = {}, None
            self.live_components, self.live_frame = 0, None
            cache = FrameCache()
            self.cache = cache
            pm = ProcessedMovie(movie, self.settings, cache, name="input")
            self._set_movies([movie], ["input"], [pm], figure_shape=(1, 1))
            sps = list(self.iw.figure)
            if self.contours is not None:
                self.contours.remove()
                self.contours = None
            for sp, g in zip(sps, self.outlines, strict=False):
                _fpl.delete_graphic(sp, g)
            self.outlines = []
            T, h, w = (int(x) for x in movie.shape)
            self.header.value = f"<b>{row['item_name']}</b> · {row['algo']} · live · {T} frames of {h}x{w}"
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

    def _stop_live(self) -> None:
        self._live_uuid = None  # the poll thread sees it and ends
        self._live_row = None

    def _ensure_live_polling(self) -> None:
        if self._live_thread is not None and self._live_thread.is_alive():
            return
        try:  # in a kernel the graphics are changed on its loop, between draws
            self._live_loop = asyncio.get_running_loop()
        except RuntimeError:
            self._live_loop = None
        self._live_thread = threading.Thread(target=self._live_poll_loop, name="CNMFViewer-live", daemon=True)
        self._live_thread.start()

    def _live_poll_loop(self) -> None:
        while not self._closed and self._live_uuid is not None:
            time.sleep(self.poll_interval)
            try:
                self.poll_live()
            except Exception as e:  # a transient read error must not end the live view
                self._say(f"live refresh failed: {describe_error(e)}", "error")
        self._live_thread = None

    def poll_live(self, apply_now: bool = False) -> bool:
        """One live refresh: read the record and snapshot, redraw the contours if they changed.

        The outlines are computed here (the poll thread); only the graphics change goes to the
        kernel's loop (or runs under the lock). Returns True while the item is still active.
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
        self._stop_live()
        t = self._live_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
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

    # -- evaluation ----------------------------------------------------------------------------------------
    def eval_params(self) -> dict[str, float]:
        """The thresholds the sliders hold."""
        return {k: float(s.value) for k, s in self.eval_sliders.items()}

    def classify(self, params: dict[str, float] | None = None) -> np.ndarray:
        """Accepted mask from thresholds (CaImAn's rule) then manual overrides; nothing written."""
        q = {**self.eval_params(), **(params or {}), "use_cnn": False}
        good, _ = select_components(self.snr, self.rval, q, fast_fraction=self.fast)
        ok = np.zeros(self.n_components, bool)
        ok[good] = True
        for k, v in self.overrides.items():
            ok[k] = v
        return ok

    def set_eval(self, **params: float) -> None:
        """Move evaluation sliders (``min_SNR=3, rval_thr=0.8, ...``) and re-classify."""
        bad = set(params) - set(EVAL_KEYS)
        if bad:
            raise KeyError(f"unknown evaluation params {sorted(bad)}; the sliders are {list(EVAL_KEYS)}")
        for k, v in params.items():
            self.eval_sliders[k].value = float(v)

    def _eval_changed(self) -> None:
        if self._loading or self.n_components == 0:
            return
        if not self.has_metrics:
            self._say("this result has no SNR / r-values to evaluate with", "error")
            return
        self.accepted = self.classify()
        self.recolor()
        if self.order_by.value == "good first":
            self._draw_heatmap()
        self._update_info()

    def set_override(self, accept: bool | None, component: int | None = None) -> None:
        """Accept (True) / reject (False) a component by hand, or clear its override (None)."""
        k = self.selected if component is None else int(component)
        if k is None:
            raise ValueError("select a component first")
        if accept is None:
            self.overrides.pop(k, None)
        else:
            self.overrides[k] = bool(accept)
        self.accepted = self.classify() if self.has_metrics else self._with_overrides()
        self.recolor()
        self._update_info()

    def _with_overrides(self) -> np.ndarray:
        ok = self.accepted.copy()
        for k, v in self.overrides.items():
            ok[k] = v
        return ok

    def save_evaluation(self) -> dict[str, Any]:
        """Write the classification: run_eval with the thresholds, then the manual overrides."""
        if self.row is None:
            raise ValueError("no item loaded")
        row = self.row
        params = self.eval_params()
        if self.has_metrics:
            row.cnmf.run_eval(params)
        final = self.classify() if self.has_metrics else self._with_overrides()
        if self.overrides:
            self._write_overrides(row, final)
        self.accepted = final
        self.recolor()
        n_ok = int(final.sum())
        self._say(f"evaluation saved: {n_ok} accepted, {self.n_components - n_ok} rejected"
                  + (f" ({len(self.overrides)} by hand)" if self.overrides else ""), "ok")
        return {"params": params, "accepted": np.flatnonzero(final), "overrides": dict(self.overrides)}

    def _write_overrides(self, row: pd.Series, final: np.ndarray) -> None:
        from ..formats.cnmf_hdf5 import load_cnmf, save_cnmf

        path = row.cnmf.get_output_path()
        res = load_cnmf(path)
        est = copy.copy(res.estimates)
        est.idx_components = np.flatnonzero(final).astype(np.int64)
        est.idx_components_bad = np.flatnonzero(~final).astype(np.int64)
        save_cnmf(path, est, res.params.to_dict(), dims=res.dims, mmap_file=res.mmap_file or "",
                  remove_very_bad_comps=res.remove_very_bad_comps, skip_refinement=res.skip_refinement)
        store = row.cnmf.store
        rec = store.get(row.cnmf.uuid)
        params = copy.deepcopy(rec.get("params") or {})
        ev = dict(params.get("eval") or {})
        ev["manual"] = {"accepted": sorted(k for k, v in self.overrides.items() if v),
                        "rejected": sorted(k for k, v in self.overrides.items() if not v)}
        params["eval"] = ev
        store.update(row.cnmf.uuid, params=params)
        if isinstance(row.get("params"), dict):
            row["params"]["eval"] = copy.deepcopy(ev)

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
        row = int(round(y))
        if not 0 <= row < len(self.heatmap_order):
            return None
        k = int(self.heatmap_order[row])
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
    def trace(self, k: int) -> np.ndarray:
        """The trace shown for component ``k``."""
        y = np.asarray(self.C[k], dtype=np.float32)
        if self.trace_kind.value == "C + residuals" and self.YrA is not None:
            y = y + np.asarray(self.YrA[k], dtype=np.float32)
        return y

    def _draw_trace_figure(self) -> None:
        if self.trace_fig is None:
            self.trace_fig = _fpl.figure((2, 1), names=["trace", "heatmap"], size=(self.size[0], 300))
            # heatmap rows are components: ticks say little, and their text costs ms per CPU draw
            self.trace_fig[1, 0].axes.visible = False
            _fpl.on_click(self.trace_fig, self._trace_fig_clicked)
            canvas = _fpl.as_widget(self.trace_fig)
            self.trace_box.children = [] if canvas is None else [canvas]
        sp = self.trace_fig[0, 0]
        _fpl.delete_graphic(sp, self.marker)
        _fpl.delete_graphic(sp, self.trace_line)
        y = self.trace(self.selected or 0) if self.n_components else np.zeros(self.n_frames, np.float32)
        self.trace_line = sp.add_line(self._trace_xy(y), colors="w", thickness=1.5)
        self.marker = _fpl.add_time_marker(self.trace_line, self.time, self.set_time)
        sp.auto_scale(maintain_aspect=False)
        self._draw_heatmap()

    def _trace_fig_clicked(self, subplot: int, x: float, y: float, button: int) -> None:
        if subplot == 0:
            self.set_time(x)
        else:
            self._guard(lambda: self.click_heatmap(x, y))

    def _draw_trace(self) -> None:
        if self.trace_line is None or self.selected is None:
            return
        xy = self._trace_xy(self.trace(self.selected))
        if not _fpl.set_line_data(self.trace_line, xy):
            self._draw_trace_figure()
            _fpl.set_line_data(self.trace_line, xy)
        self._trace_version += 1
        self.trace_fig[0, 0].auto_scale(maintain_aspect=False)

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
        img = rows[order]
        sp = self.trace_fig[1, 0]
        self.heatmap_order = order
        if not (self.heatmap is not None and self._heat_bin == b and _fpl.set_image_data(self.heatmap, img)):
            _fpl.delete_graphic(sp, self.heatmap)
            self.heatmap = _fpl.add_image(sp, img, cmap="viridis", scale_x=b)  # x in frames, like the trace
            sp.auto_scale(maintain_aspect=False)
            self._heat_bin = b
        _fpl.set_clim(self.heatmap, 0.0, 1.0)
        self._trace_version += 1

    def _move_marker(self, t: int) -> None:
        if self.marker is not None:
            self.marker.selection = float(t)

    @property
    def marker_time(self) -> float | None:
        return None if self.marker is None else float(self.marker.selection)

    def _trace_fig_state(self) -> tuple:
        """What the trace figure shows: the same value means the same pixels (no need to draw)."""
        sps = list(self.trace_fig)
        mx = None
        if self.marker is not None:  # the marker's canvas x, to half a pixel
            mx = round(2 * float(sps[0].map_world_to_screen((float(self.marker.selection), 0.0, 0.0))[0]))
        return (self._trace_version, id(self.trace_line), id(self.heatmap), mx, tuple(self.trace_fig.canvas.get_logical_size()),
                *(_fpl.view_state(sp) for sp in sps))

    def render(self) -> None:
        """Draw every figure whose content changed (the trace figure only when its marker moved on
        screen, by half a pixel: at 30,000 frames a +1 step moves it 0.03 px)."""
        with self._lock:
            for f in self.figures():
                if f is self.trace_fig and _fpl.is_offscreen(f):
                    state = self._trace_fig_state()
                    if state == self._trace_drawn:
                        continue
                    self._trace_drawn = state
                _fpl.render_now(f)

    def figures(self) -> list[Any]:
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
