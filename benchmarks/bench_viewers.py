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

``--scale`` (``.venv/bin/python benchmarks/bench_viewers.py --scale [--k 2000 --t 30000 --dims 512]``)
instead checks the viewer stays interactive at full size: the input movie is a 512x512x30000
float32 F-order CaImAn memmap made as a sparse file (a few hundred real frames at three places),
C and YrA are K x T float32, footprints ~150 px. The item is built in a child process (so peak RSS
is the viewer's alone) under a temp dir on /tmp, which is removed at the end. Prints the time to
construct the viewer and ``set_row``, peak RSS, per-step time of the time index at t=100, 15000,
29000 with a mean-``window`` window, ``set_eval`` + redraw, click-select + redraw, and the bytes
read from the movie file per step (a counter on ``LazyMemmap``'s reads, and /proc/self/io rchar).
Then, where a step's drawing goes (each canvas drawn on its own), and in the same run the
baseline: a bare ``fastplotlib.ImageWidget`` with the same 4 panels of the same memmap,
fastplotlib's own ``window_funcs`` mean-``window``, the same canvas size, stepped the same way;
the viewer is re-measured right before it and the viewer/bare ratio per step printed (what part
of the step time is ours; the viewer also has a second canvas, the traces and the heatmap).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
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


def new_batch(root: Path) -> Path:
    """A raw-data folder (set as the parent raw data path) and an empty batch under ``root``."""
    raw = root / "raw"
    raw.mkdir()
    mw.set_parent_raw_data_path(raw)
    mw.create_batch(root / "batch")
    return raw


def add_done_cnmf(root: Path, name: str, movie: str, A, C, b, f, dims: tuple[int, int],
                  rng: np.random.Generator, residuals: Callable[[], np.ndarray]) -> None:
    """Register a done cnmf item on ``movie``: random SNR / r-values (accepted by the rule
    min_SNR 2.5 or rval 0.8), ``residuals()`` as YrA, written with ``save_cnmf``."""
    k = A.shape[1]
    store = BatchStore(root / "batch")
    rec = store.add(algo="cnmf", item_name=name, params={"main": {}}, input_root="raw", input_movie_path=movie)
    u = rec["uuid"]
    out = store.item_dir(u)
    out.mkdir(parents=True)
    snr = rng.uniform(0, 8, k)
    rv = rng.uniform(-1, 1, k)
    good = np.flatnonzero((snr > 2.5) | (rv >= 0.8))
    est = Estimates(A=A, C=C, b=b, f=f, YrA=residuals(), SNR_comp=snr, r_values=rv, idx_components=good,
                    idx_components_bad=np.setdiff1d(np.arange(k), good), dims=dims)
    save_cnmf(out / f"{u}.hdf5", est, {"quality": {"min_SNR": 2.5, "rval_thr": 0.8}}, dims=dims, mmap_file="")
    store.update(u, status="done", outputs={"success": True, "cnmf-hdf5-path": f"{u}/{u}.hdf5"})


def build_item(root: Path, d: int, k: int, t: int, seed: int = 0):
    """A done cnmf item over a (t, d, d) movie = A C + b f + noise."""
    rng = np.random.default_rng(seed)
    raw = new_batch(root)
    A = random_footprints(d, d, k, 4.0, rng)
    C = np.maximum(0, rng.normal(0, 1, (k, t))).cumsum(axis=1) % 5
    b = rng.uniform(50, 100, (d * d, 1))
    f = 1 + 0.1 * rng.normal(size=(1, t))
    Y = np.empty((t, d, d), np.float32)
    for s in range(0, t, 100):  # frames = (A C + b f) in Fortran pixel order, plus noise
        block = (A @ C[:, s : s + 100] + b @ f[:, s : s + 100]).T.reshape(-1, d, d).transpose(0, 2, 1)
        Y[s : s + 100] = block + rng.normal(0, 2, block.shape)
    tifffile.imwrite(raw / "movie.tif", Y)
    add_done_cnmf(root, "bench", "movie.tif", scipy.sparse.csc_matrix(A), C, b, f, (d, d), rng,
                  lambda: rng.normal(0, 0.5, (k, t)))
    return mw.load_batch(root / "batch").iloc[0]


# -- --scale: 2000 components over a 512x512x30000 memmapped movie -------------------------------------
SCALE_REAL = (0, 14900, 28900)  # real frames are written at these starts (SCALE_NREAL each); the rest is a hole
SCALE_NREAL = 200


def build_scale_item(root: Path, d: int, k: int, t: int, seed: int = 0) -> None:
    """A done cnmf item whose input is a sparse F-order memmap (t, d, d); C, YrA K x t float32."""
    from mesmerize_widgets.formats.memmap import memmap_name

    rng = np.random.default_rng(seed)
    raw = new_batch(root)
    A = random_footprints(d, d, k, 7.0, rng)  # ~154 px each
    C = np.empty((k, t), np.float32)
    for s in range(0, t, 5000):  # chunked, float32 all the way: C is 240 MB at 2000 x 30000
        n = min(5000, t - s)
        C[:, s : s + n] = np.maximum(0, rng.standard_normal((k, n), dtype=np.float32))
    np.cumsum(C, axis=1, out=C)
    np.remainder(C, 5, out=C)
    b = rng.uniform(50, 100, (d * d, 1))
    f = (1 + 0.1 * rng.normal(size=(1, t))).astype(np.float32)
    name = memmap_name("movie", (d, d), t, "F")
    P = d * d
    with open(raw / name, "wb") as fh:  # sparse: seek to the end, write one byte
        fh.seek(P * t * 4 - 1)
        fh.write(b"\0")
        for s0 in (s for s in SCALE_REAL if s < t):
            s1 = min(s0 + SCALE_NREAL, t)
            block = (A @ C[:, s0:s1] + b @ f[:, s0:s1]).T  # (n, P) Fortran pixels = F-order frames
            block = (block + rng.normal(0, 2, block.shape)).astype("<f4")
            fh.seek(s0 * P * 4)
            fh.write(block.tobytes())

    def residuals() -> np.ndarray:  # float32 all the way (229 MiB at 2000 x 30000)
        YrA = rng.standard_normal((k, t), dtype=np.float32)
        YrA *= 0.5
        return YrA

    add_done_cnmf(root, "scale", name, A, C, b, f, (d, d), rng, residuals)


def _proc_io() -> dict[str, int]:
    with open("/proc/self/io") as fh:
        return {k: int(v) for k, v in (line.split(":") for line in fh)}


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def scale_main(a: argparse.Namespace) -> None:
    import shutil
    import subprocess

    from mesmerize_widgets.arrays.memmap import LazyMemmap
    from mesmerize_widgets.widgets.cnmf_viewer import CNMFViewer

    d, k, t = a.dims, a.k, a.t
    print(subprocess.run(["df", "-h", "/tmp"], capture_output=True, text=True).stdout.strip())
    movie_gb = d * d * t * 4 / 1e9
    tmp = Path(tempfile.mkdtemp(prefix="bench-viewers-scale-", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--scale-build", str(tmp), "--dims", str(d), "--k", str(k),
                        "--t", str(t)], check=True)
        du = subprocess.run(["du", "-sh", "--apparent-size", str(tmp)], capture_output=True, text=True).stdout.split()[0]
        real = subprocess.run(["du", "-sh", str(tmp)], capture_output=True, text=True).stdout.split()[0]
        print(f"item: {t} frames of {d}x{d} ({movie_gb:.1f} GB sparse F-order memmap), {k} components; "
              f"built in {time.perf_counter() - t0:.1f} s (child process); on disk {real} real, {du} apparent")

        # count what the movie file gives: every F-order read goes through _read_runs
        counter = {"bytes": 0, "frames": 0, "calls": 0}
        orig = LazyMemmap._read_runs

        def counting(self, runs):
            n = sum(b - a_ for a_, b in runs)
            counter["bytes"] += n * self.info.n_pixels * 4
            counter["frames"] += n
            counter["calls"] += 1
            return orig(self, runs)

        LazyMemmap._read_runs = counting

        def measure(fn):
            c0, io0 = dict(counter), _proc_io()
            t0 = time.perf_counter()
            r = fn()
            dt = time.perf_counter() - t0
            io1 = _proc_io()
            return r, dt, counter["bytes"] - c0["bytes"], counter["frames"] - c0["frames"], \
                io1["rchar"] - io0["rchar"], io1["read_bytes"] - io0["read_bytes"]

        mb = 1 / 2**20
        mw.set_parent_raw_data_path(tmp / "raw")
        rss0 = _status_kb("VmRSS")
        _reset_peak()
        row = mw.load_batch(tmp / "batch").iloc[0]
        v, dt_new, *_ = measure(lambda: CNMFViewer(size=tuple(a.size)))
        ok, dt_row, by, fr, rchar, rb = measure(lambda: v.set_row(row))
        assert ok, v.last_message
        _, dt_win, by2, fr2, rchar2, _ = measure(lambda: (v.set_window("mean", a.window), v.render()))
        peak = _status_kb("VmHWM")
        print(f"CNMFViewer(): {dt_new:.2f} s; set_row: {dt_row:.2f} s (movie file: {fr} frames, {by * mb:.1f} MiB; "
              f"all read() calls {rchar * mb:.1f} MiB, from disk {rb * mb:.1f} MiB); "
              f"set_window(mean, {a.window}) + first render: {dt_win:.2f} s ({fr2} frames, {by2 * mb:.1f} MiB)")
        cg = v.contours
        print(f"contours: {cg.n} in one graphic ({cg.offsets[-1]} vertices); graphics in panel 0: "
              f"{len(_fpl_graphics(v, 0))}")
        print(f"RSS: {rss0 * 1024 * mb:.0f} MiB before, {_status_kb('VmRSS') * 1024 * mb:.0f} MiB after load, "
              f"peak {peak * 1024 * mb:.0f} MiB (VmHWM since load_batch; ru_maxrss "
              f"{_ru_maxrss_mb():.0f} MiB); C {v.C.dtype} {v.C.nbytes * mb:.0f} MiB, "
              f"movie {movie_gb * 1e9 * mb:.0f} MiB on disk")

        frame_mib = d * d * 4 * mb
        print(f"time steps (+1 frame each, mean-{a.window} window, set_time + render of both canvases; "
              f"one frame = {frame_mib:.2f} MiB):")
        for start in (100, 15000, 29000):
            if start + a.scale_steps >= t:
                continue
            _, dt_j, by_j, fr_j, rc_j, _ = measure(lambda s=start: (v.set_time(s), v.render()))
            dts, bys, frs, rcs = [], [], [], []
            for i in range(1, a.scale_steps + 1):
                _, dt_s, by_s, fr_s, rc_s, _ = measure(lambda s=start + i: (v.set_time(s), v.render()))
                dts.append(dt_s), bys.append(by_s), frs.append(fr_s), rcs.append(rc_s)
            dts_ms = np.array(dts) * 1e3
            split_set, split_draw = [], []  # where a step's time goes: set_time (fetch + upload) vs drawing
            for i in range(a.scale_steps + 1, a.scale_steps + 6):
                t0 = time.perf_counter()
                v.set_time(start + i)
                t1 = time.perf_counter()
                v.render()
                split_set.append(t1 - t0), split_draw.append(time.perf_counter() - t1)
            real_frame = v.shown_frame(0)
            print(f"  t={start}: jump {dt_j * 1e3:.0f} ms ({fr_j} frames, {by_j * mb:.1f} MiB read); "
                  f"{a.scale_steps} steps: median {np.median(dts_ms):.0f} ms, max {dts_ms.max():.0f} ms "
                  f"({1e3 / np.median(dts_ms):.1f} steps/s); movie read per step {np.mean(frs):.1f} frames = "
                  f"{np.mean(bys) * mb:.2f} MiB (max {max(bys) * mb:.2f}); all read() per step "
                  f"{np.mean(rcs) * mb:.2f} MiB; split: set_time {np.median(split_set) * 1e3:.0f} ms + "
                  f"render {np.median(split_draw) * 1e3:.0f} ms; shown frame mean {float(real_frame.mean()):.1f}")

        # re-classify via the eval sliders
        times = []
        for snr_thr in (1.0, 2.0, 3.0, 4.0, 5.0):
            _, dt_e, by_e, *_ = measure(lambda x=snr_thr: (v.set_eval(min_SNR=x), v.render()))
            times.append((snr_thr, dt_e * 1e3, int(v.accepted.sum()) if hasattr(v, "accepted") else -1, by_e))
        print("set_eval(min_SNR=x) + render: " + ", ".join(
            f"{x:g}: {ms:.0f} ms ({n} accepted, {by * mb:.0f} MiB read)" for x, ms, n, by in times))

        # select components by click at their centres
        rng = np.random.default_rng(1)
        ks = rng.choice(v.n_components, 10, replace=False)
        ms, hits, bys = [], 0, []
        for kk in ks:
            r_, c_ = v.centers[kk]
            got, dt_c, by_c, *_ = measure(lambda r_=r_, c_=c_: (v.click(c_, r_), v.render())[0])
            ms.append(dt_c * 1e3)
            hits += got == kk
            bys.append(by_c)
        ms = np.array(ms)
        print(f"click-select + render (10 components): median {np.median(ms):.0f} ms, max {ms.max():.0f} ms, "
              f"{hits}/10 picked the clicked component, movie read {np.mean(bys) * mb:.1f} MiB per click")
        print(f"total movie read by the viewer: {counter['frames']} frames = {counter['bytes'] * mb:.0f} MiB "
              f"of {movie_gb * 1e9 * mb:.0f} MiB ({counter['calls']} reads); peak RSS {_status_kb('VmHWM') * 1024 * mb:.0f} MiB")
        per_canvas = _per_canvas_draw(v, 20000, a.scale_steps)
        print("draw per canvas and step (median): " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in per_canvas))
        viewer_med = {start: med for start, med in _viewer_medians(v, a, t)}
        LazyMemmap._read_runs = orig
        v.close() if hasattr(v, "close") else None

        # the baseline, same run: a bare fastplotlib ImageWidget, same panels / canvas / memmap
        bare = _bare_scale(row.caiman.get_input_movie(), a, t)
        print(f"bare fastplotlib ImageWidget ({len(bare['names'])} panels of {d}x{d}, fastplotlib's own "
              f"window_funcs mean-{a.window}, {a.size[0]}x{a.size[1]} canvas, same memmap), "
              f"{a.scale_steps} steps (set_index + draw):")
        for start, med in bare["medians"]:
            vm = viewer_med.get(start)
            ratio = f"; viewer (re-measured) {vm:.0f} ms, ratio viewer/bare {vm / med:.2f}" if vm else ""
            print(f"  t={start}: median {med:.0f} ms ({1e3 / med:.1f} steps/s){ratio}")
        vm_all = np.median(list(viewer_med.values()))
        bm_all = np.median([m for _, m in bare["medians"]])
        print(f"at scale: viewer {vm_all:.0f} ms / bare {bm_all:.0f} ms per step = ratio {vm_all / bm_all:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"removed {tmp}: exists={tmp.exists()}")


def _viewer_medians(v, a: argparse.Namespace, t: int) -> list[tuple[int, float]]:
    """Median ms of a +1 step (set_time + render) at each position, measured right before the bare run."""
    out = []
    for start in (100, 15000, 29000):
        if start + a.scale_steps + 1 >= t:
            continue
        v.set_time(start)
        v.render()
        dts = []
        for i in range(1, a.scale_steps + 1):
            t0 = time.perf_counter()
            v.set_time(start + i)
            v.render()
            dts.append(time.perf_counter() - t0)
        out.append((start, float(np.median(dts)) * 1e3))
    return out


def _per_canvas_draw(v, start: int, n: int) -> list[tuple[str, float]]:
    """Where a step's drawing goes: each figure of the viewer drawn on its own."""
    from mesmerize_widgets.widgets import _fpl

    figs = v.figures()
    names = ["image widget", "trace figure", *[f"figure {i}" for i in range(2, len(figs))]][: len(figs)]
    per = [[] for _ in figs]
    for i in range(n):
        v.set_time(start + i)
        for j, f in enumerate(figs):
            t0 = time.perf_counter()
            _fpl.render_now(f)
            per[j].append(time.perf_counter() - t0)
    return [(nm, float(np.median(p)) * 1e3) for nm, p in zip(names, per, strict=True)]


def _bare_scale(movie, a: argparse.Namespace, t: int) -> dict:
    """fastplotlib's ImageWidget alone: 4 panels of the memmap, its own mean window, same canvas size."""
    import fastplotlib as fpl  # the baseline, used bare on purpose

    from mesmerize_widgets.widgets import _fpl

    names = ["input", "A*C", "b*f", "residuals"]
    iw = fpl.ImageWidget([movie] * len(names), names=names, figure_shape=(2, 2),
                         window_funcs={"t": (np.mean, a.window)}, histogram_widget=False, cmap="gnuplot2",
                         figure_kwargs={"size": tuple(a.size)})
    iw.show()
    medians = []
    for start in (100, 15000, 29000):
        if start + a.scale_steps + 1 >= t:
            continue
        _fpl.set_index(iw, start)
        iw.figure.canvas.draw()
        dts = []
        for i in range(1, a.scale_steps + 1):
            t0 = time.perf_counter()
            _fpl.set_index(iw, start + i)
            iw.figure.canvas.draw()
            dts.append(time.perf_counter() - t0)
        medians.append((start, float(np.median(dts)) * 1e3))
    iw.figure.canvas.close()
    return {"names": names, "medians": medians}


def _ru_maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fpl_graphics(v, panel: int) -> list:

    return list(list(v.iw.figure)[panel].graphics)


def step_fps(step, n: int) -> float:
    step(0)  # warm-up: shaders, caches
    step(1)
    t0 = time.perf_counter()
    for i in range(n):
        step(2 + i)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, default=None, help="default 256 (512 with --scale)")
    ap.add_argument("--k", type=int, default=None, help="default 1000 (2000 with --scale)")
    ap.add_argument("--t", type=int, default=None, help="default 400 (30000 with --scale)")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--size", type=int, nargs=2, default=(900, 640))
    ap.add_argument("--scale", action="store_true", help="2000 components over a 512x512x30000 sparse memmap")
    ap.add_argument("--scale-steps", type=int, default=10, help="time steps measured at each position (--scale)")
    ap.add_argument("--scale-build", type=Path, help=argparse.SUPPRESS)  # child process of --scale
    a = ap.parse_args()
    big = a.scale or a.scale_build
    for key, small, large in (("dims", 256, 512), ("k", 1000, 2000), ("t", 400, 30000)):
        if getattr(a, key) is None:
            setattr(a, key, large if big else small)
    if a.scale_build:
        build_scale_item(a.scale_build, a.dims, a.k, a.t)
        return
    if a.scale:
        scale_main(a)
        return

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
