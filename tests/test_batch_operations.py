"""Batch operations a script calls (the table calls the same ones)."""

from __future__ import annotations

import pytest

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
