"""ParamGrid and its pure grid functions: the mini-syntax, combinations, preview, adding items."""

from __future__ import annotations

import pytest

from mesmerize_widgets.accessors.grid import add_grid, expand_grid, item_name, parse_values
from mesmerize_widgets.algorithms import Param
from mesmerize_widgets.errors import DependencyError, ParamError
from mesmerize_widgets.store import BatchStore
from mesmerize_widgets.widgets import ParamGrid

K = Param("K", 4, "int", "components per patch", minimum=1)
GSIG = Param("gSig", (4, 4), "tuple", "neuron half-size", item="int", length=2)
LST = Param("lst", [1], "list", "a list param", item="int")
NAME = Param("var_name_hdf5", "mov", "str", "dataset")
FLT = Param("thr", 0.5, "float", "threshold")
NUL = Param("max_frames", None, "int", "frames", nullable=True, minimum=1)


@pytest.mark.parametrize("param,text,expected", [
    (K, "", [4]),
    (K, "24", [24]),
    (K, " [4, 5, 6] ", [4, 5, 6]),
    (K, "[4, 4, 5]", [4, 5]),  # duplicates collapse
    (K, "3..9 step 2", [3, 5, 7, 9]),
    (K, "3..9", [3, 4, 5, 6, 7, 8, 9]),
    (K, "3:9:2", [3, 5, 7]),
    (K, "3:6", [3, 4, 5]),
    (K, "9..3 step -3", [9, 6, 3]),
    (K, "1..2 | 10", [1, 2, 10]),
    (K, "4 | 6", [4, 6]),
    (K, "6.0", [6]),
    (FLT, "0.1..0.3 step 0.1", [0.1, 0.2, 0.3]),
    (FLT, "0:1:0.25", [0.0, 0.25, 0.5, 0.75]),
    (FLT, "1", [1.0]),
    (GSIG, "(24, 24)", [(24, 24)]),
    (GSIG, "[(4, 4), (6, 6)]", [(4, 4), (6, 6)]),
    (GSIG, "[4, 4]", [(4, 4)]),  # a list of numbers is one tuple
    (GSIG, "(4, 4) | (6, 6)", [(4, 4), (6, 6)]),
    (LST, "[1, 2]", [[1, 2]]),  # a list param: a list is one value...
    (LST, "[[1, 2], [3]]", [[1, 2], [3]]),  # ...a list of lists several
    (LST, "[1] | [2, 3]", [[1], [2, 3]]),
    (NAME, "mov", ["mov"]),
    (NAME, "'a|b'", ["a|b"]),  # | inside quotes is not a separator
    (NAME, "['mov', 'data']", ["mov", "data"]),
    (NUL, "None", [None]),
    (NUL, "[None, 100]", [None, 100]),
])
def test_parse_values(param, text, expected):
    assert parse_values(text, param) == expected


@pytest.mark.parametrize("param,text,message", [
    (K, "abc", "cannot read"),
    (K, "4.5", "must be an integer"),
    (K, "0", ">= 1"),
    (K, "[4, 'x']", "K value 2 must be an integer"),
    (K, "[]", "empty"),
    (K, "3..1", "empty"),
    (K, "1..5 step 0", "cannot be 0"),
    (K, "4 |", "empty alternative"),
    (K, "__import__('os')", "cannot read"),
    (GSIG, "(1, 2, 3)", "2 elements"),
    (GSIG, "1..3", "a range gives numbers"),
    (LST, "[1, 'a']", "must be"),
    (NUL, "[0, None]", ">= 1"),
])
def test_parse_errors(param, text, message):
    with pytest.raises(ParamError, match=message.replace("|", r"\|").replace("(", r"\(")):
        parse_values(text, param)


def test_expand_grid_and_names():
    grid = expand_grid("summary", {"chunk_frames": [50, 100], "eight_neighbours": [True, False]})
    assert grid == [
        {"main": {"chunk_frames": 50, "eight_neighbours": True}},
        {"main": {"chunk_frames": 50, "eight_neighbours": False}},
        {"main": {"chunk_frames": 100, "eight_neighbours": True}},
        {"main": {"chunk_frames": 100, "eight_neighbours": False}},
    ]
    # a tuple is one value, a list of tuples several; base params are kept
    crops = expand_grid("preprocess", {"crop": [(0, 8, 0, 8), (0, 4, 0, 4)], "ds_factor": 2},
                        base={"temporal_ds": 3})
    assert [g["main"] for g in crops] == [
        {"temporal_ds": 3, "crop": (0, 8, 0, 8), "ds_factor": 2},
        {"temporal_ds": 3, "crop": (0, 4, 0, 4), "ds_factor": 2},
    ]
    assert len(expand_grid("preprocess", {"crop": (0, 8, 0, 8)})) == 1
    with pytest.raises(ParamError, match="unknown param"):
        expand_grid("summary", {"K": [1]})
    with pytest.raises(ParamError, match="must be an integer"):
        expand_grid("summary", {"chunk_frames": [1, "x"]})
    assert item_name("m", {"K": 4, "gSig": (4, 4)}, ["K", "gSig"]) == "m K=4,gSig=(4, 4)"
    assert item_name("m", {"K": 4}, []) == "m"
    assert item_name("m", {"K": 4}, ["K"], template="{name}_k{K}") == "m_k4"
    with pytest.raises(ParamError, match="template"):
        item_name("m", {"K": 4}, ["K"], template="{name}_{nope}")


