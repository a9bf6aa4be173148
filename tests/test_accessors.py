"""df.caiman / row.caiman: mesmerize-core's calls, checked against the store on disk."""

from __future__ import annotations

import subprocess
import sys
import uuid as uuid_mod

import numpy as np
import pandas as pd
import pytest
import tifffile

import mesmerize_widgets as mw
from mesmerize_widgets.arrays import MovieReadError
from mesmerize_widgets.store import BatchStore
from mesmerize_widgets.store import paths as store_paths


def _on_disk(df: pd.DataFrame) -> pd.DataFrame:
    return mw.load_batch(df.attrs["batch_path"])


def test_add_item_changes_df_and_store_in_the_same_call(batch, movie_file):
    path, movie = movie_file
    row = batch.caiman.add_item(algo="summary", item_name="first", input_movie_path=path,
                                params={"main": {"max_frames": 10}})
    assert len(batch) == 1 and row["item_name"] == "first"
    disk = _on_disk(batch)
    assert list(disk.columns[:10]) == ["algo", "item_name", "input_movie_path", "params", "outputs",
                                       "added_time", "ran_time", "algo_duration", "comments", "uuid"]
    assert disk.iloc[0]["uuid"] == batch.iloc[0]["uuid"]
    assert disk.iloc[0]["status"] == "pending" and disk.iloc[0]["progress"] == 0.0
    assert disk.iloc[0]["params"] == {"main": {"max_frames": 10}}
    assert batch.iloc[0].caiman.get_input_movie().shape == movie.shape


def test_pandas_replaces_a_frames_contents_in_place(batch, movie_file):
    """The private pandas method ``accessors.frame.replace_contents`` relies on (its one use):
    the same object gets the new rows, keeps its attrs, and goes on working with public pandas."""
    from mesmerize_widgets.accessors.frame import replace_contents

    assert hasattr(pd.DataFrame, "_update_inplace"), "pandas dropped DataFrame._update_inplace"
    batch.caiman.add_item("summary", "a", movie_file[0], {"main": {}})
    df, attrs = batch, dict(batch.attrs)
    grown = pd.concat([df, df], ignore_index=True)
    grown.attrs = {}
    replace_contents(df, grown)
    assert df is batch and len(df) == 2 and df.attrs == attrs
    assert list(df["item_name"]) == ["a", "a"] and df["params"].dtype == grown["params"].dtype
    df.at[1, "item_name"] = "b"
    assert list(df["item_name"]) == ["a", "b"]
    # and through the accessors, as mesmerize-core notebooks use them
    batch.caiman.add_item("summary", "c", movie_file[0], {"main": {}})
    assert df is batch and list(df["item_name"]) == ["a", "b", "c"] and df.index.equals(pd.RangeIndex(3))


def test_parent_raw_data_path_is_required(tmp_path, movie_file):
    df = mw.create_batch(tmp_path / "b2")
    store_paths._parent_raw_data_path = None
    with pytest.raises(ValueError, match="set_parent_raw_data_path"):
        df.caiman.add_item("summary", "x", movie_file[0], {"main": {}})
    assert len(df) == 0 and len(_on_disk(df)) == 0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"algo": "nope"}, mw.UnknownAlgorithmError, "unknown algo 'nope'"),
        ({"params": "max_frames=3"}, mw.ParamError, "must be a dict"),
        ({"params": {"main": {"max_frame": 3}}}, mw.ParamError, "did you mean"),
        ({"params": {"main": {"max_frames": "3"}}}, mw.ParamError, "must be an integer"),
        ({"input_movie_path": "missing.tif"}, MovieReadError, "missing.tif: no such file"),
        ({"input_movie_path": 42}, TypeError, "must be a path"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(batch, movie_file, kwargs, error, message):
    args = {"algo": "summary", "item_name": "x", "input_movie_path": movie_file[0], "params": {"main": {}}}
    batch.caiman.add_item(**args)
    with pytest.raises(error, match=message):
        batch.caiman.add_item(**{**args, **kwargs})
    assert len(batch) == 1 and len(_on_disk(batch)) == 1


def test_unreadable_movie_is_refused(batch, raw_dir):
    bad = raw_dir / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 10)
    with pytest.raises(MovieReadError, match="corrupt.tif"):
        batch.caiman.add_item("summary", "x", bad, {"main": {}})
    assert len(_on_disk(batch)) == 0


def _three_items(batch, path):
    pre = batch.caiman.add_item("preprocess", "pre", path, {"main": {"ds_factor": 2}})
    batch.caiman.add_item("summary", "child", pre, {"main": {"max_frames": 5}})
    batch.caiman.add_item("summary", "child", pre["uuid"], {"main": {"max_frames": 9}})
    return pre


def test_chaining_children_parent_and_diffs(batch, movie_file):
    pre = _three_items(batch, movie_file[0])
    assert batch.caiman.get_children(0) == list(batch["uuid"][1:])
    assert batch.caiman.get_parent(1) == pre["uuid"] and batch.caiman.get_parent(0) is None
    diffs = batch.caiman.get_params_diffs("summary", "child")
    assert list(diffs.columns) == ["max_frames"] and diffs["max_frames"].tolist() == [5, 9]
    assert batch.caiman.uloc(pre["uuid"])["item_name"] == "pre"
    assert batch.caiman.uloc(uuid_mod.UUID(pre["uuid"]))["item_name"] == "pre"
    with pytest.raises(KeyError, match="no item with uuid"):
        batch.caiman.uloc("abc")


