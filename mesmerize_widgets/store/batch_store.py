"""A batch on disk: a directory holding ``batch.sqlite`` and one output directory per item.

SQLite in WAL mode lets several notebooks on one machine read and write the same batch at
once (item processes on cluster nodes never open it: see ``runner``); every change is one short
transaction touching one row, so adding or updating an item costs the same at 10 items or
100,000 (the pickle mesmerize-core rewrote grew with the batch).
"""

from __future__ import annotations

import gc
import os
import sqlite3
import threading
import uuid as uuid_mod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ItemNotFoundError, NotABatchError
from . import codec
from .json_column import JSONColumn
from .schema import SCHEMA_VERSION, migrate
from .timestamps import now_iso

DB_NAME = "batch.sqlite"

STATUSES = ("pending", "queued", "running", "done", "failed", "interrupted", "cancelled")
FINISHED = frozenset({"done", "failed", "interrupted", "cancelled"})
ACTIVE = frozenset({"queued", "running"})

#: The DataFrame's columns: mesmerize-core's first, in its order, then ours.
COLUMNS = [
    "algo",
    "item_name",
    "input_movie_path",
    "params",
    "outputs",
    "added_time",
    "ran_time",
    "algo_duration",
    "comments",
    "uuid",
    "status",
    "progress",
    "backend",
    "error",
    "parent_uuid",
]

_FIELDS = [
    "uuid",
    "position",
    "algo",
    "item_name",
    "input_root",
    "input_movie_path",
    "parent_uuid",
    "params",
    "outputs",
    "added_time",
    "ran_time",
    "algo_duration",
    "comments",
    "status",
    "progress",
    "backend",
    "error",
    "run_id",
    "pid",
    "host",
    "heartbeat",
    "cancel_requested",
    "runner_pid",
    "runner_host",
    "started",
    "progress_message",
]
_JSON_FIELDS = ("params", "outputs")
_SELECT = "SELECT " + ", ".join(_FIELDS) + " FROM items"


_store_cache: dict[tuple, BatchStore] = {}
_cache_lock = threading.Lock()


def _decode_row(row: tuple) -> dict[str, Any]:
    rec = dict(zip(_FIELDS, row, strict=True))
    for key in _JSON_FIELDS:
        rec[key] = codec.loads(rec[key])
    return rec


