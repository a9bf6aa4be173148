"""CaImAn memmap naming, byte layout and round trips (no CaImAn needed)."""

from __future__ import annotations

import numpy as np
import pytest

from mesmerize_widgets.formats.memmap import (
    MemmapInfo,
    MemmapWriter,
    load_memmap,
    memmap_name,
    parse_memmap_name,
    reserve,
    save_memmap,
)

T, D1, D2 = 50, 32, 40


@pytest.fixture
def movie() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.standard_normal((T, D1, D2)) * 100).astype(np.float32)


def test_memmap_name_2d_and_3d():
    assert memmap_name("a", (32, 40), 50, "F") == "a_d1_32_d2_40_d3_1_order_F_frames_50.mmap"
    assert memmap_name("b", (3, 4, 5), 7, "c") == "b_d1_3_d2_4_d3_5_order_C_frames_7.mmap"
    with pytest.raises(ValueError):
        memmap_name("a", (32, 40), 5, "X")


def test_parse_from_end_of_stem(tmp_path):
    # a base that itself looks like a memmap name: parse the tail like CaImAn
    base = "mov_d1_9_d2_9_d3_1_order_C_frames_9_rig_"
    name = memmap_name(base, (32, 40), 50, "F")
    assert name.startswith("mov_d1_9") and "_rig__d1_32" in name
    info = parse_memmap_name(tmp_path / name)
    assert info == MemmapInfo(dims=(32, 40, 1), order="F", n_frames=50)
    assert info.n_pixels == 32 * 40 and info.nbytes == 32 * 40 * 50 * 4


@pytest.mark.parametrize(
    "bad",
    [
        "movie.mmap",
        "x_d1_3_d2_4_d3_1_order_F_frames_.mmap",
        "x_d1_3_d2_4_d3_1_order_Q_frames_5.mmap",
        "x_d1_3_d2_4_d3_1_order_F_frames_5_extra.mmap",
    ],
)
def test_parse_bad_names(bad):
    with pytest.raises(ValueError, match=bad.split(".")[0][:5]):
        parse_memmap_name(bad)


def test_writer_F_layout_matches_caiman(tmp_path, movie):
    with MemmapWriter(tmp_path, "m", (D1, D2), order="F") as w:
        w.write(movie[:20])
        w.write(movie[20])  # a single frame
        w.write(movie[21:])
    path = w.path
    assert path.name == f"m_d1_{D1}_d2_{D2}_d3_1_order_F_frames_{T}.mmap"
    assert not list(tmp_path.glob("*.partial"))
    raw = np.fromfile(path, dtype="<f4")
    assert raw.size == T * D1 * D2
    np.testing.assert_array_equal(raw.reshape(T, D2, D1).transpose(0, 2, 1), movie)
    # explicit pixel index p = row + col * d1 for frame 3
    r, c = 5, 7
    assert raw[3 * D1 * D2 + r + c * D1] == movie[3, r, c]

    Yr, dims, n = load_memmap(path)
    assert dims == (D1, D2) and n == T and Yr.shape == (D1 * D2, T)
    np.testing.assert_array_equal(Yr[:, 3], movie[3].ravel(order="F"))
    del Yr


def test_writer_C_layout_matches_caiman(tmp_path, movie):
    with MemmapWriter(tmp_path, "c", (D1, D2), order="C", n_frames=T) as w:
        for s in range(0, T - 1, 7):
            w.write(movie[s : min(s + 7, T - 1)])
        w.write(movie[T - 1])  # a single frame, as (rows, cols)
    raw = np.fromfile(w.path, dtype="<f4")
    assert w.path.name.endswith("_order_C_frames_50.mmap")
    np.testing.assert_array_equal(raw.reshape(D2, D1, T).transpose(2, 1, 0), movie)
    r, c, t = 4, 9, 11
    assert raw[(r + c * D1) * T + t] == movie[t, r, c]
    Yr, dims, n = load_memmap(w.path)
    np.testing.assert_array_equal(np.asarray(Yr[:, t]), movie[t].ravel(order="F"))
    del Yr


