"""NWB imaging series as lazy movies, read with h5py (no pynwb needed to read).

A ``TwoPhotonSeries`` or ``OnePhotonSeries`` is named by ``var_name_hdf5``: its name
(``"TwoPhotonSeries"``) or its path in the file (``"processing/ophys/MotionCorrectedMovie"``).
Its ``data`` is read through :class:`LazyHDF5`, so only the frames indexed are read; a series
that keeps its frames in ``external_file`` TIFFs opens those files (paths relative to the NWB
file's folder) with the TIFF reader. NWB's (frames, x, y) is read as (t, y, x): NWB's ``x`` is
the first image axis, as the exporter writes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from .base import LazyArray, MovieReadError, check_file
from .hdf5 import LazyHDF5

__all__ = ["IMAGING_SERIES", "LazyNWB", "imaging_series", "open_nwb"]

#: neurodata types read as movies
IMAGING_SERIES = ("TwoPhotonSeries", "OnePhotonSeries")
#: var_name_hdf5's default (CaImAn's HDF5 dataset name): for an NWB file, "the only series"
_DEFAULT_NAMES = (None, "", "mov")


def _type_of(obj: h5py.Group) -> str:
    value = obj.attrs.get("neurodata_type", b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def imaging_series(path: str | os.PathLike) -> list[str]:
    """Paths inside the file of every TwoPhotonSeries and OnePhotonSeries."""
    found: list[str] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Group) and _type_of(obj) in IMAGING_SERIES:
            found.append(name)

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as e:
        raise MovieReadError(f"{path}: cannot read as NWB (HDF5) ({e})") from e
    return sorted(found)


def _resolve(path: Path, name: str | None) -> str:
    series = imaging_series(path)
    if not series:
        raise MovieReadError(f"{path}: this NWB file holds no imaging series ({' or '.join(IMAGING_SERIES)})")
    if name in _DEFAULT_NAMES:
        if len(series) == 1:
            return series[0]
        raise MovieReadError(f"{path}: several imaging series, name one with var_name_hdf5: {series}")
    hits = [s for s in series if s == name.strip("/") or s.rsplit("/", 1)[-1] == name]
    if len(hits) != 1:
        what = "no" if not hits else "more than one"
        raise MovieReadError(f"{path}: {what} imaging series {name!r}; the file has: {series}")
    return hits[0]


class LazyNWB(LazyHDF5):
    """The ``data`` of an NWB imaging series, read frame by frame."""

    def __init__(self, path: str | os.PathLike, series: str) -> None:
        self.series = series
        super().__init__(path, dataset=f"{series}/data")

    def _describe(self) -> str:
        return f"series={self.series!r}, path={str(self.path)!r}"


def _external(path: Path, series: str) -> LazyArray | None:
    """The series' external files as one movie, or None when its frames are in ``data``."""
    with h5py.File(path, "r") as f:
        group = f[series]
        if "external_file" not in group:
            return None
        files = [v.decode() if isinstance(v, bytes) else str(v) for v in group["external_file"][()]]
        starting = np.asarray(group["external_file"].attrs.get("starting_frame", [0]))
    from .open import open_movie  # open imports this module

    paths = [p if Path(p).is_absolute() else path.parent / p for p in files]
    for p in paths:
        if not Path(p).exists():
            raise MovieReadError(f"{path}: series {series!r} names external file {p}, which does not exist")
    movie = open_movie(paths)
    if len(paths) > 1 and not np.array_equal(starting[1:], np.cumsum([len(open_movie(p)) for p in paths])[:-1]):
        raise MovieReadError(f"{path}: starting_frame {starting.tolist()} of {series!r} does not match its files")
    return movie


def open_nwb(path: str | os.PathLike, var_name_hdf5: str | None = None) -> LazyArray:
    """The imaging series ``var_name_hdf5`` of an NWB file (the file's only one by default)."""
    p = check_file(path)
    series = _resolve(p, var_name_hdf5)
    return _external(p, series) or LazyNWB(p, series)
