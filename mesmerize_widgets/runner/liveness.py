"""Find items recorded as queued or running whose process is gone, and mark them interrupted.

A notebook that died, a worker killed with its item: without this such items would show
'running' forever. The monitor beats every few seconds while its item runs, so an item is dead
only once its heartbeat is stale: on the same host after ``SAME_HOST_GRACE_S`` with its process
gone (a live monitor records the outcome itself within that time: reaping earlier would race
it and turn a cancel into 'interrupted'), across hosts after ``STALE_AFTER_S``.
"""

from __future__ import annotations

import socket
import time

import psutil

from ..store import BatchStore
from .item_process import remove_stale_partials

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


def reap_stale(store: BatchStore) -> list[str]:
    """Mark dead queued/running items interrupted; returns their uuids."""
    host = socket.gethostname()
    now = time.time()
    reaped = []
    for rec in store.active_items():
        age = now - rec["heartbeat"] if rec["heartbeat"] is not None else 0.0
        if rec["host"] == host and rec["pid"]:
            dead = age > SAME_HOST_GRACE_S and not _alive(rec["pid"])
        else:
            dead = age > STALE_AFTER_S
        if dead and store.transition(
            rec["uuid"], [rec["status"]], if_run=rec["run_id"], status="interrupted",
            error=f"the process that {'ran' if rec['status'] == 'running' else 'queued'} this item "
                  "is gone; run it again",
        ):
            remove_stale_partials(store, rec["uuid"])
            reaped.append(rec["uuid"])
    return reaped
