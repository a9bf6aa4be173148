"""Lazy movie readers compared with the in-memory arrays they were written from."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import psutil
import pytest
import tifffile

from mesmerize_widgets.arrays import (
    LazyArray,
    LazyConcat,
    LazyHDF5,
    LazyMemmap,
    LazyNpy,
    LazyTiff,
    LazyVideo,
    MovieReadError,
    natural_sort_key,
    open_movie,
)
from mesmerize_widgets.formats.memmap import save_memmap

T, Y, X = 50, 32, 40

KEYS = [
    0,
    7,
    -1,
    -T,
    np.int64(3),
    slice(None),
    slice(3, 20),
    slice(None, None, 3),
    slice(5, 45, 7),
    slice(40, 5, -4),
    slice(None, None, -1),
    slice(48, 100),
    slice(10, 10),
    [3, 1, 3, 49],
    np.array([-1, 0, 10]),
    [],
    np.arange(T) % 3 == 0,
    (slice(2, 9), slice(5, 20), 3),
    (4, slice(None, None, 2)),
    (4, 5, 6),
    (-2, slice(None), [0, 39]),
    ([1, 5], [2, 3]),
    ([1, 5], slice(None), [2, 3]),
    (slice(10, 12), [0, 31], slice(None)),
    (Ellipsis, 5),
    (slice(0, 30, 4), Ellipsis),
    (slice(None, None, -3), -1, slice(3, -3)),
    np.array([[0, 1], [2, 49]]),
]


def check_all(lazy: LazyArray, ref: np.ndarray, atol: float = 0) -> None:
    """Every index form gives numpy's result on the reference array."""
    assert lazy.shape == ref.shape
    assert lazy.ndim == ref.ndim == 3
    assert len(lazy) == lazy.n_frames == ref.shape[0]
    assert lazy.size == ref.size
    assert lazy.dtype == ref.dtype
    for key in KEYS:
        got, want = lazy[key], ref[key]
        assert isinstance(got, (np.ndarray, np.generic)), key
        assert got.shape == want.shape, (key, got.shape, want.shape)
        assert got.dtype == want.dtype, key
        if atol:
            np.testing.assert_allclose(
                got.astype(float), want.astype(float), atol=atol, err_msg=str(key)
            )
        else:
            np.testing.assert_array_equal(got, want, err_msg=str(key))
    for bad in (T, -T - 1, [0, T], np.array([-T - 1])):
        with pytest.raises(IndexError, match="out of range"):
            lazy[bad]


def open_files_under(root: Path) -> list[str]:
    proc = psutil.Process()
    paths = [f.path for f in proc.open_files()]
    try:
        paths += [m.path for m in proc.memory_maps()]
    except (psutil.AccessDenied, NotImplementedError):
        pass
    root = str(root.resolve())
    return [p for p in paths if p.startswith(root)]


@pytest.fixture(scope="module")
def movie() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, (T, Y, X), dtype=np.uint16)


@pytest.fixture(scope="module")
def fmovie(movie) -> np.ndarray:
    return (movie.astype(np.float32) / 7).astype(np.float32)


@pytest.fixture(scope="module")
def vmovie() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (T, Y, X), dtype=np.uint8)


def smooth_movie(n: int = T) -> np.ndarray:
    """Smooth content that lossy codecs keep close to the original."""
    yy, xx = np.mgrid[0:Y, 0:X]
    frames = [128 + 90 * np.sin(xx / 6 + t / 4) * np.cos(yy / 7 - t / 9) for t in range(n)]
    return np.clip(frames, 0, 255).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, fourcc: str) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 20.0, (X, Y), isColor=False)
    assert w.isOpened(), fourcc
    for f in frames:
        w.write(f)
    w.release()


