"""The Dask task that runs one item on a worker: starts its process, watches it, reports.

It never opens the batch database. What it learns goes back to the submitting process (see
``recorder``): "running" and progress as Dask events, the end record as the task's result; the
end record is also written into the item's folder. Every way a run can end becomes a record: the
process reports done or failed itself; a cancel request terminates it (``cancelled``); a signal
from outside such as kill -9 leaves it ``interrupted``; a crash (segfault, an exit without a
report) is ``failed`` with the reason. It never leaves a temporary output directory behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..processes import node_cores, signal_on_parent_death, thread_budget
from ..store.timestamps import now_iso
from .job import Job, read_record, remove_stale_partials, write_record

POLL_S = 0.1
CANCEL_POLL_S = 0.5
PROGRESS_EVERY_S = 0.5
TERMINATE_GRACE_S = 5.0
#: the Dask event topic the monitors report on
TOPIC = "mesmerize-widgets-items"
WORKER_GONE = ("the Dask worker {worker} is gone with this item: killed, or its cluster job was cancelled "
               "or ran out of time; run it again")


def cancel_event_name(run_id: str) -> str:
    return f"mesmerize-widgets-cancel-{run_id}"


class _Link:
    """This task's line back to the submitting process, through the Dask scheduler."""

    def __init__(self, job: Job):
        self.job = job
        try:
            from distributed import get_worker

            self.worker = get_worker()
        except (ImportError, ValueError):  # called outside a Dask worker: nobody to tell
            self.worker = None
        self._cancel = None
        self._checked = 0.0
        self._cancelled = False

    @property
    def address(self) -> str | None:
        return None if self.worker is None else self.worker.address

    def send(self, kind: str, **fields: Any) -> None:
        if self.worker is not None:
            self.worker.log_event(TOPIC, {"uuid": self.job.uuid, "run_id": self.job.run_id, "kind": kind,
                                          **fields})

    def cancel_requested(self) -> bool:
        """Whether the submitter set this run's cancel Event (asked at most every CANCEL_POLL_S)."""
        if self.worker is None or self._cancelled:
            return self._cancelled
        now = time.monotonic()
        if now - self._checked >= CANCEL_POLL_S:
            self._checked = now
            if self._cancel is None:
                from distributed import Event, get_client

                self._cancel = Event(cancel_event_name(self.job.run_id), client=get_client())
            self._cancelled = bool(self._cancel.is_set())
        return self._cancelled


def _die_with_parent() -> None:
    """The item process gets SIGKILL if its monitor (the Dask worker) dies."""
    signal_on_parent_death(signal.SIGKILL)


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _end(job: Job, status: str, error: str | None, **fields: Any) -> dict[str, Any]:
    """An end record the monitor decided (the item process could not write it)."""
    record = {"run_id": job.run_id, "status": status, "error": error, "node": socket.gethostname(),
              "ran_time": now_iso(), **fields}
    try:
        write_record(job.item_dir, record)
    except OSError:  # the batch folder is not writable from here: the submitter still gets it
        pass
    return record


def _parent_input(job: Job, parent_result: dict[str, Any]) -> str | dict[str, Any]:
    """The parent's output movie, or the record of this item not being run."""
    from ..errors import DependencyError
    from .inputs import parent_output_movie

    try:
        return str(parent_output_movie(Path(job.batch_dir), {**parent_result, **job.parent}))
    except DependencyError as e:
        reason = f"not run: {e}"
        return _end(job, "failed", reason, outputs={"success": False, "traceback": reason})


