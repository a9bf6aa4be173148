"""mcorr -> cnmf/cnmfe on the real recordings of ../shared/data/real: suggested vs hand-picked params.

Run by hand from the repository root::

    .venv/bin/python benchmarks/bench_real.py                        # builtin backend
    /work/caiman-env/bin/python benchmarks/bench_real.py             # builtin and CaImAn
    .venv/bin/python benchmarks/bench_real.py --only neurofinder --backends builtin --n-processes 2
    .venv/bin/python benchmarks/bench_real.py --stages               # where the builtin loses the ROIs

For every recording (Neurofinder 01.01 crop, two Allen crops, an Inscopix 1p movie) and every
params set -- ``suggested`` (``suggest_params`` on the raw movie for mcorr, then on mcorr's
output for cnmf/cnmfe) and ``fixed`` (the hand-picked set of issue #11) -- and every backend that
can run here (builtin always; CaImAn where ``caiman_problems(needs_deconvolution=True)`` is
empty), it runs mcorr then cnmf (cnmfe for the 1p movie) and prints: components found and
accepted, precision/recall/F1 of the accepted ones against the manual ROIs where the recording
has them (``sim.scoring.score_masks``: footprints thresholded at 20 % of their peak, one-to-one
Hungarian matching on IoU >= 0.3; '-' where there are none), the time of mcorr and of cnmf, and
peak memory. Then one line per movie and params set where both backends ran: builtin/CaImAn
time and precision/F1 side by side.

Memory: each run (one movie x params set x backend) is a fresh child process (this script with
``--one``), so nothing is shared or cached between runs; the parent samples the resident set
size of that child plus all its descendants (the worker processes of mcorr/cnmf) every 50 ms
with psutil and reports the largest sum. ``ru_maxrss`` would give only the largest single
process, and RUSAGE_CHILDREN accumulates over every child the parent has waited for.
Suggestion time (the movie is measured once per file) is printed apart, not in mcorr/cnmf.

Manual ROIs miss cells and include cells silent in a short excerpt: compare backends and params
sets on the same movie rather than reading F1 as absolute. For every recording it first prints
the share of a pixel's variance that the field's common trace holds (:func:`common_share`: on the
Inscopix movie 95%, so its std image shows the field's brightness, not its cells), and for a
recording with ROIs how many of them show activity of their own at all (:func:`roi_activity`): on the
Neurofinder crop nearly every ROI's trace rises above 5 noise SDs, about a third once its
neighbourhood's neuropil is subtracted, a fifth once the field's brightness factor is divided out
(the whole field brightens by about three quarters over its last 18 frames, as much around the
ROIs as in them), a handful once the signal the whole field shares is removed: that bounds the
recall of any activity-based method. ``--stages`` follows the builtin cnmf on each recording with
ROIs (see :func:`stages`): how many components match one after seeding, after the HALS rounds,
after pruning and once accepted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "real"
PARAM_SETS = ("suggested", "fixed")
_RESULT = "BENCH_REAL_RESULT "


@dataclass
class Recording:
    """One movie of ../shared/data/real and the hand-picked params for it."""

    name: str
    path: str  # relative to the data folder
    fr: float
    algo: str  # cnmf (2p) or cnmfe (1p)
    var_name_hdf5: str | None = None
    regions: str | None = None  # Neurofinder regions.json, relative to the data folder
    mcorr: dict[str, Any] = field(default_factory=dict)
    cnmf: dict[str, Any] = field(default_factory=dict)


def _fixed_2p(fr: float, small: bool) -> dict[str, Any]:
    """Issue #11's set; the 100x100 Allen crops are fitted whole with K 20, gSig (4, 4)."""
    if small:
        return {"rf": None, "stride": None, "K": 20, "gSig": (4, 4), "min_SNR": 2.0, "p": 1, "fr": fr,
                "use_cnn": False}
    return {"rf": 20, "stride": 10, "K": 6, "gSig": (5, 5), "min_SNR": 2.0, "p": 1, "fr": fr, "use_cnn": False}


