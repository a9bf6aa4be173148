"""Submit items to Dask: a LocalCluster by default, any ``distributed.Client`` when given.

A lab that outgrows one machine passes a client of a dask-jobqueue SLURMCluster or a remote
scheduler; nothing else changes. Each task is a thin monitor (see ``monitor``) around the
item's own process; it reports to this process, which alone writes the store (``recorder``),
so the store is the single source of truth for status and progress.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
import threading
import time
import uuid as uuid_mod
from collections.abc import Iterable, Sequence
from typing import Any

from ..algorithms import choose_backend, get_algorithm
from ..errors import DependencyError
from ..processes import environment, thread_budget
from ..store import ACTIVE, FINISHED, BatchStore
from ..store.paths import get_parent_raw_data_path
from .eta import running_text
from .inputs import input_movie_path
from .job import Job
from .monitor import run_item_task
from .recorder import follow

log = logging.getLogger(__name__)

_lock = threading.Lock()
_default_client = None
_live_handles: set[RunHandle] = set()


#: Dask processes started with this environment log errors only (as ``silence_logs``)
_QUIET_DASK = {"DASK_LOGGING__DISTRIBUTED": "error"}


def _local_cluster(n: int):
    """``n`` single-threaded workers on this machine, each in a ``dask spec`` subprocess.

    A LocalCluster's workers are "spawn" children of this process, which re-run its main
    script: a plain script without a ``__main__`` guard would start its analysis again in each
    (see :mod:`..processes`). ``dask spec`` processes have their own main, whatever ours is.
    Windows (which SubprocessCluster does not support) keeps the LocalCluster.
    """
    from dask.distributed import LocalCluster

    if sys.platform != "win32":
        from distributed.deploy.subprocess import SubprocessCluster

        watch = ["mesmerize_widgets.runner.parent_watch"]  # they end when this process does
        with environment(_QUIET_DASK):
            return SubprocessCluster(n_workers=n, threads_per_worker=1, dashboard_address=None,
                                     silence_logs=logging.ERROR, scheduler_kwargs={"preload": watch},
                                     worker_kwargs={"preload_nanny": watch})
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=logging.ERROR)


def default_client(max_workers: int | None = None):
    """The process-wide local cluster's client, started on first use (one worker per item slot)."""
    global _default_client
    from dask.distributed import Client

    n = max_workers or min(4, os.cpu_count() or 1)
    with _lock:
        if _default_client is None or _default_client.status not in ("running", "connecting"):
            cluster = _local_cluster(n)
            _default_client = Client(cluster)
            _default_client.wait_for_workers(n, timeout=120)
            atexit.register(shutdown_default_client)
        elif max_workers and _n_workers(_default_client) != n:
            with environment(_QUIET_DASK):
                _default_client.cluster.scale(n)
                _default_client.wait_for_workers(n, timeout=120)
            _wait_for_scale_down(_default_client, n)
    return _default_client


def _n_workers(client) -> int:
    return len(client.scheduler_info(n_workers=-1).get("workers", {}))


def _wait_for_scale_down(client, n: int, timeout: float = 120.0) -> None:
    """Until the cluster has ``n`` workers: ``wait_for_workers`` waits for at least ``n``, so
    after a scale down it returned while the old workers were still there, and the run's thread
    budget (its share of the cores) was sized for them."""
    deadline = time.monotonic() + timeout
    while _n_workers(client) > n and time.monotonic() < deadline:
        time.sleep(0.1)


def shutdown_default_client() -> None:
    global _default_client
    with _lock:
        if _default_client is not None:
            cluster = _default_client.cluster
            _default_client.close()
            if cluster is not None:
                cluster.close()
            _default_client = None


def _topological(store: BatchStore, uuids: Sequence[str]) -> list[str]:
    """Parents before children, so a parent is queued (and prioritised) before what waits on it."""
    chosen = set(uuids)
    order: list[str] = []
    seen: set[str] = set()

    def visit(u: str, stack: tuple[str, ...] = ()) -> None:
        if u in seen:
            return
        if u in stack:
            raise DependencyError(f"items {stack} form a cycle")
        parent = store.get(u).get("parent_uuid")
        if parent in chosen:
            visit(parent, (*stack, u))
        seen.add(u)
        order.append(u)

    for u in uuids:
        visit(u)
    return order


