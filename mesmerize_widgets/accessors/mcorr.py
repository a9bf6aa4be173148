"""``row.mcorr``: mesmerize-core's motion-correction accessor over an mcorr item's outputs.

Thin: find the output through ``row.caiman`` (status and presence checks), then read it with
the lazy arrays or the shifts reader of the mcorr algorithm.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from ..algorithms.mcorr.common import load_shifts
from ..arrays import LazyMemmap
from ..formats.memmap import load_memmap
from .frame import ItemAccessor


@pd.api.extensions.register_series_accessor("mcorr")
class MCorrExtensions(ItemAccessor):
    """Outputs of an mcorr item: corrected movie, shifts, TIFF export."""

    def _path(self, key: str, what: str) -> Path:
        algo = self._row.get("algo")
        if algo != "mcorr":
            raise ValueError(f"row.mcorr is for mcorr items; item {self._row.get('item_name')!r} is {algo!r}")
        return self._row.caiman._output_path(key, what)

    def get_output_path(self) -> Path:
        """The F-order CaImAn memmap of the corrected movie."""
        return self._path("mcorr-output-path", "motion-corrected movie")

    def get_output(self, mode: str = "r") -> LazyMemmap | np.memmap:
        """The corrected movie as a [t, y, x] array.

        ``mode="r"``: a lazy array that reads only the frames indexed. Other numpy memmap modes
        (``"r+"``, ``"c"``) give a memmap view, writable in place, as mesmerize-core's.
        """
        path = self.get_output_path()
        if mode == "r":
            return LazyMemmap(path)
        Yr, dims, T = load_memmap(path, mode=mode)
        return np.reshape(Yr.T, (T, *dims[::-1])).transpose(0, *range(len(dims), 0, -1))

    def get_shifts(self, pw_rigid: bool | None = None) -> list[np.ndarray]:
        """Shifts per dimension: rigid, [dy (T,), dx (T,)]; piecewise, [x_els, y_els] each (T, n_patches).

        ``pw_rigid`` (mesmerize-core's argument) may be left out: the file says which it is;
        given and wrong, it raises rather than slicing the wrong axes.
        """
        return load_shifts(self._path("shifts", "shifts"), pw_rigid)

    def export(self, path: str | os.PathLike, chunk_frames: int = 256) -> Path:
        """Write the corrected movie as a multi-page float32 TIFF, reading chunk by chunk."""
        movie = self.get_output()
        path = Path(path)
        n, dims = len(movie), movie.shape[1:]

        def pages():
            for a in range(0, n, chunk_frames):
                yield from movie[a : a + chunk_frames]

        bigtiff = movie.nbytes > 2**31 - 2**25
        with tifffile.TiffWriter(path, bigtiff=bigtiff) as tw:
            tw.write(pages(), shape=(n, *dims), dtype=np.float32, photometric="minisblack")
        return path
