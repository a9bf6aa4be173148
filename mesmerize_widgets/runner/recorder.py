"""The submitting process's side of a run: the only writer of ``batch.sqlite``.

Monitors on the workers report "running" and progress as Dask events (``Worker.log_event``,
received here through ``Client.subscribe_topic``) and the end record as their task's result.
A watcher thread beats for this process's runs (so other notebooks see that someone records
them), passes cancel requests on to the workers (any notebook writes them into the database;
a Dask ``Event`` carries them to the node), and notices a worker that vanished with its item:
killed, or its SLURM job cancelled or out of time.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import ACTIVE, BatchStore
from .job import remove_stale_partials, write_record
from .monitor import TOPIC, WORKER_GONE, cancel_event_name

log = logging.getLogger(__name__)

WATCH_S = 0.5
HEARTBEAT_S = 2.0
#: a client's list of workers may lag by its refresh interval (2 s): gone means missing this long
WORKER_GONE_S = 6.0


@dataclass(eq=False)
class Run:
    """One submitted run of one item, as this process follows it."""

    store: BatchStore
    uuid: str
    run_id: str
    future: Any
    worker: str | None = None
    started: bool = False
    cancel_sent: bool = False
    worker_missing_since: float | None = None


_lock = threading.Lock()
_runs: dict[tuple[str, str], Run] = {}  # (uuid, run_id) -> run
_subscribed: weakref.WeakSet = weakref.WeakSet()
_watcher: threading.Thread | None = None


def follow(store: BatchStore, uuid: str, run_id: str, future: Any) -> Run:
    """Record this run's reports from now on (call before the task can report anything)."""
    run = Run(store, uuid, run_id, future)
    with _lock:
        _runs[(uuid, run_id)] = run
        client = future.client
        if client not in _subscribed:
            client.subscribe_topic(TOPIC, _on_event)
            _subscribed.add(client)
        _start_watcher()
    future.add_done_callback(lambda fut, run=run: _on_done(run, fut))
    return run


def _on_event(event: tuple[float, dict[str, Any]]) -> None:
    """A monitor's report; runs of other processes sharing the scheduler are not ours to record."""
    _, msg = event
    run = _runs.get((msg.get("uuid"), msg.get("run_id")))
    if run is None:
        return
    try:
        if msg["kind"] == "running":
            fields: dict[str, Any] = {}
            if msg.get("input_movie_path"):  # show the parent's output as the input, as mesmerize-core does
                fields = {"input_root": "batch", "input_movie_path": msg["input_movie_path"]}
            run.worker, run.started = msg.get("worker"), True
            run.store.transition(run.uuid, ["queued"], if_run=run.run_id, status="running", progress=0.0,
                                 host=msg.get("node"), pid=msg.get("pid"), heartbeat=time.time(),
                                 started=time.time(), progress_message=None, **fields)
        elif msg["kind"] == "progress":
            run.store.transition(run.uuid, ["running"], if_run=run.run_id, progress=float(msg["progress"]),
                                 progress_message=msg.get("message") or None, heartbeat=time.time())
    except Exception:  # never let a bad report break the client's event loop
        log.exception("could not record a report for item %s", run.uuid)


def apply_record(store: BatchStore, uuid: str, record: dict[str, Any]) -> bool:
    """Write an end record into the database if that run is still active there."""
    fields: dict[str, Any] = {"status": record["status"], "error": record.get("error"),
                              "heartbeat": time.time(), "cancel_requested": 0}
    for key in ("outputs", "ran_time", "algo_duration"):
        if key in record:
            fields[key] = record[key]
    if record["status"] == "done":
        fields["progress"] = 1.0
    return store.transition(uuid, ACTIVE, if_run=record["run_id"], **fields)


def _decided_here(run: Run, status: str, why: str) -> None:
    """An end this process saw and the node could not report: recorded, and written to the
    item's folder like a node's record, if the run is still active (not cancelled meanwhile)."""
    record = {"run_id": run.run_id, "status": status, "error": why}
    if apply_record(run.store, run.uuid, record):
        remove_stale_partials(run.store.path, run.uuid)  # what the vanished node was writing
        try:
            write_record(Path(run.store.path) / run.uuid, record)
        except OSError:
            pass


def _on_done(run: Run, future: Any) -> None:
    try:
        if future.status == "finished":
            apply_record(run.store, run.uuid, future.result())
        elif future.status == "error":
            exc = future.exception()
            if type(exc).__name__ == "KilledWorker":
                _decided_here(run, "interrupted", f"the Dask workers running this item died ({exc}); run it again")
            else:
                _decided_here(run, "failed", f"the Dask task running this item failed: {exc!r}")
        else:  # cancelled: by us when its worker vanished, or because the client or cluster closed
            _decided_here(run, "interrupted", "the Dask task running this item was cancelled (its worker, "
                                              "client or cluster went away); run it again")
    except Exception:
        log.exception("could not record the end of item %s", run.uuid)
    finally:
        with _lock:
            _runs.pop((run.uuid, run.run_id), None)


def _start_watcher() -> None:
    global _watcher
    if _watcher is None or not _watcher.is_alive():
        _watcher = threading.Thread(target=_watch, name="mesmerize-widgets-recorder", daemon=True)
        _watcher.start()


def _watch() -> None:
    last_beat = 0.0
    while True:
        time.sleep(WATCH_S)
        with _lock:
            runs = list(_runs.values())
        if not runs:
            continue
        beat = time.monotonic() - last_beat >= HEARTBEAT_S
        if beat:
            last_beat = time.monotonic()
        workers: dict[int, set[str]] = {}
        for run in runs:
            try:
                _check(run, beat, workers)
            except Exception:
                log.exception("could not check item %s", run.uuid)


def _check(run: Run, beat: bool, workers: dict[int, set[str]]) -> None:
    rec = run.store.get(run.uuid)
    mine = rec["run_id"] == run.run_id
    if not run.cancel_sent and (not mine or rec["cancel_requested"] or rec["status"] not in ACTIVE):
        # a cancel (from any notebook), a rerun or a removal: the node must stop this run
        run.cancel_sent = True
        from distributed import Event

        Event(cancel_event_name(run.run_id), client=run.future.client).set()
        if not run.started:
            run.future.cancel()
    if not mine or rec["status"] not in ACTIVE:
        return
    if beat:
        run.store.transition(run.uuid, ACTIVE, if_run=run.run_id, heartbeat=time.time())
    if run.worker:
        client = run.future.client
        if id(client) not in workers:
            workers[id(client)] = set(client.scheduler_info(n_workers=-1).get("workers", {}))
        if run.worker in workers[id(client)] or run.future.done():
            run.worker_missing_since = None
        elif run.worker_missing_since is None:
            run.worker_missing_since = time.monotonic()
        elif time.monotonic() - run.worker_missing_since >= WORKER_GONE_S:
            _decided_here(run, "interrupted", WORKER_GONE.format(worker=run.worker))
            run.future.cancel()