def run_item_task(job: Job, _parent_result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one item to its end record and return that record."""
    link = _Link(job)
    batch = Path(job.batch_dir)
    remove_stale_partials(batch, job.uuid, keep_run=job.run_id)
    if link.cancel_requested():
        return _end(job, "cancelled", "cancelled by the user before it started")
    if job.parent and job.input_path is None:
        found = _parent_input(job, _parent_result)
        if isinstance(found, dict):
            return found
        job.input_path = found
    try:
        job.tmp_dir.mkdir()
    except FileExistsError:  # Dask ran this task before, on a worker that vanished with the item
        shutil.rmtree(job.tmp_dir, ignore_errors=True)
        return _end(job, "interrupted", WORKER_GONE.format(worker="that ran it first"))
    except OSError as e:
        return _end(job, "failed", f"cannot write into the batch folder {batch} on host "
                                   f"{socket.gethostname()}: {e}")

    python = job.python if job.python and Path(job.python).exists() else sys.executable
    if job.env is not None:
        env = dict(job.env)
    else:  # the node's environment; its cores shared among the worker's task slots
        env = dict(os.environ)
        slots = link.worker.state.nthreads if link.worker is not None else 1
        env.update(thread_budget(slots, env, cores=node_cores(), memory_limited=bool(job.memory_limit)))
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    read_end, write_end = os.pipe()
    cmd = [python, "-m", "mesmerize_widgets.runner.item_process", "--report-fd", str(write_end)]
    log_dir = batch / "logs"
    log_dir.mkdir(exist_ok=True)
    log_path = log_dir / f"{job.uuid}.log"
    with open(log_path, "ab") as log:
        log.write(f"--- {now_iso()} run {job.run_id} backend {job.backend} on {socket.gethostname()}: "
                  f"{' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
                                pass_fds=(write_end,), preexec_fn=_die_with_parent)
    os.close(write_end)
    input_rel = None
    if job.parent:
        input_rel = Path(job.input_path).relative_to(batch).as_posix()
    link.send("running", node=socket.gethostname(), pid=proc.pid, worker=link.address, input_movie_path=input_rel)
    try:
        proc.stdin.write(job.to_json().encode())
        proc.stdin.close()
    except BrokenPipeError:  # it died at once; its exit code says how
        pass
    return _watch(job, link, proc, read_end, log_path)


def _read_progress(fd: int, latest: list[Any]) -> None:
    """Keep the item's latest (fraction, message) in ``latest``."""
    with os.fdopen(fd, "r") as pipe:
        for line in pipe:
            try:
                msg = json.loads(line)
                latest[:] = [float(msg["progress"]), str(msg.get("message") or "")]
            except (ValueError, KeyError, TypeError):
                pass


def _watch(job: Job, link: _Link, proc: subprocess.Popen, read_end: int, log_path: Path) -> dict[str, Any]:
    latest: list[Any] = [0.0, ""]
    reader = threading.Thread(target=_read_progress, args=(read_end, latest), daemon=True)
    reader.start()
    sent: list[Any] = [0.0, ""]
    last_send = 0.0
    cancelled = False
    while proc.poll() is None:
        time.sleep(POLL_S)
        now = time.monotonic()
        if latest != sent and now - last_send >= PROGRESS_EVERY_S:
            sent, last_send = list(latest), now
            link.send("progress", progress=sent[0], message=sent[1])
        if not cancelled and link.cancel_requested():
            cancelled = True
            _terminate(proc)
    proc.wait()
    reader.join(timeout=1.0)
    rc = proc.returncode
    shutil.rmtree(job.tmp_dir, ignore_errors=True)
    if cancelled:
        return _end(job, "cancelled", "cancelled by the user")
    if rc < 0:
        name = _signal_name(rc)
        if -rc in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            why = " (kill -9, or the system's out-of-memory killer)" if -rc == signal.SIGKILL else ""
            return _end(job, "interrupted", f"the item process was killed by {name}{why}; run it again")
        return _end(job, "failed", f"the item process crashed with {name}\n{_tail(log_path)}")
    record = read_record(job.item_dir, job.run_id)
    if record is None:
        return _end(job, "failed", f"the item process exited with code {rc} without recording a result\n"
                                   f"{_tail(log_path)}")
    return record


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
