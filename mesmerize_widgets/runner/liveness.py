"""Find items recorded as queued or running whose runner is gone, and record how they ended.

The process that submitted a run alone records it (see ``recorder``) and beats while it does.
When it is gone (a notebook that died, a killed script), nobody will: the item's folder may hold
the run's end record, written by the node (done with its outputs, failed with its traceback);
without one the run is ``interrupted``. On this host the runner is gone when its process is;
from another host, when its heartbeat is older than ``STALE_AFTER_S``. Batches written before
runners were recorded (no ``runner_pid``) follow the item process's pid and heartbeat instead.
"""

from __future__ import annotations

import socket
import time

import psutil

from ..store import BatchStore
from .job import read_record, remove_stale_partials
from .recorder import apply_record

STALE_AFTER_S = 120.0
SAME_HOST_GRACE_S = 30.0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _gone(rec: dict, host: str, now: float) -> bool:
    age = now - rec["heartbeat"] if rec["heartbeat"] is not None else 0.0
    if rec.get("runner_pid"):
        if rec["runner_host"] == host:
            return not _alive(rec["runner_pid"])
        return age > STALE_AFTER_S
    if rec["host"] == host and rec["pid"]:
        return age > SAME_HOST_GRACE_S and not _alive(rec["pid"])
    return age > STALE_AFTER_S


def reap_stale(store: BatchStore) -> list[str]:
    """Record the end of queued/running items nobody is recording; returns their uuids."""
    host = socket.gethostname()
    now = time.time()
    reaped = []
    for rec in store.active_items():
        if not _gone(rec, host, now):
            continue
        record = read_record(store.item_dir(rec["uuid"]), rec["run_id"]) if rec["run_id"] else None
        if record is None:
            verb = "ran" if rec["status"] == "running" else "queued"
            record = {"run_id": rec["run_id"], "status": "interrupted",
                      "error": f"the process that {verb} this item is gone; run it again"}
        if rec["run_id"] is None:
            ok = store.transition(rec["uuid"], [rec["status"]], status="interrupted", error=record["error"])
        else:
            ok = apply_record(store, rec["uuid"], record)
        if ok:
            remove_stale_partials(store.path, rec["uuid"])
            reaped.append(rec["uuid"])
    return reaped
