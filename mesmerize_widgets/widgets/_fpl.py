"""What fastplotlib 0.7 lacks, or does in a way that does not suit the viewers; the rest is
called directly.

* 0.7 already renders with ``pixel_scale=1`` and no ppaa (fast on lavapipe); we keep that.
* ``ImageWidget`` window sizes are inexact (a mean over 5 averages 4 or 6 frames), so we never
  give it ``window_funcs`` or ``frame_apply``: the arrays we hand it (``widgets.frames``) return
  exactly processed frames.
* Its histogram samples the *whole* array (1,500 full frames of a 30,000-frame movie with a
  ``frame_apply``), so it is off; contrast is set from the frames shown.
* Setting ``current_index`` only schedules an async fetch on the rendercanvas loop, which runs
  inside a Jupyter kernel but not in a script. Offscreen (tests, benchmarks) we take
  fastplotlib's own synchronous path (the one its docs gallery uses), so a draw right after
  shows the new frame, never a stale one.
* Thousands of outlines as separate graphics cost seconds to build and recolour:
  :class:`ContourSet` draws them as one line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import fastplotlib as fpl
import numpy as np
from fastplotlib.layouts import Subplot
from fastplotlib.utils import ArrayProtocol
from fastplotlib.widgets.nd_widget._async import run_sync
from pygfx import PointerEvent

__all__ = [
    "ContourSet", "FigureLike", "add_image", "add_outline", "add_time_marker", "as_widget", "close",
    "delete_graphic", "figure", "image_widget", "is_offscreen", "on_click", "render_now", "request_draw",
    "set_clim", "set_image_arrays", "set_image_data", "set_index", "set_line_data", "snapshot", "sync",
    "view_state",
]  # fmt: skip

#: what the viewers draw into: a Figure, or an ImageWidget (whose ``figure`` is one)
FigureLike = fpl.Figure | fpl.ImageWidget
Click = Callable[[int, float, float, int], None]


# -- figures -----------------------------------------------------------------------------------------
def is_offscreen(fig: fpl.Figure) -> bool:
    """True when the figure renders to memory (tests, benchmarks, no display)."""
    return type(fig.canvas).__name__ == "OffscreenRenderCanvas"


def figure(shape: tuple[int, int] = (1, 1), names: Sequence[str] | None = None,
           size: tuple[int, int] = (700, 250)) -> fpl.Figure:
    """A plain (non-imgui) Figure for traces, heatmaps and static images, without toolbars."""
    fig = fpl.Figure(shape=shape, names=None if names is None else list(names), size=size)
    for sp in fig:
        sp.toolbar = False
    return fig


def image_widget(arrays: Sequence[ArrayProtocol], names: Sequence[str], size: tuple[int, int] = (900, 600),
                 figure_shape: tuple[int, int] | None = None, cmap: str = "gnuplot2") -> fpl.ImageWidget:
    """One ImageWidget for several (t, y, x) arrays sharing a time slider; no fpl windowing."""
    return fpl.ImageWidget(
        list(arrays), names=list(names), figure_shape=figure_shape, histogram_widget=False,
        cmap=cmap, figure_kwargs={"size": size},
    )


def _fig(obj: FigureLike) -> fpl.Figure:
    return obj.figure if isinstance(obj, fpl.ImageWidget) else obj


def as_widget(obj: FigureLike) -> Any:
    """Start rendering; the canvas as an ipywidget in Jupyter, None offscreen (nothing to display)."""
    fig = _fig(obj)
    out = obj.show()
    if is_offscreen(fig):
        return None
    return out if out is not None else fig.canvas


def close(obj: FigureLike) -> None:
    """Close a Figure or ImageWidget for good (its canvas stops rendering)."""
    fig = _fig(obj)
    with contextlib.suppress(Exception):
        obj.close()
    with contextlib.suppress(Exception):
        fig.canvas.close()


def request_draw(*objs: FigureLike) -> None:
    """Ask a live canvas for a new frame (graphics changed); nothing offscreen, where draws are explicit."""
    for obj in objs:
        fig = _fig(obj)
        if not is_offscreen(fig):
            fig.canvas.request_draw()


def render_now(*objs: FigureLike) -> None:
    """Draw now offscreen (deterministic); in a notebook ask the canvas for a new frame."""
    for obj in objs:
        fig = _fig(obj)
        if is_offscreen(fig):
            fig.canvas.draw()
        else:
            fig.canvas.request_draw()


def snapshot(obj: FigureLike) -> np.ndarray:
    """RGBA pixels (h, w, 4) of the plot layer, drawn now."""
    fig = _fig(obj)
    render_now(fig)
    return np.asarray(fig.renderer.snapshot())


# -- the image widget's time axis ------------------------------------------------------------------
@contextlib.contextmanager
def _sync_fetch() -> Iterator[None]:
    old = os.environ.get("DOCS_BUILD")
    os.environ["DOCS_BUILD"] = "1"  # fastplotlib's switch for synchronous slice fetches
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DOCS_BUILD", None)
        else:
            os.environ["DOCS_BUILD"] = old


def set_index(iw: fpl.ImageWidget, t: int) -> None:
    """Move the time slider; offscreen the new frames are fetched before this returns."""
    t = int(t)
    if is_offscreen(iw.figure):
        with _sync_fetch():
            iw.current_index = {"t": t}
    else:
        iw.current_index = {"t": t}


def sync(iw: fpl.ImageWidget) -> None:
    """Re-fetch the frames at the current index (after the arrays' processing changed)."""
    if is_offscreen(iw.figure):
        for ndg in iw._ndw.ndgraphics:
            run_sync(ndg._set_indices_())
    else:
        iw.current_index = dict(iw.current_index)


def set_image_arrays(iw: fpl.ImageWidget, arrays: Sequence[ArrayProtocol]) -> None:
    """Swap the arrays shown (same number of panels); the slider range follows the new length."""
    offscreen = is_offscreen(iw.figure)
    ctx = _sync_fetch() if offscreen else contextlib.nullcontext()
    with ctx:
        iw.set_data(list(arrays), reset_vmin_vmax=False, reset_indices=False)
        n = max(int(a.shape[0]) for a in arrays)
        iw._ndw.ranges["t"].stop = n  # set_data only ever grows the range
        iw.current_index = {"t": min(int(iw.current_index["t"]), n - 1)}


def set_clim(graphic: fpl.ImageGraphic, vmin: float, vmax: float) -> None:
    """Colour limits; non-finite ones are ignored and equal ones widened (fastplotlib refuses both)."""
    if not np.isfinite(vmin) or not np.isfinite(vmax):
        return
    if vmax <= vmin:
        vmax = vmin + 1e-6
    graphic.vmin, graphic.vmax = float(vmin), float(vmax)


def set_image_data(graphic: fpl.ImageGraphic, data: np.ndarray) -> bool:
    """Replace an image's pixels in place; False when the shape differs (make a new image)."""
    data = np.asarray(data, dtype=np.float32)
    if graphic.data.value.shape != data.shape:
        return False
    graphic.data = data
    return True


# -- graphics -------------------------------------------------------------------------------------------
def add_image(subplot: Subplot, data: np.ndarray, *, cmap: str = "gray", scale_x: float = 1.0) -> fpl.ImageGraphic:
    """An image (rows down); ``scale_x`` stretches columns (a time-binned heatmap in frames)."""
    g = subplot.add_image(np.asarray(data, dtype=np.float32), cmap=cmap)
    if scale_x != 1.0:
        g.world_object.local.scale_x = float(scale_x)
    subplot.camera.local.scale_y = -1  # rows down, as the movie panels
    subplot.auto_scale(maintain_aspect=True)
    return g


def set_line_data(line: fpl.LineGraphic, data: np.ndarray) -> bool:
    """Replace a line's y values (1-D) or (x, y) points in place; False when the length differs
    (make a new line: fastplotlib cannot resize a line's buffer)."""
    data = np.asarray(data, dtype=np.float32)
    if line.data.value.shape[0] != data.shape[0]:
        return False
    if data.ndim == 1:
        line.data[:, 1] = data
    else:
        line.data[:, :2] = data
    return True


def view_state(subplot: Subplot) -> tuple:
    """The camera's pose (pan / zoom) as a hashable value: did the view change since the last draw?"""
    cam = subplot.camera
    return (tuple(np.round(np.asarray(cam.local.matrix).ravel(), 6)), float(cam.width), float(cam.height))


def delete_graphic(subplot: Subplot, graphic: fpl.Graphic | None) -> None:
    """Remove a graphic if it is there (fastplotlib raises for one already gone, or None)."""
    if graphic is not None and graphic in subplot.graphics + subplot.selectors:
        subplot.delete_graphic(graphic)


def add_time_marker(line: fpl.LineGraphic, t: float, on_change: Callable[[float], None]) -> fpl.LinearSelector:
    """A draggable vertical LinearSelector on a line; ``on_change(x)`` when it moves."""
    sel = line.add_linear_selector(selection=float(t), edge_color="yellow", thickness=2)
    sel.add_event_handler(lambda ev: on_change(float(ev.info["value"])), "selection")
    return sel


def on_click(obj: FigureLike, callback: Click) -> None:
    """``callback(subplot_index, x, y, button)`` in data coordinates for clicks on the canvas."""
    fig = _fig(obj)
    sps = list(fig)

    def handler(ev: PointerEvent) -> None:
        for i, sp in enumerate(sps):
            pos = sp.map_screen_to_world(ev)
            if pos is not None:
                callback(i, float(pos[0]), float(pos[1]), int(getattr(ev, "button", 1)))
                return

    fig.renderer.add_event_handler(handler, "click")


# -- all contours as one line ------------------------------------------------------------------------
class ContourSet:
    """All component outlines as ONE LineGraphic (pieces separated by NaN vertices).

    One graphic keeps drawing and recolouring O(1) in Python at thousands of components;
    per-component colours are expanded to per-vertex colours in numpy.
    """

    def __init__(self, subplot: Subplot, coords: Sequence[np.ndarray], *, thickness: float = 1.5,
                 thin: bool = True) -> None:
        """``coords``: per component, (n, 2) (row, col) points, closed pieces separated by NaN rows."""
        pieces, counts = [], []
        for c in coords:
            c = np.asarray(c, dtype=np.float32).reshape(-1, 2)
            block = np.vstack([c[:, ::-1], np.full((1, 2), np.nan, np.float32)])  # (x=col, y=row)
            pieces.append(block)
            counts.append(len(block))
        self.counts = np.asarray(counts, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        xy = np.vstack(pieces) if pieces else np.full((2, 2), np.nan, np.float32)
        self.xy = xy
        data = np.column_stack([xy, np.full(len(xy), 1.0, np.float32)])  # z=1: above the image
        self._subplot = subplot
        self.graphic = subplot.add_line(data, colors="w", thickness=thickness, thin=thin)
        self.n = len(self.counts)

    def set_colors(self, rgba: np.ndarray) -> None:
        """One RGBA row per component."""
        rgba = np.asarray(rgba, dtype=np.float32).reshape(self.n, 4)
        if self.n == 0:
            return
        self.graphic.colors = np.repeat(rgba, self.counts, axis=0)

    def vertex_colors(self) -> np.ndarray:
        return np.asarray(self.graphic.colors.value)

    def component_colors(self) -> np.ndarray:
        """The colour of each component (its first vertex)."""
        if self.n == 0:
            return np.zeros((0, 4), np.float32)
        return self.vertex_colors()[self.offsets[:-1]]

    def set_visible(self, visible: bool) -> None:
        self.graphic.visible = bool(visible)

    def remove(self) -> None:
        delete_graphic(self._subplot, self.graphic)


def add_outline(subplot: Subplot, coords: np.ndarray, *, color: str = "w", thickness: float = 3.5) -> fpl.LineGraphic:
    """One highlighted outline ((row, col) points with NaN separators) above the contours."""
    c = np.asarray(coords, dtype=np.float32).reshape(-1, 2)
    if len(c) < 2:
        c = np.full((2, 2), np.nan, np.float32)
    data = np.column_stack([c[:, ::-1], np.full(len(c), 2.0, np.float32)])
    return subplot.add_line(data, colors=color, thickness=thickness)
