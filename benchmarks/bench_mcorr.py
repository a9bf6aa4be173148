"""Benchmark: built-in piecewise-rigid motion correction on 512x512 uint16 movies.

Prints frames/s, peak memory (RSS of the run's process tree, sampled) and patch-shift error
against the simulation's truth, for two movie lengths (peak memory should not grow with
length), and the same through CaImAn where it is installed, measured in the same run.

    .venv/bin/python benchmarks/bench_mcorr.py [--frames 300 900] [--processes 2] [--backends builtin caiman]
                                               [--baseline OLD_CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

PARAMS = {"pw_rigid": True, "max_shifts": (6, 6), "strides": (96, 96), "overlaps": (32, 32),
          "max_deviation_rigid": 3, "niter_rig": 1}


def _one(backend: str, movie: str, out: str, n_processes: int) -> None:
    """Child process: run one correction, print timing as JSON."""
    from mesmerize_widgets.algorithms import RunContext, get_algorithm

    params = get_algorithm("mcorr").schema.validate({"main": PARAMS})
    ctx = RunContext(input_path=Path(movie), params=params, output_dir=Path(out), prefix="b",
                     n_processes=n_processes)
    Path(out).mkdir(parents=True, exist_ok=True)
    mod = __import__(f"mesmerize_widgets.algorithms.mcorr.{backend}", fromlist=["run"])
    t_import = time.perf_counter()
    if backend == "caiman":  # a one-off cost of the session, not of the correction: kept out of frames/s
        import caiman.motion_correction  # noqa: F401
    t0 = time.perf_counter()
    outputs = mod.run(ctx)
    print(json.dumps({"seconds": time.perf_counter() - t0, "import_s": t0 - t_import,
                      "shifts": str(outputs["shifts"])}))


def _measure(backend: str, movie: Path, out: Path, n_processes: int, pythonpath: str | None = None) -> dict:
    """Run in a fresh process; sample the RSS of it and its children every 50 ms.

    ``pythonpath`` first on the child's path runs another copy of the package (a baseline).
    """
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, __file__, "--one", backend, str(movie), str(out), str(n_processes)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ps = psutil.Process(proc.pid)
    peak = peak_anon = 0
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            infos = [p.memory_info() for p in procs if p.is_running()]
            peak = max(peak, sum(i.rss for i in infos))
            # without file-backed pages (e.g. the memory-mapped input TIFF): reclaimable cache
            peak_anon = max(peak_anon, sum(i.rss - getattr(i, "shared", 0) for i in infos))
        except psutil.Error:
            pass
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} run failed:\n{stderr[-3000:]}")
    res = json.loads(stdout.strip().splitlines()[-1])
    res["peak_rss_mb"] = peak / 2**20
    res["peak_anon_mb"] = peak_anon / 2**20
    return res


def _patch_error(shifts_path: str, truth, dims) -> float:
    from mesmerize_widgets.algorithms.mcorr.common import load_shifts
    from mesmerize_widgets.algorithms.mcorr.registration import patch_centers

    xs, ys = load_shifts(shifts_path, pw_rigid=True)
    rows, cols = patch_centers(dims, PARAMS["strides"], PARAMS["overlaps"])
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    t = np.stack([truth.shift_at(i, rr.ravel(), cc.ravel()) for i in range(len(xs))])
    err = (np.stack([xs, ys], axis=1) - t).transpose(0, 2, 1).reshape(-1, 2)
    err -= err.mean(axis=0)
    return float(np.sqrt(np.mean(err**2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[300, 900])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--backends", nargs="+", choices=["builtin", "caiman"], default=None,
                    help="default: builtin, and caiman where it is installed")
    ap.add_argument("--baseline", metavar="DIR", default=None,
                    help="also run the builtin backend of the package found in DIR (e.g. an older checkout)")
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        backend, movie, out, n = args.one
        _one(backend, movie, out, int(n))
        return

    from mesmerize_widgets.algorithms.caiman_env import caiman_installed
    from mesmerize_widgets.sim import simulate_2p, write_tiff

    backends = args.backends or (["builtin"] + (["caiman"] if caiman_installed() else []))
    runs = [(b, b, None) for b in backends]
    if args.baseline:
        runs.insert(0, ("baseline", "builtin", str(Path(args.baseline).resolve())))
    dims = (512, 512)
    print(f"piecewise-rigid mcorr, {dims[0]}x{dims[1]} uint16, {args.processes} processes, "
          f"{psutil.cpu_count()} CPUs; params {PARAMS}")
    rows: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.frames:
            sim = simulate_2p(n_frames=n, dims=dims, n_neurons=300, motion="piecewise", max_shift=4,
                              dtype="uint16", lazy=True, seed=1)
            movie = Path(tmp) / f"m{n}.tif"
            write_tiff(sim, movie)
            for label, backend, path in runs:
                res = _measure(backend, movie, Path(tmp) / f"out-{label}-{n}", args.processes, path)
                res["fps"] = n / res["seconds"]
                res["err"] = _patch_error(res["shifts"], sim.truth, dims)
                rows[label, n] = res
                extra = f", import {res['import_s']:.1f} s (not counted)" if res.get("import_s", 0) > 0.5 else ""
                print(f"  {label:8s} {n:5d} frames: {res['fps']:6.1f} frames/s ({res['seconds']:.1f} s{extra}), "
                      f"peak RSS {res['peak_rss_mb']:6.0f} MB (anonymous {res['peak_anon_mb']:6.0f} MB), "
                      f"patch-shift RMS error {res['err']:.3f} px", flush=True)
            for stale in Path(tmp).glob(f"out-*-{n}"):
                shutil.rmtree(stale, ignore_errors=True)
    print("\n| run | frames | frames/s | peak RSS MB (anon) | patch-shift RMS px |")
    print("|---|---:|---:|---:|---:|")
    for (label, n), r in rows.items():
        print(f"| {label} | {n} | {r['fps']:.1f} | {r['peak_rss_mb']:.0f} ({r['peak_anon_mb']:.0f}) | {r['err']:.3f} |")
    labels = [lab for lab, _, _ in runs]
    for ref in ("caiman", "baseline"):
        if ref not in labels or "builtin" not in labels:
            continue
        for n in args.frames:
            b, c = rows["builtin", n], rows[ref, n]
            print(f"{n} frames, builtin/{ref}: speed {b['fps'] / c['fps']:.2f}x, peak memory "
                  f"{b['peak_anon_mb'] / c['peak_anon_mb']:.2f}x, error {b['err']:.3f} vs {c['err']:.3f} px")
    if "builtin" in labels and len(args.frames) >= 2:
        lo, hi = rows["builtin", args.frames[0]], rows["builtin", args.frames[-1]]
        print(f"builtin peak anonymous memory, {args.frames[-1]} vs {args.frames[0]} frames: "
              f"{hi['peak_anon_mb'] / lo['peak_anon_mb']:.2f}x")
    if "caiman" not in labels:
        print("CaImAn was not run (not installed, or not asked for): no side-by-side comparison")


if __name__ == "__main__":
    main()
