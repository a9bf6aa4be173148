"""CaImAn-compatible ``.mmap`` files, written and read without importing CaImAn.

A CaImAn memmap is raw little-endian float32 with no header; everything about its
shape lives in the file name::

    {base}_d1_{d1}_d2_{d2}_d3_{d3}_order_{C|F}_frames_{T}.mmap

The logical array is ``Yr`` of shape ``(P, T)`` with ``P = d1 * d2 * d3`` and pixel
index ``p = row + col * d1 + z * d1 * d2`` (Fortran order of the frame).

* order ``F``: frame after frame (what motion correction writes);
  ``np.fromfile(f, '<f4').reshape(T, d2, d1).transpose(0, 2, 1)`` is ``[t, row, col]``.
* order ``C``: each pixel's time series is contiguous (what CNMF needs);
  ``reshape(d2, d1, T).transpose(2, 1, 0)`` is ``[t, row, col]``.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from ..errors import DiskSpaceError

__all__ = [
    "MemmapInfo",
    "MemmapWriter",
    "load_memmap",
    "require_free_space",
    "memmap_name",
    "parse_memmap_name",
    "save_memmap",
]

DTYPE = np.dtype("<f4")

# CaImAn splits the stem on "_" and reads the fields from the end, so we anchor at
# the end too: a base may itself contain "_d1_" etc. (e.g. nested motion-corrected
# files) without confusing the parser.
_NAME_RE = re.compile(
    r"_d1_(?P<d1>\d+)_d2_(?P<d2>\d+)_d3_(?P<d3>\d+)_order_(?P<order>[CF])_frames_(?P<T>\d+)$"
)


@dataclass(frozen=True)
class MemmapInfo:
    """Shape information encoded in a CaImAn memmap file name."""

    dims: tuple[int, int, int]
    order: str
    n_frames: int

    @property
    def n_pixels(self) -> int:
        """Number of pixels per frame, ``d1 * d2 * d3``."""
        d1, d2, d3 = self.dims
        return d1 * d2 * d3

    @property
    def nbytes(self) -> int:
        """Expected file size in bytes."""
        return self.n_pixels * self.n_frames * DTYPE.itemsize


def _check_order(order: str) -> str:
    order = str(order).upper()
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', got {order!r}")
    return order


def _dims3(dims: tuple[int, ...]) -> tuple[int, int, int]:
    dims = tuple(int(d) for d in dims)
    if len(dims) == 2:
        dims = (*dims, 1)
    if len(dims) != 3 or any(d <= 0 for d in dims):
        raise ValueError(
            f"dims must be (rows, cols) or (rows, cols, z) of positive ints, got {dims}"
        )
    return dims  # type: ignore[return-value]


def memmap_name(base: str, dims: tuple[int, ...], n_frames: int, order: str) -> str:
    """Return CaImAn's file name for a memmap with these dims, frame count and order."""
    d1, d2, d3 = _dims3(dims)
    order = _check_order(order)
    return f"{base}_d1_{d1}_d2_{d2}_d3_{d3}_order_{order}_frames_{int(n_frames)}.mmap"


def parse_memmap_name(path: str | os.PathLike) -> MemmapInfo:
    """Parse dims, order and frame count from the end of a CaImAn memmap file name."""
    name = Path(path).name
    stem = name[: -len(".mmap")] if name.endswith(".mmap") else Path(name).stem
    m = _NAME_RE.search(stem)
    if m is None:
        raise ValueError(
            f"{name!r} is not a CaImAn memmap name: expected it to end in "
            "'_d1_<rows>_d2_<cols>_d3_<z>_order_<C|F>_frames_<T>.mmap'"
        )
    dims = (int(m["d1"]), int(m["d2"]), int(m["d3"]))
    if min(dims) <= 0:
        raise ValueError(f"{name!r}: memmap dims must be positive, got {dims}")
    return MemmapInfo(dims=dims, order=m["order"], n_frames=int(m["T"]))


