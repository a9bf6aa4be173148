"""Scale: mcorr (piecewise) -> cnmf (patches) on one movie at growing lengths, time and memory.

    .venv/bin/python benchmarks/bench_scale.py                          # 1,000 / 5,000 / 20,000 frames
    .venv/bin/python benchmarks/bench_scale.py --frames 1000 5000 --backends builtin
    $CAIMAN_PYTHON benchmarks/bench_scale.py --backends builtin caiman  # side by side

A 256 x 256 two-photon movie (the simulator, streamed to a uint16 TIFF) per length. Each run
(length x backend) is a fresh child process; the parent samples, every 50 ms, the anonymous
memory (Pss_Anon: what the processes allocated, not the pages of the files they map, a page
shared by a forked worker and its parent counted once) of the child and all its children
(CNMF's patch workers), per stage. With ``--repeat N`` each length runs N times, the backends
taking turns; every run is printed, and the summary takes each backend's shortest times (what
it can do: on a shared VM one run's time varies by 15-30 %) and its largest peaks. A 20,000-frame run needs ~13 GB of disk
(TIFF, motion-corrected movie, CNMF's C-order memmap); each length's folder is removed after it.

Printed per run: seconds and frames/s of each stage, peak anonymous MiB of each stage, and
what the K x T outputs (C, S, YrA, float32) hold, which grows with the movie by design. Then
ratios: each length against the shortest (time per frame, peak memory) and, where both
backends ran, builtin / CaImAn.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from memtree import RESULT, STAGE, run_sampled  # noqa: E402

DIMS = (256, 256)
MCORR = {"pw_rigid": True, "max_shifts": (6, 6), "strides": (64, 64), "overlaps": (32, 32),
         "max_deviation_rigid": 3}
CNMF = {"fr": 30, "rf": 24, "stride": 12, "K": 6, "gSig": (4, 4), "p": 1, "nb": 2, "use_cnn": False}


def make_movie(path: Path, frames: int, dims: tuple[int, int] = DIMS) -> None:
    from mesmerize_widgets.sim import simulate_2p
    from mesmerize_widgets.sim.io import write_tiff

    n = int(45 * dims[0] * dims[1] / 128**2)
    write_tiff(simulate_2p(n_frames=frames, dims=dims, n_neurons=n, motion="rigid", max_shift=2.0, seed=1,
                           lazy=True), path)


def _child(spec: dict[str, Any]) -> None:
    """One backend over one movie: mcorr then cnmf, in this process (and its pool)."""
    from mesmerize_widgets.algorithms import RunContext, get_algorithm

    work = Path(spec["work"])
    outputs: dict[str, Any] = {}
    patches = _PatchClock()

    def run(algo: str, movie: Path, params: dict[str, Any]) -> dict[str, Any]:
        out = work / algo
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        a = get_algorithm(algo)
        ctx = RunContext(input_path=movie, params=a.schema.validate({"main": params}), output_dir=out,
                         prefix="bench", n_processes=spec["n_processes"],
                         progress=patches.progress if algo == "cnmf" else lambda *_: None)
        print(STAGE + algo, flush=True)
        t0, c0 = time.perf_counter(), tree_cpu()
        res = a.run_function(spec["backend"])(ctx)
        outputs[f"t_{algo}"] = time.perf_counter() - t0
        outputs[f"cpu_{algo}"] = tree_cpu() - c0
        return res

    mc = run("mcorr", Path(spec["movie"]), MCORR)
    cn = run("cnmf", Path(mc["mcorr-output-path"]), CNMF)
    print(STAGE + "done", flush=True)
    from mesmerize_widgets.formats.cnmf_hdf5 import load_cnmf

    est = load_cnmf(cn["cnmf-hdf5-path"]).estimates
    K, T = est.C.shape
    outputs.update(K=int(K), accepted=int(len(est.idx_components)), kt_mib=3 * 4 * K * T / 2**20,
                   **patches.result())
    print(RESULT + json.dumps(outputs), flush=True)


def tree_cpu() -> float:
    """CPU seconds of this process, its finished children (a closed pool's workers), its live
    descendants and the children they reaped."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for c in psutil.Process().children(recursive=True):
        try:
            ct = c.cpu_times()  # with what it reaped: a forkserver's forked workers
            total += ct.user + ct.system + ct.children_user + ct.children_system
        except psutil.Error:
            pass
    return total


class _PatchClock:
    """Wall and CPU time of the builtin's patch stage, from its progress messages: from the last
    memmap message to "... components from N patches" (CPU / wall = the processes kept busy)."""

    def __init__(self) -> None:
        self.start: tuple[float, float] | None = None
        self.span: tuple[float, float] | None = None

    def progress(self, fraction: float, message: str = "") -> None:
        if message.startswith("memmap"):
            self.start = (time.perf_counter(), tree_cpu())
        elif "components from" in message and self.start is not None and self.span is None:
            self.span = (time.perf_counter() - self.start[0], tree_cpu() - self.start[1])

    def result(self) -> dict[str, float]:
        return {} if self.span is None else {"t_patches": self.span[0], "cpu_patches": self.span[1]}


def measure(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run :func:`_child` in a fresh process, sampling the anonymous memory of its tree per stage."""
    result = run_sampled([sys.executable, __file__, "--child", json.dumps(spec)], timeout)
    peaks = result.pop("peaks", {})
    result.update({f"peak_{k}": v / 2**20 for k, v in peaks.items() if k in ("mcorr", "cnmf")})
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--backends", nargs="+", default=["builtin", "caiman"], choices=("builtin", "caiman"))
    ap.add_argument("--n-processes", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None, help="where the movies go (default: a temp folder)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per length and backend, taking turns")
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return 0
    backends = list(args.backends)
    if "caiman" in backends:
        try:
            import caiman  # noqa: F401
        except ImportError:
            print("bench_scale: CaImAn is not importable here; builtin only")
            backends.remove("caiman")
    root = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=args.workdir))
    print(f"bench_scale: {DIMS[0]}x{DIMS[1]} movies of {args.frames} frames, backends {backends}, "
          f"n_processes {args.n_processes}, {psutil.cpu_count()} CPUs; mcorr {MCORR}; cnmf {CNMF}")
    head = (f"{'frames':>7} {'backend':8} {'mcorr s':>8} {'fps':>7} {'cnmf s':>8} {'fps':>7} "
            f"{'mcorr MiB':>9} {'cnmf MiB':>9} {'KxT MiB':>8} {'K':>4} {'acc':>4}")
    print(head)
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    try:
        for n in sorted(args.frames):
            folder = root / f"T{n}"
            folder.mkdir()
            movie = folder / "movie.tif"
            make_movie(movie, n)
            runs: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
            for _ in range(max(1, args.repeat)):
                for backend in backends:
                    spec = {"movie": str(movie), "work": str(folder / backend), "backend": backend,
                            "n_processes": args.n_processes}
                    r = measure(spec, args.timeout)
                    runs[backend].append(r)
                    _print_row(n, backend, r)
            shutil.rmtree(folder, ignore_errors=True)
            for backend in backends:
                rows[(n, backend)] = _best(runs[backend])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.repeat > 1:
        print(f"\nshortest times, largest peaks of {args.repeat} runs each:")
        for (n, backend), r in rows.items():
            _print_row(n, backend, r)
    _ratios(rows, sorted(args.frames), backends)
    _cpu_use(rows, args.n_processes)
    return 0


def _print_row(n: int, backend: str, r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"{n:>7} {backend:8} {r['error']}", flush=True)
        return
    print(f"{n:>7} {backend:8} {r['t_mcorr']:8.1f} {n / r['t_mcorr']:7.0f} {r['t_cnmf']:8.1f} "
          f"{n / r['t_cnmf']:7.0f} {r.get('peak_mcorr', 0):9.0f} {r.get('peak_cnmf', 0):9.0f} "
          f"{r['kt_mib']:8.1f} {r['K']:4d} {r['accepted']:4d}", flush=True)


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for a backend's runs of one length: each stage's shortest time (and that run's
    CPU figures), each stage's largest peak; an error if any run failed."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    out = dict(runs[0])
    for stage in ("mcorr", "cnmf", "patches"):
        timed = [r for r in runs if f"t_{stage}" in r]
        if timed:
            fast = min(timed, key=lambda r: r[f"t_{stage}"])
            out[f"t_{stage}"], out[f"cpu_{stage}"] = fast[f"t_{stage}"], fast[f"cpu_{stage}"]
        peaks = [r[f"peak_{stage}"] for r in runs if f"peak_{stage}" in r]
        if peaks:
            out[f"peak_{stage}"] = max(peaks)
    return out


def _cpu_use(rows: dict[tuple[int, str], dict[str, Any]], n_processes: int) -> None:
    """Processes kept busy (CPU seconds / wall seconds): the whole cnmf, and its patch stage."""
    print(f"\nCPU use (CPU s / wall s; n_processes {n_processes}): cnmf overall, builtin patch stage")
    for (n, backend), r in rows.items():
        if "error" in r or "cpu_cnmf" not in r:
            continue
        line = f"  {n} {backend}: cnmf {r['cpu_cnmf'] / r['t_cnmf']:.2f}"
        if "t_patches" in r:
            line += f", patches {r['cpu_patches'] / r['t_patches']:.2f} ({r['t_patches']:.1f} s)"
        print(line)


def _ratios(rows: dict[tuple[int, str], dict[str, Any]], frames: list[int], backends: list[str]) -> None:
    import math

    print("\nagainst the shortest movie (same backend): time per frame, peak MiB (cnmf: less the K x T outputs)")
    for backend in backends:
        base = rows.get((frames[0], backend), {})
        if "error" in base or not base:
            continue
        for n in frames[1:]:
            r = rows.get((n, backend), {})
            if "error" in r or not r:
                continue
            tpf = {s: (r[f"t_{s}"] / n) / (base[f"t_{s}"] / frames[0]) for s in ("mcorr", "cnmf")}
            mem_mc = r.get("peak_mcorr", 0) / max(base.get("peak_mcorr", 1), 1)
            mem_cn = (r.get("peak_cnmf", 0) - r["kt_mib"]) / max(base.get("peak_cnmf", 1) - base["kt_mib"], 1)
            expo = {s: 1 + math.log(tpf[s]) / math.log(n / frames[0]) for s in tpf}
            print(f"  {backend} {n} vs {frames[0]}: time/frame mcorr {tpf['mcorr']:.2f} (exponent "
                  f"{expo['mcorr']:.2f}), cnmf {tpf['cnmf']:.2f} (exponent {expo['cnmf']:.2f}); "
                  f"peak mcorr {mem_mc:.2f}, cnmf {mem_cn:.2f}")
    if len(backends) == 2:
        print("builtin / CaImAn (same length): time mcorr, cnmf; peak mcorr, cnmf")
        for n in frames:
            b, c = rows.get((n, "builtin"), {}), rows.get((n, "caiman"), {})
            if not b or not c or "error" in b or "error" in c:
                continue
            print(f"  {n}: time {b['t_mcorr'] / c['t_mcorr']:.2f}, {b['t_cnmf'] / c['t_cnmf']:.2f}; "
                  f"memory {b.get('peak_mcorr', 0) / max(c.get('peak_mcorr', 1), 1):.2f}, "
                  f"{b.get('peak_cnmf', 0) / max(c.get('peak_cnmf', 1), 1):.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