RECORDINGS = [
    Recording("neurofinder-01.01", "neurofinder-01.01-crop/movie.tif", 7.5, "cnmf",
              regions="neurofinder-01.01-crop/regions.json", cnmf=_fixed_2p(7.5, small=False)),
    Recording("allen-792757260", "allen-ophys-crops/792757260_test_data.h5", 10.0, "cnmf",
              var_name_hdf5="input_frames", cnmf=_fixed_2p(10.0, small=True)),
    Recording("allen-100x100", "allen-ophys-crops/movie_100x100x100.h5", 10.0, "cnmf",
              var_name_hdf5="data", cnmf=_fixed_2p(10.0, small=True)),
    Recording("inscopix-1p", "inscopix-1p/movie_part2_108x123x63.tiff", 10.0, "cnmfe",
              mcorr={"gSig_filt": (3, 3)},
              cnmf={"gSig": (3, 3), "gSiz": (13, 13), "min_corr": 0.8, "min_pnr": 8.0, "fr": 10.0, "use_cnn": False}),
]


# -- one run, in a child process ------------------------------------------------------------------
def _run_algo(algo: str, backend: str, movie: Path, params: dict[str, Any], out: Path,
              n_processes: int) -> tuple[float, dict[str, Any]]:
    """Run one algorithm directly (no batch), as bench_cnmf does; (seconds, outputs)."""
    from mesmerize_widgets.algorithms import RunContext, get_algorithm

    out.mkdir(parents=True)
    a = get_algorithm(algo)
    ctx = RunContext(input_path=movie, params=a.schema.validate(params), output_dir=out, prefix="bench",
                     n_processes=n_processes)
    t0 = time.perf_counter()
    outputs = a.run_function(backend)(ctx)
    return time.perf_counter() - t0, outputs


def _score(h5: Path, regions: Path | None) -> dict[str, Any]:
    """Components found/accepted and, with manual ROIs, precision/recall/F1 of the accepted ones."""
    import numpy as np

    from mesmerize_widgets.formats.cnmf_hdf5 import load_cnmf
    from mesmerize_widgets.sim.scoring import (
        binarize_footprints,
        masks_from_coordinates,
        score_masks,
    )

    res = load_cnmf(h5)
    est = res.estimates
    good = np.asarray(est.idx_components if est.idx_components is not None else range(est.A.shape[1]), int)
    out: dict[str, Any] = {"K": int(est.A.shape[1]), "accepted": len(good)}
    if regions is not None:
        dims = tuple(int(d) for d in est.dims[:2])
        found = binarize_footprints(est.A.tocsc()[:, good].toarray(), dims)
        ref = masks_from_coordinates(json.loads(regions.read_text()), dims)
        s = score_masks(found, ref)
        out.update(precision=s["precision"], recall=s["recall"], f1=s["f1"], n_rois=len(ref),
                   matched=int(s["matched"]))
    return out


def read_movie(rec: Recording, data: Path) -> Any:
    """The whole recording as a float32 (frames, rows, cols) array (they are small)."""
    import numpy as np

    from mesmerize_widgets.arrays import open_movie

    return np.asarray(open_movie(data / rec.path, var_name_hdf5=rec.var_name_hdf5 or "mov")[:], np.float32)


def common_share(mov: Any) -> float:
    """Median over pixels of the share of a pixel's variance that the field's mean trace explains.
    Near 1, the movie's std image shows the field brightening and dimming, not its active cells."""
    import numpy as np

    Y = mov.reshape(len(mov), -1)
    Y = Y - Y.mean(0)
    g = Y.mean(1)
    beta = g @ Y / (g @ g)
    return float(np.median(beta**2 * (g @ g) / np.maximum((Y * Y).sum(0), 1e-12)))


