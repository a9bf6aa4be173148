"""The batch store: a real SQLite file in a real directory."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import mesmerize_widgets as mw
from mesmerize_widgets.store import BatchStore, codec, schema
from mesmerize_widgets.store.batch_store import DB_NAME


def test_create_makes_a_wal_sqlite_with_schema_version(tmp_path):
    store = BatchStore.create(tmp_path / "b")
    conn = sqlite3.connect(store.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert not list((tmp_path / "b").glob("*.pickle"))


def test_create_refuses_to_overwrite(tmp_path):
    mw.create_batch(tmp_path / "b")
    with pytest.raises(FileExistsError, match="already exists"):
        mw.create_batch(tmp_path / "b")


@pytest.mark.parametrize(
    "value",
    [
        {"main": {"max_shifts": (24, 24), "strides": (48, 48), "gSig": [4, 4], "pw_rigid": True}},
        {"main": {"nested": ((1, 2), [3, (4, 5)]), "none": None, "s": "x", "f": 0.5}},
        {"a": {"__tuple__": "not a tag: two keys", "b": 1}},
    ],
)
def test_params_round_trip_keeps_tuples(value):
    back = codec.loads(codec.dumps(value))
    assert back == value
    assert repr(back) == repr(value)  # tuple stays tuple, list stays list


def test_codec_normalises_numpy_and_paths():
    back = codec.loads(codec.dumps({"a": np.int64(3), "b": np.float32(0.5), "p": Path("x/y"),
                                    "arr": np.arange(3, dtype=np.int16), "inf": float("inf")}))
    assert back["a"] == 3 and type(back["a"]) is int
    assert back["p"] == "x/y"
    assert back["arr"].dtype == np.int16 and back["arr"].tolist() == [0, 1, 2]
    assert back["inf"] == float("inf")


def test_codec_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError, match="cannot store"):
        codec.dumps({"main": {"f": object()}})
    with pytest.raises(TypeError, match="string keys"):
        codec.dumps({1: 2})


def test_not_a_batch_errors(tmp_path):
    with pytest.raises(mw.NotABatchError, match="no batch.sqlite"):
        BatchStore(tmp_path)
    (tmp_path / DB_NAME).write_text("hello, I am not a database" * 100)
    with pytest.raises(mw.NotABatchError, match="not a batch"):
        mw.load_batch(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    conn = sqlite3.connect(other / DB_NAME)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(mw.NotABatchError, match="not a mesmerize_widgets batch"):
        mw.load_batch(other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mw.load_batch(tmp_path / "nowhere")


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    store = BatchStore.create(tmp_path / "b")
    store.close()
    conn = sqlite3.connect(store.db_path)
    conn.execute("UPDATE schema_version SET version = ?", (schema.SCHEMA_VERSION + 5,))
    conn.commit()
    conn.close()
    before = store.db_path.read_bytes()
    with pytest.raises(mw.SchemaTooNewError, match="newer mesmerize_widgets"):
        mw.load_batch(tmp_path / "b")
    assert store.db_path.read_bytes() == before


def test_forward_migration_applies_once(tmp_path, monkeypatch):
    store = BatchStore.create(tmp_path / "b")
    store.add(algo="summary", item_name="x", params={"main": {}}, input_root="abs", input_movie_path="/m.tif")
    store.close()
    extra = ["ALTER TABLE items ADD COLUMN tags TEXT DEFAULT 'none'"]
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, extra])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(schema.MIGRATIONS))
    reopened = BatchStore(tmp_path / "b")
    conn = reopened._conn()
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert conn.execute("SELECT tags FROM items").fetchone()[0] == "none"
    assert reopened.items()[0]["item_name"] == "x"  # data kept
    BatchStore(tmp_path / "b")  # opening again does not re-run the migration


def test_a_version_1_batch_gets_the_status_index(tmp_path):
    store = BatchStore.create(tmp_path / "b")
    store.add(algo="summary", item_name="x", params={"main": {}}, input_root="abs", input_movie_path="/m.tif")
    store.close()
    conn = sqlite3.connect(store.db_path)  # as a batch written by the first release
    conn.execute("DROP INDEX items_status")
    for column in ("runner_pid", "runner_host", "started", "progress_message"):  # added by versions 3 and 4
        conn.execute(f"ALTER TABLE items DROP COLUMN {column}")
    conn.execute("UPDATE schema_version SET version = 1")
    conn.commit()
    conn.close()
    df = mw.load_batch(tmp_path / "b")
    assert list(df["item_name"]) == ["x"]
    conn = sqlite3.connect(store.db_path)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == schema.SCHEMA_VERSION
    plan = " ".join(r[-1] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT uuid FROM items WHERE status IN ('queued', 'running')"))
    assert "items_status" in plan  # finding live items no longer reads the whole table


def test_update_and_transition(tmp_path):
    store = BatchStore.create(tmp_path / "b")
    rec = store.add(algo="summary", item_name="x", params={"main": {}}, input_root="abs", input_movie_path="/m")
    assert store.transition(rec["uuid"], ["pending"], status="queued", run_id="r1")
    assert not store.transition(rec["uuid"], ["pending"], status="running")  # not pending any more
    assert not store.transition(rec["uuid"], ["queued"], if_run="other", status="running")
    assert store.transition(rec["uuid"], ["queued"], if_run="r1", status="running")
    with pytest.raises(ValueError, match="unknown status"):
        store.update(rec["uuid"], status="exploded")
    with pytest.raises(mw.ItemNotFoundError):
        store.update("no-such-uuid", comments="x")


def _add_many(batch_dir: str, tag: str, n: int) -> None:
    store = BatchStore(batch_dir)
    for i in range(n):
        store.add(algo="summary", item_name=f"{tag}-{i}", params={"main": {"max_frames": i + 1}},
                  input_root="abs", input_movie_path="/m.tif")


def test_two_processes_adding_at_once_lose_nothing(tmp_path):
    BatchStore.create(tmp_path / "b")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(str(tmp_path / "b"), tag, 150)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    items = BatchStore(tmp_path / "b").items()
    assert len(items) == 300
    assert len({r["position"] for r in items}) == 300
    assert {r["item_name"] for r in items} == {f"{t}-{i}" for t in "ab" for i in range(150)}


def test_moved_batch_still_opens_and_resolves_inputs(tmp_path, movie_file, raw_dir):
    path, _ = movie_file
    df = mw.create_batch(tmp_path / "batch")
    df.caiman.add_item("summary", "s", path, {"main": {}})
    assert df.iloc[0]["input_movie_path"] == "movie.tif"  # relative to the raw data path
    # move both the raw data and the batch to "another machine"
    new_raw = tmp_path / "elsewhere" / "raw"
    shutil.move(raw_dir, new_raw)
    shutil.move(tmp_path / "batch", tmp_path / "elsewhere" / "batch")
    mw.set_parent_raw_data_path(new_raw)
    df2 = mw.load_batch(tmp_path / "elsewhere" / "batch")
    assert df2.iloc[0].caiman.get_input_movie_path() == new_raw / "movie.tif"
    assert df2.iloc[0].caiman.get_input_movie().shape == movie_file[1].shape


def test_the_frame_follows_item_positions(tmp_path):
    store = BatchStore.create(tmp_path / "b")
    for name in ("a", "b", "c"):
        store.add(algo="summary", item_name=name, params={"main": {"n": name}}, input_root="abs",
                  input_movie_path=f"/{name}.tif")
    assert list(store.dataframe()["item_name"]) == ["a", "b", "c"]
    conn = sqlite3.connect(store.db_path)  # positions no longer in insertion order
    conn.execute("UPDATE items SET position = 10 - position")
    conn.commit()
    conn.close()
    df = store.dataframe()
    assert list(df["item_name"]) == ["c", "b", "a"] == [r["item_name"] for r in store.items()]
    assert [p["main"]["n"] for p in df["params"]] == ["c", "b", "a"]  # params moved with their rows
