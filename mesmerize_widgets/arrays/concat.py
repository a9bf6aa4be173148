"""Several lazy movies presented as one along time (e.g. a recording split over files)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import LazyArray, MovieReadError

__all__ = ["LazyConcat"]


class LazyConcat(LazyArray):
    """Concatenate lazy (or in-memory) movies along axis 0; frame shapes must match."""

    def __init__(self, arrays: Sequence[LazyArray | np.ndarray]) -> None:
        super().__init__()
        arrays = list(arrays)
        if not arrays:
            raise MovieReadError("LazyConcat: no movies given")
        first = arrays[0]
        for i, a in enumerate(arrays[1:], start=1):
            if tuple(a.shape[1:]) != tuple(first.shape[1:]):
                name = getattr(a, "path", f"movie #{i}")
                raise MovieReadError(
                    f"{name}: frame shape {tuple(a.shape[1:])} does not match "
                    f"{tuple(first.shape[1:])} of the first movie; cannot concatenate"
                )
        self.arrays = arrays
        self._dtype = np.result_type(*[a.dtype for a in arrays])
        counts = np.array([a.shape[0] for a in arrays], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._shape = (int(self._starts[-1]), *first.shape[1:])

    @property
    def paths(self) -> list:
        """Paths of the parts that have one."""
        return [getattr(a, "path", None) for a in self.arrays]

    def _describe(self) -> str:
        return f"parts={len(self.arrays)}"

    def _read_frames(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self._shape[1:]), dtype=self._dtype)
        which = np.searchsorted(self._starts, indices, side="right") - 1
        for k in np.unique(which):
            sel = np.flatnonzero(which == k)
            local = indices[sel] - self._starts[k]
            part = self.arrays[k]
            if local[-1] - local[0] == len(local) - 1:
                out[sel] = part[int(local[0]) : int(local[-1]) + 1]
            else:
                out[sel] = part[local]
        return out

    def close(self) -> None:
        """Close every part."""
        for a in self.arrays:
            close = getattr(a, "close", None)
            if close is not None:
                close()