def roi_activity(mov: Any, regions: Path, z: float = 5.0) -> dict[str, Any]:
    """How many manual ROIs show activity of their own, four ways (keys ``rois``, ``raw``,
    ``neuropil``, ``brightness``, ``common``): the ROI's mean trace rising above ``z`` noise SDs
    as it is; the same once its surrounding neuropil is subtracted (0.7 x the mean of a ring
    3-8 px outside every ROI, the usual correction of 2p traces); once the field's brightness
    factor is divided out (every pixel scaled by the field's mean trace over its average: what a
    laser-power or field-wide change does, and what CNMF's rank-1 background b ⊗ f models); and
    once the field's common signal (the movie's first temporal principal component) is regressed
    out. The first counts what the whole field shares too; the last also removes a stimulus
    response many cells share. ``gain_in_rois`` is the field factor's slope in the ROIs' pixels
    over its slope elsewhere, relative to their resting brightness: near 1, the field-wide change
    is no more in the cells than around them, so it is not their activity."""
    import numpy as np
    from scipy import ndimage as ndi

    from mesmerize_widgets.algorithms.cnmf.core import noise_psd
    from mesmerize_widgets.sim.scoring import masks_from_coordinates

    T = len(mov)
    ref = masks_from_coordinates(json.loads(regions.read_text()), mov.shape[1:])
    Y = mov.reshape(T, -1)
    traces = np.stack([Y[:, m.ravel()].mean(1) for m in ref])
    near_any = ndi.binary_dilation(ref.any(0), iterations=2)
    rings = [ndi.binary_dilation(m, iterations=8) & ~near_any for m in ref]
    neuropil = np.stack([Y[:, r.ravel()].mean(1) if r.any() else np.zeros(T, np.float32) for r in rings])

    def n_active(tr: np.ndarray) -> int:
        tr = tr - np.median(tr, axis=1, keepdims=True)
        return int(((tr / noise_psd(tr)[:, None]).max(1) > z).sum())

    common = np.linalg.svd(Y[:, ::7] - Y[:, ::7].mean(0), full_matrices=False)[0][:, 0]
    centred = traces - traces.mean(1, keepdims=True)
    own = centred - np.outer(centred @ common, common)
    field = Y.mean(1)
    fc = field - field.mean()
    scaled = traces - np.outer(traces.mean(1), fc / field.mean())  # each ROI over the field's factor
    relative = (fc @ (Y - Y.mean(0))) / (fc @ fc) / np.maximum(Y.mean(0), 1e-6)
    in_roi = ref.any(0).ravel()
    return {"rois": len(ref), "raw": n_active(traces), "neuropil": n_active(traces - 0.7 * neuropil),
            "brightness": n_active(scaled), "common": n_active(own),
            "gain_in_rois": float(np.median(relative[in_roi]) / np.median(relative[~in_roi]))}


def _mcorr_params(rec: Recording, movie: Path, params_set: str) -> dict[str, Any]:
    var = {"var_name_hdf5": rec.var_name_hdf5} if rec.var_name_hdf5 else {}
    if params_set == "suggested":
        from mesmerize_widgets.algorithms.suggest import suggest_params

        return suggest_params(movie, "mcorr", {"main": {**var, "fr": rec.fr}}, var_name_hdf5=rec.var_name_hdf5).params
    return {"main": {**rec.mcorr, **var, "fr": rec.fr}}


