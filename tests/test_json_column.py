"""The params/outputs columns of a loaded batch: dicts on every read, decoded only when read."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest

import mesmerize_widgets as mw
from mesmerize_widgets.store import BatchStore
from mesmerize_widgets.store.json_column import JSONColumn

MCORR = {"main": {"max_shifts": (24, 24), "strides": (48, 48), "pw_rigid": True}}
CNMF = {"main": {"gSig": (4, 4), "K": 5, "p": 1}, "refit": True}


@pytest.fixture
def loaded(tmp_path):
    """A batch of 12 stored items (6 mcorr, 6 cnmf) opened fresh from disk."""
    store = BatchStore.create(tmp_path / "b")
    for i in range(12):
        algo, params = ("mcorr", MCORR) if i % 2 == 0 else ("cnmf", {**CNMF, "main": {**CNMF["main"], "K": i}})
        store.add(algo=algo, item_name=f"item {i}", params=params, input_root="raw",
                  input_movie_path=f"m{i}.tif")
        store.update(store.uuids()[-1], outputs={"success": True, "n": i, "shape": (i, 2)})
    return mw.load_batch(tmp_path / "b")


def _touched(df: pd.DataFrame, column: str = "params") -> list[int]:
    return df[column].array.touched().tolist()


def test_opening_decodes_nothing_and_reading_a_row_decodes_that_row(loaded):
    assert isinstance(loaded["params"].array, JSONColumn)
    assert _touched(loaded) == [] and _touched(loaded, "outputs") == []
    row = loaded.iloc[3]
    assert row["params"]["main"]["gSig"] == (4, 4) and type(row["params"]["main"]["gSig"]) is tuple
    assert row["outputs"]["shape"] == (3, 2)
    assert _touched(loaded) == [3]


def test_pandas_operations_give_back_dicts_with_tuples(loaded):
    cnmf = loaded[loaded["algo"] == "cnmf"]
    assert [p["main"]["K"] for p in cnmf["params"]] == [1, 3, 5, 7, 9, 11]
    by_name = loaded.sort_values("item_name")  # item 0, item 1, item 10, item 11, item 2, ...
    assert by_name["params"].iloc[2]["main"]["max_shifts"] == (24, 24)
    assert by_name["params"].iloc[3]["main"]["K"] == 11
    both = pd.concat([loaded, loaded], ignore_index=True)
    assert len(both) == 24 and both["params"].iloc[13]["main"]["K"] == 1
    assert loaded.to_dict("records")[5]["params"]["main"]["gSig"] == (4, 4)
    assert loaded["outputs"].map(lambda o: o["success"]).all()  # .map of non-dicts is a plain column
    ks = loaded["params"].map(lambda p: p["main"].get("K", 0))
    assert ks.tolist() == [0, 1, 0, 3, 0, 5, 0, 7, 0, 9, 0, 11]
    assert loaded.groupby("algo").size().to_dict() == {"cnmf": 6, "mcorr": 6}
    back = pickle.loads(pickle.dumps(loaded))
    assert back["params"].iloc[1] == loaded["params"].iloc[1]
    assert "max_shifts" in repr(loaded) + loaded.to_html()


def test_editing_a_cell_in_place_is_saved(loaded, tmp_path):
    loaded.iloc[1]["params"]["main"]["K"] = 42  # edits the cell itself, as with an object column
    assert loaded["params"].iloc[1]["main"]["K"] == 42
    loaded.at[2, "params"] = {"main": {"max_shifts": (8, 8)}}
    loaded.caiman.save_to_disk()
    disk = mw.load_batch(tmp_path / "b")
    assert disk["params"].iloc[1]["main"]["K"] == 42
    assert disk["params"].iloc[2] == {"main": {"max_shifts": (8, 8)}}
    assert disk["params"].iloc[3]["main"]["K"] == 3  # untouched rows stay as they were


def test_adding_items_keeps_the_frame_and_its_dtypes(batch, movie_file):
    for i in range(3):
        row = batch.caiman.add_item("summary", f"s{i}", movie_file[0], {"main": {"chunk_frames": 10 + i}})
        assert row["params"]["main"]["chunk_frames"] == 10 + i
    fresh = batch.caiman.reload_from_disk()
    assert list(batch["uuid"]) == list(fresh["uuid"])
    assert batch.dtypes.equals(fresh.dtypes)
    assert batch.attrs["batch_path"] == fresh.attrs["batch_path"]
    assert [p["main"]["chunk_frames"] for p in batch["params"]] == [10, 11, 12]
    assert batch["comments"].tolist() == [None, None, None]  # None, not NaN
