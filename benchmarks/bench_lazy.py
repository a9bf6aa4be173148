"""Windowed-mean frames of the CNMF reconstructions vs mesmerize-core 0.6.0's way.

Run by hand:  .venv/bin/python benchmarks/bench_lazy.py [--dims 512 --k 1000 --t 1000 --window 10]

mesmerize-core computes a viewer's mean window by materialising every frame of the window
(``A.dot(C[:, w])`` with sparse A, reshaped to frames) and averaging them; ours multiplies A by
the window's mean trace once. Both are reproduced here on the same random data and timed in one
run; the results are checked to agree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse

from mesmerize_widgets.arrays.reconstruction import (
    LazyArrayRCB,
    LazyArrayRCM,
    LazyArrayResiduals,
    window_bounds,
)


def random_footprints(d1: int, d2: int, k: int, radius: float, rng: np.random.Generator) -> scipy.sparse.csc_matrix:
    """k disk-shaped Gaussian footprints (~pi r^2 pixels each), l2-normalised, Fortran pixels."""
    r = int(np.ceil(radius))
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    inside = oy**2 + ox**2 <= radius**2
    oy, ox = oy[inside], ox[inside]
    w = np.exp(-(oy**2 + ox**2) / (2 * (radius / 2) ** 2))
    cy = rng.integers(r, d1 - r, k)
    cx = rng.integers(r, d2 - r, k)
    rows = ((cy[:, None] + oy) + (cx[:, None] + ox) * d1).ravel()
    data = np.tile(w / np.linalg.norm(w), k)
    cols = np.repeat(np.arange(k), len(oy))
    return scipy.sparse.csc_matrix((data, (rows, cols)), shape=(d1 * d2, k))


# -- mesmerize-core 0.6.0's computation, reproduced ----------------------------------------------
def baseline_frames(spatial, temporal, dims, w: slice) -> np.ndarray:
    return spatial.dot(temporal[:, w]).reshape(dims + (-1,), order="F").transpose([2, 0, 1])


def baseline_rcm_mean(A, C, dims, w):
    return np.mean(baseline_frames(A, C, dims, w), axis=0)


def baseline_rcb_mean(b, f, dims, w):
    return np.mean(baseline_frames(b, f, dims, w), axis=0)


def baseline_res_mean(Y, A, C, b, f, dims, w):
    return np.mean(Y[w] - baseline_frames(A, C, dims, w) - baseline_frames(b, f, dims, w), axis=0)


def per_call(fn, ts, repeats: int = 1) -> tuple[float, list]:
    out = [fn(ts[0])]  # warm-up (and keep a result for the check)
    t0 = time.perf_counter()
    for _ in range(repeats):
        for t in ts:
            fn(t)
    return (time.perf_counter() - t0) / (repeats * len(ts)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, default=512)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--t", type=int, default=1000)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--n-windows", type=int, default=20)
    ap.add_argument("--no-dense", action="store_true", help="skip the dense-A reference (needs ~1 GB)")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    d = args.dims
    dims = (d, d)
    A = random_footprints(d, d, args.k, 7.35, rng)
    C = rng.random((args.k, args.t))  # float64, as CaImAn stores it
    b = rng.random((d * d, 1))
    f = rng.random((1, args.t))
    Y = rng.random((args.t, d, d), dtype=np.float32) * 100
    print(f"{d}x{d} px, K={args.k} (mean {A.nnz / args.k:.0f} px each, nnz {A.nnz:,}), T={args.t}, "
          f"mean window of {args.window} frames, {args.n_windows} windows each")

    rcm = LazyArrayRCM(A, C, dims)
    rcb = LazyArrayRCB(b, f, dims)
    res = LazyArrayResiduals(Y, rcm, rcb)
    ts = [int(t) for t in rng.integers(0, args.t, args.n_windows)]

    def sl(t: int) -> slice:
        return slice(*window_bounds(t, args.window, args.t))

    rows = []
    cases = [
        ("rcm  A⊗C", lambda t: rcm.window(t, args.window), lambda t: baseline_rcm_mean(A, C, dims, sl(t))),
        ("rcb  b⊗f", lambda t: rcb.window(t, args.window), lambda t: baseline_rcb_mean(b, f, dims, sl(t))),
        ("residuals", lambda t: res.window(t, args.window),
         lambda t: baseline_res_mean(Y, A, C, b, f, dims, sl(t))),
    ]
    dense_A = None if args.no_dense else A.toarray().astype(np.float32)
    for name, ours, base in cases:
        t_ours, o = per_call(ours, ts, 3)
        t_base, bres = per_call(base, ts)
        err = float(np.max(np.abs(o[0] - bres[0])) / max(np.max(np.abs(bres[0])), 1e-12))
        rows.append((name, t_base, t_ours, err))
    t_dense = None
    if dense_A is not None:
        t_dense, _ = per_call(lambda t: np.mean(baseline_frames(dense_A, C.astype(np.float32), dims, sl(t)), axis=0), ts)

    print(f"\n{'window mean':<12} {'mesmerize-core':>15} {'ours':>10} {'speed-up':>9} {'rel. diff':>10}")
    for name, tb, to, err in rows:
        print(f"{name:<12} {tb * 1e3:>12.2f} ms {to * 1e3:>7.2f} ms {tb / to:>8.1f}x {err:>10.1e}")
    if t_dense is not None:
        print(f"{'rcm dense A':<12} {t_dense * 1e3:>12.2f} ms {'':>10} {t_dense / rows[0][2]:>8.1f}x   "
              "(reference: dense float32 A, same frames-then-mean)")
    # single frames, for context (no window: O(nnz + pixels) per frame)
    t_frame, _ = per_call(lambda t: rcm[t], ts, 3)
    t_frame_base, _ = per_call(lambda t: baseline_frames(A, C, dims, slice(t, t + 1))[0], ts, 3)
    print(f"{'rcm frame':<12} {t_frame_base * 1e3:>12.2f} ms {t_frame * 1e3:>7.2f} ms "
          f"{t_frame_base / t_frame:>8.1f}x   (single frame, info)")
    ok = all(tb / to >= 5 for _, tb, to, _ in rows)
    print(f"\ngoal (>= 5x for rcm, rcb and residuals): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