def decode_all(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    cap.release()
    return np.array(out)


# -- TIFF ----------------------------------------------------------------------

TIFF_KINDS = {
    "shaped": {},
    "bigtiff": {"bigtiff": True},
    "imagej": {"imagej": True},
    "ome": {"ome": True},
    "generic": {"metadata": None},
    "zlib": {"compression": "zlib"},
    "zlib_bigtiff": {"compression": "zlib", "bigtiff": True},
}


@pytest.mark.parametrize("kind", list(TIFF_KINDS))
def test_tiff_kinds(tmp_path, movie, kind):
    path = tmp_path / f"{kind}.tif"
    tifffile.imwrite(path, movie, **TIFF_KINDS[kind])
    lazy = open_movie(path)
    assert isinstance(lazy, LazyTiff)
    check_all(lazy, movie)
    f = lazy._files[0]
    if kind.startswith("zlib"):
        assert f.ifd_offsets is not None and f.offset is None
    else:
        assert f.offset is not None or f.page_offsets is not None
    assert "LazyTiff" in repr(lazy) and str(path) in repr(lazy)


def test_tiff_big_endian_and_float(tmp_path, fmovie):
    path = tmp_path / "be.tif"
    tifffile.imwrite(path, fmovie, byteorder=">")
    lazy = LazyTiff(path)
    assert lazy.dtype == np.float32 and lazy.dtype.isnative
    check_all(lazy, fmovie)


def test_tiff_noncontiguous_pages(tmp_path, movie):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as w:
        for frame in movie:
            w.write(frame, contiguous=False, metadata=None)
    lazy = LazyTiff(path)
    check_all(lazy, movie)


def test_tiff_imagej_hyperstack(tmp_path, movie):
    hyper = movie.reshape(25, 2, Y, X)  # T, Z
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, hyper, imagej=True, metadata={"axes": "TZYX"})
    lazy = LazyTiff(path)
    assert lazy.shape == (T, Y, X)  # leading axes flattened into time
    np.testing.assert_array_equal(lazy[::3], movie[::3])


def test_compressed_tiff_reads_page_by_page(tmp_path, movie, monkeypatch):
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, movie, compression="zlib")
    lazy = LazyTiff(path)
    calls = []
    orig = tifffile.TiffPage.asarray

    def spy(self, *a, **k):
        calls.append(self.index)
        return orig(self, *a, **k)

    monkeypatch.setattr(tifffile.TiffPage, "asarray", spy)
    np.testing.assert_array_equal(lazy[33], movie[33])
    np.testing.assert_array_equal(lazy[[40, 2]], movie[[40, 2]])
    assert calls == [33, 2, 40]


def test_tiff_multifile_and_glob(tmp_path, movie):
    parts = [movie[:10], movie[10:35], movie[35:]]
    paths = []
    for i, p in enumerate(parts):
        paths.append(tmp_path / f"part_{i}.tif")
        tifffile.imwrite(paths[-1], p, compression="zlib" if i == 1 else None)
    for arg in (paths, tuple(map(str, paths)), str(tmp_path / "part_*.tif"), tmp_path):
        lazy = open_movie(arg)
        assert isinstance(lazy, LazyTiff)
        check_all(lazy, movie)


def test_tiff_2d_image(tmp_path, movie):
    path = tmp_path / "img.tiff"
    tifffile.imwrite(path, movie[0])
    lazy = open_movie(path)
    assert lazy.shape == (1, Y, X)
    np.testing.assert_array_equal(lazy[0], movie[0])


@pytest.mark.parametrize("kind", ["shaped", "generic", "zlib", "imagej", "ome", "bigtiff"])
def test_tiff_truncated(tmp_path, movie, kind):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, movie, **TIFF_KINDS[kind])
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(MovieReadError, match="t.tif"):
        lazy = open_movie(path)
        lazy[:]


