"""OnACID speed and memory: frames/s vs the 30 Hz acquisition rate and vs CaImAn's OnACID, and
peak memory for a short vs a long movie (run by hand; ratios are from one run).

    .venv/bin/python benchmarks/bench_onacid.py                      # 512x512, 300 neurons
    .venv/bin/python benchmarks/bench_onacid.py --frames 1000 10000  # memory pair
    $CAIMAN_PYTHON benchmarks/bench_onacid.py --caiman  # a python where CaImAn imports: also CaImAn's OnACID

Each run is a fresh process (``--one``) whose peak RSS (with its children) is sampled every
50 ms. The movie is simulated once per length and streamed to a TIFF, in a temporary folder
removed at the end (a 10000-frame 512 x 512 movie takes several GB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PARAMS = {"gSig": (4, 4), "p": 1, "K": 200, "fr": 30.0, "init_batch": 200, "max_shifts_online": 6}


def one(backend: str, movie: str, out: str, motion: bool) -> None:
    """Run one item in this process and print its timing as JSON."""
    from mesmerize_widgets.algorithms import RunContext, get_algorithm

    params = get_algorithm("onacid").schema.validate({"main": {**PARAMS, "motion_correct": motion}})
    if backend == "caiman":
        from mesmerize_widgets.algorithms.onacid.caiman import run
    else:
        from mesmerize_widgets.algorithms.onacid.builtin import run
    t0 = time.perf_counter()
    outputs = run(RunContext(input_path=Path(movie), params=params, output_dir=Path(out), prefix="b"))
    t1 = time.perf_counter()
    print(json.dumps({"total_s": t1 - t0, "K": outputs["n_components"]}))


def measure(cmd: list[str]) -> tuple[dict, float]:
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    p = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    done.set()
    th.join()
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed")
    return json.loads(out.strip().splitlines()[-1]), peak / 2**20


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=3, metavar=("BACKEND", "MOVIE", "OUT"))
    ap.add_argument("--frames", nargs="+", type=int, default=[1000])
    ap.add_argument("--dims", type=int, default=512)
    ap.add_argument("--neurons", type=int, default=300)
    ap.add_argument("--no-motion", action="store_true")
    ap.add_argument("--caiman", action="store_true", help="also run CaImAn's OnACID")
    return ap.parse_args()


def _run_all(a: argparse.Namespace, tmp: Path) -> list[tuple[str, int, float, float, int]]:
    """Simulate each movie length, run each backend on it; (backend, T, frames/s, MiB, K) rows."""
    from mesmerize_widgets.sim import simulate_2p, write_tiff

    rows = []
    for T in a.frames:
        sim = simulate_2p(n_frames=T, dims=(a.dims, a.dims), n_neurons=a.neurons, late_fraction=0.2,
                          max_shift=2.0, lazy=True, seed=0)
        path = tmp / f"m{T}.tif"
        write_tiff(sim, path)
        for backend in ["builtin"] + (["caiman"] if a.caiman else []):
            out = tmp / f"out_{backend}_{T}"
            out.mkdir()
            cmd = [sys.executable, __file__, "--one", backend, str(path), str(out)]
            if a.no_motion:
                cmd.append("--no-motion")
            res, peak = measure(cmd)
            fps = T / res["total_s"]
            rows.append((backend, T, fps, peak, res["K"]))
            print(f"{backend:8s} T={T:6d}: {fps:7.1f} frames/s ({fps / 30:.2f}x 30 Hz) "
                  f"peak {peak:8.0f} MiB, K={res['K']}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        path.unlink()
    return rows


def main() -> None:
    a = _args()
    if a.one:
        one(*a.one, motion=not a.no_motion)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_onacid_"))
    try:
        rows = _run_all(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a 10000-frame movie takes several GB
    by = {(b, T): (fps, peak) for b, T, fps, peak, _ in rows}
    for T in a.frames:
        if ("caiman", T) in by:
            print(f"T={T}: builtin/CaImAn speed {by[('builtin', T)][0] / by[('caiman', T)][0]:.2f}x, "
                  f"memory {by[('builtin', T)][1] / by[('caiman', T)][1]:.2f}x")
    if len(a.frames) > 1:
        lo, hi = min(a.frames), max(a.frames)
        for b in sorted({r[0] for r in rows}):
            print(f"{b}: peak memory {hi} vs {lo} frames: {by[(b, hi)][1] / by[(b, lo)][1]:.2f}x")


if __name__ == "__main__":
    main()
