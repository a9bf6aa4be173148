"""Frames/s of CNMFViewer stepping through time vs a bare fastplotlib ImageWidget, one run.

Run by hand:  .venv/bin/python benchmarks/bench_viewers.py [--dims 256 --k 1000 --t 400 --window 10 --steps 60]

Builds a real cnmf item (random footprints and traces written with ``save_cnmf``, the input
movie as a TIFF) in a temporary batch, then steps the time index frame by frame offscreen:

* viewer: ``CNMFViewer`` (4 panels: input, A*C, b*f, residuals, exact mean-``window`` windows,
  all ``k`` contours as one graphic, the trace figure with its time marker), each step drawn;
* bare: ``fastplotlib.ImageWidget`` over the same four lazy arrays with fastplotlib's own
  ``window_funcs={"t": (np.mean, window)}``, same canvas size, each step drawn.

Both fetch synchronously and draw with ``canvas.draw()`` so every step is a complete new frame.
Prints frames/s of each and the overhead ratio (bare fps / viewer fps; goal <= 1.3).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RENDERCANVAS_FORCE_OFFSCREEN", "1")
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

import numpy as np  # noqa: E402
import scipy.sparse  # noqa: E402
import tifffile  # noqa: E402

import mesmerize_widgets as mw  # noqa: E402
from mesmerize_widgets.formats.cnmf_hdf5 import Estimates, save_cnmf  # noqa: E402
from mesmerize_widgets.store import BatchStore  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_lazy import random_footprints  # noqa: E402


def build_item(root: Path, d: int, k: int, t: int, seed: int = 0):
    """A done cnmf item over a (t, d, d) movie = A C + b f + noise."""
    rng = np.random.default_rng(seed)
    raw = root / "raw"
    raw.mkdir()
    mw.set_parent_raw_data_path(raw)
    mw.create_batch(root / "batch")
    A = random_footprints(d, d, k, 4.0, rng)
    C = np.maximum(0, rng.normal(0, 1, (k, t))).cumsum(axis=1) % 5
    b = rng.uniform(50, 100, (d * d, 1))
    f = 1 + 0.1 * rng.normal(size=(1, t))
    Y = np.empty((t, d, d), np.float32)
    for s in range(0, t, 100):  # frames = (A C + b f) in Fortran pixel order, plus noise
        block = (A @ C[:, s : s + 100] + b @ f[:, s : s + 100]).T.reshape(-1, d, d).transpose(0, 2, 1)
        Y[s : s + 100] = block + rng.normal(0, 2, block.shape)
    tifffile.imwrite(raw / "movie.tif", Y)
    store = BatchStore(root / "batch")
    rec = store.add(algo="cnmf", item_name="bench", params={"main": {}}, input_root="raw",
                    input_movie_path="movie.tif")
    u = rec["uuid"]
    out = store.item_dir(u)
    out.mkdir(parents=True)
    snr = rng.uniform(0, 8, k)
    rv = rng.uniform(-1, 1, k)
    good = np.flatnonzero((snr > 2.5) | (rv >= 0.8))
    est = Estimates(A=scipy.sparse.csc_matrix(A), C=C, b=b, f=f, YrA=rng.normal(0, 0.5, (k, t)),
                    SNR_comp=snr, r_values=rv, idx_components=good,
                    idx_components_bad=np.setdiff1d(np.arange(k), good), dims=(d, d))
    save_cnmf(out / f"{u}.hdf5", est, {"quality": {"min_SNR": 2.5, "rval_thr": 0.8}}, dims=(d, d),
              mmap_file="")
    store.update(u, status="done", outputs={"success": True, "cnmf-hdf5-path": f"{u}/{u}.hdf5"})
    return mw.load_batch(root / "batch").iloc[0]


def step_fps(step, n: int) -> float:
    step(0)  # warm-up: shaders, caches
    step(1)
    t0 = time.perf_counter()
    for i in range(n):
        step(2 + i)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, default=256)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--t", type=int, default=400)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--size", type=int, nargs=2, default=(900, 640))
    a = ap.parse_args()

    from mesmerize_widgets.widgets import _fpl
    from mesmerize_widgets.widgets.cnmf_viewer import CNMFViewer

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        row = build_item(Path(tmp), a.dims, a.k, a.t)
        print(f"item: {a.t} frames of {a.dims}x{a.dims}, {a.k} components (built in {time.perf_counter() - t0:.1f} s)")

        t0 = time.perf_counter()
        v = CNMFViewer(row, size=tuple(a.size))
        v.set_window("mean", a.window)
        print(f"CNMFViewer opened in {time.perf_counter() - t0:.1f} s; {v.contours.n} contours in one graphic "
              f"({v.contours.offsets[-1]} vertices)")

        def viewer_step(i: int) -> None:
            v.set_time(i % v.n_frames)
            v.render()

        arrays = [row.caiman.get_input_movie(), row.cnmf.get_rcm(), row.cnmf.get_rcb(), row.cnmf.get_residuals()]
        import fastplotlib as fpl  # the baseline, used bare on purpose

        iw = fpl.ImageWidget(arrays, names=["input", "A*C", "b*f", "residuals"], figure_shape=(2, 2),
                             window_funcs={"t": (np.mean, a.window)}, histogram_widget=False,
                             cmap="gnuplot2", figure_kwargs={"size": tuple(a.size)})
        iw.show()

        def bare_step(i: int) -> None:
            _fpl.set_index(iw, i % a.t)
            iw.figure.canvas.draw()

        # interleave two rounds each so drift (thermal, caches) hits both alike
        fps_v, fps_b = [], []
        for _ in range(2):
            fps_b.append(step_fps(bare_step, a.steps))
            fps_v.append(step_fps(viewer_step, a.steps))
        fv, fb = max(fps_v), max(fps_b)
        print(f"bare ImageWidget (fastplotlib mean-{a.window} window): {fb:6.1f} frames/s  {fps_b}")
        print(f"CNMFViewer (exact mean-{a.window}, {a.k} contours, trace): {fv:6.1f} frames/s  {fps_v}")
        print(f"overhead ratio (bare / viewer): {fb / fv:.2f}  (goal <= 1.3)")


if __name__ == "__main__":
    main()
