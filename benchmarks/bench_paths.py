"""Every path bounded (issue #14): peak memory of each path at a short and a long movie.

    .venv/bin/python benchmarks/bench_paths.py                        # 1,000 and 8,000 frames, ~12 min
    .venv/bin/python benchmarks/bench_paths.py --frames 300 1200 --paths summary lazy viewer_cnmf

Per length, a 128 x 128 two-photon movie (the simulator, streamed to a uint16 TIFF) and a
one-photon one for cnmfe, in a real batch. Each path runs in a fresh child process; the parent
samples every 50 ms the anonymous resident memory (Pss_Anon) of the child and its descendants
(benchmarks/memtree.py, shared with bench_scale). A path's prerequisites (the mcorr item for
cnmf, export and the mcorr viewer; the cnmf item for the lazy arrays, NWB and the cnmf viewer)
run first, and are measured too.

Printed per path: peak MiB at each length, the outputs' MiB (what the result holds that grows
with T by design: C, S, YrA, f, ... of the CNMF file, counted as stored; mcorr's shifts), and
the ratio long / short of (peak - outputs). A flat path is near 1.
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

sys.path.insert(0, str(Path(__file__).parent))
from bench_scale import make_movie  # noqa: E402
from memtree import RESULT, STAGE, run_sampled  # noqa: E402

DIMS = (128, 128)
ALGOS = {  # path -> (algo, input, params)
    "summary": ("summary", "movie.tif", {}),
    "preprocess": ("preprocess", "movie.tif", {"ds_factor": 2, "temporal_ds": 2}),
    "mcorr": ("mcorr", "movie.tif", {"pw_rigid": False, "max_shifts": (6, 6)}),
    "cnmf": ("cnmf", "mcorr", {"fr": 30, "rf": None, "K": 60, "gSig": (4, 4), "p": 1, "nb": 2}),
    "cnmfe": ("cnmfe", "movie1p.tif", {"fr": 20, "decay_time": 0.5, "rf": 40, "stride": 20, "min_corr": 0.8,
                                      "min_pnr": 10.0}),
    "onacid": ("onacid", "movie.tif", {"fr": 30, "gSig": (4, 4), "p": 1, "K": 40, "init_batch": 200,
                                       "motion_correct": True, "max_shifts_online": 6}),
}
USES = {"lazy": "cnmf", "export": "mcorr", "nwb": "cnmf", "viewer_mcorr": "mcorr", "viewer_cnmf": "cnmf"}
ORDER = ("summary", "preprocess", "mcorr", "cnmf", "cnmfe", "onacid", "lazy", "export", "nwb", "viewer_mcorr",
         "viewer_cnmf")


def make_movies(raw: Path, frames: int) -> None:
    """The 2p movie (bench_scale's, at DIMS) and a 1p one for cnmfe, both streamed to TIFFs."""
    from mesmerize_widgets.sim import simulate_1p
    from mesmerize_widgets.sim.io import write_tiff

    make_movie(raw / "movie.tif", frames, DIMS)
    write_tiff(simulate_1p(n_frames=frames, dims=DIMS, n_neurons=40, seed=2, lazy=True), raw / "movie1p.tif")


# -- the child: one path, in this process ---------------------------------------------------------------
def _row(batch: Path, uuid: str) -> Any:
    import mesmerize_widgets as mw

    df = mw.load_batch(batch)
    return df.iloc[int((df["uuid"] == uuid).to_numpy().argmax())]


def _run_item(spec: dict[str, Any]) -> None:
    """Run the item as its item process would (outputs in a temp folder, then the run record)."""
    import uuid as uuid_mod

    from mesmerize_widgets.runner.inputs import input_movie_path
    from mesmerize_widgets.runner.item_process import run_job
    from mesmerize_widgets.runner.job import Job
    from mesmerize_widgets.store import BatchStore

    store = BatchStore(Path(spec["batch"]))
    rec = store.get(spec["uuid"])
    job = Job(batch_dir=str(store.path), uuid=rec["uuid"], run_id=uuid_mod.uuid4().hex[:12], algo=rec["algo"],
              params=rec["params"], backend="builtin", input_path=str(input_movie_path(store, rec)),
              parent_raw_data_path=spec["raw"], n_processes=spec["n_processes"])
    print(STAGE + "run", flush=True)
    if run_job(job) != "done":
        from mesmerize_widgets.runner.job import read_record

        error = (read_record(job.item_dir) or {}).get("error") or ""
        raise RuntimeError(f"{rec['algo']} failed: {error.strip().splitlines()[-1:]}")


def _step_viewer(viewer: Any, steps: int) -> None:
    """Step the time index over the whole movie in ``steps`` evenly spaced frames, drawing each."""
    import numpy as np

    for t in np.linspace(0, viewer.n_frames - 1, steps).astype(int):
        viewer.set_time(int(t))
        viewer.render()


def _use_item(spec: dict[str, Any]) -> None:
    """The lazy arrays, the exports and the viewers over a done item."""
    row = _row(Path(spec["batch"]), spec["uuid"])
    path, out = spec["path"], Path(spec["out"])
    if path.startswith("viewer"):
        from mesmerize_widgets.widgets.cnmf_viewer import CNMFViewer
        from mesmerize_widgets.widgets.mcorr_viewer import McorrViewer

        print(STAGE + "run", flush=True)
        viewer = (CNMFViewer if path == "viewer_cnmf" else McorrViewer)(row)
        viewer.set_window("mean", spec["window"])
        _step_viewer(viewer, spec["steps"])
        return
    print(STAGE + "run", flush=True)
    if path == "lazy":
        arrays = [row.cnmf.get_rcm(), row.cnmf.get_rcb(), row.cnmf.get_residuals()]
        for t in range(arrays[0].shape[0]):
            for a in arrays:
                a.window(t, spec["window"])
    elif path == "export":
        row.mcorr.export(out / "export.tif")
    elif path == "nwb":
        from datetime import UTC, datetime

        session = {"session_start_time": datetime(2024, 1, 1, tzinfo=UTC),
                   "subject": {"subject_id": "sim", "species": "Mus musculus", "sex": "U", "age": "P90D"}}
        row.cnmf.export_nwb(out / "export.nwb", include_movie=True, session=session)


def child(spec: dict[str, Any]) -> None:
    import mesmerize_widgets as mw

    print(STAGE + "setup", flush=True)
    mw.set_parent_raw_data_path(spec["raw"])
    t0 = time.perf_counter()
    (_run_item if spec["path"] in ALGOS else _use_item)(spec)
    seconds = time.perf_counter() - t0
    print(STAGE + "done", flush=True)
    print(RESULT + json.dumps({"seconds": seconds}), flush=True)


# -- the parent ---------------------------------------------------------------------------------------
def output_mib(batch: Path, uuid: str) -> float:
    """MiB of what the item's result holds with a time axis: CNMF's K x T (and nb x T) arrays, shifts."""
    import numpy as np

    from mesmerize_widgets.store import BatchStore

    outputs = BatchStore(batch).get(uuid)["outputs"] or {}
    if "cnmf-hdf5-path" in outputs:
        from mesmerize_widgets.formats.cnmf_hdf5 import load_cnmf

        e = load_cnmf(batch / outputs["cnmf-hdf5-path"]).estimates
        T = np.shape(e.C)[1]
        arrays = [getattr(e, k, None) for k in ("C", "S", "YrA", "f", "F_dff", "R", "noisyC", "C_on")]
        return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray) and a.shape[-1:] == (T,)) / 2**20
    if "shifts" in outputs:
        return (batch / outputs["shifts"]).stat().st_size / 2**20
    return 0.0