def _cnmf_params(rec: Recording, mc_movie: Path, params_set: str) -> dict[str, Any]:
    if params_set == "suggested":
        from mesmerize_widgets.algorithms.suggest import suggest_params

        # fr: a memmap carries no frame rate, so give the recording's (suggest keeps it)
        return suggest_params(mc_movie, rec.algo, {"main": {"fr": rec.fr, "use_cnn": False}}).params
    return {"main": rec.cnmf}


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """mcorr -> cnmf/cnmfe for one recording, params set and backend (in this process)."""
    rec = Recording(**spec["recording"])
    data, work = Path(spec["data"]), Path(spec["workdir"])
    movie = data / rec.path
    backend, n_proc = spec["backend"], spec["n_processes"]
    t0 = time.perf_counter()
    mc_params = _mcorr_params(rec, movie, spec["params_set"])
    t_suggest = time.perf_counter() - t0
    t_mc, mc_out = _run_algo("mcorr", backend, movie, mc_params, work / "mcorr", n_proc)
    mc_movie = Path(mc_out["mcorr-output-path"])
    t0 = time.perf_counter()
    cn_params = _cnmf_params(rec, mc_movie, spec["params_set"])
    t_suggest += time.perf_counter() - t0
    t_cn, cn_out = _run_algo(rec.algo, backend, mc_movie, cn_params, work / rec.algo, n_proc)
    from mesmerize_widgets.algorithms import get_algorithm

    mc_schema, cn_schema = get_algorithm("mcorr").schema, get_algorithm(rec.algo).schema
    mc_used = {**mc_schema.defaults()["main"], **mc_schema.validate(mc_params)["main"]}
    cn_used = {**cn_schema.defaults()["main"], **cn_schema.validate(cn_params)["main"]}
    cn_keys = ("K", "gSig", "gSiz", "rf", "stride", "p", "min_SNR", "fr", "decay_time")
    if rec.algo == "cnmfe":
        cn_keys += ("min_corr", "min_pnr")
    res = {"t_mcorr": t_mc, "t_cnmf": t_cn, "t_suggest": t_suggest,
           "mcorr_params": _short(mc_used, ("max_shifts", "gSig_filt", "pw_rigid")),
           "cnmf_params": _short(cn_used, cn_keys)}
    res.update(_score(Path(cn_out["cnmf-hdf5-path"]), data / rec.regions if rec.regions else None))
    return res


def stages(rec: Recording, data: Path, params_set: str, work: Path, n_proc: int) -> None:
    """Where the builtin cnmf loses a recording's ROIs: how many components match one (IoU >= 0.3,
    footprints at 20 % of their peak, each ROI counted once) after seeding, after the HALS rounds
    (residual seeds and merges included), after pruning, and accepted; then whether SNR_comp and
    r_values, which pruning and evaluation go by, set the matching components apart."""
    import numpy as np

    from mesmerize_widgets.algorithms import RunContext, get_algorithm
    from mesmerize_widgets.algorithms.cnmf import core
    from mesmerize_widgets.algorithms.cnmf.builtin import write_c_memmap
    from mesmerize_widgets.formats.memmap import load_memmap
    from mesmerize_widgets.sim.scoring import (
        binarize_footprints,
        iou_matrix,
        masks_from_coordinates,
    )

    movie = data / rec.path
    _, mc_out = _run_algo("mcorr", "builtin", movie, _mcorr_params(rec, movie, params_set), work / "mcorr", n_proc)
    mc_movie = Path(mc_out["mcorr-output-path"])
    schema = get_algorithm(rec.algo).schema
    params = schema.validate(_cnmf_params(rec, mc_movie, params_set), fill_defaults=True)
    (work / "stages").mkdir(parents=True)
    ctx = RunContext(input_path=mc_movie, params=params, output_dir=work / "stages", prefix="stages",
                     n_processes=n_proc)
    mmap, _, dims, _ = write_c_memmap(ctx)
    Yr, _, _ = load_memmap(mmap)
    seen: dict[str, np.ndarray] = {}
    res = core.fit(Yr, dims, core.Options.from_main(params["main"], cnmfe=rec.algo == "cnmfe"), mmap_path=mmap,
                   n_processes=n_proc, observe=lambda stage, A: seen.__setitem__(stage, A.copy()))
    seen["pruned"] = res["A"]
    seen["accepted"] = res["A"][:, res["idx_components"]]
    ref = masks_from_coordinates(json.loads((data / rec.regions).read_text()), dims)
    print(f"{rec.name} {params_set}, builtin {rec.algo}: {len(ref)} ROIs")
    kept = np.zeros(0, bool)
    for stage, A in seen.items():
        iou = iou_matrix(binarize_footprints(A, dims), ref) if A.shape[1] else np.zeros((0, len(ref)))
        matched = (iou >= 0.3).any(1)
        print(f"  {stage:11} {A.shape[1]:4d} components, {int(matched.sum()):3d} match an ROI, "
              f"{int((iou >= 0.3).any(0).sum()):3d} ROIs matched", flush=True)
        if stage == "pruned":
            kept = matched
    for name in ("SNR_comp", "r_values"):
        v = np.asarray(res[name])
        if not (kept.any() and (~kept).any()):
            break  # nothing to compare
        print(f"  {name} of the pruned components, median (quartiles): matching an ROI "
              f"{np.median(v[kept]):.2f} ({np.percentile(v[kept], 25):.2f}-{np.percentile(v[kept], 75):.2f}), "
              f"the rest {np.median(v[~kept]):.2f} ({np.percentile(v[~kept], 25):.2f}-{np.percentile(v[~kept], 75):.2f})")
    del Yr


