"""Base class for lazy, numpy-like movies indexed as (t, y, x).

Movies are often larger than memory, so readers only load the frames an index asks
for. Subclasses implement :meth:`LazyArray._read_frames` (sorted, unique frame
indices) and optionally :meth:`LazyArray._read_range` (contiguous frames); the base
turns every numpy-style index into such a request and applies spatial indices after
reading. The attributes ``shape``, ``ndim``, ``dtype`` and ``__getitem__`` make the
objects usable wherever fastplotlib expects an ``ArrayProtocol``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LazyArray", "MovieReadError"]


class MovieReadError(ValueError):
    """A movie file is missing, unreadable, corrupt, truncated or of an unknown kind."""


class LazyArray(ABC):
    """A movie of shape (t, y, x) whose frames are read on demand.

    Subclasses set ``self._shape`` and ``self._dtype`` in ``__init__`` and implement
    :meth:`_read_frames`. ``min``/``max`` are *estimates* from a sample of frames.
    """

    _shape: tuple[int, ...]
    _dtype: np.dtype
    #: frames sampled by the ``min``/``max`` estimates
    n_sample_frames: int = 32

    def __init__(self) -> None:
        self._minmax: tuple[Any, Any] | None = None

    # -- to implement -------------------------------------------------------
    @abstractmethod
    def _read_frames(self, indices: np.ndarray) -> np.ndarray:
        """Return frames at sorted, unique, in-range int64 ``indices`` as (n, y, x)."""

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        """Return frames ``start:stop`` (step 1, in range); override if faster."""
        return self._read_frames(np.arange(start, stop, dtype=np.int64))

    # -- array protocol -----------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """(t, y, x)."""
        return tuple(self._shape)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self._shape)

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the frames as returned by indexing."""
        return np.dtype(self._dtype)

    @property
    def size(self) -> int:
        """Total number of elements."""
        return int(np.prod(self._shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes the whole movie would take in memory."""
        return self.size * self.dtype.itemsize

    @property
    def n_frames(self) -> int:
        """Number of frames (length of axis 0)."""
        return int(self._shape[0])

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.n_frames):
            yield self[i]

    def close(self) -> None:
        """Release resources; the readers keep no file open, so this is mostly a no-op."""
        return None

    def __enter__(self) -> LazyArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _describe(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self._describe()
        extra = f", {extra}" if extra else ""
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}{extra})"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError(
                f"{type(self).__name__} cannot be converted to an array without a copy"
            )
        out = self[:]
        if dtype is not None:
            out = out.astype(dtype, copy=False)
        return out

    # -- estimates ------------------------------------------------------------
    def _sample_minmax(self) -> tuple[Any, Any]:
        if self._minmax is None:
            n = self.n_frames
            if n == 0:
                raise ValueError("min/max of an empty movie")
            idx = np.unique(np.linspace(0, n - 1, min(n, self.n_sample_frames)).astype(np.int64))
            sample = self._fetch(idx)
            self._minmax = (sample.min(), sample.max())
        return self._minmax

    def min(self) -> Any:
        """Estimated minimum, from a sample of evenly spaced frames (cached)."""
        return self._sample_minmax()[0]

    def max(self) -> Any:
        """Estimated maximum, from a sample of evenly spaced frames (cached)."""
        return self._sample_minmax()[1]

    # -- indexing -------------------------------------------------------------
    def _fetch(self, indices: np.ndarray) -> np.ndarray:
        """Read sorted unique indices, using the contiguous path where possible."""
        n = len(indices)
        if n == 0:
            return np.empty((0, *self._shape[1:]), dtype=self.dtype)
        if indices[-1] - indices[0] == n - 1:
            out = self._read_range(int(indices[0]), int(indices[-1]) + 1)
        else:
            out = self._read_frames(indices)
        out = np.asarray(out)
        if out.shape != (n, *self._shape[1:]):
            raise MovieReadError(
                f"{type(self).__name__}: reader returned shape {out.shape}, "
                f"expected {(n, *self._shape[1:])}"
            )
        if out.dtype != self.dtype:
            out = out.astype(self.dtype)
        return out

    def _check_int(self, i: int) -> int:
        n = self.n_frames
        if not -n <= i < n:
            raise IndexError(f"frame index {i} is out of range for a movie of {n} frames")
        return i + n if i < 0 else i

    def _time_indices(self, key: Any) -> tuple[np.ndarray, Any]:
        """Return (sorted unique frames to read, index into those frames).

        The second item replaces the time index on the array of read frames, so the
        full key keeps numpy's semantics (including advanced indices that broadcast
        against spatial ones).
        """
        n = self.n_frames
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            idx = np.arange(start, stop, step, dtype=np.int64)
            if step < 0:
                return idx[::-1].copy(), slice(None, None, -1)
            return idx, slice(None)
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            return np.array([self._check_int(int(key))], dtype=np.int64), 0
        arr = np.asarray(key)
        if arr.dtype == bool:
            if arr.ndim != 1 or len(arr) != n:
                raise IndexError(
                    f"boolean index of shape {arr.shape} does not match {n} frames on axis 0"
                )
            idx = np.flatnonzero(arr).astype(np.int64)
            return idx, np.arange(len(idx))
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if not np.issubdtype(arr.dtype, np.integer):
            raise IndexError(
                f"frame indices must be integers, slices, integer arrays or boolean masks, "
                f"got {arr.dtype}"
            )
        arr = arr.astype(np.int64)
        bad = (arr < -n) | (arr >= n)
        if bad.any():
            raise IndexError(
                f"frame index {int(arr[bad].flat[0])} is out of range for a movie of {n} frames"
            )
        arr = np.where(arr < 0, arr + n, arr)
        uniq, inverse = np.unique(arr, return_inverse=True)
        return uniq, np.asarray(inverse).reshape(arr.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is None for k in key):
            raise IndexError("np.newaxis is not supported; index the returned array instead")
        n_ell = sum(k is Ellipsis for k in key)
        if n_ell > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if n_ell == 1:
            pos = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = self.ndim - (len(key) - 1)
            key = key[:pos] + (slice(None),) * max(fill, 0) + key[pos + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-D movie: {len(key)}")
        if len(key) == 0:
            key = (slice(None),)
        idx, local = self._time_indices(key[0])
        frames = self._fetch(idx)
        return frames[(local, *key[1:])]


def check_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path, raising MovieReadError if it is not an existing file."""
    p = Path(path)
    if not p.exists():
        raise MovieReadError(f"{p}: no such file")
    if not p.is_file():
        raise MovieReadError(f"{p}: not a regular file")
    return p
