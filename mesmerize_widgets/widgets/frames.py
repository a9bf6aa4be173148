"""Exactly windowed, filtered frames that the viewers hand to fastplotlib as its arrays.

fastplotlib's own ``window_funcs`` average 4 or 6 frames when asked for 5, and its
``frame_apply`` histogram reads much of the movie; so the viewers give its ImageWidget a
:class:`ProcessedMovie` instead: indexing frame ``t`` returns the window of ``size`` frames
centred on ``t`` (``arrays.reconstruction.window_bounds``) reduced by the chosen function, then
the chosen spatial filter. Lazy sources with an exact ``window()`` (A⊗C, b⊗f, residuals) use it,
so a mean over 10 frames of A⊗C costs one matrix product. Nothing here imports fastplotlib.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from ..accessors.cache import BoundedCache
from ..arrays.reconstruction import reduce_window, window_bounds

__all__ = ["FRAME_APPLY", "WINDOW_FUNCS", "FrameCache", "ProcessedMovie", "ResidualMovie",
           "gaussian_blur", "spatial_highpass"]

WINDOW_FUNCS = ("none", "mean", "max", "min", "std", "median")


def gaussian_blur(frame: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Gaussian blur (OpenCV: fast on 512x512 frames)."""
    f = np.ascontiguousarray(frame, dtype=np.float32)
    return cv2.GaussianBlur(f, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT)


def spatial_highpass(frame: np.ndarray, sigma: float = 6.0) -> np.ndarray:
    """Frame minus its Gaussian blur: removes neuropil/background haze, keeps cell-sized detail."""
    f = np.ascontiguousarray(frame, dtype=np.float32)
    return f - cv2.GaussianBlur(f, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT)


#: frame_apply choices offered by the viewers (name -> function of (frame, sigma))
FRAME_APPLY: dict[str, Callable[[np.ndarray, float], np.ndarray] | None] = {
    "none": None,
    "spatial high-pass": spatial_highpass,
    "gaussian blur": gaussian_blur,
}


class FrameCache(BoundedCache):
    """A few recent windowed frames per source, shared by the panels of one viewer.

    The residual panel reuses the input, A⊗C and b⊗f windows the other panels just computed.
    """

    def __init__(self, maxsize: int = 16) -> None:
        super().__init__(maxsize)


class WindowSettings:
    """Window function, size and frame_apply shared by every panel of a viewer."""

    def __init__(self) -> None:
        self.func: str | Callable = "none"
        self.size: int = 1
        self.apply: Callable[[np.ndarray], np.ndarray] | None = None
        self.apply_name: str = "none"

    @property
    def active(self) -> bool:
        return self.func != "none" and self.size > 1

    def key(self) -> tuple:
        return (self.func if isinstance(self.func, str) else id(self.func), self.size if self.active else 1)


class ProcessedMovie:
    """A (t, y, x) array-like whose frame ``t`` is the exact window around ``t``, then filtered.

    Shape, dtype and ``__getitem__`` are all fastplotlib needs (its ``ArrayProtocol``); only
    the frames of the windows asked for are read from ``source``.
    """

    def __init__(self, source: Any, settings: WindowSettings, cache: FrameCache | None = None,
                 name: str = "") -> None:
        shape = tuple(int(s) for s in source.shape)
        if len(shape) != 3:
            raise ValueError(f"{name or 'movie'}: expected a (t, y, x) movie, got shape {shape}")
        self.source = source
        self.settings = settings
        self.cache = cache or FrameCache()
        self.name = name
        self._shape = shape

    # -- ArrayProtocol ------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def ndim(self) -> int:
        return 3

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def __len__(self) -> int:
        return self._shape[0]

    # -- frames -------------------------------------------------------------------------------------
    def windowed(self, t: int) -> np.ndarray:
        """The window around ``t`` reduced (no frame_apply), cached."""
        s = self.settings
        return self.cache.get((id(self.source), int(t), *s.key()), lambda: self._compute_window(int(t)))

    def _compute_window(self, t: int) -> np.ndarray:
        s = self.settings
        if not s.active:
            return np.asarray(self.source[t], dtype=np.float32)
        if hasattr(self.source, "window") and (isinstance(s.func, str) or callable(s.func)):
            try:
                return np.asarray(self.source.window(t, s.size, s.func), dtype=np.float32)
            except ValueError:
                pass  # a function the source does not know: reduce the frames here
        start, stop = window_bounds(t, s.size, self._shape[0])
        return reduce_window(np.asarray(self.source[start:stop], dtype=np.float32), s.func)

    def frame(self, t: int) -> np.ndarray:
        """What the viewer shows at ``t``: window, then frame_apply."""
        if not 0 <= t < self._shape[0]:
            raise IndexError(f"frame {t} out of range for {self._shape[0]} frames")
        out = self.windowed(t)
        if self.settings.apply is not None:  # a copy: the cached window must stay as it is
            out = np.asarray(self.settings.apply(out.copy()), dtype=np.float32)
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        tkey, rest = key[0], key[1:]
        n = self._shape[0]
        if isinstance(tkey, (int, np.integer)):
            t = int(tkey) + (n if tkey < 0 else 0)
            return self.frame(t)[rest] if rest else self.frame(t)
        if isinstance(tkey, slice):
            ts = range(*tkey.indices(n))
        else:
            ts = np.arange(n)[np.asarray(tkey)]
        frames = np.stack([self.frame(int(t)) for t in ts]) if len(ts) else np.empty((0, *self._shape[1:]), np.float32)
        return frames[(slice(None), *rest)] if rest else frames

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def clim(self, t: int, low: float = 0.5, high: float = 99.8) -> tuple[float, float]:
        """Contrast limits from the frame shown at ``t`` (percentiles, NaN ignored)."""
        f = self.frame(t)
        f = f[np.isfinite(f)]
        if f.size == 0:
            return 0.0, 1.0
        lo, hi = np.percentile(f, [low, high])
        return float(lo), float(hi if hi > lo else lo + 1)


class ResidualMovie(ProcessedMovie):
    """Y - A⊗C - b⊗f, windowed: for mean (and no window) from the other panels' cached windows.

    Means are linear, so the residual's window mean is the difference of the three windows the
    input/rcm/rcb panels already computed for the same ``t``; other functions use the lazy
    residual array's own window.
    """

    def __init__(self, residuals: Any, movie: ProcessedMovie, rcm: ProcessedMovie,
                 rcb: ProcessedMovie | None, settings: WindowSettings, cache: FrameCache) -> None:
        super().__init__(residuals, settings, cache, name="residuals")
        self.parts = (movie, rcm, rcb)

    def _compute_window(self, t: int) -> np.ndarray:
        s = self.settings
        if s.active and s.func != "mean":
            return super()._compute_window(t)
        movie, rcm, rcb = self.parts
        out = movie.windowed(t) - rcm.windowed(t)
        if rcb is not None:
            out = out - rcb.windowed(t)
        return out.astype(np.float32, copy=False)
