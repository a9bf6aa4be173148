"""Open any supported movie (or a movie split over files) as a lazy (t, y, x) array."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path

from .base import LazyArray, MovieReadError
from .concat import LazyConcat
from .hdf5 import LazyHDF5
from .memmap import LazyMemmap
from .npy import LazyNpy
from .nwb import open_nwb
from .tiff import LazyTiff
from .video import LazyVideo

__all__ = ["MOVIE_EXTENSIONS", "natural_sort_key", "open_movie"]

TIFF_EXTENSIONS = (".tif", ".tiff", ".btf")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov")
HDF5_EXTENSIONS = (".h5", ".hdf5", ".hdf")
MOVIE_EXTENSIONS = (*TIFF_EXTENSIONS, ".mmap", *VIDEO_EXTENSIONS, *HDF5_EXTENSIONS, ".npy", ".nwb")

PathLike = str | os.PathLike


def natural_sort_key(path: PathLike) -> list:
    """Sort key that orders numbers by value: ``2.avi`` before ``10.avi``."""
    parts = re.split(r"(\d+)", str(path))
    return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts]


def _ext(path: Path) -> str:
    return path.suffix.lower()


def _open_one(path: Path, var_name_hdf5: str | None) -> LazyArray:
    if not path.exists():
        raise MovieReadError(f"{path}: no such file or directory")
    ext = _ext(path)
    try:
        if ext in TIFF_EXTENSIONS:
            return LazyTiff(path)
        if ext == ".mmap":
            return LazyMemmap(path)
        if ext in VIDEO_EXTENSIONS:
            return LazyVideo(path)
        if ext in HDF5_EXTENSIONS:
            return LazyHDF5(path, dataset=var_name_hdf5)
        if ext == ".npy":
            return LazyNpy(path)
        if ext == ".nwb":
            return open_nwb(path, var_name_hdf5)
    except MovieReadError:
        raise
    except Exception as e:  # a reader's unexpected failure still names the file
        raise MovieReadError(f"{path}: cannot read movie ({type(e).__name__}: {e})") from e
    raise MovieReadError(
        f"{path}: unknown movie extension {ext or '(none)'!r}; "
        f"supported: {', '.join(MOVIE_EXTENSIONS)}"
    )


def _expand(path: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(path, (list, tuple)):
        paths = [Path(p) for p in path]
        if not paths:
            raise MovieReadError("open_movie: empty list of files")
        return paths
    p = Path(path)
    if p.is_dir():
        files = [f for f in p.iterdir() if f.is_file() and _ext(f) in MOVIE_EXTENSIONS]
        if not files:
            raise MovieReadError(
                f"{p}: directory holds no movie files ({', '.join(MOVIE_EXTENSIONS)})"
            )
        return sorted(files, key=natural_sort_key)
    if not p.exists() and glob.has_magic(str(path)):
        files = [Path(f) for f in glob.glob(str(path)) if Path(f).is_file()]
        if not files:
            raise MovieReadError(f"{path}: glob pattern matches no files")
        return sorted(files, key=natural_sort_key)
    return [p]


def open_movie(path: PathLike | Sequence[PathLike], var_name_hdf5: str | None = None) -> LazyArray:
    """Open a movie lazily, dispatching on the file extension.

    ``path`` may be a file, a list/tuple of files, a directory (all its movie files,
    in natural order) or a glob pattern; several files form one movie along time.
    ``var_name_hdf5`` names the HDF5 dataset (None: the file's only 3-D dataset), or for an
    NWB file its TwoPhotonSeries / OnePhotonSeries (None or "mov": the file's only one).
    A single 2-D image opens as a 1-frame movie of shape (1, y, x).
    Raises MovieReadError naming the file for any problem.
    """
    paths = _expand(path)
    if len(paths) == 1:
        return _open_one(paths[0], var_name_hdf5)
    for p in paths:
        if not p.exists():
            raise MovieReadError(f"{p}: no such file")
    if all(_ext(p) in TIFF_EXTENSIONS for p in paths):
        return LazyTiff(paths)
    return LazyConcat([_open_one(p, var_name_hdf5) for p in paths])
