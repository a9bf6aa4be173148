"""NWB export: time and file size against plain h5py, and peak memory as the movie grows.

    .venv/bin/python benchmarks/bench_nwb.py                  # 1,000 components, 1,000 / 10,000 frames
    .venv/bin/python benchmarks/bench_nwb.py --frames 1000 5000 --dims 64 64

Writes, through ``formats.nwb.write_nwb`` (what ``row.cnmf.export_nwb`` calls), 1,000 sparse
footprints (~80 pixels each) and their traces C (float32), once without and once with a
(frames, 128, 128) float32 movie read from a memmap in chunks; then the same arrays with plain
h5py (footprints as the same pixel list, C, the movie copied chunk by chunk). Each case runs in
a fresh child process that samples its anonymous resident memory (RssAnon: what it allocated,
not the pages of the memmap) every 20 ms. One run per case; printed: seconds, MiB on disk,
peak MiB, and the ratios NWB / h5py and longest / shortest movie. The movie's own share of the
peak is the peak with the movie minus the peak without it, at the same length.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import scipy.sparse

K = 1000
PIXELS_PER_COMPONENT = 80


def footprints(dims: tuple[int, int], seed: int = 0) -> scipy.sparse.csc_matrix:
    rng = np.random.default_rng(seed)
    n = dims[0] * dims[1]
    rows = np.concatenate([rng.choice(n, PIXELS_PER_COMPONENT, replace=False) for _ in range(K)])
    cols = np.repeat(np.arange(K), PIXELS_PER_COMPONENT)
    return scipy.sparse.csc_matrix((rng.random(rows.size), (rows, cols)), shape=(n, K))


def make_movie(path: Path, frames: int, dims: tuple[int, int]) -> np.memmap:
    mov = np.memmap(path, dtype=np.float32, mode="w+", shape=(frames, *dims))
    rng = np.random.default_rng(1)
    for a in range(0, frames, 500):
        mov[a : a + 500] = rng.random((min(500, frames - a), *dims), dtype=np.float32)
    mov.flush()
    return np.memmap(path, dtype=np.float32, mode="r", shape=(frames, *dims))


class PeakAnon:
    """Peak RssAnon of this process, sampled in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        m = re.search(r"^RssAnon:\s+(\d+)", Path("/proc/self/status").read_text(), re.M)
        return int(m.group(1)) * 1024 if m else 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.02)

    def __enter__(self) -> PeakAnon:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def write_h5py(path: Path, A: scipy.sparse.csc_matrix, dims: tuple[int, int], C: np.ndarray, movie) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        pm = np.zeros(A.nnz, dtype=[("x", "<u4"), ("y", "<u4"), ("weight", "<f4")])
        pm["x"], pm["y"], pm["weight"] = A.indices % dims[0], A.indices // dims[0], A.data
        f["pixel_mask"], f["pixel_mask_index"] = pm, A.indptr[1:]
        f["accepted"] = np.ones(K, bool)
        f["C"] = np.ascontiguousarray(C.T)
        if movie is not None:
            ds = f.create_dataset("movie", shape=movie.shape, dtype=movie.dtype, chunks=(100, *movie.shape[1:]))
            for a in range(0, len(movie), 100):
                ds[a : a + 100] = movie[a : a + 100]


def write_nwb(path: Path, A: scipy.sparse.csc_matrix, dims: tuple[int, int], C: np.ndarray, movie) -> None:
    from mesmerize_widgets.formats.nwb import OphysExport
    from mesmerize_widgets.formats.nwb import write_nwb as write

    data = OphysExport(footprints=A, dims=dims, accepted=np.ones(K, bool), fluorescence=C,
                       fluorescence_description="C", rate=30.0, movie=movie, chunk_frames=100)
    session = {"session_start_time": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
               "subject": {"subject_id": "bench", "species": "Mus musculus", "sex": "U", "age": "P90D"}}
    write(path, data, session=session, mask_type="pixel")


def child(args: argparse.Namespace) -> None:
    dims = tuple(args.dims)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        A = footprints(dims)
        C = np.random.default_rng(2).random((K, args.case_frames), dtype=np.float32)
        movie = make_movie(Path(tmp) / "movie.raw", args.case_frames, dims) if args.movie else None
        out = Path(tmp) / ("out.nwb" if args.writer == "nwb" else "out.h5")
        writer = write_nwb if args.writer == "nwb" else write_h5py
        with PeakAnon() as peak:
            start = time.perf_counter()
            writer(out, A, dims, C, movie)
            seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "bytes": out.stat().st_size, "peak": peak.peak}))


def run_case(args: argparse.Namespace, writer: str, frames: int, movie: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--writer", writer, "--case-frames", str(frames),
           "--dims", *map(str, args.dims), "--tmp", args.tmp] + (["--movie"] if movie else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--dims", type=int, nargs=2, default=[128, 128])
    p.add_argument("--tmp", default=tempfile.gettempdir())
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--writer", default="nwb", help=argparse.SUPPRESS)
    p.add_argument("--case-frames", type=int, default=1000, help=argparse.SUPPRESS)
    p.add_argument("--movie", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    mib = 2**20
    res = {}
    for frames in args.frames:
        for movie in (False, True):
            for writer in ("nwb", "h5py"):
                r = res[writer, frames, movie] = run_case(args, writer, frames, movie)
                print(f"{writer:5} {frames:6} frames {'with' if movie else 'no  '} movie: {r['seconds']:7.2f} s, "
                      f"{r['bytes'] / mib:8.1f} MiB on disk, peak {r['peak'] / mib:7.1f} MiB", flush=True)
    lo, hi = min(args.frames), max(args.frames)
    for movie in (False, True):
        n, h = res["nwb", hi, movie], res["h5py", hi, movie]
        print(f"{hi} frames {'with' if movie else 'without'} movie, NWB / h5py: time {n['seconds'] / h['seconds']:.2f}x, "
              f"size {n['bytes'] / h['bytes']:.3f}x")
    share = {f: res["nwb", f, True]["peak"] - res["nwb", f, False]["peak"] for f in (lo, hi)}
    print(f"NWB peak with the movie, {hi} / {lo} frames: {res['nwb', hi, True]['peak'] / res['nwb', lo, True]['peak']:.2f}x "
          f"(the movie's share: {share[hi] / mib:.1f} MiB vs {share[lo] / mib:.1f} MiB, {share[hi] / share[lo]:.2f}x; "
          f"the movie itself "
          f"{hi * np.prod(args.dims) * 4 / mib:.0f} MiB vs {lo * np.prod(args.dims) * 4 / mib:.0f} MiB)")


if __name__ == "__main__":
    main()