def _short(main: dict[str, Any], keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={main.get(k)!r}" for k in keys if k in main)


def _child(spec_json: str) -> int:
    try:
        res = {"ok": True, **run_one(json.loads(spec_json))}
    except Exception as e:  # report, the parent prints it and goes on
        res = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    print(_RESULT + json.dumps(res), flush=True)
    return 0


# -- the parent: one child per run, memory sampled ------------------------------------------------
def measure(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``spec`` in a child process; its result plus the peak RSS of the child and its workers."""
    import psutil

    proc = subprocess.Popen([sys.executable, __file__, "--one", json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    ps = psutil.Process(proc.pid)
    peak, t0 = 0, time.monotonic()
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        if time.monotonic() - t0 > timeout:
            for p in [*ps.children(recursive=True), ps]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            proc.wait()
            return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith(_RESULT)), None)
    if line is None:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        return {"ok": False, "error": f"child exited with code {proc.returncode}: {tail}"}
    res = json.loads(line[len(_RESULT):])
    res["peak_mib"] = peak / 2**20
    return res


def _fmt(x: Any, spec: str) -> str:
    """``x`` formatted, or a '-' as wide as the field where there is no value."""
    return format(x, spec) if x is not None else format("-", f">{spec.split('.')[0]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=None, help="recordings whose name contains one of these")
    ap.add_argument("--backends", nargs="+", default=["builtin", "caiman"], choices=("builtin", "caiman"))
    ap.add_argument("--params", nargs="+", default=list(PARAM_SETS), choices=PARAM_SETS)
    ap.add_argument("--n-processes", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DATA, help=f"the real-data folder (default {DATA})")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per run before it is killed")
    ap.add_argument("--verbose", action="store_true", help="print the params used and full tracebacks")
    ap.add_argument("--stages", action="store_true",
                    help="instead: where the builtin cnmf loses each recording's ROIs, stage by stage")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"bench_real: no real data at {args.data} (../shared/data/real, outside the repository); nothing to run")
        return 0
    if args.stages:
        with tempfile.TemporaryDirectory(prefix="bench-real-stages-") as tmp:
            for rec in RECORDINGS:
                if rec.regions and (args.only is None or any(o in rec.name for o in args.only)):
                    for pset in args.params:
                        stages(rec, args.data, pset, Path(tmp) / f"{rec.name}-{pset}", args.n_processes)
        return 0
    backends = list(args.backends)
    if "caiman" in backends:
        from mesmerize_widgets.algorithms.caiman_env import caiman_problems

        problems = caiman_problems(needs_deconvolution=True)
        if problems:
            print("CaImAn backend skipped:", "; ".join(problems))
            backends.remove("caiman")
    recs = [r for r in RECORDINGS if args.only is None or any(o in r.name for o in args.only)]
    missing = [r for r in recs if not (args.data / r.path).exists()]
    for r in missing:
        print(f"skip {r.name}: {args.data / r.path} not found")
    recs = [r for r in recs if r not in missing]
    import numpy as np
    import psutil

    print(f"bench_real: {len(recs)} recordings, params {', '.join(args.params)}, backends {', '.join(backends)}, "
          f"n_processes {args.n_processes}; Python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"{psutil.cpu_count()} CPUs")
    for rec in recs:
        mov = read_movie(rec, args.data)
        print(f"{rec.name}: the field's common trace holds {common_share(mov):.0%} of a pixel's variance")
        if rec.regions:
            act = roi_activity(mov, args.data / rec.regions)
            print(f"{rec.name}: {act['raw']} of {act['rois']} manual ROIs rise above 5 noise SDs in their mean "
                  f"trace, {act['neuropil']} with their neuropil subtracted, {act['brightness']} once the field's "
                  f"brightness factor is divided out, {act['common']} once the field's common signal (first "
                  "principal component) is regressed out")
            print(f"{rec.name}: the field-wide change, relative to resting brightness, is "
                  f"{act['gain_in_rois']:.2f}x as large in the ROIs as around them")
    head = (f"{'movie':18} {'algo':5} {'params':9} {'backend':7} {'K':>4} {'acc':>4} {'prec':>5} {'recall':>6} "
            f"{'F1':>5} {'mcorr s':>7} {'cnmf s':>7} {'sugg s':>6} {'peak MiB':>8}")
    print(head)
    results: dict[tuple[str, str, str], dict[str, Any]] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        for rec in recs:
            for pset in args.params:
                for backend in backends:
                    work = Path(tmp) / f"{rec.name}-{pset}-{backend}"
                    spec = {"recording": asdict(rec), "data": str(args.data), "workdir": str(work),
                            "params_set": pset, "backend": backend, "n_processes": args.n_processes}
                    res = measure(spec, args.timeout)
                    label = f"{rec.name:18} {rec.algo:5} {pset:9} {backend:7}"
                    if not res["ok"]:
                        print(f"{label} FAILED, skipped: {res['error']}")
                        if args.verbose and "traceback" in res:
                            print(res["traceback"])
                        continue
                    results[(rec.name, pset, backend)] = res
                    print(f"{label} {res['K']:4d} {res['accepted']:4d} {_fmt(res.get('precision'), '5.2f')} "
                          f"{_fmt(res.get('recall'), '6.2f')} {_fmt(res.get('f1'), '5.2f')} {res['t_mcorr']:7.1f} "
                          f"{res['t_cnmf']:7.1f} {res['t_suggest']:6.1f} {res['peak_mib']:8.0f}", flush=True)
                    if args.verbose:
                        print(f"    mcorr: {res['mcorr_params']}\n    {rec.algo}: {res['cnmf_params']}")
    pairs = [(name, pset) for (name, pset, b) in results if b == "builtin" and (name, pset, "caiman") in results]
    if pairs:
        print("\nbuiltin / CaImAn (same movie and params set, this run):")
        for name, pset in pairs:
            b, c = results[(name, pset, "builtin")], results[(name, pset, "caiman")]
            tb, tc = b["t_mcorr"] + b["t_cnmf"], c["t_mcorr"] + c["t_cnmf"]
            line = (f"  {name} {pset}: time {tb / tc:.2f} (mcorr {b['t_mcorr'] / c['t_mcorr']:.2f}, "
                    f"cnmf {b['t_cnmf'] / c['t_cnmf']:.2f}), memory {b['peak_mib'] / c['peak_mib']:.2f}, "
                    f"accepted {b['accepted']} vs {c['accepted']}")
            if "f1" in b:
                line += (f", matching an ROI {b['matched']} vs {c['matched']}, precision {b['precision']:.3f} "
                         f"vs {c['precision']:.3f}, F1 {b['f1']:.2f} vs {c['f1']:.2f}")
            print(line)
    print(f"\n(ran in {time.perf_counter() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        sys.exit(_child(sys.argv[2]))
    sys.exit(main())
