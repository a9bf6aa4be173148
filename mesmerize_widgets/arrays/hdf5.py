"""Lazy HDF5 movies: one 3-D dataset, the file opened only for each read.

Opening per read keeps no HDF5 handle alive, so the file can be rewritten, moved or
deleted between reads (h5py would otherwise lock it on Windows).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from .base import LazyArray, MovieReadError, check_file

__all__ = ["LazyHDF5"]


def _find_3d(f: h5py.File) -> list[str]:
    found: list[str] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3:
            found.append(name)

    f.visititems(visit)
    return found


class LazyHDF5(LazyArray):
    """A (t, y, x) dataset of an HDF5 file.

    ``dataset=None`` picks the file's only 3-D dataset (or ``"mov"``, CaImAn's name,
    when there are several).
    """

    def __init__(self, path: str | os.PathLike, dataset: str | None = "mov") -> None:
        super().__init__()
        self.path = check_file(path)
        try:
            with h5py.File(self.path, "r") as f:
                if dataset is None:
                    cands = _find_3d(f)
                    if len(cands) > 1 and "mov" in cands:
                        cands = ["mov"]  # CaImAn's default dataset name
                    if len(cands) != 1:
                        raise MovieReadError(
                            f"{self.path}: dataset=None needs exactly one 3-D dataset, "
                            f"found {cands or 'none'}; pass the dataset name"
                        )
                    dataset = cands[0]
                if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                    raise MovieReadError(
                        f"{self.path}: no dataset {dataset!r}; 3-D datasets: {_find_3d(f) or 'none'}"
                    )
                ds = f[dataset]
                shape, dtype = tuple(ds.shape), ds.dtype
        except MovieReadError:
            raise
        except Exception as e:
            raise MovieReadError(
                f"{self.path}: cannot read as HDF5 ({type(e).__name__}: {e})"
            ) from e
        if len(shape) == 2:
            shape = (1, *shape)
            self._is_2d = True
        elif len(shape) == 3:
            self._is_2d = False
        else:
            raise MovieReadError(
                f"{self.path}: dataset {dataset!r} has shape {shape}, expected (t, y, x)"
            )
        self.dataset = dataset
        self._shape = shape
        self._dtype = np.dtype(dtype)

    def _describe(self) -> str:
        return f"dataset={self.dataset!r}, path={str(self.path)!r}"

    def _read(self, key: slice | np.ndarray) -> np.ndarray:
        try:
            with h5py.File(self.path, "r") as f:
                ds = f[self.dataset]
                if self._is_2d:
                    return ds[()][None][key]
                return ds[key]
        except Exception as e:
            raise MovieReadError(
                f"{self.path}: failed to read {self.dataset!r} ({type(e).__name__}: {e})"
            ) from e

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        return self._read(slice(start, stop))

    def _read_frames(self, indices: np.ndarray) -> np.ndarray:
        # h5py fancy indexing wants increasing indices, which the base guarantees
        return self._read(indices)
