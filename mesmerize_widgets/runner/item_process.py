"""The process one item runs in: ``python -m mesmerize_widgets.runner.item_process``.

Its monitor (a Dask task, see ``monitor``) starts it with the submitting interpreter and
environment and writes the :class:`~.job.Job` to its stdin, so an algorithm crash, a segfault
or a kill -9 takes down this process only. It never opens the batch database: progress goes to
the monitor through a pipe, and the outcome into the item's folder as the end record. Outputs
are written to a temporary directory that replaces the item's directory only once the run has
returned.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from ..algorithms import RunContext, get_algorithm
from ..processes import private_memory
from ..store.paths import set_parent_raw_data_path
from ..store.timestamps import now_iso
from .job import (
    Job,
    checkpoint_dir,
    checkpoint_key,
    install_output_dir,
    remove_checkpoints,
    write_record,
)

PROGRESS_INTERVAL_S = 0.5

log = logging.getLogger("mesmerize_widgets.runner.item_process")  # __name__ is __main__ under -m


def _relative_outputs(outputs: dict[str, Any], out_dir: Path, uuid: str) -> dict[str, Any]:
    """Paths inside the temporary directory become ``<uuid>/<name>``, relative to the batch."""
    rel: dict[str, Any] = {}
    for key, value in outputs.items():
        if isinstance(value, Path):
            try:
                inner = value.resolve().relative_to(out_dir.resolve())
            except ValueError:
                raise ValueError(f"output {key!r} = {value} is outside the item's output directory") from None
            rel[key] = f"{uuid}/{inner.as_posix()}"
        else:
            rel[key] = value
    return rel


def _log_reserved(job: Job) -> None:
    """What the process holds before the run: under a ``memory_limit`` this much is gone already
    (RLIMIT_DATA counts the libraries' reserve, thread pools' included)."""
    limit = f", memory_limit {job.memory_limit / 2**20:.0f} MB" if job.memory_limit else ""
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    log.info("%.0f MB reserved (VmData) before the run%s, OPENBLAS_NUM_THREADS %s",
             private_memory() / 2**20, limit, threads)


def run_job(job: Job, report: TextIO | None = None) -> str:
    """Run the job and leave its end record in the item's folder; returns the final status."""
    start = time.perf_counter()
    last = [0.0]

    def progress(fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if report is not None and (fraction >= 1.0 or now - last[0] >= PROGRESS_INTERVAL_S):
            last[0] = now
            report.write(json.dumps({"progress": float(min(max(fraction, 0.0), 1.0)), "message": str(message)})
                         + "\n")
            report.flush()

    def record(status: str, **fields: Any) -> dict[str, Any]:
        return {"run_id": job.run_id, "status": status, "node": socket.gethostname(), "ran_time": now_iso(),
                "algo_duration": f"{time.perf_counter() - start:.2f} sec", **fields}

    tmp = job.tmp_dir
    try:
        algo = get_algorithm(job.algo)
        params = algo.schema.validate(job.params)
        tmp.mkdir(parents=True, exist_ok=True)  # the monitor made it; a direct call may not have
        key = checkpoint_key(job, params)
        remove_checkpoints(job.batch_dir, job.uuid, keep=key)  # made with other params or input
        ctx = RunContext(input_path=Path(job.input_path) if job.input_path else None, params=params,
                         output_dir=tmp, prefix=job.uuid, progress=progress, n_processes=job.n_processes,
                         memory_limit=job.memory_limit, final_dir=job.item_dir,
                         checkpoint_dir=checkpoint_dir(job.batch_dir, job.uuid, key))
        if ctx.input_path is not None and not ctx.input_path.exists() and not any(c in job.input_path for c in "*?["):
            raise FileNotFoundError(
                f"input movie not found: {ctx.input_path} (on host {socket.gethostname()}; on a cluster, "
                "the raw data folder must be mounted at the same path on every node)"
            )
        run = algo.run_function(job.backend)  # imports the backend and its libraries
        _log_reserved(job)
        outputs = run(ctx)
        outputs = _relative_outputs(outputs, tmp, job.uuid)
        outputs.update(success=True, traceback=None)
        write_record(tmp, record("done", outputs=outputs, error=None))
        install_output_dir(tmp, job.item_dir)  # outputs and their record appear together
        remove_checkpoints(job.batch_dir, job.uuid)
        return "done"
    except BaseException as e:  # record everything, KeyboardInterrupt and MemoryError included
        tb = traceback.format_exc()
        shutil.rmtree(tmp, ignore_errors=True)
        write_record(job.item_dir, record("failed", error=tb, outputs={"success": False, "traceback": tb}))
        if isinstance(e, KeyboardInterrupt):
            raise
        return "failed"


def _log_to_stderr() -> None:
    """The package's own info lines (what a run resumed, how it seeded) go to the item's log."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    pkg = logging.getLogger("mesmerize_widgets")
    pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--report-fd", type=int, default=None, help="a pipe to the monitor for progress")
    args = ap.parse_args(argv)
    job = Job.from_json(sys.stdin.read())
    if job.memory_limit:
        # RLIMIT_DATA, not RLIMIT_AS: it counts the private memory a process allocates, not the
        # movies it maps from disk (a memmap larger than the limit is how long movies are read)
        # nor the address space thread pools reserve; the worker processes inherit it
        resource.setrlimit(resource.RLIMIT_DATA, (job.memory_limit, job.memory_limit))
    _log_to_stderr()
    if job.parent_raw_data_path:
        set_parent_raw_data_path(job.parent_raw_data_path)
    report = os.fdopen(args.report_fd, "w") if args.report_fd is not None else None
    status = run_job(job, report)
    print(f"item {job.uuid}: {status}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