def test_add_grid_function_for_two_inputs(batch, movie_file):
    path, _ = movie_file
    pre = batch.caiman.add_item("preprocess", "pre", path, {"main": {"ds_factor": 2}})
    rows = add_grid(batch, "summary", [path, pre], {"chunk_frames": [5, 10]}, template=None)
    assert [r["item_name"] for r in rows] == ["movie chunk_frames=5", "movie chunk_frames=10",
                                              "pre chunk_frames=5", "pre chunk_frames=10"]
    assert [r["params"]["main"]["chunk_frames"] for r in rows] == [5, 10, 5, 10]
    assert [r["parent_uuid"] for r in rows] == [None, None, pre["uuid"], pre["uuid"]]
    assert len(BatchStore(batch.attrs["batch_path"]).items()) == 5
    # a failure part-way (a summary item makes no movie to feed another item) rolls back
    with pytest.raises(DependencyError):
        add_grid(batch, "summary", [path, rows[0]], {"chunk_frames": [5]})
    assert len(BatchStore(batch.attrs["batch_path"]).items()) == 5 and len(batch) == 5


def test_param_grid_widget_adds_the_grid(batch, movie_file):
    path, _ = movie_file
    pre = batch.caiman.add_item("preprocess", "pre", path, {"main": {}})
    added = []
    pg = ParamGrid(batch, "summary", [path, pre])
    pg.on_added(added.extend)
    assert set(pg.fields) == {"var_name_hdf5", "chunk_frames", "max_frames", "eight_neighbours"}
    assert "frames read per chunk" in pg.fields["chunk_frames"].tooltip
    assert pg.fields["chunk_frames"].value == "200" and pg.n_combinations == 1
    pg.set_text("chunk_frames", "10..30 step 10")
    assert "3 values" in pg.field_status["chunk_frames"].value
    pg.set_text("max_frames", "[None, 40]")
    assert pg.n_combinations == 6 and "= <b>12</b> item(s)" in pg.count_html.value
    preview = pg.preview()
    assert list(preview.columns) == ["input", "item_name", "chunk_frames", "max_frames"]
    assert len(preview) == 12
    assert preview["item_name"].iloc[1] == "movie chunk_frames=10,max_frames=40"
    assert preview["item_name"].iloc[6] == "pre chunk_frames=10,max_frames=None"
    assert "movie chunk_frames=30,max_frames=40" in pg.preview_html.value
    pg.inputs_select.value = (1,)  # only the preprocess item
    pg.name_text.value = "pp"
    pg.template_text.value = "{name} cf{chunk_frames} mf{max_frames}"
    assert pg.preview()["item_name"].tolist()[:2] == ["pp cf10 mfNone", "pp cf10 mf40"]
    pg.add_button.click()
    assert len(added) == 6 and "added 6 item(s)" in pg.message.value
    recs = BatchStore(batch.attrs["batch_path"]).items()[1:]
    assert [r["item_name"] for r in recs] == [f"pp cf{c} mf{m}" for c in (10, 20, 30) for m in (None, 40)]
    assert all(r["parent_uuid"] == pre["uuid"] and r["algo"] == "summary" for r in recs)
    assert recs[1]["params"] == {"main": {"var_name_hdf5": "mov", "chunk_frames": 10, "max_frames": 40,
                                          "eight_neighbours": True}}
    # another algo rebuilds the form from its schema
    pg.algo_dropdown.value = "preprocess"
    assert "crop" in pg.fields and pg.fields["crop"].value == "None"
    pg.set_text("crop", "[(0, 8, 0, 8), (0, 4, 0, 4)]")
    pg.set_inputs([path])
    assert pg.n_combinations == 2
    assert pg.add_to_batch() == [] and "template" in pg.message.value  # {max_frames} is not a preprocess param
    pg.template_text.value = ""
    rows = pg.add_to_batch()
    assert [r["params"]["main"]["crop"] for r in rows] == [(0, 8, 0, 8), (0, 4, 0, 4)]
    assert [r["item_name"] for r in rows] == ["pp crop=(0, 8, 0, 8)", "pp crop=(0, 4, 0, 4)"]


def test_param_grid_invalid_input_writes_nothing(batch, movie_file):
    path, _ = movie_file
    store = BatchStore(batch.attrs["batch_path"])
    pg = ParamGrid(batch, "summary", [path])
    for text, message in (("abc", "cannot read"), ("[5, 'x']", "must be an integer"), ("0", "&gt;= 1")):
        pg.set_text("chunk_frames", text)
        assert message in pg.field_status["chunk_frames"].value, pg.field_status["chunk_frames"].value
        assert pg.errors.keys() == {"chunk_frames"} and pg.n_combinations == 0
        assert pg.add_button.disabled
        assert pg.add_to_batch() == [] and "nothing added" in pg.message.value
        assert store.items() == []
    pg.set_text("chunk_frames", "5")
    pg.set_text("eight_neighbours", "yes")
    assert "cannot read" in pg.field_status["eight_neighbours"].value
    pg.set_text("eight_neighbours", "False")
    assert pg.errors == {} and not pg.add_button.disabled
    pg.template_text.value = "{name} {unknown}"
    assert "template" in pg.preview_html.value and pg.add_button.disabled
    assert pg.add_to_batch() == [] and store.items() == []
    pg.template_text.value = ""
    pg.set_inputs([])
    assert pg.add_to_batch() == [] and "at least one input" in pg.message.value
    pg.set_inputs([path / "missing.tif"])
    assert pg.add_to_batch() == [] and "nothing added" in pg.message.value
    assert store.items() == [] and len(batch) == 0
    pg.set_inputs([path])
    assert [r["item_name"] for r in pg.add_to_batch()] == ["movie"]
