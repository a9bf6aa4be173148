"""The CNMF viewer's lower figure: the selected component's trace above a heatmap of all traces.

One figure, two subplots. The trace carries a draggable time marker linked to the viewer's
time; the heatmap's rows are components (in an order the viewer chooses), its columns frames
averaged in blocks to about the canvas width. Offscreen, :meth:`TracePanel.render` draws only
when the pixels would change (a marker move under half a pixel does not).
"""

from __future__ import annotations

from collections.abc import Callable

import fastplotlib as fpl
import ipywidgets as widgets
import numpy as np

from . import _fpl

__all__ = ["TracePanel", "heatmap_rows", "trace_envelope"]


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


def heatmap_rows(C: np.ndarray, max_cols: int) -> tuple[np.ndarray, int]:
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


class TracePanel:
    """The figure and its graphics; the viewer decides what they show."""

    def __init__(self, size: tuple[int, int], on_time: Callable[[float], None],
                 on_heatmap_click: Callable[[float, float], None]) -> None:
        self.size = size
        self._on_time = on_time
        self._on_heatmap_click = on_heatmap_click
        self.box = widgets.VBox()
        self.fig: fpl.Figure | None = None
        self.line: fpl.LineGraphic | None = None
        self.marker: fpl.LinearSelector | None = None
        self.heatmap: fpl.ImageGraphic | None = None
        self.order = np.zeros(0, np.int64)  # component of each heatmap row
        self._bin = 1
        self._version = 0  # bumped whenever a graphic changes
        self._drawn: tuple | None = None

    def _figure(self) -> fpl.Figure:
        if self.fig is None:
            self.fig = _fpl.figure((2, 1), names=["trace", "heatmap"], size=self.size)
            # heatmap rows are components: ticks say little, and their text costs ms per CPU draw
            self.fig[1, 0].axes.visible = False
            _fpl.on_click(self.fig, self._clicked)
            canvas = _fpl.as_widget(self.fig)
            self.box.children = [] if canvas is None else [canvas]
        return self.fig

    def _clicked(self, subplot: int, x: float, y: float, button: int) -> None:
        if subplot == 0:
            self._on_time(x)
        else:
            self._on_heatmap_click(x, y)

    def set_trace(self, xy: np.ndarray, t: float) -> None:
        """Show these (x, y) points; a new line (and marker at ``t``) when their number changed."""
        sp = self._figure()[0, 0]
        if self.line is None or not _fpl.set_line_data(self.line, xy):
            _fpl.delete_graphic(sp, self.marker)
            _fpl.delete_graphic(sp, self.line)
            self.line = sp.add_line(np.asarray(xy, np.float32), colors="w", thickness=1.5)
            self.marker = _fpl.add_time_marker(self.line, t, self._on_time)
        self._version += 1
        sp.auto_scale(maintain_aspect=False)

    def set_heatmap(self, image: np.ndarray, order: np.ndarray, bin_frames: int) -> None:
        """Rows of ``image`` are components ``order``; a column is ``bin_frames`` frames (x in frames)."""
        sp = self._figure()[1, 0]
        self.order = order
        if not (self.heatmap is not None and self._bin == bin_frames and _fpl.set_image_data(self.heatmap, image)):
            _fpl.delete_graphic(sp, self.heatmap)
            self.heatmap = _fpl.add_image(sp, image, cmap="viridis", scale_x=bin_frames)
            sp.auto_scale(maintain_aspect=False)
            self._bin = bin_frames
        _fpl.set_clim(self.heatmap, 0.0, 1.0)
        self._version += 1

    def component_at_row(self, y: float) -> int | None:
        """The component of the heatmap row at ``y``."""
        row = int(round(y))
        return int(self.order[row]) if 0 <= row < len(self.order) else None

    def move_marker(self, t: float) -> None:
        if self.marker is not None:
            self.marker.selection = float(t)

    @property
    def marker_time(self) -> float | None:
        return None if self.marker is None else float(self.marker.selection)

    def _state(self) -> tuple:
        """What the figure shows: the same value means the same pixels (no need to draw)."""
        sps = list(self.fig)
        mx = None
        if self.marker is not None:  # the marker's canvas x, to half a pixel
            mx = round(2 * float(sps[0].map_world_to_screen((float(self.marker.selection), 0.0, 0.0))[0]))
        return (self._version, id(self.line), id(self.heatmap), mx, tuple(self.fig.canvas.get_logical_size()),
                *(_fpl.view_state(sp) for sp in sps))

    def render(self) -> None:
        """Draw when the content changed (offscreen); in a notebook ask for a frame."""
        if self.fig is None:
            return
        if _fpl.is_offscreen(self.fig):
            state = self._state()
            if state == self._drawn:
                return
            self._drawn = state
        _fpl.render_now(self.fig)