class BatchStore:
    """The batch directory and its database; safe to use from many processes at once."""

    def __init__(self, batch_dir: str | os.PathLike, *, create: bool = False):
        self.path = Path(os.path.abspath(Path(batch_dir).expanduser()))
        self.db_path = self.path / DB_NAME
        if create:
            if self.db_path.exists():
                raise FileExistsError(f"a batch already exists at {self.path}")
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.db_path.is_file():
            raise NotABatchError(
                f"{self.path} is not a batch: it has no {DB_NAME} "
                "(create one with create_batch, or pass the batch directory)"
            )
        self._local = threading.local()
        try:
            conn = self._conn()
            if not create:
                self._check_is_batch(conn)
            migrate(conn, str(self.db_path))
        except sqlite3.DatabaseError as e:
            self.close()
            raise NotABatchError(f"{self.db_path} is not a batch database: {e}") from e
        except BaseException:
            self.close()
            raise
        if create:
            self.set_meta("created", now_iso())

    @classmethod
    def create(cls, batch_dir: str | os.PathLike) -> BatchStore:
        store = cls(batch_dir, create=True)
        with _cache_lock:  # a file recreated at the same path may reuse the old inode number
            for key in [k for k in _store_cache if k[0] == str(store.path)]:
                _store_cache.pop(key).close()
        return store

    @classmethod
    def cached(cls, batch_dir: str | os.PathLike) -> BatchStore:
        """An open store for this directory, reused while its database file stays the same one.

        Accessors call this on every operation; opening (connect + schema check) is what it
        saves. A batch recreated at the same path has a new file and gets a new store.
        """
        path = Path(os.path.abspath(Path(batch_dir).expanduser()))
        try:
            st = (path / DB_NAME).stat()
        except FileNotFoundError:
            return cls(path)  # raises NotABatchError
        key = (str(path), st.st_dev, st.st_ino)
        with _cache_lock:
            store = _store_cache.get(key)
            if store is None:
                store = cls(path)
                _store_cache[key] = store
        return store

    # -- connections ---------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """One connection per process and thread (sqlite3 connections must not cross forks)."""
        key = os.getpid()
        cached = getattr(self._local, "conn", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        conn = sqlite3.connect(self.db_path, timeout=60.0, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 60000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode and str(mode[0]).lower() != "wal":  # e.g. a filesystem without shared memory
            conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = NORMAL")
        self._local.conn = (key, conn)
        return conn

    def close(self) -> None:
        cached = getattr(self._local, "conn", None)
        if cached is not None:
            if cached[0] == os.getpid():
                cached[1].close()
            self._local.conn = None

    def _check_is_batch(self, conn: sqlite3.Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "schema_version" not in tables:
            raise NotABatchError(f"{self.db_path} is an SQLite file but not a mesmerize_widgets batch")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; taken at once so concurrent writers queue instead of deadlocking."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def data_version(self) -> int:
        """A number that changes when another connection commits (SQLite's ``PRAGMA data_version``).

        Other connections include this process's other threads (one connection per thread),
        so a watcher thread sees every write but its own; reading it costs no table scan.
        """
        return int(self._conn().execute("PRAGMA data_version").fetchone()[0])

    # -- meta ----------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    # -- items ---------------------------------------------------------------------------------
    def item_dir(self, uuid: str) -> Path:
        return self.path / str(uuid)

    def add(
        self,
        *,
        algo: str,
        item_name: str,
        params: dict,
        input_root: str | None,
        input_movie_path: str | None,
        parent_uuid: str | None = None,
        comments: str | None = None,
        uuid: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Append an item; params are encoded before anything is written so bad ones change nothing."""
        rec: dict[str, Any] = {
            "uuid": str(uuid or uuid_mod.uuid4()),
            "algo": algo,
            "item_name": item_name,
            "input_root": input_root,
            "input_movie_path": input_movie_path,
            "parent_uuid": parent_uuid,
            "params": params,
            "outputs": None,
            "added_time": now_iso(),
            "ran_time": None,
            "algo_duration": None,
            "comments": comments,
            "status": "pending",
            "progress": 0.0,
            "backend": None,
            "error": None,
            "run_id": None,
            "pid": None,
            "host": None,
            "heartbeat": None,
            "cancel_requested": 0,
            "runner_pid": None,
            "runner_host": None,
            "started": None,
            "progress_message": None,
        }
        rec.update(fields)
        encoded = {k: codec.dumps(v) if k in _JSON_FIELDS and v is not None else v for k, v in rec.items()}
        cols = [f for f in _FIELDS if f != "position"]
        with self.write() as conn:
            pos = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM items").fetchone()[0]
            conn.execute(
                f"INSERT INTO items (position, {', '.join(cols)}) VALUES (?{', ?' * len(cols)})",
                [pos, *(encoded[c] for c in cols)],
            )
        rec["position"] = pos
        return rec

    def get(self, uuid: str) -> dict[str, Any]:
        row = self._conn().execute(_SELECT + " WHERE uuid = ?", (str(uuid),)).fetchone()
        if row is None:
            raise ItemNotFoundError(f"no item with uuid {uuid!r} in the batch {self.path}")
        return _decode_row(row)

    def exists(self, uuid: str) -> bool:
        return self._conn().execute("SELECT 1 FROM items WHERE uuid = ?", (str(uuid),)).fetchone() is not None

    def items(self) -> list[dict[str, Any]]:
        rows = self._conn().execute(_SELECT + " ORDER BY position").fetchall()
        recs = [dict(zip(_FIELDS, r, strict=True)) for r in rows]
        for key in _JSON_FIELDS:
            for rec, value in zip(recs, codec.loads_many([r[key] for r in recs]), strict=True):
                rec[key] = value
        return recs

    def plain_fields(self, *names: str) -> dict[str, dict[str, Any]]:
        """``{uuid: {name: value}}`` for columns that need no decoding (one query, no JSON)."""
        bad = [n for n in names if n not in _FIELDS or n in _JSON_FIELDS]
        if bad:
            raise ValueError(f"not plain item fields: {bad}")
        rows = self._conn().execute(f"SELECT uuid, {', '.join(names)} FROM items").fetchall()
        return {r[0]: dict(zip(names, r[1:], strict=True)) for r in rows}

    def uuids(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT uuid FROM items ORDER BY position")]

    def update(self, uuid: str, **fields: Any) -> None:
        """Set fields of one item; raises ItemNotFoundError when it is gone."""
        if not self.transition(uuid, None, **fields):
            raise ItemNotFoundError(f"no item with uuid {uuid!r} in the batch {self.path}")

    def transition(
        self, uuid: str, expected: Iterable[str] | None, *, if_run: str | None = None, **fields: Any
    ) -> bool:
        """Atomically set fields if the item's status is one of ``expected`` (any when None).

        The runner uses this as a compare-and-set so two processes never both start an item,
        and a late status update never overwrites a cancellation. With ``if_run`` the update
        applies only to that run (``run_id``) of the item.
        """
        unknown = set(fields) - set(_FIELDS)
        if unknown or "uuid" in fields:
            raise ValueError(f"cannot set item fields {sorted(unknown | ({'uuid'} & set(fields)))}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown status {fields['status']!r}; one of {STATUSES}")
        if not fields:
            return self.exists(uuid)
        values = [codec.dumps(v) if k in _JSON_FIELDS and v is not None else v for k, v in fields.items()]
        sql = f"UPDATE items SET {', '.join(f'{k} = ?' for k in fields)} WHERE uuid = ?"
        args = [*values, str(uuid)]
        if expected is not None:
            expected = list(expected)
            sql += f" AND status IN ({', '.join('?' * len(expected))})"
            args += expected
        if if_run is not None:
            sql += " AND run_id = ?"
            args.append(if_run)
        with self.write() as conn:
            n = conn.execute(sql, args).rowcount
        return n == 1

    def remove(self, uuid: str) -> None:
        with self.write() as conn:
            n = conn.execute("DELETE FROM items WHERE uuid = ?", (str(uuid),)).rowcount
        if n == 0:
            raise ItemNotFoundError(f"no item with uuid {uuid!r} in the batch {self.path}")

    def children(self, uuid: str) -> list[str]:
        rows = self._conn().execute(
            "SELECT uuid FROM items WHERE parent_uuid = ? ORDER BY position", (str(uuid),)
        )
        return [r[0] for r in rows]

    def add_many(self, records: list[dict[str, Any]]) -> None:
        """Insert already-complete records in one transaction (legacy import, benchmarks)."""
        cols = [f for f in _FIELDS if f != "position"]
        with self.write() as conn:
            pos = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM items").fetchone()[0]
            rows = []
            for i, rec in enumerate(records):
                full = {c: rec.get(c) for c in cols}
                full["status"] = full["status"] or "pending"
                full["progress"] = full["progress"] or 0.0
                full["cancel_requested"] = full["cancel_requested"] or 0
                rows.append(
                    [pos + i]
                    + [codec.dumps(full[c]) if c in _JSON_FIELDS and full[c] is not None else full[c] for c in cols]
                )
            conn.executemany(
                f"INSERT INTO items (position, {', '.join(cols)}) VALUES (?{', ?' * len(cols)})", rows
            )

    # -- the DataFrame view ----------------------------------------------------------------------
    def dataframe(self) -> pd.DataFrame:
        """The batch as a DataFrame, read column-wise (the fast path for big batches)."""
        # a plain table scan: ORDER BY position would look every row up through the index;
        # the row tuples are garbage at once, and the collections their allocation would
        # trigger walk the whole notebook's heap (tens of ms with big objects alive)
        with _gc_paused():
            rows = self._conn().execute(f"SELECT position, {', '.join(COLUMNS)} FROM items").fetchall()
        if not rows:
            columns: list[Any] = [[] for _ in COLUMNS]
        else:
            positions, *columns = (np.array(c, dtype=object) for c in zip(*rows, strict=True))
            positions = positions.astype(np.int64)
            if (np.diff(positions) < 0).any():  # rows come in insertion order, almost always sorted
                order = np.argsort(positions, kind="stable")
                columns = [c[order] for c in columns]
        data = dict(zip(COLUMNS, columns, strict=True))
        for key in _JSON_FIELDS:
            data[key] = JSONColumn.from_json(data[key])  # decoded cell by cell, when read
        return frame_from_columns(data, self.path)

    def active_items(self) -> list[dict[str, Any]]:
        """Queued and running items only (liveness checks run on every open)."""
        rows = self._conn().execute(_SELECT + " WHERE status IN ('queued', 'running') ORDER BY position")
        return [_decode_row(r) for r in rows.fetchall()]


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def records_to_dataframe(records: list[dict[str, Any]], batch_dir: Path) -> pd.DataFrame:
    """The mesmerize-core-shaped DataFrame of a batch; ``attrs['batch_path']`` finds the store."""
    return frame_from_columns({c: [r[c] for r in records] for c in COLUMNS}, batch_dir)


def frame_from_columns(data: dict[str, Any], batch_dir: Path, *, consolidate: bool = True) -> pd.DataFrame:
    """The batch DataFrame from one sequence per column (params/outputs may be JSONColumns).

    Built from finished arrays with pandas' own array constructor (no Series per column, no
    dtype inference: pandas 3 would turn an object column of strings into its str dtype, where
    None becomes NaN); this runs on every open and every added item. ``consolidate=False``
    keeps one block per column, so a frame grown by one row is not copied a second time into
    pandas' 2-D object block (half the cost of an append at 10,000 rows).
    """
    arrays: list[Any] = []
    for c in COLUMNS:
        values = data[c]
        if c in _JSON_FIELDS:
            arrays.append(values if isinstance(values, JSONColumn) else JSONColumn._from_sequence(values))
        elif c == "progress":
            arrays.append(np.asarray(values, dtype=float))
        elif isinstance(values, np.ndarray) and values.dtype == object:
            arrays.append(values)
        else:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            arrays.append(arr)
    index = pd.RangeIndex(len(arrays[0]))
    if consolidate:
        df = pd.DataFrame._from_arrays(arrays, columns=pd.Index(COLUMNS), index=index, verify_integrity=False)
    else:
        from pandas.core.internals.managers import create_block_manager_from_column_arrays

        axes = [pd.Index(COLUMNS), index]
        mgr = create_block_manager_from_column_arrays(arrays, axes, consolidate=False, refs=[None] * len(arrays))
        df = pd.DataFrame._from_mgr(mgr, axes=mgr.axes)
    df.attrs["batch_path"] = str(batch_dir)
    return df


def record_to_series(record: dict[str, Any], batch_dir: Path, name: Any = None) -> pd.Series:
    s = pd.Series({c: record[c] for c in COLUMNS}, name=name, dtype=object)
    s.attrs["batch_path"] = str(batch_dir)
    return s
