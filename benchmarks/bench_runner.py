"""The runner's cost: per-item overhead on the default local cluster, and 8 items on 2 workers.

Run by hand from the repository root::

    .venv/bin/python benchmarks/bench_runner.py
    .venv/bin/python benchmarks/bench_runner.py --repeats 9 --frames 1500

Measured in one run, on the default cluster (``dask spec`` subprocesses, see
``runner.dask_runner``):

* **start**: the first ``default_client(2)`` (scheduler and two workers);
* **overhead**: a tiny ``summary`` item, submit to ``done`` with ``row.caiman.run()``, minus the
  same algorithm called in this process on the same movie (median of ``--repeats``): what the
  runner adds per item (a task, an item process starting Python and importing the package,
  the store's transitions, moving the output folder into place);
* **parallel**: 8 ``summary`` items on a longer movie, ``max_workers=1`` then ``max_workers=2``;
  the ratio of the two wall times (goal >= 1.8x on two cores).

With ``--slurm`` (as root, with Debian's ``slurm-wlm`` and ``munge``: ``make system-deps``), the
same tiny item's overhead also on a private single-node SLURM (``tests/slurm_local.py``) through
dask-jobqueue's ``SLURMCluster`` of 2 one-core jobs, and the jobs' start time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

import mesmerize_widgets as mw
from mesmerize_widgets.algorithms import RunContext, get_algorithm
from mesmerize_widgets.runner import default_client, shutdown_default_client
from mesmerize_widgets.store.paths import set_parent_raw_data_path


def _in_process(movie: Path, out: Path) -> float:
    algo = get_algorithm("summary")
    out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(input_path=movie, params=algo.schema.validate({"main": {}}), output_dir=out,
                     prefix="x", n_processes=1)
    t0 = time.perf_counter()
    algo.run_function("builtin")(ctx)
    return time.perf_counter() - t0


def _tiny_overheads(df, raw: Path, tmp: str, repeats: int, tag: str, client=None) -> list[float]:
    out = []
    for i in range(repeats):
        df.caiman.add_item("summary", f"{tag} {i}", raw / "tiny.tif", {"main": {}})
        row = df.iloc[-1]
        t0 = time.perf_counter()
        row.caiman.run(progress=False, client=client)
        total = time.perf_counter() - t0
        out.append(total - _in_process(raw / "tiny.tif", Path(tmp) / f"direct-{tag}{i}"))
    return out


def _slurm_overhead(raw: Path, tmp: str, repeats: int) -> tuple[float, list[float]]:
    """Start a private SLURM and a 2-job SLURMCluster; the jobs' start time and tiny-item overheads."""
    import shlex

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster
    from slurm_local import LocalSlurm, missing

    reason = missing()
    if reason:
        raise SystemExit(f"--slurm: {reason}")
    checkout = str(Path(mw.__file__).resolve().parents[1])
    with LocalSlurm() as slurm:
        cluster = SLURMCluster(cores=1, processes=1, memory="2GB", walltime="00:30:00", queue=slurm.partition,
                               python=sys.executable, local_directory=tmp, log_directory=tmp,
                               job_script_prologue=[f"export PYTHONPATH={shlex.quote(checkout)}"],
                               scheduler_options={"dashboard_address": ":0"})
        with Client(cluster) as client:
            t0 = time.perf_counter()
            cluster.scale(jobs=2)
            client.wait_for_workers(2, timeout=120)
            start = time.perf_counter() - t0
            overheads = _tiny_overheads(mw.create_batch(Path(tmp) / "slurm-batch"), raw, tmp, repeats, "slurm",
                                        client=client)
        cluster.close()
        slurm.wait_for_empty_queue(timeout=60, check=False)
    return start, overheads


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=1000, help="frames of each parallel item's 128x128 movie")
    ap.add_argument("--algo", choices=("summary", "mcorr"), default="summary",
                    help="the 8 parallel items: summary (reads the file) or rigid mcorr (computes)")
    ap.add_argument("--slurm", action="store_true", help="also the overhead on a private local SLURM")
    args = ap.parse_args()
    print(f"bench_runner: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        set_parent_raw_data_path(raw)
        rng = np.random.default_rng(0)
        tifffile.imwrite(raw / "tiny.tif", rng.integers(0, 200, (20, 32, 32), np.uint16))
        tifffile.imwrite(raw / "long.tif", rng.integers(0, 200, (args.frames, 128, 128), np.uint16))

        t0 = time.perf_counter()
        default_client(2)
        t_start = time.perf_counter() - t0

        direct = [_in_process(raw / "tiny.tif", Path(tmp) / f"direct{i}") for i in range(args.repeats)]
        overhead = _tiny_overheads(mw.create_batch(Path(tmp) / "batch"), raw, tmp, args.repeats, "tiny")

        walls = {}
        for n in (1, 2):
            b = mw.create_batch(Path(tmp) / f"par{n}")
            for i in range(8):
                if args.algo == "mcorr":
                    b.caiman.add_item("mcorr", f"long {i}", raw / "long.tif",
                                      {"main": {"max_shifts": (6, 6), "pw_rigid": False}})
                else:
                    b.caiman.add_item("summary", f"long {i}", raw / "long.tif", {"main": {}})
            default_client(n)  # scaling the cluster is not the items' time
            t0 = time.perf_counter()
            statuses = b.caiman.run(max_workers=n, progress=False)
            walls[n] = time.perf_counter() - t0
            assert set(statuses.statuses().values()) == {"done"}, statuses.statuses()
        shutdown_default_client()
        if args.slurm:
            slurm_start, slurm_overhead = _slurm_overhead(raw, tmp, args.repeats)

    print(f"cluster start (scheduler + 2 workers):     {t_start:6.2f} s")
    print(f"tiny item, in process:                     {statistics.median(direct):6.3f} s (median of {args.repeats})")
    print(f"tiny item, runner overhead (run - direct): {statistics.median(overhead):6.3f} s "
          f"(min {min(overhead):.3f}, max {max(overhead):.3f})")
    if args.slurm:
        print(f"SLURM: 2 one-core jobs started and connected: {slurm_start:6.2f} s")
        print(f"SLURM: tiny item, runner overhead:          {statistics.median(slurm_overhead):6.3f} s "
              f"(min {min(slurm_overhead):.3f}, max {max(slurm_overhead):.3f}); "
              f"{statistics.median(slurm_overhead) / statistics.median(overhead):.2f}x the local cluster's")
    print(f"8 {args.algo} items of {args.frames} frames: 1 worker {walls[1]:.1f} s, 2 workers {walls[2]:.1f} s; "
          f"speed-up {walls[1] / walls[2]:.2f}x (goal >= 1.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