def _closure(paths: list[str]) -> list[str]:
    """The paths asked for and what they need, in running order."""
    want = set(paths)
    for p in paths:
        need = USES.get(p) or ("mcorr" if ALGOS.get(p, ("", ""))[1] == "mcorr" else None)
        while need:
            want.add(need)
            need = "mcorr" if ALGOS[need][1] == "mcorr" else None
    return [p for p in ORDER if p in want]


def _add(batch: Path, path: str, items: dict[str, str], budget: dict[str, float]) -> str:
    from mesmerize_widgets.accessors.operations import add_item
    from mesmerize_widgets.store import BatchStore

    algo, movie, params = ALGOS[path]
    if algo in ("cnmf", "cnmfe"):
        params = {**params, "memory_budget_mb": budget[algo]}
    source = items[movie] if movie in items else movie
    return add_item(BatchStore(batch), algo, path, source, {"main": params})["uuid"]


def _finish(batch: Path, uuid: str) -> None:
    """Record the run's outcome in the batch, as the runner's monitor would."""
    from mesmerize_widgets.runner.job import read_record
    from mesmerize_widgets.store import BatchStore

    rec = read_record(batch / uuid)
    BatchStore(batch).update(uuid, status=rec["status"], outputs=rec["outputs"])


def run_length(root: Path, frames: int, paths: list[str], a: argparse.Namespace) -> dict[str, dict]:
    """All paths at one length; the folder is removed afterwards."""
    import mesmerize_widgets as mw

    folder = root / f"T{frames}"
    raw, batch = folder / "raw", folder / "batch"
    raw.mkdir(parents=True)
    t0 = time.perf_counter()
    make_movies(raw, frames)
    print(f"-- {frames} frames (movies written in {time.perf_counter() - t0:.0f} s)", flush=True)
    mw.set_parent_raw_data_path(raw)
    mw.create_batch(batch)
    items: dict[str, str] = {}
    rows: dict[str, dict] = {}
    for path in paths:
        need = USES.get(path) or ALGOS[path][1]
        if need in ALGOS and need not in items:
            rows[path] = {"error": f"not run: {need} failed"}
            continue
        uuid = _add(batch, path, items, {"cnmf": a.budget, "cnmfe": a.budget_cnmfe}) if path in ALGOS else items[USES[path]]
        out = folder / "out" / path
        out.mkdir(parents=True)
        spec = {"path": path, "batch": str(batch), "raw": str(raw), "uuid": uuid, "out": str(out),
                "n_processes": a.n_processes, "window": a.window, "steps": a.viewer_steps}
        r = run_sampled([sys.executable, __file__, "--child", json.dumps(spec)], a.timeout)
        if "error" not in r and path in ALGOS:
            _finish(batch, uuid)
            items[path] = uuid
        if "error" not in r:
            r["peak"] = r["peaks"].get("run", 0) / 2**20
            r["outputs"] = output_mib(batch, uuid)
        rows[path] = r
        print(f"   {path:13} " + (r["error"] if "error" in r else
              f"{r['seconds']:7.1f} s  peak {r['peak']:7.0f} MiB  outputs {r['outputs']:6.1f} MiB"), flush=True)
    if not a.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def table(res: dict[int, dict[str, dict]], frames: list[int], paths: list[str]) -> None:
    short, long = frames[0], frames[-1]
    print(f"\n{'path':13} {'peak ' + str(short):>11} {'out ' + str(short):>9} {'peak ' + str(long):>11} "
          f"{'out ' + str(long):>9} {'ratio':>6}   (MiB; ratio = (peak - out) at {long} / at {short})")
    for p in paths:
        s, lg = res[short].get(p, {}), res[long].get(p, {})
        if "peak" not in s or "peak" not in lg:
            print(f"{p:13} {s.get('error', '')} {lg.get('error', '')}")
            continue
        ratio = (lg["peak"] - lg["outputs"]) / max(s["peak"] - s["outputs"], 1)
        print(f"{p:13} {s['peak']:11.0f} {s['outputs']:9.1f} {lg['peak']:11.0f} {lg['outputs']:9.1f} {ratio:6.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs=2, default=[1000, 8000], help="the short and the long movie")
    ap.add_argument("--paths", nargs="+", default=list(ORDER), choices=ORDER)
    ap.add_argument("--budget", type=float, default=512.0, help="cnmf's memory_budget_mb")
    ap.add_argument("--budget-cnmfe", type=float, default=2048.0,
                    help="cnmfe's memory_budget_mb (its patches are seeded at full rate within it: 1.8 GiB at 8,000 frames; on averaged frames past it)")
    ap.add_argument("--n-processes", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None, help="where the movies go (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep each length's folder")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds one child may run")
    ap.add_argument("--window", type=int, default=5, help="mean window of the lazy arrays and viewers")
    ap.add_argument("--viewer-steps", type=int, default=200, help="frames drawn, spread over the movie")
    a = ap.parse_args()
    paths = _closure(a.paths)
    frames = sorted(a.frames)
    print(f"bench_paths: {DIMS[0]}x{DIMS[1]}, {frames} frames, paths {paths}; memory_budget_mb cnmf "
          f"{a.budget:g}, cnmfe {a.budget_cnmfe:g}, n_processes {a.n_processes}, window {a.window}, viewer steps {a.viewer_steps}")
    root = Path(tempfile.mkdtemp(prefix="bench_paths_", dir=a.workdir))
    t0 = time.perf_counter()
    try:
        res = {n: run_length(root, n, paths, a) for n in frames}
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    table(res, frames, paths)
    print(f"\n(ran in {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("RENDERCANVAS_FORCE_OFFSCREEN", "1")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    if sys.argv[1:2] == ["--child"]:  # one path, measured by the parent
        child(json.loads(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())
