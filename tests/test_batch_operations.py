"""Batch operations a script calls (the table calls the same ones) and the shared batch watcher."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import wait_for

import mesmerize_widgets as mw
from mesmerize_widgets.accessors.watch import watch_batch
from mesmerize_widgets.errors import DependencyError, ItemBusyError, ParamError
from mesmerize_widgets.store import BatchStore


@pytest.fixture
def chain(batch, movie_file):
    """a; pre -> child -> grandchild; pre -> other."""
    path, _ = movie_file
    batch.caiman.add_item("summary", "a", path, {"main": {}})
    pre = batch.caiman.add_item("preprocess", "pre", path, {"main": {"ds_factor": 2}})
    child = batch.caiman.add_item("preprocess", "child", pre, {"main": {}})
    batch.caiman.add_item("summary", "grandchild", child, {"main": {}})
    batch.caiman.add_item("summary", "other", pre, {"main": {}})
    return batch


def names(store: BatchStore) -> list[str]:
    return [r["item_name"] for r in store.items()]


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("batch-watch:")]


def test_remove_with_dependents_from_a_script(chain):
    df = chain
    store = BatchStore(df.attrs["batch_path"])
    uuid = dict(zip(df["item_name"], df["uuid"], strict=True))
    for u in uuid.values():
        store.item_dir(u).mkdir(parents=True, exist_ok=True)
    with pytest.raises(DependencyError, match="'pre' is the input of 'child', 'other'"):
        df.caiman.remove_items([uuid["pre"]])
    assert len(df) == 5 and len(store.items()) == 5  # refused: nothing removed
    # a running dependent refuses the whole removal, however deep
    store.update(uuid["grandchild"], status="running")
    with pytest.raises(ItemBusyError, match=r"cancel these items before removing them: \['grandchild'\]"):
        df.caiman.remove_items([uuid["pre"]], remove_dependents=True)
    assert len(store.items()) == 5
    store.update(uuid["grandchild"], status="done")

    removed = df.caiman.remove_items([uuid["pre"]], remove_dependents=True)
    assert removed == [uuid["grandchild"], uuid["child"], uuid["other"], uuid["pre"]]  # children first
    assert names(store) == ["a"] and list(df["item_name"]) == ["a"]  # the script's df follows
    assert not any(store.item_dir(uuid[n]).exists() for n in ("pre", "child", "grandchild", "other"))
    assert store.item_dir(uuid["a"]).exists()


def test_remove_parent_and_child_together_needs_no_flag(chain):
    df = chain
    store = BatchStore(df.attrs["batch_path"])
    picked = list(df["uuid"][1:])  # pre and all its dependents
    assert df.caiman.remove_items(picked) == [picked[2], picked[1], picked[3], picked[0]]
    assert names(store) == ["a"]


def test_duplicate_with_edits_from_a_script(chain):
    df = chain
    store = BatchStore(df.attrs["batch_path"])
    copy = df.caiman.duplicate_item(1, {"ds_factor": 3})  # 'pre': only ds_factor changes
    assert copy["item_name"] == "pre" and copy["algo"] == "preprocess"
    rec = store.get(copy["uuid"])
    assert rec["params"]["main"]["ds_factor"] == 3 and rec["input_movie_path"] == df.iloc[1]["input_movie_path"]
    assert len(df) == 6 and df.iloc[-1]["uuid"] == copy["uuid"]
    # a chained item keeps its parent; {"main": ...} replaces the params; a new name
    kid = df.caiman.duplicate_item(df.iloc[2]["uuid"], {"main": {"chunk_frames": 10}}, item_name="child 10")
    assert kid["parent_uuid"] == df.iloc[1]["uuid"] and kid["item_name"] == "child 10"
    assert store.get(kid["uuid"])["params"]["main"] == {"chunk_frames": 10}
    with pytest.raises(ParamError):
        df.caiman.duplicate_item(1, {"nope": 1})
    assert len(store.items()) == 7


def test_one_watcher_thread_tells_two_subscribers_of_one_change(batch, movie_file):
    path, _ = movie_file
    watcher = watch_batch(batch)
    assert watch_batch(BatchStore(batch.attrs["batch_path"])) is watcher  # one per batch
    seen: dict[str, list] = {"table": [], "viewer": []}
    subs = [watcher.subscribe(lambda c, k=k: seen[k].append(c), interval=0.05) for k in seen]
    wait_for(lambda: all(seen.values()), 10, "the first call of each subscriber")
    assert len(watch_threads()) == 1 and watcher.running
    assert all(c[0].changed and c[0].records == [] for c in seen.values())

    other = mw.load_batch(batch.attrs["batch_path"])  # another notebook adds an item
    other.caiman.add_item("summary", "new", path, {"main": {}})
    for k in seen:
        wait_for(lambda k=k: any(c.records and c.records[0]["item_name"] == "new" for c in seen[k]), 10,
                 f"{k} to see the new item")
    assert len(watch_threads()) == 1
    time.sleep(0.3)  # idle and unchanged: no more calls
    counts = {k: len(v) for k, v in seen.items()}
    time.sleep(0.3)
    assert {k: len(v) for k, v in seen.items()} == counts
    subs[0].cancel()
    assert watcher.running  # somebody still listens
    subs[1].cancel(wait=True)
    wait_for(lambda: not watcher.running and not watch_threads(), 5, "the thread to stop")


@pytest.mark.usefixtures("client")
def test_the_table_and_another_subscriber_follow_a_run_on_one_thread(batch, movie_file):
    from mesmerize_widgets.widgets import BatchTable

    path, _ = movie_file
    batch.caiman.add_item("summary", "s", path, {"main": {}})
    table = BatchTable(batch, poll_interval=0.05)
    statuses: list[str] = []
    sub = watch_batch(batch).subscribe(lambda c: statuses.append(c.records[0]["status"]), interval=0.05)
    table.select([0])
    table.run_selected()
    wait_for(lambda: statuses and statuses[-1] == "done", 60, "the subscriber to see the run end")
    assert len(watch_threads()) == 1
    assert {"queued", "running"} & set(statuses)  # followed while it ran
    table.wait(timeout=30)  # the table saw it end and unsubscribed
    assert list(table.visible_rows()["status"]) == ["done"] and watch_batch(batch).running
    sub.cancel(wait=True)
    wait_for(lambda: not watch_threads(), 5, "the thread to stop when nobody listens")
    table.close()
