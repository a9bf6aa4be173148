"""Lazy ``.npy`` movies, memory-mapped only for the duration of each read.

A persistent ``np.load(mmap_mode="r")`` would hold the file mapped (and, on Windows,
locked); mapping per read costs little. Small files are simply loaded once.
"""

from __future__ import annotations

import os

import numpy as np

from .base import LazyArray, MovieReadError, check_file

__all__ = ["LazyNpy"]

#: files up to this size are loaded into memory once instead of mapped per read
SMALL_NPY_BYTES = 8 * 2**20


class LazyNpy(LazyArray):
    """A (t, y, x) array stored in a ``.npy`` file; a 2-D array becomes (1, y, x)."""

    def __init__(self, path: str | os.PathLike, small_bytes: int = SMALL_NPY_BYTES) -> None:
        super().__init__()
        self.path = check_file(path)
        self._data: np.ndarray | None = None
        try:
            if self.path.stat().st_size <= small_bytes:
                data = np.load(self.path, allow_pickle=False)
                shape, dtype = data.shape, data.dtype
                self._data = data
            else:
                mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
                shape, dtype = mm.shape, mm.dtype
                del mm
        except Exception as e:
            raise MovieReadError(
                f"{self.path}: cannot read as .npy ({type(e).__name__}: {e})"
            ) from e
        if len(shape) == 2:
            self._is_2d = True
            shape = (1, *shape)
        elif len(shape) == 3:
            self._is_2d = False
        else:
            raise MovieReadError(f"{self.path}: array has shape {shape}, expected (t, y, x)")
        if self._data is not None and self._is_2d:
            self._data = self._data[None]
        self._shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)

    def _describe(self) -> str:
        return f"path={str(self.path)!r}"

    def _read(self, key: slice | np.ndarray) -> np.ndarray:
        if self._data is not None:
            return np.array(self._data[key])
        try:
            mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except Exception as e:
            raise MovieReadError(f"{self.path}: cannot read .npy ({type(e).__name__}: {e})") from e
        if self._is_2d:
            mm = mm[None]
        out = np.array(mm[key])  # copy, then drop the map
        del mm
        return out

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        return self._read(slice(start, stop))

    def _read_frames(self, indices: np.ndarray) -> np.ndarray:
        return self._read(indices)
