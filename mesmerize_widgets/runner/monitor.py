"""The Dask task that runs one item: claims it, starts its process, watches it to the end.

The monitor turns every way a run can end into a recorded status: the process reports done or
failed itself; a cancel request terminates it (``cancelled``); a signal from outside such as
kill -9 leaves it ``interrupted``; a crash (segfault, an exit without a report) is ``failed``
with the reason. It never leaves a temporary output directory behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..processes import signal_on_parent_death
from ..store import FINISHED, BatchStore
from ..store.batch_store import now_iso
from .item_process import remove_stale_partials, tmp_dir_for

POLL_S = 0.1
HEARTBEAT_S = 2.0
TERMINATE_GRACE_S = 5.0


def _die_with_parent() -> None:
    """The item process gets SIGKILL if its monitor (the Dask worker) dies."""
    signal_on_parent_death(signal.SIGKILL)


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _wait_for_parent(store: BatchStore, uuid: str, run_id: str, parent_uuid: str | None) -> str | None:
    """Block while the parent item runs elsewhere; return a failure reason, or None to go on."""
    if not parent_uuid:
        return None
    while True:
        rec = store.get(uuid)
        if rec["status"] != "queued" or rec["run_id"] != run_id:
            return "superseded"
        if not store.exists(parent_uuid):
            return f"its parent item {parent_uuid} was removed from the batch"
        parent = store.get(parent_uuid)
        if parent["status"] == "done":
            return None
        if parent["status"] in FINISHED or parent["status"] == "pending":
            last = (parent.get("error") or "").strip().splitlines()
            why = f": {last[-1]}" if last else ""
            return f"its parent item {parent['item_name']!r} ({parent_uuid}) is {parent['status']}{why}"
        time.sleep(0.5)


def run_item_task(
    batch_dir: str,
    uuid: str,
    run_id: str,
    backend: str,
    *,
    python: str | None = None,
    env: dict[str, str] | None = None,
    parent_raw_data_path: str | None = None,
    n_processes: int = 1,
    memory_limit: int | None = None,
    _parent_result: Any = None,
) -> str:
    """Run one queued item to a final status and return that status."""
    store = BatchStore(batch_dir)
    rec = store.get(uuid)
    if rec["run_id"] != run_id or rec["status"] not in ("queued", "running"):
        return rec["status"]  # cancelled while queued, or rerun since
    if rec["status"] == "running":
        # Dask retried this task: the worker that ran it died, taking the item process with it.
        store.transition(uuid, ["running"], if_run=run_id, status="interrupted",
                         error="the Dask worker running this item died; run it again")
        remove_stale_partials(store, uuid)
        return "interrupted"
    reason = _wait_for_parent(store, uuid, run_id, rec.get("parent_uuid"))
    if reason == "superseded":
        return store.get(uuid)["status"]
    if reason is not None:
        store.transition(uuid, ["queued"], if_run=run_id, status="failed", error=f"not run: {reason}",
                         outputs={"success": False, "traceback": f"not run: {reason}"})
        return "failed"

    fields: dict[str, Any] = {}
    if rec.get("parent_uuid"):  # show the parent's output as the input, as mesmerize-core does
        from .inputs import input_movie_path

        movie = input_movie_path(store, rec)
        fields = {"input_root": "batch", "input_movie_path": movie.relative_to(store.path).as_posix()}
    claimed = store.transition(
        uuid, ["queued"], if_run=run_id, status="running", progress=0.0, backend=backend,
        host=socket.gethostname(), heartbeat=time.time(), pid=None, **fields,
    )
    if not claimed:
        return store.get(uuid)["status"]
    remove_stale_partials(store, uuid)

    python = python if python and Path(python).exists() else sys.executable
    child_env = dict(env) if env else dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, child_env.get("PYTHONPATH")) if p)
    cmd = [python, "-m", "mesmerize_widgets.runner.item_process", str(store.path), uuid, run_id, backend,
           "--n-processes", str(n_processes)]
    if parent_raw_data_path:
        cmd += ["--parent-raw-data-path", parent_raw_data_path]
    if memory_limit:
        cmd += ["--memory-limit", str(int(memory_limit))]
    log_dir = store.path / "logs"
    log_dir.mkdir(exist_ok=True)
    log_path = log_dir / f"{uuid}.log"
    with open(log_path, "ab") as log:
        log.write(f"--- {now_iso()} run {run_id} backend {backend}: {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    store.transition(uuid, ["running"], if_run=run_id, pid=proc.pid)
    return _watch(store, uuid, run_id, proc, log_path)


def _watch(store: BatchStore, uuid: str, run_id: str, proc: subprocess.Popen, log_path: Path) -> str:
    last_beat = time.monotonic()
    cancelled = False
    while proc.poll() is None:
        time.sleep(POLL_S)
        if time.monotonic() - last_beat >= HEARTBEAT_S:
            last_beat = time.monotonic()
            store.transition(uuid, ["running"], if_run=run_id, heartbeat=time.time())
        rec = store.get(uuid)
        if rec["run_id"] != run_id:
            break
        if rec["cancel_requested"] and not cancelled:
            cancelled = True
            _terminate(proc)
    proc.wait()
    rc = proc.returncode
    shutil.rmtree(tmp_dir_for(store, uuid, run_id), ignore_errors=True)
    if cancelled:
        store.transition(uuid, ["running"], if_run=run_id, status="cancelled", error="cancelled by the user",
                         cancel_requested=0, pid=None)
    elif rc < 0:
        name = _signal_name(rc)
        if -rc in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            why = " (kill -9, or the system's out-of-memory killer)" if -rc == signal.SIGKILL else ""
            store.transition(uuid, ["running"], if_run=run_id, status="interrupted",
                             error=f"the item process was killed by {name}{why}; run it again", pid=None)
        else:
            store.transition(uuid, ["running"], if_run=run_id, status="failed",
                             error=f"the item process crashed with {name}\n{_tail(log_path)}", pid=None)
    else:
        # the process records done/failed itself; anything still 'running' means it could not
        store.transition(uuid, ["running"], if_run=run_id, status="failed",
                         error=f"the item process exited with code {rc} without recording a result\n"
                               f"{_tail(log_path)}", pid=None)
    return store.get(uuid)["status"]


def _terminate(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