def test_reserve_allocates_the_blocks_and_keeps_what_is_written(tmp_path):
    """The C-order memmap, mcorr's output and CNMF-E's ring files are written through memory
    maps: their blocks are taken up front, so a disk that fills meanwhile cannot kill the
    writer with SIGBUS, and an interrupted mcorr's frames survive a second reservation."""
    f = tmp_path / "out.f32"
    n = 8 << 20
    reserve(f, n, "a test file")
    st = f.stat()
    assert st.st_size == n
    assert st.st_blocks * 512 >= n  # allocated, not a sparse hole
    mm = np.memmap(f, np.float32, "r+", shape=(n // 4,))
    mm[12345] = 7.5
    mm.flush()
    del mm
    reserve(f, n, "a test file")  # a resumed run reserves again
    assert np.fromfile(f, np.float32)[12345] == 7.5
    assert f.stat().st_size == n


_FULL_DISK = """
import os, sys
from mesmerize_widgets.errors import DiskSpaceError
from mesmerize_widgets.formats.memmap import MemmapWriter, reserve
d = sys.argv[1]
with open(os.path.join(d, "kept"), "wb") as f:
    f.write(b"frames" * 100)
for target in ("new.f32", "kept"):
    try:
        reserve(os.path.join(d, target), 8 << 20, "a test file")
    except DiskSpaceError as e:
        print("refused:", e)
try:
    MemmapWriter(d, "m", (512, 512), order="C", n_frames=8)
except DiskSpaceError:
    print("writer refused")
print(sorted(os.listdir(d)), os.path.getsize(os.path.join(d, "kept")))
"""


def test_reserve_on_a_full_disk_refuses_and_leaves_the_files_as_they_were(tmp_path):
    """A 1 MiB file system (a tmpfs in a private mount namespace): reserving more is a clear
    DiskSpaceError, a new file is not left behind half-reserved, an existing one keeps its size
    and data, and a C-order memmap that cannot fit leaves no partial file."""
    import shutil
    import subprocess
    import sys

    d = tmp_path / "small"
    d.mkdir()
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a small tmpfs")
    mount = f"mount -t tmpfs -o size=1M none {d}"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {probe.stderr.strip()}")
    code = f"{mount} && exec {sys.executable} -c '{_FULL_DISK}' {d}"
    r = subprocess.run(["unshare", "-m", "sh", "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sum(line.startswith("refused: a test file needs") and "could not be reserved" in line
               for line in lines) == 2
    assert "writer refused" in lines
    assert lines[-1] == "['kept'] 600"


def test_writer_C_from_pixel_frames_in_reused_blocks(tmp_path, movie):
    """An order-F memmap's frames (pixels in Fortran order), given 7 at a time in one reused
    buffer as a reader hands them, make the same file as the frames written as images; a
    chunk that comes short of what was promised is refused and leaves no file."""
    flat = np.ascontiguousarray(movie.transpose(0, 2, 1)).reshape(T, D1 * D2)  # order-F layout

    def blocks(start, stop, buf):
        for s in range(start, stop, 7):
            k = min(7, stop - s)
            buf[:k] = flat[s : s + k]
            yield buf[:k]
            buf[:] = np.nan  # a block is not held after the next one is asked for

    buf = np.empty((7, D1 * D2), np.float32)
    with MemmapWriter(tmp_path / "a", "c", (D1, D2), order="C", n_frames=T) as w:
        w.write_pixel_frames(blocks(0, 30, buf), 30)
        w.write_pixel_frames(blocks(30, T, buf), T - 30)
    with MemmapWriter(tmp_path / "b", "c", (D1, D2), order="C", n_frames=T) as ref:
        ref.write(movie)
    assert w.path.read_bytes() == ref.path.read_bytes()
    with pytest.raises(ValueError, match="promised 30 frames and given 21"):
        with MemmapWriter(tmp_path / "c", "c", (D1, D2), order="C", n_frames=T) as w:
            w.write_pixel_frames(blocks(0, 21, buf), 30)
    assert not list((tmp_path / "c").iterdir())


def test_writer_C_requires_frames(tmp_path, movie):
    with pytest.raises(ValueError, match="n_frames"):
        MemmapWriter(tmp_path, "c", (D1, D2), order="C")
    with pytest.raises(ValueError, match="declared"):
        with MemmapWriter(tmp_path, "c", (D1, D2), order="C", n_frames=T) as w:
            w.write(movie[:10])
    assert not list(tmp_path.iterdir())
    # more frames than declared, as frames or as a 3-D stack: refused by name, no file left behind
    for extra in (movie[:1], movie[:1, :, :, None]):
        with pytest.raises(ValueError, match=f"exceeds n_frames={T}"):
            with MemmapWriter(tmp_path, "c", (D1, D2), order="C", n_frames=T) as w:
                w.write(movie)
                w.write(extra)
        assert not list(tmp_path.iterdir())


def test_writer_aborts_on_error(tmp_path, movie):
    with pytest.raises(RuntimeError):
        with MemmapWriter(tmp_path, "a", (D1, D2)) as w:
            w.write(movie[:5])
            raise RuntimeError("boom")
    assert not list(tmp_path.iterdir())
    w2 = MemmapWriter(tmp_path, "b", (D1, D2))
    with pytest.raises(RuntimeError, match="after close"):
        _ = w2.path
    with pytest.raises(ValueError, match="expected"):
        w2.write(np.zeros((2, D2, D1), np.float32))
    w2.abort()


@pytest.mark.parametrize("order", ["F", "C"])
def test_save_memmap_roundtrip(tmp_path, movie, order):
    path = save_memmap(movie, tmp_path, "s", order=order, chunk_frames=16)
    info = parse_memmap_name(path)
    assert info == MemmapInfo((D1, D2, 1), order, T)
    Yr, dims, n = load_memmap(path)
    frames = np.asarray(Yr).T.reshape(T, D2, D1).transpose(0, 2, 1)
    np.testing.assert_array_equal(frames, movie)  # bit-exact
    del Yr, frames


def test_save_memmap_3d_and_add(tmp_path):
    rng = np.random.default_rng(2)
    mov = rng.random((6, 4, 5, 3)).astype(np.float32)
    path = save_memmap(mov, tmp_path, "z", order="F", add=1e-4)
    assert "_d3_3_" in path.name
    raw = np.fromfile(path, "<f4").reshape(6, 3, 5, 4).transpose(0, 3, 2, 1)
    np.testing.assert_array_equal(raw, mov + np.float32(1e-4))
    Yr, dims, n = load_memmap(path)
    assert dims == (4, 5, 3) and n == 6
    del Yr


def test_load_memmap_truncated(tmp_path, movie):
    path = save_memmap(movie, tmp_path, "t", order="F")
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="truncated"):
        load_memmap(path)