def _frames_to_fortran_pixels(frames: np.ndarray, dims: tuple[int, int, int]) -> np.ndarray:
    """(n, d1, d2[, d3]) -> (n, P) float32 with pixels in Fortran order."""
    d1, d2, d3 = dims
    frames = np.asarray(frames)
    if frames.ndim == 2 or (frames.ndim == 3 and d3 > 1 and frames.shape == (d1, d2, d3)):
        frames = frames[None]
    expected = (d1, d2) if d3 == 1 else (d1, d2, d3)
    if frames.shape[1:] == (d1, d2, 1):
        frames = frames[..., 0]
    if frames.shape[1:] != expected:
        raise ValueError(f"frames have shape {frames.shape[1:]}, expected {expected}")
    n = frames.shape[0]
    # reversing the spatial axes and taking C order == Fortran order of each frame
    axes = (0, *range(frames.ndim - 1, 0, -1))
    return np.ascontiguousarray(frames.transpose(axes), dtype=DTYPE).reshape(n, d1 * d2 * d3)


def require_free_space(directory: str | os.PathLike, n_bytes: int, what: str) -> None:
    """Refuse at once where ``n_bytes`` will not fit in ``directory``: a memory-mapped write
    into a full disk kills the process (SIGBUS) mid-run, perhaps an hour after it started."""
    free = shutil.disk_usage(directory).free
    if n_bytes > free:
        raise _disk_error(what, n_bytes, directory, f"which has {free / 2**30:.1f} GiB free")


def _disk_error(what: str, n_bytes: int, directory: str | os.PathLike, why: str) -> DiskSpaceError:
    return DiskSpaceError(f"{what} needs {n_bytes / 2**30:.1f} GiB in {directory}, {why}: "
                          "free space there or keep the batch on a larger disk")