def test_tiff_truncated_after_open(tmp_path, movie):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, movie)
    lazy = LazyTiff(path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(MovieReadError, match="truncated"):
        lazy[-1]


def test_tiff_corrupt(tmp_path):
    path = tmp_path / "junk.tif"
    path.write_bytes(b"this is not a tiff file at all" * 10)
    with pytest.raises(MovieReadError, match="junk.tif"):
        open_movie(path)


def test_large_tiff_open_fast_and_frame_read_small(tmp_path):
    n, y, x = 400, 512, 512  # ~200 MB uint16
    path = tmp_path / "large.tif"
    frame = np.arange(y * x, dtype=np.uint16).reshape(y, x)
    with tifffile.TiffWriter(path, bigtiff=True) as w:
        w.write(shape=(n, y, x), dtype=np.uint16)  # contiguous, written empty
    assert path.stat().st_size > 200e6
    with tifffile.TiffFile(path) as tif:
        off = tif.series[0].dataoffset
    with open(path, "r+b") as f:
        f.seek(off + 321 * y * x * 2)
        f.write(frame.tobytes())
    t0 = time.perf_counter()
    lazy = open_movie(path)
    assert time.perf_counter() - t0 < 1.0
    assert lazy.shape == (n, y, x)
    proc = psutil.Process()
    io = proc.io_counters()
    if not hasattr(io, "read_chars"):
        pytest.skip("no read_chars counter on this platform")
    before = io.read_chars
    got = lazy[321]
    read = proc.io_counters().read_chars - before
    np.testing.assert_array_equal(got, frame)
    assert read < 4 * y * x * 2, read  # about one frame, not the file


# -- memmap --------------------------------------------------------------------


@pytest.mark.parametrize("order", ["F", "C"])
def test_memmap(tmp_path, fmovie, order):
    path = save_memmap(fmovie, tmp_path, "mov", order=order)
    lazy = open_movie(path)
    assert isinstance(lazy, LazyMemmap) and lazy.order == order
    check_all(lazy, fmovie)  # bit-exact
    raw = np.fromfile(path, dtype="<f4")
    if order == "F":
        layout = raw.reshape(T, X, Y).transpose(0, 2, 1)
    else:
        layout = raw.reshape(X, Y, T).transpose(2, 1, 0)
    np.testing.assert_array_equal(layout, lazy[:])


@pytest.mark.parametrize("order", ["F", "C"])
def test_memmap_3d(tmp_path, order):
    rng = np.random.default_rng(5)
    mov = rng.random((9, 6, 5, 3)).astype(np.float32)
    path = save_memmap(mov, tmp_path, "vol", order=order)
    lazy = LazyMemmap(path)
    assert lazy.shape == (9, 6, 5, 3)
    np.testing.assert_array_equal(lazy[2:7:2], mov[2:7:2])
    np.testing.assert_array_equal(lazy[[8, 0], 1], mov[[8, 0], 1])


def test_memmap_truncated_and_misnamed(tmp_path, fmovie):
    path = save_memmap(fmovie, tmp_path, "mov", order="F")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 4)
    with pytest.raises(MovieReadError, match="truncated"):
        open_movie(path)
    bad = tmp_path / "no_dims.mmap"
    bad.write_bytes(b"\0" * 16)
    with pytest.raises(MovieReadError, match="no_dims.mmap"):
        open_movie(bad)


# -- HDF5 / npy ----------------------------------------------------------------


def test_hdf5(tmp_path, movie, fmovie):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f["mov"] = movie
        f["other"] = np.zeros(3)
    check_all(open_movie(path, var_name_hdf5="mov"), movie)
    check_all(LazyHDF5(path), movie)
    path2 = tmp_path / "n.hdf5"
    with h5py.File(path2, "w") as f:
        f.create_dataset("grp/data", data=fmovie, chunks=(5, Y, X), compression="gzip")
    lazy = open_movie(path2)  # the only 3-D dataset
    assert lazy.dataset == "grp/data"
    check_all(lazy, fmovie)
    with pytest.raises(MovieReadError, match="nope"):
        LazyHDF5(path, dataset="nope")
    path3 = tmp_path / "two.h5"
    with h5py.File(path3, "w") as f:
        f["a"] = movie
        f["b"] = movie
    with pytest.raises(MovieReadError, match="exactly one"):
        open_movie(path3)


@pytest.mark.parametrize("small_bytes", [0, 2**30])
def test_npy(tmp_path, movie, small_bytes):
    path = tmp_path / "m.npy"
    np.save(path, movie)
    lazy = LazyNpy(path, small_bytes=small_bytes)
    check_all(lazy, movie)
    np.save(tmp_path / "f.npy", np.asfortranarray(movie))
    check_all(LazyNpy(tmp_path / "f.npy", small_bytes=small_bytes), movie)


def test_npy_2d(tmp_path, movie):
    np.save(tmp_path / "img.npy", movie[3])
    lazy = open_movie(tmp_path / "img.npy")
    assert lazy.shape == (1, Y, X)
    np.testing.assert_array_equal(lazy[0], movie[3])


# -- video ---------------------------------------------------------------------


@pytest.mark.parametrize("fourcc,ext", [("FFV1", ".avi"), ("GREY", ".avi")])
def test_video_lossless(tmp_path, vmovie, fourcc, ext):
    path = tmp_path / f"v{ext}"
    write_video(path, vmovie, fourcc)
    lazy = open_movie(path)
    assert isinstance(lazy, LazyVideo) and lazy.seek_exact
    check_all(lazy, vmovie)


