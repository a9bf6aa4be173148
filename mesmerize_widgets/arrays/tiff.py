"""Lazy TIFF movies: page-level random access without loading the file.

Opening indexes the file once: when tifffile reports the first series as contiguous
(tifffile "shaped", ImageJ and most OME files) only the first IFD is parsed and a
frame's offset is computed; otherwise each page's data offset (or IFD offset, for
compressed/tiled pages) is cached. Every read opens the file and closes it right
after, so the file can be moved or deleted (also on Windows) while a notebook holds
the array.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from .base import LazyArray, MovieReadError, check_file

__all__ = ["LazyTiff"]


@dataclass
class _TiffIndex:
    """How to find each frame of one file."""

    path: Path
    n_frames: int
    frame_shape: tuple[int, int]
    dtype: np.dtype  # with the file's byte order
    # contiguous series: frame i at offset + i * frame_nbytes
    offset: int | None = None
    # per-page uncompressed contiguous data offsets (else None)
    page_offsets: np.ndarray | None = None
    # per-page IFD offsets, for pages that need decoding
    ifd_offsets: np.ndarray | None = None

    @property
    def frame_nbytes(self) -> int:
        return int(np.prod(self.frame_shape)) * self.dtype.itemsize


class _TiffLog(logging.Handler):
    """Collect tifffile's log records while probing a file and keep them off the console.

    tifffile reports a broken IFD chain (typical of a truncated file) only through
    its logger, so errors there are turned into MovieReadError by the caller.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors.append(record.getMessage())

    def __enter__(self) -> _TiffLog:
        log = logging.getLogger("tifffile")
        self._saved = (log.propagate, log.level)
        log.addHandler(self)
        log.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        log = logging.getLogger("tifffile")
        log.removeHandler(self)
        log.propagate, _ = self._saved


def _expected_frames(tif: tifffile.TiffFile) -> int | None:
    """Frame count that the file's own metadata promises, if it says."""
    try:
        if tif.is_imagej and tif.imagej_metadata:
            images = tif.imagej_metadata.get("images")
            return int(images) if images else None
        if tif.is_shaped and tif.shaped_metadata:
            shape = tif.shaped_metadata[0].get("shape")
            if shape and len(shape) >= 2:
                return int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
    except Exception:
        return None
    return None


_CHAIN_ERRORS = ("page offset", "offset to page", "corrupted", "truncat")


def _raise_logged(path: Path, tlog: _TiffLog) -> None:
    bad = [m for m in tlog.errors if any(k in m for k in _CHAIN_ERRORS)]
    if bad:
        raise MovieReadError(f"{path}: truncated or corrupt TIFF ({bad[0]})")


