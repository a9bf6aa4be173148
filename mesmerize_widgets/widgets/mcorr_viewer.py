"""``McorrViewer``: raw and motion-corrected movies side by side, the shifts, the summary images.

One ImageWidget (raw | corrected, one time slider) over exactly windowed, filtered frames
(:mod:`.frames`); the x/y shift traces below with a draggable time marker linked both ways to
the movie; the mean projection and the correlation image. ``set_row`` swaps the data in place.
"""

from __future__ import annotations

import fastplotlib as fpl
import ipywidgets as widgets
import numpy as np
import pandas as pd

from . import _fpl
from .frames import ProcessedMovie
from .messages import describe_error
from .viewer_base import FrameApply, ViewerBase

__all__ = ["McorrViewer"]

_COLORS = ("#ff5a5a", "#5ab4ff")


class McorrViewer(ViewerBase):
    """Viewer of one mcorr item; ``set_row(row)`` shows another."""

    algos = ("mcorr",)

    def __init__(self, row: pd.Series | None = None, *,
                 frame_apply: FrameApply | dict[str, FrameApply] | None = None,
                 size: tuple[int, int] = (900, 420)) -> None:
        super().__init__(frame_apply=frame_apply, size=size)
        self.shifts: list[np.ndarray] = []
        self.shift_lines: list[fpl.LineGraphic] = []
        self.marker: fpl.LinearSelector | None = None
        self.proj_images: list[fpl.ImageGraphic] = []
        self.shift_fig: fpl.Figure | None = None
        self.proj_fig: fpl.Figure | None = None
        self.patch_dropdown = widgets.Dropdown(options=[("mean of patches", -1)], value=-1, description="patch",
                                               tooltip="piecewise-rigid: the mean shift or one patch's")
        self.patch_dropdown.observe(lambda _: self._guard(self._draw_shifts), names="value")
        self.shift_box = widgets.VBox()
        self.proj_box = widgets.VBox()
        self.body.children = [self.movie_box, widgets.HTML("<b>shifts</b> (rows: red, cols: blue)"),
                              self.patch_dropdown, self.shift_box, self.proj_box]
        self._time_listeners.append(self._move_marker)
        if row is not None:
            self.set_row(row)

    # -- loading ---------------------------------------------------------------------------------------
    def _load(self, row: pd.Series) -> None:
        corrected = row.mcorr.get_output()
        raw = row.caiman.get_input_movie()
        if len(raw.shape) != 3 or len(corrected.shape) != 3:
            raise ValueError(f"expected (t, y, x) movies, got input {tuple(raw.shape)} and corrected "
                             f"{tuple(corrected.shape)}")
        if raw.shape[0] != corrected.shape[0]:
            raise ValueError(f"the corrected movie has {corrected.shape[0]} frames but the input "
                             f"{raw.shape[0]}: they do not belong together")
        shifts = row.mcorr.get_shifts()
        T = corrected.shape[0]
        if any(np.shape(s)[0] != T for s in shifts):
            raise ValueError(f"the shifts file has {np.shape(shifts[0])[0]} frames, the movie {T}")
        notes = []
        projections = []
        for what, get in (("mean projection", lambda: row.caiman.get_projection("mean")),
                          ("correlation image", row.caiman.get_corr_image)):
            try:
                projections.append(np.asarray(get(), dtype=np.float32))
            except Exception as e:
                notes.append(f"{what}: {describe_error(e)}")
                projections.append(np.zeros(corrected.shape[1:], np.float32))

        movies = [ProcessedMovie(raw, self.settings, self.cache, name="raw"),
                  ProcessedMovie(corrected, self.settings, self.cache, name="corrected")]
        self.shifts = [np.asarray(s, dtype=np.float64) for s in shifts]
        self.header.value = (f"<b>{row['item_name']}</b> · mcorr · {T} frames · "
                             f"{'piecewise-rigid' if self.pw_rigid else 'rigid'}")
        self._set_movies([raw, corrected], ["raw", "corrected"], movies, figure_shape=(1, 2))
        self._set_projections(projections)
        n_patches = self.shifts[0].shape[1] if self.pw_rigid else 0
        self.patch_dropdown.options = [("mean of patches", -1)] + [(f"patch {i}", i) for i in range(n_patches)]
        self.patch_dropdown.value = -1
        self.patch_dropdown.layout.display = None if self.pw_rigid else "none"
        self._draw_shifts()
        if notes:
            self._say("; ".join(notes), "error")
        self.row = row

    @property
    def pw_rigid(self) -> bool:
        return bool(self.shifts) and self.shifts[0].ndim == 2

    def shift_traces(self) -> tuple[np.ndarray, np.ndarray]:
        """(row shifts, col shifts) as drawn: rigid, or the mean/chosen patch of piecewise shifts."""
        a, b = self.shifts
        if not self.pw_rigid:
            return a, b
        p = int(self.patch_dropdown.value)
        return (a.mean(axis=1), b.mean(axis=1)) if p < 0 else (a[:, p], b[:, p])

    def _draw_shifts(self) -> None:
        if not self.shifts:
            return
        if self.shift_fig is None:
            self.shift_fig = _fpl.figure((1, 1), names=["shifts"], size=(self.size[0], 200))
            _fpl.on_click(self.shift_fig, lambda i, x, y, b: self.set_time(x))
            canvas = _fpl.as_widget(self.shift_fig)
            self.shift_box.children = [] if canvas is None else [canvas]
        sp = self.shift_fig[0, 0]
        ys = self.shift_traces()
        if self.shift_lines and all(_fpl.set_line_data(ln, y) for ln, y in zip(self.shift_lines, ys, strict=True)):
            sp.auto_scale(maintain_aspect=False)
            return
        _fpl.delete_graphic(sp, self.marker)
        for ln in self.shift_lines:
            _fpl.delete_graphic(sp, ln)
        self.shift_lines = [sp.add_line(np.asarray(y, np.float32), colors=c, thickness=1.5)
                            for y, c in zip(ys, _COLORS, strict=True)]
        self.marker = _fpl.add_time_marker(self.shift_lines[0], self.time, self.set_time)
        sp.auto_scale(maintain_aspect=False)

    def _move_marker(self, t: int) -> None:
        if self.marker is not None:
            self.marker.selection = float(t)

    def _set_projections(self, images: list[np.ndarray]) -> None:
        if self.proj_fig is None:
            self.proj_fig = _fpl.figure((1, 2), names=["mean projection", "correlation image"],
                                        size=(self.size[0], 300))
            canvas = _fpl.as_widget(self.proj_fig)
            self.proj_box.children = [] if canvas is None else [canvas]
        for i, (sp, img) in enumerate(zip(self.proj_fig, images, strict=True)):
            if i < len(self.proj_images):
                _fpl.delete_graphic(sp, self.proj_images[i])
            g = _fpl.add_image(sp, img, cmap="gray")
            lo, hi = np.nanpercentile(img, [0.5, 99.8]) if np.isfinite(img).any() else (0, 1)
            _fpl.set_clim(g, lo, hi)
            if i < len(self.proj_images):
                self.proj_images[i] = g
            else:
                self.proj_images.append(g)

    def figures(self) -> list[_fpl.FigureLike]:
        return [f for f in (self.iw, self.shift_fig, self.proj_fig) if f is not None]

    @property
    def marker_time(self) -> float | None:
        """Where the shifts' time marker is."""
        return None if self.marker is None else float(self.marker.selection)

    def click_shifts(self, x: float) -> None:
        """A click on the shift traces at time ``x`` (what a canvas click calls)."""
        self.set_time(x)