class _Bar:
    """A tqdm bar (a widget in a notebook), redrawn at every update."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc="items", unit="item", disable=not enabled, leave=True)

    def show(self, n: float, finished: int, summary: str) -> None:
        self._bar.n = n
        self._bar.set_postfix_str(summary)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


class _Lines:
    """Progress for logs (an ``sbatch`` output file, CI, ``nohup``): a plain line every
    ``every`` seconds and whenever an item finishes, not a bar redrawn at every update."""

    def __init__(self, total: int, every: float = 10.0, stream: Any = None):
        self.total, self.every, self.stream = total, every, stream or sys.stderr
        self._t0 = time.monotonic()
        self._last: tuple[float, int] | None = None
        self._summary = ""
        self._n = 0.0

    def show(self, n: float, finished: int, summary: str) -> None:
        self._n, self._summary = n, summary
        now = time.monotonic()
        if self._last is None or finished != self._last[1] or now - self._last[0] >= self.every:
            self._write()
            self._last = (now, finished)

    def _write(self) -> None:
        elapsed = int(time.monotonic() - self._t0)
        print(f"items: {self._n / max(self.total, 1):4.0%} of {self.total} ({self._summary}) "
              f"[{elapsed // 60:d}:{elapsed % 60:02d}]", file=self.stream, flush=True)

    def close(self) -> None:
        pass


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_display(total: int, enabled: bool = True) -> _Bar | _Lines:
    """A bar in a notebook or a terminal, plain timed lines where stderr is a file or a pipe."""
    if enabled and not _in_notebook() and not sys.stderr.isatty():
        return _Lines(total)
    return _Bar(total, enabled)


class RunHandle:
    """The items of one submission; ``wait()`` shows their progress until all have finished."""

    def __init__(self, store: BatchStore, uuids: list[str], futures: dict[str, Any]):
        self.store = store
        self.uuids = uuids
        self.futures = futures
        # Dask cancels a task whose futures are all released: keep them until they finish,
        # even when the caller drops the handle (``row.caiman.run(wait=False)``)
        for old in [h for h in _live_handles if all(f.done() for f in h.futures.values())]:
            _live_handles.discard(old)
        _live_handles.add(self)

    def statuses(self) -> dict[str, str]:
        return {u: self.store.get(u)["status"] for u in self.uuids}

    def done(self) -> bool:
        return all(s in FINISHED for s in self.statuses().values())

    def cancel(self) -> None:
        cancel(self.store, self.uuids)

    def wait(self, timeout: float | None = None, progress: bool = True) -> dict[str, str]:
        """Block until every item finished; returns ``{uuid: status}``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = progress_display(len(self.uuids), progress)
        try:
            while True:
                recs = [self.store.get(u) for u in self.uuids]
                finished = sum(r["status"] in FINISHED for r in recs)
                running = [r for r in recs if r["status"] == "running"]
                bar.show(finished + sum(r["progress"] for r in running), finished,
                         f"{finished} finished, {len(running)} running"
                         + (f", {sum(r['status'] == 'failed' for r in recs)} failed" if finished else "")
                         + "".join(f"; {r['item_name'] or r['algo']}: {running_text(r)}" for r in running[:2]))
                if finished == len(recs):
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"items still running after {timeout} s")
                time.sleep(0.2)
        finally:
            bar.close()
        return {r["uuid"]: r["status"] for r in recs}

    def __repr__(self) -> str:
        return f"<RunHandle {len(self.uuids)} items: {self.statuses()}>"


def _jobs(store: BatchStore, order: list[str], recs: dict[str, dict[str, Any]], backends: dict[str, str],
          **common: Any) -> tuple[dict[str, Job], dict[str, str]]:
    """Each item's job, resolved here so the node needs nothing from the database; and the
    items that cannot run (their parent is not done and not in this submission, or cannot run
    itself), with why. ``order`` is topological, so a parent is decided before its children."""
    chosen = set(order)
    jobs: dict[str, Job] = {}
    not_run: dict[str, str] = {}
    for u in order:
        rec = recs[u]
        parent_uuid = rec.get("parent_uuid")
        input_path: str | None = None
        parent = None
        if parent_uuid in not_run:
            not_run[u] = (f"not run: its parent item {recs[parent_uuid]['item_name']!r} ({parent_uuid}) was not "
                          "run: " + not_run[parent_uuid].removeprefix("not run: "))
            continue
        if parent_uuid and parent_uuid in chosen:
            p = recs[parent_uuid]
            parent = {"uuid": parent_uuid, "item_name": p["item_name"], "algo": p["algo"]}
        else:
            if parent_uuid and not store.exists(parent_uuid):
                not_run[u] = f"not run: its parent item {parent_uuid} was removed from the batch"
                continue
            p = store.get(parent_uuid) if parent_uuid else None
            if p is not None and p["status"] in ACTIVE:
                raise RuntimeError(f"the parent of item {rec['item_name']!r}, {p['item_name']!r}, is still "
                                   f"{p['status']} in another run: run this item once it is done")
            try:
                input_path = str(input_movie_path(store, rec))
            except DependencyError as e:
                not_run[u] = f"not run: {e}"
                continue
        jobs[u] = Job(batch_dir=str(store.path), uuid=u, run_id=uuid_mod.uuid4().hex[:12], algo=rec["algo"],
                      params=rec["params"], backend=backends[u], input_path=input_path, parent=parent, **common)
    return jobs, not_run


