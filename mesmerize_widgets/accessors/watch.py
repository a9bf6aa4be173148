"""Following a batch: one thread per batch reads the store and tells every subscriber.

The batch table (while its items run) and a viewer showing a running item live both need the
store's records every fraction of a second. Each polling on its own thread read the same rows
twice and duplicated the code; now :func:`watch_batch` gives the one :class:`BatchWatcher` of a
batch, whose thread runs only while somebody subscribes::

    sub = watch_batch(df).subscribe(lambda change: print(change.active), interval=0.5)
    ...
    sub.cancel()          # the last one out stops the thread

Each tick asks SQLite whether any connection committed since the last one
(``PRAGMA data_version``, a read of one page header). Subscribers are called with the records
when the batch changed, and on every tick while any item is queued or running (progress,
durations and live snapshots move without a write); an idle, unchanged batch costs no read.
While items are active each tick also records the end of items whose runner is gone
(``runner.reap_stale``), as a refresh does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..store import ACTIVE, BatchStore
from .frame import store_of

__all__ = ["BatchChange", "BatchWatcher", "Subscription", "watch_batch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchChange:
    """What a subscriber is told on a tick."""

    #: every item's record, in batch order (None when the read failed)
    records: list[dict[str, Any]] | None
    #: any item queued or running
    active: bool
    #: the batch changed since this subscriber's last call (True on its first, and when it asked)
    changed: bool
    #: why the read failed (then ``records`` is None); the watcher tries again next tick
    error: BaseException | None = None


Callback = Callable[[BatchChange], None]


class Subscription:
    """One subscriber of a :class:`BatchWatcher`; ``cancel()`` ends it."""

    def __init__(self, watcher: BatchWatcher, callback: Callback, interval: float) -> None:
        self.watcher = watcher
        self.callback = callback
        self.interval = max(float(interval), 0.01)
        self.next_due = 0.0  # the first tick calls it at once
        self.seen: int | None = None  # the watcher's generation at its last call
        self.forced = False  # asked for a call with fresh records, changed or not (under the lock)
        self._idle = threading.Event()
        self._idle.set()

    @property
    def active(self) -> bool:
        return self in self.watcher._subs

    def refresh(self) -> None:
        """Ask for a call with fresh records on the next tick, even if nothing changed.

        For a subscriber that just did something (started a run) and must see its effect
        although a call already under way read the records before it.
        """
        with self.watcher._lock:
            self.forced = True
            self.next_due = 0.0
        self.watcher._wake.set()

    def cancel(self, wait: bool = False, timeout: float = 5.0) -> None:
        """Stop calling back; ``wait``: also let a call in progress finish (not from a callback).

        Never wait while holding a lock the callback takes: the callback would wait for it.
        """
        self.watcher._remove(self)
        if wait and threading.current_thread() is not self.watcher._thread:
            self._idle.wait(timeout)

    def _deliver(self, change: BatchChange) -> None:
        self._idle.clear()
        try:
            if self.active:
                self.callback(change)
        except Exception:  # one subscriber's bug must not silence the others
            log.exception("batch watcher: a subscriber failed")
        finally:
            self._idle.set()


class BatchWatcher:
    """The store's records, read on one thread and handed to every subscriber."""

    def __init__(self, store: BatchStore) -> None:
        self.store = store
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._version: int | None = None
        self._active = False

    @property
    def running(self) -> bool:
        """Whether the thread runs (it does exactly while there are subscribers)."""
        return self._thread is not None

    def subscribe(self, callback: Callback, interval: float = 0.5) -> Subscription:
        """Call ``callback(change)`` from the watcher's thread, at most every ``interval`` seconds.

        The first call comes at once, with ``changed`` True. Widgets hand graphics changes on
        to their own loop from there.
        """
        sub = Subscription(self, callback, interval)
        with self._lock:
            self._subs.append(sub)
            if self._thread is None:
                self._version = None  # a new thread has a new connection: read on its first tick
                self._thread = threading.Thread(target=self._run, name=f"batch-watch:{self.store.path.name}",
                                                daemon=True)
                self._thread.start()
        self._wake.set()
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
        self._wake.set()

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._subs:
                    self._thread = None  # under the lock: a subscribe now starts a new thread
                    return
                now = time.monotonic()
                due = [s for s in self._subs if s.next_due <= now]
                wait = min(s.next_due for s in self._subs) - now
                forced = {s for s in due if s.forced}
                for s in forced:
                    s.forced = False
            if not due:
                self._wake.wait(max(wait, 0.0))
                self._wake.clear()
                continue
            self._tick(due, forced, now)

    def _tick(self, due: list[Subscription], forced: set[Subscription], now: float) -> None:
        records, error = None, None
        try:
            self._check()
            if self._active or forced or any(s.seen != self._generation for s in due):
                records = self.store.items()
                self._active = any(r["status"] in ACTIVE for r in records)
        except Exception as e:  # a transient read error (a busy file): said, and tried again next tick
            error = e
        for s in due:
            s.next_due = now + s.interval
            changed = s.seen != self._generation or s in forced
            if error is None and not (changed or self._active):
                continue  # idle and unchanged: nothing to say
            s.seen = self._generation
            s._deliver(BatchChange(records, self._active, changed or error is not None, error))

    def _check(self) -> None:
        """Count a new generation when anybody committed (or this thread reaped) since the last tick."""
        reaped = []
        if self._active:
            from ..runner import reap_stale

            reaped = reap_stale(self.store)  # written on this thread's connection: data_version misses it
        version = self.store.data_version()
        if version != self._version or reaped:
            self._version = version
            self._generation += 1


_watchers: dict[tuple[str, int, int], BatchWatcher] = {}
_watchers_lock = threading.Lock()


def watch_batch(batch: pd.DataFrame | pd.Series | BatchStore | str | os.PathLike) -> BatchWatcher:
    """The one watcher of this batch (a DataFrame, row, store or batch directory)."""
    if isinstance(batch, (pd.DataFrame, pd.Series)):
        store = store_of(batch)
    elif isinstance(batch, BatchStore):
        store = batch
    else:
        store = BatchStore.cached(batch)
    st = store.db_path.stat()
    key = (str(store.path), st.st_dev, st.st_ino)  # a batch recreated at this path is another one
    with _watchers_lock:
        watcher = _watchers.get(key)
        if watcher is None:
            watcher = _watchers[key] = BatchWatcher(store)
        return watcher
