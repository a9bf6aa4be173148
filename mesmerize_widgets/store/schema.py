"""The SQLite schema of a batch and its forward migrations.

Each migration is a list of SQL statements taking the schema from version ``n`` to ``n + 1``;
opening a batch applies the missing ones in one transaction. A batch whose version is newer
than this code knows is refused rather than touched.
"""

from __future__ import annotations

import sqlite3

from ..errors import SchemaTooNewError

MIGRATIONS: list[list[str]] = [
    # 0 -> 1: the first layout
    [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
        """
        CREATE TABLE items (
            uuid TEXT PRIMARY KEY,
            position INTEGER NOT NULL,
            algo TEXT NOT NULL,
            item_name TEXT NOT NULL DEFAULT '',
            input_root TEXT,
            input_movie_path TEXT,
            parent_uuid TEXT,
            params TEXT NOT NULL,
            outputs TEXT,
            added_time TEXT,
            ran_time TEXT,
            algo_duration TEXT,
            comments TEXT,
            status TEXT NOT NULL DEFAULT 'pending',
            progress REAL NOT NULL DEFAULT 0,
            backend TEXT,
            error TEXT,
            run_id TEXT,
            pid INTEGER,
            host TEXT,
            heartbeat REAL,
            cancel_requested INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX items_position ON items(position)",
        "CREATE INDEX items_parent ON items(parent_uuid)",
    ],
    # 1 -> 2: every open looks for queued/running items (dead runners); without this index
    # that reads the whole table, params and all
    ["CREATE INDEX items_status ON items(status)"],
    # 2 -> 3: the process that submitted a run records it (item processes never open the
    # database); its pid and host tell a later reader whether anyone is still recording
    ["ALTER TABLE items ADD COLUMN runner_pid INTEGER", "ALTER TABLE items ADD COLUMN runner_host TEXT"],
    # 3 -> 4: what a running item is doing ("patch 3/25") and since when, so every view can
    # say how far it is and how long it has left
    ["ALTER TABLE items ADD COLUMN started REAL", "ALTER TABLE items ADD COLUMN progress_message TEXT"],
]

SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: sqlite3.Connection) -> int:
    has = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
    ).fetchone()
    if not has:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the schema up to date; refuse a newer one. Returns the version now in force."""
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{path} was written by a newer mesmerize_widgets (batch schema {version}, this "
            f"version reads up to {SCHEMA_VERSION}): upgrade mesmerize_widgets to open it"
        )
    if version == SCHEMA_VERSION:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = current_version(conn)  # another process may have migrated meanwhile
        if version < SCHEMA_VERSION:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            for statements in MIGRATIONS[version:]:
                for sql in statements:
                    conn.execute(sql)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