def test_an_item_without_an_output_movie_cannot_be_an_input(batch, movie_file):
    s = batch.caiman.add_item("summary", "s", movie_file[0], {"main": {}})
    with pytest.raises(mw.DependencyError, match="produce no movie"):
        batch.caiman.add_item("summary", "t", s, {"main": {}})
    assert len(_on_disk(batch)) == 1


def test_remove_item_refuses_parents_unless_asked(batch, movie_file):
    _three_items(batch, movie_file[0])
    with pytest.raises(mw.DependencyError, match="input of 2 other item"):
        batch.caiman.remove_item(0)
    assert len(batch) == 3 and len(_on_disk(batch)) == 3
    child_uuid = batch.iloc[2]["uuid"]
    batch.caiman.remove_item(child_uuid)  # by uuid string
    batch.caiman.remove_item(uuid_mod.UUID(batch.iloc[1]["uuid"]))  # by UUID
    assert child_uuid not in set(_on_disk(batch)["uuid"])
    batch.caiman.remove_item(0)
    assert len(batch) == 0 and len(_on_disk(batch)) == 0
    with pytest.raises(mw.ItemNotFoundError, match="no item at index 0"):
        batch.caiman.remove_item(0)


def test_remove_item_with_safe_removal_off(batch, movie_file):
    _three_items(batch, movie_file[0])
    batch.caiman.remove_item(0, safe_removal=False)
    assert list(_on_disk(batch)["item_name"]) == ["child", "child"]


def test_update_item_and_save_to_disk_of_direct_edits(batch, movie_file):
    batch.caiman.add_item("summary", "x", movie_file[0], {"main": {}})
    batch.caiman.update_item(0, {"comments": "looks good"})
    assert _on_disk(batch).iloc[0]["comments"] == "looks good"
    batch.at[0, "item_name"] = "renamed"
    batch.at[0, "params"] = {"main": {"max_frames": [7][0]}}
    batch.caiman.save_to_disk()
    disk = _on_disk(batch)
    assert disk.iloc[0]["item_name"] == "renamed" and disk.iloc[0]["params"] == {"main": {"max_frames": 7}}
    batch.at[0, "params"] = {"main": {"bogus": 1}}
    with pytest.raises(mw.ParamError, match="bogus"):
        batch.caiman.save_to_disk()
    assert _on_disk(batch).iloc[0]["params"] == {"main": {"max_frames": 7}}
    with pytest.raises(ValueError, match="only"):
        batch.caiman.update_item(0, {"status": "done"})


ADD_SCRIPT = """
import sys, mesmerize_widgets as mw
mw.set_parent_raw_data_path(sys.argv[2])
df = mw.load_batch(sys.argv[1])
for i in range(int(sys.argv[3])):
    df.caiman.add_item("summary", f"other-{i}", "movie.tif", {"main": {}})
"""


def test_reload_from_disk_sees_another_notebook(batch, movie_file, raw_dir):
    batch.caiman.add_item("summary", "mine", movie_file[0], {"main": {}})
    proc = subprocess.Popen([sys.executable, "-c", ADD_SCRIPT, batch.attrs["batch_path"], str(raw_dir), "20"])
    for i in range(20):
        batch.caiman.add_item("summary", f"mine-{i}", movie_file[0], {"main": {}})
    assert proc.wait(60) == 0
    fresh = batch.caiman.reload_from_disk()
    assert len(fresh) == 41
    assert sum(n.startswith("other-") for n in fresh["item_name"]) == 20


def test_outputs_of_an_item_that_has_not_run(batch, movie_file):
    row = batch.caiman.add_item("summary", "x", movie_file[0], {"main": {}})
    with pytest.raises(ValueError, match="has no mean projection: it is pending"):
        row.caiman.get_projection("mean")
    with pytest.raises(ValueError, match="'mean', 'std' or 'max'"):
        row.caiman.get_projection("median")


def test_split_recording_is_one_input(batch, raw_dir):
    folder = raw_dir / "session1"
    folder.mkdir()
    parts = [np.full((5, 8, 8), i, np.uint16) for i in range(3)]
    for i, part in enumerate(parts):
        tifffile.imwrite(folder / f"part_{i + 1}.tif", part)
    row = batch.caiman.add_item("summary", "split", folder, {"main": {}})
    movie = row.caiman.get_input_movie()
    assert movie.shape == (15, 8, 8)
    assert np.asarray(movie[:, 0, 0]).tolist() == [0] * 5 + [1] * 5 + [2] * 5


def test_accessor_on_a_plain_dataframe_says_what_is_wrong():
    with pytest.raises(ValueError, match="not a batch"):
        pd.DataFrame({"a": [1]}).caiman.add_item("summary", "x", "m.tif", {"main": {}})


def test_store_is_a_plain_sqlite_file_anyone_can_read(batch, movie_file):
    batch.caiman.add_item("summary", "x", movie_file[0], {"main": {}})
    store = BatchStore(batch.attrs["batch_path"])
    import sqlite3

    rows = sqlite3.connect(store.db_path).execute("SELECT item_name, params FROM items").fetchall()
    assert rows == [("x", '{"main":{}}')]