@pytest.mark.parametrize("fourcc,ext", [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_video_lossy(tmp_path, fourcc, ext):
    ref = smooth_movie()
    path = tmp_path / f"v{ext}"
    write_video(path, ref, fourcc)
    lazy = open_movie(path)
    assert lazy.shape == ref.shape
    # random access must give exactly what sequential decoding gives ...
    check_all(lazy, decode_all(path))
    # ... which is close to what was written
    np.testing.assert_allclose(lazy[::5].astype(float), ref[::5].astype(float), atol=40)
    assert np.abs(lazy[:].astype(float) - ref).mean() < 5


def test_video_sequential_fallback(tmp_path, vmovie):
    path = tmp_path / "v.avi"
    write_video(path, vmovie, "FFV1")
    lazy = LazyVideo(path)
    lazy.seek_exact = False  # as if the codec's seeks were not frame-exact
    check_all(lazy, vmovie)
    lazy.close()
    assert not open_files_under(tmp_path)


def test_video_multifile_natural_order(tmp_path, vmovie):
    d = tmp_path / "miniscope"
    d.mkdir()
    bounds = [0, 10, 20, 35, T]
    names = ["0.avi", "2.avi", "10.avi", "11.avi"]  # lexical order would put 10 before 2
    for name, a, b in zip(names, bounds[:-1], bounds[1:], strict=True):
        write_video(d / name, vmovie[a:b], "FFV1")
    (d / "notes.txt").write_text("not a movie")
    lazy = open_movie(d)
    assert isinstance(lazy, LazyConcat)
    assert [Path(p).name for p in lazy.paths] == names
    check_all(lazy, vmovie)
    lazy2 = open_movie(str(d / "*.avi"))
    np.testing.assert_array_equal(lazy2[::7], vmovie[::7])


def test_video_corrupt(tmp_path):
    path = tmp_path / "bad.avi"
    path.write_bytes(os.urandom(2000))
    with pytest.raises(MovieReadError, match="bad.avi"):
        open_movie(path)


# -- concat, errors, base behaviour --------------------------------------------


def test_concat_mixed_and_mismatch(tmp_path, movie):
    np.save(tmp_path / "a.npy", movie[:20])
    tifffile.imwrite(tmp_path / "b.tif", movie[20:])
    lazy = open_movie([tmp_path / "a.npy", tmp_path / "b.tif"])
    check_all(lazy, movie)
    np.save(tmp_path / "c.npy", movie[:5, :10])
    with pytest.raises(MovieReadError, match="c.npy.*frame shape"):
        open_movie([tmp_path / "a.npy", tmp_path / "c.npy"])
    tifffile.imwrite(tmp_path / "d.tif", movie[:5, :, :10])
    with pytest.raises(MovieReadError, match="d.tif"):
        open_movie([tmp_path / "b.tif", tmp_path / "d.tif"])


def test_open_errors(tmp_path):
    with pytest.raises(MovieReadError, match="missing.tif.*no such"):
        open_movie(tmp_path / "missing.tif")
    (tmp_path / "x.xyz").write_text("?")
    with pytest.raises(MovieReadError, match=r"x\.xyz.*\.tif.*\.mmap.*\.avi.*\.h5.*\.npy"):
        open_movie(tmp_path / "x.xyz")
    with pytest.raises(MovieReadError, match="matches no files"):
        open_movie(str(tmp_path / "*.tif"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MovieReadError, match="no movie files"):
        open_movie(empty)
    assert issubclass(MovieReadError, ValueError)


def test_natural_sort_key():
    names = ["10.avi", "2.avi", "1.avi", "msCam11.avi", "msCam9.avi"]
    assert sorted(names, key=natural_sort_key) == [
        "1.avi",
        "2.avi",
        "10.avi",
        "msCam9.avi",
        "msCam11.avi",
    ]


class _Counting(LazyArray):
    """In-memory LazyArray that records what the base asks it to read."""

    def __init__(self, data: np.ndarray) -> None:
        super().__init__()
        self.data = data
        self._shape = data.shape
        self._dtype = data.dtype
        self.calls: list = []

    def _read_frames(self, indices):
        assert np.all(np.diff(indices) > 0)
        self.calls.append(("frames", indices.tolist()))
        return self.data[indices]

    def _read_range(self, start, stop):
        self.calls.append(("range", start, stop))
        return self.data[start:stop]


def test_base_reads_only_needed_frames(movie):
    lazy = _Counting(movie)
    check_all(lazy, movie)
    lazy.calls.clear()
    lazy[5, 3:4, 2]
    lazy[[9, 2, 9]]
    lazy[10:20:5]
    lazy[12:7:-1]
    assert lazy.calls == [
        ("range", 5, 6),
        ("frames", [2, 9]),
        ("frames", [10, 15]),
        ("range", 8, 13),
    ]


def test_base_protocol(movie):
    lazy = _Counting(movie)
    np.testing.assert_array_equal(np.asarray(lazy), movie)
    assert np.asarray(lazy, dtype=np.float32).dtype == np.float32
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":  # numpy 1 has no copy=False contract
        with pytest.raises(ValueError):
            np.array(lazy, copy=False)
    frames = list(lazy)
    assert len(frames) == T and np.array_equal(frames[4], movie[4])
    lazy.calls.clear()
    lo, hi = lazy.min(), lazy.max()
    assert movie.min() <= lo <= hi <= movie.max()
    n_calls = len(lazy.calls)
    assert (lazy.min(), lazy.max()) == (lo, hi) and len(lazy.calls) == n_calls  # cached
    with pytest.raises(IndexError, match="too many"):
        lazy[0, 0, 0, 0]
    with pytest.raises(IndexError, match="boolean"):
        lazy[np.ones(3, bool)]
    with pytest.raises(IndexError):
        lazy[1.5]
    assert repr(lazy).startswith("_Counting(shape=(50, 32, 40)")


def test_no_handles_held_and_files_deletable(tmp_path, movie, fmovie, vmovie):
    tifffile.imwrite(tmp_path / "a.tif", movie)
    tifffile.imwrite(tmp_path / "z.tif", movie, compression="zlib")
    mm_f = save_memmap(fmovie, tmp_path, "f", order="F")
    mm_c = save_memmap(fmovie, tmp_path, "c", order="C")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["mov"] = movie
    np.save(tmp_path / "a.npy", movie)
    write_video(tmp_path / "a.avi", vmovie, "FFV1")
    movies = [
        LazyTiff(tmp_path / "a.tif"),
        LazyTiff(tmp_path / "z.tif"),
        LazyMemmap(mm_f),
        LazyMemmap(mm_c),
        LazyHDF5(tmp_path / "a.h5"),
        LazyNpy(tmp_path / "a.npy", small_bytes=0),
        LazyVideo(tmp_path / "a.avi"),
    ]
    for lazy in movies:
        lazy[3]
        lazy[[1, 4, 2], 2:5]
        lazy.max()
        assert not open_files_under(tmp_path), lazy
    for lazy in movies:
        path = lazy.path
        before = lazy[7].copy()
        moved = path.with_name("moved_" + path.name)
        shutil.move(path, moved)  # rename works while the array exists
        os.remove(moved)
        assert not moved.exists()
        assert before.shape == lazy.shape[1:]
        with pytest.raises(MovieReadError, match=path.name):
            lazy[8]


def test_fastplotlib_array_protocol(tmp_path, movie):
    """isinstance check against fastplotlib's ArrayProtocol, without importing fastplotlib
    (its package import initialises wgpu)."""
    import importlib.util

    spec = importlib.util.find_spec("fastplotlib")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fastplotlib not installed")
    proto_file = Path(next(iter(spec.submodule_search_locations))) / "utils" / "protocols.py"
    pspec = importlib.util.spec_from_file_location("_fpl_protocols", proto_file)
    mod = importlib.util.module_from_spec(pspec)
    pspec.loader.exec_module(mod)
    tifffile.imwrite(tmp_path / "a.tif", movie)
    lazy = open_movie(tmp_path / "a.tif")
    assert isinstance(lazy, mod.ArrayProtocol)
    assert all(hasattr(lazy, a) for a in mod.ARRAY_LIKE_ATTRS)


def test_video_detects_inexact_seek(tmp_path, vmovie, monkeypatch):
    path = tmp_path / "v.avi"
    write_video(path, vmovie, "FFV1")
    orig = LazyVideo._read_at

    def off_by_one(cap, i):  # a codec whose seeks land one frame late
        return orig(cap, min(i + 1, T - 1))

    monkeypatch.setattr(LazyVideo, "_read_at", staticmethod(off_by_one))
    lazy = LazyVideo(path)
    assert not lazy.seek_exact
    monkeypatch.setattr(LazyVideo, "_read_at", staticmethod(orig))
    check_all(lazy, vmovie)
    assert "sequential" in repr(lazy)
    lazy.close()


def test_video_wrong_container_count(tmp_path, vmovie, monkeypatch):
    path = tmp_path / "v.avi"
    write_video(path, vmovie, "FFV1")
    monkeypatch.setattr(LazyVideo, "_count_ok", lambda self, cap, n: False)
    lazy = LazyVideo(path)
    assert lazy.shape == vmovie.shape  # counted by decoding
    np.testing.assert_array_equal(lazy[-3:], vmovie[-3:])


def test_hdf5_prefers_mov_when_several(tmp_path, movie):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f["mov"] = movie
        f["background"] = movie[:3]
    lazy = open_movie(path)
    assert lazy.dataset == "mov"
    np.testing.assert_array_equal(lazy[-5:], movie[-5:])
