"""Lazy view of a CaImAn ``.mmap`` movie (order F or C), shape taken from its name.

No ``np.memmap`` is kept between reads: order F frames are read with seek +
``np.fromfile``; order C (pixel-major) reads map the file only for the duration of
the read. That way the file can be deleted or replaced while the array exists.
"""

from __future__ import annotations

import os

import numpy as np

from ..formats.memmap import DTYPE, MemmapInfo, parse_memmap_name
from .base import LazyArray, MovieReadError, check_file

__all__ = ["LazyMemmap"]


class LazyMemmap(LazyArray):
    """A CaImAn memmap as a (t, y, x) float32 movie, or (t, y, x, z) when d3 > 1."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = check_file(path)
        try:
            self.info: MemmapInfo = parse_memmap_name(self.path)
        except ValueError as e:
            raise MovieReadError(str(e)) from e
        size = self.path.stat().st_size
        if size != self.info.nbytes:
            what = "truncated" if size < self.info.nbytes else "larger than expected"
            raise MovieReadError(
                f"{self.path}: memmap file is {what}: {size} bytes, but its name "
                f"(dims {self.info.dims}, {self.info.n_frames} frames) implies {self.info.nbytes}"
            )
        d1, d2, d3 = self.info.dims
        self._frame_shape = (d1, d2) if d3 == 1 else (d1, d2, d3)
        self._shape = (self.info.n_frames, *self._frame_shape)
        self._dtype = np.dtype(np.float32)

    @property
    def order(self) -> str:
        """'F' (frame after frame) or 'C' (pixel time series contiguous)."""
        return self.info.order

    def _describe(self) -> str:
        return f"order={self.order!r}, path={str(self.path)!r}"

    def _to_frames(self, pix_by_t: np.ndarray) -> np.ndarray:
        """(n, P) Fortran-ordered pixels -> (n, d1, d2[, d3])."""
        d1, d2, d3 = self.info.dims
        n = pix_by_t.shape[0]
        if d3 == 1:
            return pix_by_t.reshape(n, d2, d1).transpose(0, 2, 1)
        return pix_by_t.reshape(n, d3, d2, d1).transpose(0, 3, 2, 1)

    def _check_size(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError as e:
            raise MovieReadError(f"{self.path}: cannot read memmap ({e})") from e
        if size != self.info.nbytes:
            raise MovieReadError(
                f"{self.path}: memmap changed size on disk ({size} != {self.info.nbytes} bytes)"
            )

    def _read_runs(self, runs: list[tuple[int, int]]) -> np.ndarray:
        """Order F: read runs of consecutive frames with one open file."""
        self._check_size()
        P = self.info.n_pixels
        parts = []
        with open(self.path, "rb") as fh:
            for start, stop in runs:
                n = stop - start
                fh.seek(start * P * DTYPE.itemsize)
                buf = np.fromfile(fh, dtype=DTYPE, count=n * P)
                if buf.size != n * P:
                    raise MovieReadError(
                        f"{self.path}: truncated memmap while reading frames {start}:{stop}"
                    )
                parts.append(buf.reshape(n, P))
        block = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return np.ascontiguousarray(self._to_frames(block))

    def read_pixel_frames(self, start: int, out: np.ndarray) -> np.ndarray:
        """Frames ``start`` on of an order-F memmap into ``out`` ((n, P) float32), as the file
        holds them: each frame's pixels in Fortran order, with no transpose to images (a
        C-order memmap is written from exactly that). Returns ``out``."""
        if self.order != "F":
            raise ValueError(f"{self.path}: read_pixel_frames reads order-F memmaps; this one is order C")
        self._check_size()
        n, P = out.shape
        if P != self.info.n_pixels or out.dtype != DTYPE or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of (n, {self.info.n_pixels})")
        if start < 0 or start + n > self.info.n_frames:
            raise IndexError(f"frames {start}:{start + n} outside the movie's {self.info.n_frames}")
        with open(self.path, "rb") as fh:
            fh.seek(start * P * DTYPE.itemsize)
            if fh.readinto(memoryview(out).cast("B")) != out.nbytes:
                raise MovieReadError(f"{self.path}: truncated memmap while reading frames {start}:{start + n}")
        return out

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        if self.order == "C":
            return self._read_c(slice(start, stop), stop - start)
        return self._read_runs([(start, stop)])

    def _read_frames(self, indices: np.ndarray) -> np.ndarray:
        if self.order == "C":
            return self._read_c(indices, len(indices))
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(indices, breaks)]
        return self._read_runs(runs)

    def _read_c(self, key: slice | np.ndarray, n: int) -> np.ndarray:
        self._check_size()
        P, T = self.info.n_pixels, self.info.n_frames
        mm = np.memmap(self.path, dtype=DTYPE, mode="r", shape=(P, T), order="C")
        # copy, then drop the only reference so the mapping (and its fd) goes now
        block = np.array(mm[:, key])  # (P, n)
        del mm
        return np.ascontiguousarray(self._to_frames(block.T.reshape(n, P)))