def reserve(path: str | os.PathLike, n_bytes: int, what: str) -> None:
    """Make the file at ``path`` (created if absent) ``n_bytes`` long with its blocks allocated
    now; data already in it stay. Where the disk cannot hold it, the file is left as it was
    (removed if this created it), so a refused run leaves no half-reserved file behind.

    Memory-mapped writes into a sparse file allocate its blocks page by page as they come, and
    a disk filled meanwhile by anything else kills the writer with SIGBUS; reserved, the file
    fails here with a clear error or not at all. It is faster too: scattering 2,000 frames into
    a 256x256 C-order memmap took 2.2-3.3 s into a sparse file, 1.0 s into reserved blocks
    (ext4). A file system that cannot reserve gets a sparse file, as before."""
    existed = os.path.exists(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    size = os.fstat(fd).st_size
    try:
        try:
            os.posix_fallocate(fd, 0, int(n_bytes))
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                os.ftruncate(fd, size)  # frees what the failed call allocated past the old end
                os.close(fd)
                fd = -1
                if not existed:
                    os.unlink(path)
                raise _disk_error(what, n_bytes, Path(path).parent,
                                  "which could not be reserved (the disk or quota is full)") from e
            # any other error: this file system cannot reserve, so a sparse file, as before
        if os.fstat(fd).st_size != n_bytes:
            os.ftruncate(fd, int(n_bytes))
    finally:
        if fd >= 0:
            os.close(fd)


class MemmapWriter:
    """Streaming writer of a CaImAn memmap.

    The final name contains the frame count, which a streaming writer only knows at
    the end, so data go to a temporary file in ``directory`` that is renamed on
    :meth:`close`. Order ``F`` appends frame after frame; order ``C`` (pixel time
    series contiguous) needs ``n_frames`` up front because each frame is scattered
    over the whole file. If the ``with`` block raises, the temporary file is removed.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        base: str,
        dims: tuple[int, ...],
        order: str = "F",
        n_frames: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.base = str(base)
        self.dims = _dims3(dims)
        self.order = _check_order(order)
        if self.order == "C" and n_frames is None:
            raise ValueError("order 'C' memmaps need n_frames up front")
        self.n_frames_expected = None if n_frames is None else int(n_frames)
        self.n_written = 0
        self._path: Path | None = None
        self._closed = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._tmp = self.directory / f".{self.base}.{uuid.uuid4().hex}.mmap.partial"
        n_pixels = self.dims[0] * self.dims[1] * self.dims[2]
        self._n_pixels = n_pixels
        if self.order == "F":
            self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()
        else:
            self._fh = None
            require_free_space(self.directory, n_pixels * self.n_frames_expected * DTYPE.itemsize,
                               f"the C-order memmap of {self.n_frames_expected} frames")
            # allocate the whole (P, T) file; frames are scattered into it
            reserve(self._tmp, n_pixels * self.n_frames_expected * DTYPE.itemsize,
                    f"the C-order memmap of {self.n_frames_expected} frames")

    @property
    def path(self) -> Path:
        """Final CaImAn-named path (available after :meth:`close`)."""
        if self._path is None:
            raise RuntimeError("the memmap's final path is known only after close()")
        return self._path

    def write(self, frames: np.ndarray) -> None:
        """Append frames shaped (t, rows, cols[, z]) or a single frame (rows, cols[, z])."""
        if self._closed:
            raise ValueError("write to a closed MemmapWriter")
        if self.order == "C" and self.dims[2] == 1:
            arr = np.asarray(frames)
            arr = arr[None] if arr.ndim == 2 else arr
            if arr.ndim == 3 and arr.shape[1:] == self.dims[:2]:
                self._scatter(arr)
                return
        data = _frames_to_fortran_pixels(frames, self.dims)
        n = data.shape[0]
        if n == 0:
            return
        if self.order == "F":
            data.tofile(self._fh)
        else:
            t0 = self._start_of(n)
            mm = np.memmap(
                self._tmp, dtype=DTYPE, mode="r+", shape=(self._n_pixels, self.n_frames_expected)
            )
            try:
                # no flush per chunk: the pages are the file's (readers see them at once) and the
                # kernel writes them back; a synchronous msync of every chunk took 9 of the 20 s
                # that writing a 5,000-frame 256x256 movie took (the 'F' order does not sync either)
                mm[:, t0 : t0 + n] = data.T
            finally:
                del mm
        self.n_written += n

    def _start_of(self, n: int) -> int:
        """The frame where ``n`` more frames go in a C-order file, refused past its end."""
        t0 = self.n_written
        if t0 + n > self.n_frames_expected:
            raise ValueError(f"writing {n} frames at {t0} exceeds n_frames={self.n_frames_expected}")
        return t0

    def _scatter(self, frames: np.ndarray) -> None:
        """C order, 2-D frames (n, d1, d2): one cache-blocked transpose (OpenCV's: 3-4x faster than
        numpy's strided copy, which took most of the write) to pixel series in C pixel order, then
        one ``pwrite`` per series at its Fortran-order row of the reserved file (the page faults
        of a mapped write of a few frames in every page cost twice as much)."""
        n = len(frames)
        if n == 0:
            return
        t0 = self._start_of(n)
        d1, d2, _ = self.dims
        series = cv2.transpose(np.ascontiguousarray(frames.reshape(n, d1 * d2), DTYPE))  # (d1*d2, n)
        raw = memoryview(series).cast("B")
        size, stride = n * DTYPE.itemsize, self.n_frames_expected * DTYPE.itemsize
        fd = os.open(self._tmp, os.O_RDWR)
        try:
            # one write per pixel, in the file's order (pixel c*d1 + r is series row r*d2 + c)
            for c in range(d2):
                for r in range(d1):
                    at = (r * d2 + c) * size
                    if os.pwrite(fd, raw[at : at + size], (c * d1 + r) * stride + t0 * DTYPE.itemsize) != size:
                        raise OSError(errno.EIO, f"short write into {self._tmp}")
        finally:
            os.close(fd)
        self.n_written += n

    def write_pixel_frames(self, parts: Iterable[np.ndarray], n: int) -> None:
        """C order: the next ``n`` 2-D frames, given as consecutive (k, P) blocks with each frame's
        pixels in Fortran order (an order-F memmap's layout). Each block is transposed straight
        into its columns of the mapped file, whose pixel series are then in order: no buffer of
        the chunk, and each page of the file is touched in memory once (a series buffer and a
        write of it touched two pages per page: 0.2-0.8 s against 0.1-0.5 s for 1,000 frames of
        256x256 here). ``parts`` may be a generator that reuses one block buffer."""
        if self._closed:
            raise ValueError("write to a closed MemmapWriter")
        if self.order != "C" or self.dims[2] != 1:
            raise ValueError("write_pixel_frames writes 2-D C-order memmaps")
        t0 = self._start_of(n)
        mm = np.memmap(self._tmp, dtype=DTYPE, mode="r+", shape=(self._n_pixels, self.n_frames_expected))
        filled = 0
        try:
            for block in parts:
                k = len(block)
                if block.shape[1:] != (self._n_pixels,) or filled + k > n:
                    raise ValueError(f"write_pixel_frames takes {n} frames as (k, {self._n_pixels}) blocks; "
                                     f"got {block.shape} after {filled}")
                if k:
                    # OpenCV transposes into the column slice in place (each row of it is contiguous)
                    cv2.transpose(np.ascontiguousarray(block, DTYPE), dst=mm[:, t0 + filled : t0 + filled + k])
                filled += k
        finally:
            del mm  # unmapped now; no msync (see write)
        if filled != n:
            raise ValueError(f"write_pixel_frames was promised {n} frames and given {filled}")
        self.n_written += n

    def close(self) -> Path:
        """Finish the file and rename it to its final CaImAn name; return that path."""
        if self._closed:
            return self.path
        self._closed = True
        if self._fh is not None:
            self._fh.close()
        if self.n_frames_expected is not None and self.n_written != self.n_frames_expected:
            self._tmp.unlink(missing_ok=True)
            raise ValueError(
                f"wrote {self.n_written} frames but n_frames={self.n_frames_expected} was declared"
            )
        final = self.directory / memmap_name(self.base, self.dims, self.n_written, self.order)
        os.replace(self._tmp, final)
        self._path = final
        return final

    def abort(self) -> None:
        """Discard the partial file."""
        self._closed = True
        if self._fh is not None:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> MemmapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


def save_memmap(
    array_tyx: np.ndarray,
    directory: str | os.PathLike,
    base: str,
    order: str = "F",
    *,
    add: float = 0.0,
    chunk_frames: int = 256,
) -> Path:
    """Write a (t, rows, cols[, z]) array as a CaImAn memmap and return its path.

    ``add`` is added to every value; CaImAn's own ``save_memmap(order='C')`` adds
    1e-4, pass that to reproduce its values exactly.
    """
    arr = array_tyx
    if np.ndim(arr) < 3:
        raise ValueError(f"expected a (t, rows, cols[, z]) movie, got shape {np.shape(arr)}")
    n = len(arr)
    dims = tuple(arr.shape[1:])
    with MemmapWriter(directory, base, dims, order=order, n_frames=n) as w:
        for start in range(0, n, chunk_frames):
            chunk = np.asarray(arr[start : start + chunk_frames], dtype=DTYPE)
            if add:
                chunk = chunk + np.float32(add)
            w.write(chunk)
    return w.path


def load_memmap(path: str | os.PathLike, mode: str = "r") -> tuple[np.memmap, tuple[int, ...], int]:
    """Open a CaImAn memmap like ``caiman.load_memmap``: ``(Yr, dims, T)``, Yr is (P, T).

    ``dims`` is ``(d1, d2)`` when d3 == 1, else ``(d1, d2, d3)``, as in CaImAn.
    """
    info = parse_memmap_name(path)
    size = os.path.getsize(path)
    if size != info.nbytes:
        raise ValueError(
            f"{Path(path).name}: file has {size} bytes, its name implies {info.nbytes} "
            "(truncated or misnamed)"
        )
    Yr = np.memmap(
        path, mode=mode, shape=(info.n_pixels, info.n_frames), dtype=DTYPE, order=info.order
    )
    d1, d2, d3 = info.dims
    dims = (d1, d2) if d3 == 1 else (d1, d2, d3)
    return Yr, dims, info.n_frames