def _series_index(path: Path, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> _TiffIndex:
    """The first series' frame layout (leading axes flattened into time), nothing located yet.

    Refuses RGB(A) and non-image series, and a file holding fewer frames than its own
    metadata promises (a truncated ImageJ/shaped file still parses, just shorter).
    """
    shape = tuple(series.shape)
    axes = series.axes
    if axes.endswith("S") and shape[-1] in (3, 4):
        raise MovieReadError(
            f"{path}: RGB(A) TIFF (axes {axes!r}, shape {shape}) is not a grayscale movie"
        )
    if len(shape) < 2:
        raise MovieReadError(f"{path}: TIFF series of shape {shape} is not an image")
    frame_shape = (int(shape[-2]), int(shape[-1]))
    n_frames = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
    dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
    expected = _expected_frames(tif)
    if expected is not None and expected > n_frames and len(tif.series) == 1:
        raise MovieReadError(
            f"{path}: truncated TIFF, its metadata promises {expected} frames "
            f"but only {n_frames} are present"
        )
    return _TiffIndex(path, n_frames, frame_shape, dtype)


def _locate_contiguous(idx: _TiffIndex, dataoffset: int, size: int) -> _TiffIndex:
    """Frame i at ``dataoffset + i * frame_nbytes``: only the end of the data is checked."""
    idx.offset = int(dataoffset)
    end = idx.offset + idx.n_frames * idx.frame_nbytes
    if end > size:
        raise MovieReadError(
            f"{idx.path}: truncated TIFF, image data should end at byte {end} "
            f"but the file has {size} bytes"
        )
    return idx


def _page_offsets(
    idx: _TiffIndex, series: tifffile.TiffPageSeries, size: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(data offsets, IFD offsets) of a series' pages, one set None; each page must hold one frame.

    Data offsets when every page is uncompressed and contiguous (read directly), else the IFD
    offsets (each page decoded by tifffile). A page whose data runs past the end of the file
    is refused here, not when read.
    """
    path, n_frames, frame_shape = idx.path, idx.n_frames, idx.frame_shape
    pages = series.pages
    if len(pages) != n_frames:
        raise MovieReadError(
            f"{path}: {len(pages)} TIFF pages for {n_frames} frames of shape {tuple(series.shape)}; "
            "each page must hold one frame"
        )
    ifds = np.empty(n_frames, dtype=np.int64)
    data = np.empty(n_frames, dtype=np.int64)
    plain = True
    for i, page in enumerate(pages):
        if page is None:
            raise MovieReadError(f"{path}: TIFF page {i} is missing or corrupt")
        ifds[i] = page.offset
        if tuple(page.shape[-2:]) != frame_shape:
            raise MovieReadError(
                f"{path}: page {i} has shape {page.shape}, expected {frame_shape}"
            )
        offs, counts = page.dataoffsets, page.databytecounts
        if len(offs) == 0:
            raise MovieReadError(f"{path}: TIFF page {i} has no image data")
        end = max(o + c for o, c in zip(offs, counts, strict=False))
        if end > size:
            raise MovieReadError(
                f"{path}: truncated TIFF, page {i} data end at byte {end} "
                f"but the file has {size} bytes"
            )
        if plain and page.is_contiguous and page.is_final:
            data[i] = offs[0]
        else:
            plain = False
    return (data, None) if plain else (None, ifds)


def _index_file(path: Path) -> _TiffIndex:
    """Index one file: its frame layout, then where each frame lies (see the module docstring)."""
    size = path.stat().st_size
    try:
        with _TiffLog() as tlog, tifffile.TiffFile(path) as tif:
            if not (tif.is_shaped or tif.is_imagej):
                # no metadata promising a frame count: walk the IFD chain (tifffile
                # does so for such files anyway) so that a break in it is noticed
                len(tif.pages)
            if not tif.series:
                raise MovieReadError(f"{path}: TIFF has no image data")
            series = tif.series[0]
            _raise_logged(path, tlog)
            idx = _series_index(path, tif, series)
            dataoffset = series.dataoffset
            if dataoffset is not None:
                return _locate_contiguous(idx, dataoffset, size)
            page_offsets, ifd_offsets = _page_offsets(idx, series, size)
            _raise_logged(path, tlog)
            idx.page_offsets, idx.ifd_offsets = page_offsets, ifd_offsets
            return idx
    except MovieReadError:
        raise
    except Exception as e:  # tifffile raises many kinds on corrupt files
        raise MovieReadError(f"{path}: cannot read as TIFF ({type(e).__name__}: {e})") from e


class LazyTiff(LazyArray):
    """One TIFF movie, or several TIFF files concatenated in time, read page by page.

    Frames are ``(y, x)``; all leading axes of the first series (T, Z, C, ...) are
    flattened into the time axis, so an ImageJ hyperstack becomes (T*Z*C, y, x). A
    single 2-D image is a 1-frame movie.
    """

    def __init__(self, path_or_paths: str | os.PathLike | Sequence[str | os.PathLike]) -> None:
        super().__init__()
        if isinstance(path_or_paths, (str, os.PathLike)):
            paths = [path_or_paths]
        else:
            paths = list(path_or_paths)
        if not paths:
            raise MovieReadError("LazyTiff: no files given")
        self.paths = [check_file(p) for p in paths]
        self._files = [_index_file(p) for p in self.paths]
        first = self._files[0]
        for f in self._files[1:]:
            if f.frame_shape != first.frame_shape:
                raise MovieReadError(
                    f"{f.path}: frame shape {f.frame_shape} differs from {first.frame_shape} "
                    f"of {first.path}; files must match to be concatenated"
                )
        dtypes = {np.dtype(f.dtype).newbyteorder("=") for f in self._files}
        self._dtype = np.result_type(*dtypes) if len(dtypes) > 1 else dtypes.pop()
        counts = np.array([f.n_frames for f in self._files], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._shape = (int(self._starts[-1]), *first.frame_shape)

    @property
    def path(self) -> Path:
        """The first file."""
        return self.paths[0]

    def _describe(self) -> str:
        if len(self.paths) == 1:
            return f"path={str(self.paths[0])!r}"
        return f"files={len(self.paths)}, first={str(self.paths[0])!r}"

    def _read_frames(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self._shape[1:]), dtype=self._dtype)
        which = np.searchsorted(self._starts, indices, side="right") - 1
        for fi in np.unique(which):
            sel = np.flatnonzero(which == fi)
            local = indices[sel] - self._starts[fi]
            out[sel] = self._read_file(self._files[fi], local)
        return out

    def _read_file(self, f: _TiffIndex, local: np.ndarray) -> np.ndarray:
        """Read sorted unique local frame indices of one file."""
        try:
            if f.offset is not None or f.page_offsets is not None:
                return self._read_raw(f, local)
            return self._read_pages(f, local)
        except MovieReadError:
            raise
        except Exception as e:
            raise MovieReadError(
                f"{f.path}: failed to read frames ({type(e).__name__}: {e})"
            ) from e

    @staticmethod
    def _read_raw(f: _TiffIndex, local: np.ndarray) -> np.ndarray:
        out = np.empty((len(local), *f.frame_shape), dtype=f.dtype)
        count = int(np.prod(f.frame_shape))
        nb = f.frame_nbytes
        if f.offset is not None:
            # group runs of consecutive frames into single reads
            breaks = np.flatnonzero(np.diff(local) != 1) + 1
            runs = np.split(np.arange(len(local)), breaks)
        else:
            runs = [np.array([i]) for i in range(len(local))]
        with open(f.path, "rb") as fh:
            for run in runs:
                first = int(local[run[0]])
                if f.offset is not None:
                    fh.seek(f.offset + first * nb)
                else:
                    fh.seek(int(f.page_offsets[first]))
                n = len(run)
                buf = np.fromfile(fh, dtype=f.dtype, count=count * n)
                if buf.size != count * n:
                    raise MovieReadError(
                        f"{f.path}: truncated TIFF, could not read frame {first + buf.size // count}"
                    )
                out[run[0] : run[0] + n] = buf.reshape(n, *f.frame_shape)
        return out

    @staticmethod
    def _read_pages(f: _TiffIndex, local: np.ndarray) -> np.ndarray:
        out = np.empty((len(local), *f.frame_shape), dtype=f.dtype)
        with _TiffLog(), tifffile.TiffFile(f.path) as tif:
            fh = tif.filehandle
            for j, i in enumerate(local):
                # build the page straight from its cached IFD offset: no walk of the chain
                fh.seek(int(f.ifd_offsets[i]))
                page = tifffile.TiffPage(tif, index=int(i))
                out[j] = page.asarray().reshape(f.frame_shape)
        return out
