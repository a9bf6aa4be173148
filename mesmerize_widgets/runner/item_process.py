"""The process one item runs in: ``python -m mesmerize_widgets.runner.item_process``.

It is started by the runner's monitor task with the notebook's interpreter and environment, so
an algorithm crash, a segfault or a kill -9 takes down this process only. Outputs are written to
a temporary directory that replaces the item's directory only once the run has returned.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..algorithms import RunContext, get_algorithm
from ..store import BatchStore
from ..store.batch_store import now_iso
from ..store.paths import set_parent_raw_data_path
from .inputs import input_movie_path

PROGRESS_INTERVAL_S = 0.5


def tmp_dir_for(store: BatchStore, uuid: str, run_id: str) -> Path:
    return store.path / f".{uuid}.tmp-{run_id}"


def remove_stale_partials(store: BatchStore, uuid: str) -> None:
    """Remove temporary folders a killed run of this item left behind (never its real output)."""
    for pattern in (f".{uuid}.tmp-*", f".{uuid}.old-*"):
        for path in store.path.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


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


def install_output_dir(tmp: Path, final: Path) -> None:
    """Swap the finished temporary directory in; an old output is removed only afterwards."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_item(batch_dir: str, uuid: str, run_id: str, backend: str, n_processes: int = 1) -> str:
    """Run one claimed item and record its outcome; returns the final status."""
    store = BatchStore(batch_dir)
    rec = store.get(uuid)
    tmp = tmp_dir_for(store, uuid, run_id)
    start = time.perf_counter()
    last = [0.0]

    def progress(fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - last[0] >= PROGRESS_INTERVAL_S:
            last[0] = now
            store.transition(uuid, ["running"], if_run=run_id, progress=float(min(max(fraction, 0.0), 1.0)),
                             heartbeat=time.time())

    try:
        algo = get_algorithm(rec["algo"])
        params = algo.schema.validate(rec["params"])
        tmp.mkdir(parents=True, exist_ok=False)
        ctx = RunContext(
            input_path=input_movie_path(store, rec),
            params=params,
            output_dir=tmp,
            prefix=uuid,
            progress=progress,
            n_processes=n_processes,
        )
        if not ctx.input_path.exists() and not any(c in str(ctx.input_path) for c in "*?["):
            raise FileNotFoundError(
                f"input movie not found: {ctx.input_path} (on host {socket.gethostname()}; on a cluster, "
                "the raw data folder must be mounted at the same path on every node)"
            )
        outputs = algo.run_function(backend)(ctx)
        outputs = _relative_outputs(outputs, tmp, uuid)
        outputs.update(success=True, traceback=None)
        install_output_dir(tmp, store.item_dir(uuid))
        duration = time.perf_counter() - start
        store.transition(
            uuid, ["running"], if_run=run_id, status="done", outputs=outputs, progress=1.0,
            ran_time=now_iso(), algo_duration=f"{duration:.2f} sec", error=None, heartbeat=time.time(),
        )
        return "done"
    except BaseException as e:  # record everything, KeyboardInterrupt and MemoryError included
        tb = traceback.format_exc()
        shutil.rmtree(tmp, ignore_errors=True)
        store.transition(
            uuid, ["running"], if_run=run_id, status="failed", error=tb,
            outputs={"success": False, "traceback": tb}, ran_time=now_iso(),
            algo_duration=f"{time.perf_counter() - start:.2f} sec", heartbeat=time.time(),
        )
        if isinstance(e, KeyboardInterrupt):
            raise
        return "failed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("batch_dir")
    ap.add_argument("uuid")
    ap.add_argument("run_id")
    ap.add_argument("backend")
    ap.add_argument("--parent-raw-data-path")
    ap.add_argument("--n-processes", type=int, default=1)
    ap.add_argument("--memory-limit", type=int, default=None, help="bytes of address space")
    args = ap.parse_args(argv)
    if args.memory_limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (args.memory_limit, args.memory_limit))
    if args.parent_raw_data_path:
        set_parent_raw_data_path(args.parent_raw_data_path)
    status = run_item(args.batch_dir, args.uuid, args.run_id, args.backend, args.n_processes)
    print(f"item {args.uuid}: {status}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
