"""Summary images computed in one streaming pass over a movie, in bounded memory.

Mean, std and max projections and the local correlation image (each pixel's mean Pearson
correlation with its 4 or 8 neighbours, as CaImAn's ``local_correlations`` defines it) are all
sums over frames, so they are accumulated chunk by chunk in float64 and never need the whole
movie in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# neighbour offsets (drow, dcol) counted once; the reverse direction shares the same product
_OFFSETS_4 = ((0, 1), (1, 0))
_OFFSETS_8 = ((0, 1), (1, 0), (1, 1), (1, -1))


def _pair_slices(dy: int, dx: int, shape: tuple[int, int]):
    """Slices (a, b) so that a[p] and b[p] are neighbours at offset (dy, dx)."""
    h, w = shape
    ra, rb = slice(0, h - dy), slice(dy, h)
    if dx >= 0:
        ca, cb = slice(0, w - dx), slice(dx, w)
    else:
        ca, cb = slice(-dx, w), slice(0, w + dx)
    return (ra, ca), (rb, cb)


class SummaryAccumulator:
    """Feed frames in chunks, then read the projections and the correlation image."""

    def __init__(self, frame_shape: tuple[int, int], neighbours: int = 8, chunk_dtype: Any = np.float64,
                 keep_buffer: bool = False):
        """``chunk_dtype=np.float32`` sums each chunk in float32 (the totals stay float64): exact
        enough over tens of frames, and half the memory traffic on big frames. ``keep_buffer``
        keeps the centred chunk's array between chunks (a new one per chunk has its pages faulted
        in each time: a third of a C-order memmap's write) at the cost of holding it throughout."""
        if neighbours not in (4, 8):
            raise ValueError("neighbours must be 4 or 8")
        self.shape = tuple(frame_shape)
        self._chunk_dtype = np.dtype(chunk_dtype)
        self.offsets = _OFFSETS_8 if neighbours == 8 else _OFFSETS_4
        self.n = 0
        self._shift: np.ndarray | None = None  # first frame: keeps the sums well conditioned
        self._s1 = np.zeros(self.shape)
        self._s2 = np.zeros(self.shape)
        self._max = np.full(self.shape, -np.inf)
        self._cross = [np.zeros(self.shape) for _ in self.offsets]
        self._keep = keep_buffer
        self._buf: np.ndarray | None = None  # see _centred

    def add(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        if frames.shape[1:] != self.shape:
            raise ValueError(f"frames of shape {frames.shape[1:]} do not match {self.shape}")
        if not len(frames):
            return
        np.maximum(self._max, frames.max(axis=0), out=self._max)
        if self._shift is None:
            self._shift = frames[0].astype(np.float64)
        x = self._centred(frames)
        self.n += len(x)
        self._s1 += x.sum(axis=0)
        self._s2 += np.einsum("tij,tij->ij", x, x)
        for acc, (dy, dx) in zip(self._cross, self.offsets, strict=True):
            (ra, ca), (rb, cb) = _pair_slices(dy, dx, self.shape)
            acc[ra, ca] += np.einsum("tij,tij->ij", x[:, ra, ca], x[:, rb, cb])

    def _centred(self, frames: np.ndarray) -> np.ndarray:
        """``frames - shift`` in the chunk dtype, in one pass (in the kept buffer with ``keep_buffer``)."""
        n = len(frames)
        out = None
        if self._keep:
            if self._buf is None or len(self._buf) < n:
                self._buf = np.empty((n, *self.shape), self._chunk_dtype)
            out = self._buf[:n]
        return np.subtract(frames, self._shift.astype(self._chunk_dtype), out=out, dtype=self._chunk_dtype)

    def state(self) -> dict[str, np.ndarray]:
        """The partial sums as plain arrays, so a piece of a pass can be saved and added later."""
        shift = np.zeros((0, 0)) if self._shift is None else self._shift
        return {"n": np.array(self.n), "shift": shift, "s1": self._s1, "s2": self._s2, "max": self._max,
                "cross": np.stack(self._cross)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> SummaryAccumulator:
        """The accumulator :meth:`state` described."""
        acc = cls(state["s1"].shape, neighbours=8 if len(state["cross"]) == len(_OFFSETS_8) else 4)
        acc.n = int(state["n"])
        acc._shift = state["shift"] if state["shift"].size else None
        acc._s1, acc._s2, acc._max = state["s1"], state["s2"], state["max"]
        acc._cross = list(state["cross"])
        return acc

    def _require(self) -> None:
        if self.n == 0:
            raise ValueError("no frames were added")

    def mean(self) -> np.ndarray:
        self._require()
        return (self._s1 / self.n + self._shift).astype(np.float32)

    def std(self) -> np.ndarray:
        self._require()
        m = self._s1 / self.n
        return np.sqrt(np.maximum(self._s2 / self.n - m * m, 0)).astype(np.float32)

    def max(self) -> np.ndarray:
        self._require()
        return self._max.astype(np.float32)

    def correlation_image(self) -> np.ndarray:
        """Mean correlation with the neighbours inside the frame; 0 where a pixel is constant."""
        self._require()
        m = self._s1 / self.n
        var = np.maximum(self._s2 / self.n - m * m, 0)
        sd = np.sqrt(var)
        total = np.zeros(self.shape)
        count = np.zeros(self.shape)
        for acc, (dy, dx) in zip(self._cross, self.offsets, strict=True):
            (ra, ca), (rb, cb) = _pair_slices(dy, dx, self.shape)
            cov = acc[ra, ca] / self.n - m[ra, ca] * m[rb, cb]
            denom = sd[ra, ca] * sd[rb, cb]
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(denom > 0, cov / denom, 0.0)
            total[ra, ca] += r
            total[rb, cb] += r
            count[ra, ca] += 1
            count[rb, cb] += 1
        return (total / np.maximum(count, 1)).astype(np.float32)


class TransposedSummary:
    """The images of an accumulator fed each frame transposed, turned back: the projections are
    per pixel, and a pixel's 4 or 8 neighbours are the same pixels in the transposed frame, so
    the correlation image is the transposed movie's, transposed. For movies stored with each
    frame's pixels in Fortran order (CaImAn's memmaps), which read that way need no copy."""

    def __init__(self, acc: SummaryAccumulator):
        self.acc = acc

    def mean(self) -> np.ndarray:
        return np.ascontiguousarray(self.acc.mean().T)

    def std(self) -> np.ndarray:
        return np.ascontiguousarray(self.acc.std().T)

    def max(self) -> np.ndarray:
        return np.ascontiguousarray(self.acc.max().T)

    def correlation_image(self) -> np.ndarray:
        return np.ascontiguousarray(self.acc.correlation_image().T)