def submit(
    store: BatchStore,
    uuids: Iterable[str],
    *,
    backend: str | None = None,
    client: Any = None,
    max_workers: int | None = None,
    n_processes: int = 1,
    memory_limit: int | None = None,
) -> RunHandle:
    """Queue items and submit them; checks everything first so a refusal changes nothing.

    This process alone writes the items' records from here on (see ``recorder``); the tasks
    carry their jobs and report back.
    """
    uuids = list(dict.fromkeys(str(u) for u in uuids))
    recs = {u: store.get(u) for u in uuids}
    busy = [u for u, r in recs.items() if r["status"] in ACTIVE]
    if busy:
        raise RuntimeError(f"items already queued or running: {busy}")
    backends = {u: choose_backend(get_algorithm(r["algo"]), backend or r.get("backend")) for u, r in recs.items()}
    order = _topological(store, uuids)
    # on our own cluster the item processes get this process's environment, sized to share the
    # cores (one BLAS thread under a memory limit); on the user's cluster the node's own (its
    # SLURM job's variables, its TMPDIR)
    env = None
    if client is None:
        client = default_client(max_workers)
        env = dict(os.environ)
        env.update(thread_budget(_n_workers(client), env, memory_limited=bool(memory_limit)))
    raw = get_parent_raw_data_path()
    jobs, not_run = _jobs(store, order, recs, backends, parent_raw_data_path=str(raw) if raw else None,
                          n_processes=n_processes, memory_limit=memory_limit, python=sys.executable, env=env)
    mine = {"runner_pid": os.getpid(), "runner_host": socket.gethostname(), "heartbeat": time.time()}
    for u in order:
        run_id = jobs[u].run_id if u in jobs else uuid_mod.uuid4().hex[:12]
        fields = ({"status": "queued", "progress": 0.0, "error": None, "backend": jobs[u].backend} if u in jobs else
                  {"status": "failed", "error": not_run[u], "outputs": {"success": False, "traceback": not_run[u]}})
        ok = store.transition(u, ["pending", "done", "failed", "interrupted", "cancelled"], run_id=run_id,
                              cancel_requested=0, pid=None, host=None, **fields, **mine)
        if not ok:
            raise RuntimeError(f"item {u} was started by another process meanwhile")
    # parents first, so a child's task can depend on its parent's future
    futures: dict[str, Any] = {}
    for i, u in enumerate(order):
        if u not in jobs:
            continue
        parent = recs[u].get("parent_uuid")
        futures[u] = client.submit(
            run_item_task, jobs[u], _parent_result=futures.get(parent) if jobs[u].parent else None,
            key=f"mesmerize-item-{u}-{jobs[u].run_id}", pure=False, priority=len(order) - i, retries=0,
        )
        follow(store, u, jobs[u].run_id, futures[u])
    return RunHandle(store, uuids, futures)


def cancel(store: BatchStore, uuids: Iterable[str]) -> dict[str, str]:
    """Cancel queued items at once and ask running ones to stop; returns the statuses now."""
    out = {}
    for u in uuids:
        while True:  # the status may move from queued to running under us: retry until one sticks
            rec = store.get(u)
            if rec["status"] == "queued":
                done = store.transition(u, ["queued"], if_run=rec["run_id"], status="cancelled",
                                        error="cancelled by the user before it started")
            elif rec["status"] == "running":
                done = store.transition(u, ["running"], if_run=rec["run_id"], cancel_requested=1)
            else:
                done = True
            if done:
                break
        out[u] = store.get(u)["status"]
    return out
