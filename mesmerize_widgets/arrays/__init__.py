"""Lazy, numpy-like (t, y, x) movies read frame by frame from files."""

from .base import LazyArray, MovieReadError
from .concat import LazyConcat
from .hdf5 import LazyHDF5
from .memmap import LazyMemmap
from .npy import LazyNpy
from .nwb import LazyNWB, open_nwb
from .open import MOVIE_EXTENSIONS, natural_sort_key, open_movie
from .tiff import LazyTiff
from .video import LazyVideo

__all__ = [
    "MOVIE_EXTENSIONS",
    "LazyArray",
    "LazyConcat",
    "LazyHDF5",
    "LazyMemmap",
    "LazyNWB",
    "LazyNpy",
    "LazyTiff",
    "LazyVideo",
    "MovieReadError",
    "natural_sort_key",
    "open_movie",
    "open_nwb",
]
