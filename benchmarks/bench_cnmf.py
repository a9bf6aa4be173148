"""CNMF / CNMF-E accuracy and speed on simulated movies: built-in backend, and CaImAn where installed.

Run by hand from the repository root::

    .venv/bin/python benchmarks/bench_cnmf.py                      # 2p 128x128x1000, 60 neurons + 1p
    .venv/bin/python benchmarks/bench_cnmf.py --dims 256 256 --neurons 200 --frames 2000 --rf 32

For each movie and backend it prints the time, the number of components, recall, precision,
F1 (accepted components matched to the ground truth by footprint correlation >= 0.7, Hungarian
matching) and the median trace correlation of the matched components; with CaImAn present,
the ratio builtin time / CaImAn time, both measured in this run on the same data.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from mesmerize_widgets.algorithms import RunContext, get_algorithm
from mesmerize_widgets.algorithms.caiman_env import caiman_problems
from mesmerize_widgets.formats.cnmf_hdf5 import load_cnmf
from mesmerize_widgets.sim import match_to_truth, simulate_1p, simulate_2p


def score(path: Path, truth) -> dict:
    """Accuracy of the accepted components against the ground truth."""
    res = load_cnmf(path)
    good = np.asarray(res.estimates.idx_components, int)
    m = match_to_truth(res.estimates.A.toarray()[:, good], np.asarray(res.estimates.C)[good], truth)
    return {"K": res.estimates.A.shape[1], "accepted": len(good), "recall": m["recall"],
            "precision": m["precision"], "f1": m["f1"], "trace_corr": m["trace_corr"]}


def run_one(algo: str, backend: str, movie_path: Path, params: dict, workdir: Path, n_proc: int) -> tuple[float, Path]:
    out = workdir / f"{algo}-{backend}"
    out.mkdir()
    a = get_algorithm(algo)
    ctx = RunContext(input_path=movie_path, params=a.schema.validate(params), output_dir=out, prefix="bench",
                     n_processes=n_proc)
    t0 = time.perf_counter()
    outputs = a.run_function(backend)(ctx)
    return time.perf_counter() - t0, Path(outputs["cnmf-hdf5-path"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs=2, default=(128, 128))
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--neurons", type=int, default=60)
    ap.add_argument("--rf", type=int, default=None, help="patch half-size for the 2p run (default: whole field)")
    ap.add_argument("--n-processes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    backends = ["builtin"]
    if not caiman_problems(needs_deconvolution=True):
        backends.append("caiman")
    else:
        print("CaImAn backend skipped:", "; ".join(caiman_problems(needs_deconvolution=True)))
    dims = tuple(args.dims)
    cases = [
        ("cnmf", simulate_2p(n_frames=args.frames, dims=dims, n_neurons=args.neurons, motion=None, seed=args.seed),
         {"main": {"K": int(args.neurons * 1.6) if args.rf is None else 12, "gSig": (4, 4), "p": 1, "fr": 30.0,
                   "rf": args.rf, "stride": None if args.rf is None else args.rf // 2}, "refit": args.rf is not None}),
        ("cnmfe", simulate_1p(n_frames=args.frames, dims=dims, n_neurons=args.neurons, seed=args.seed),
         {"main": {"fr": 20.0, "decay_time": 0.5, "min_corr": 0.8, "min_pnr": 10.0}}),
    ]
    print(f"{'algo':6} {'backend':8} {'time s':>8} {'K':>5} {'acc':>5} {'recall':>7} {'prec':>6} {'F1':>6} {'trace r':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for algo, sim, params in cases:
            movie = tmp / f"{algo}.tif"
            tifffile.imwrite(movie, sim.movie)
            times = {}
            for backend in backends:
                t, h5 = run_one(algo, backend, movie, params, tmp, args.n_processes)
                times[backend] = t
                s = score(h5, sim.truth)
                print(f"{algo:6} {backend:8} {t:8.1f} {s['K']:5d} {s['accepted']:5d} {s['recall']:7.2f} "
                      f"{s['precision']:6.2f} {s['f1']:6.2f} {s['trace_corr']:8.3f}")
            if "caiman" in times:
                print(f"{algo}: builtin / caiman time = {times['builtin'] / times['caiman']:.2f}")


if __name__ == "__main__":
    main()
