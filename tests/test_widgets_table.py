"""BatchTable driven through its Python API and its widgets, against a real batch and real runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import wait_for

import mesmerize_widgets as mw
from mesmerize_widgets.store import BatchStore
from mesmerize_widgets.widgets import BatchTable


@pytest.fixture
def items(batch, movie_file):
    """Two sibling summaries differing in chunk_frames, a preprocess and its chained child."""
    path, _ = movie_file
    batch.caiman.add_item("summary", "a", path, {"main": {}})
    batch.caiman.add_item("summary", "a", path, {"main": {"chunk_frames": 7}})
    pre = batch.caiman.add_item("preprocess", "pre", path, {"main": {"ds_factor": 2}})
    batch.caiman.add_item("summary", "child", pre, {"main": {}})
    return batch


def _store(df) -> BatchStore:
    return BatchStore(df.attrs["batch_path"])


def test_columns_show_status_input_params_and_sibling_diffs(items):
    table = BatchTable(items)
    rows = table.visible_rows()
    assert list(rows["item_name"]) == ["a", "a", "pre", "child"]
    assert list(rows["status"]) == ["pending"] * 4
    assert list(rows["input"]) == ["movie.tif", "movie.tif", "movie.tif", "<- pre"]
    # only the param that differs between the two siblings named 'a' is highlighted
    assert list(rows["differs"]) == ["chunk_frames=200", "chunk_frames=7", "", ""]
    assert list(rows["params"]) == ["", "chunk_frames=7", "ds_factor=2", ""]
    assert list(rows["uuid"]) == list(items["uuid"])


def test_selection_event_with_sort_and_filter(items):
    table = BatchTable(items)
    seen: list[list[str]] = []
    table.on_selection(lambda rows: seen.append([r["uuid"] for r in rows]))
    table.select([0, 2])
    assert seen[-1] == [items.iloc[0]["uuid"], items.iloc[2]["uuid"]]
    assert table.selected_uuids == seen[-1]
    assert table.selected_rows()[1]["item_name"] == "pre"

    table.sort_by("item_name", ascending=False)  # pre, child, a, a
    assert list(table.visible_rows()["item_name"]) == ["pre", "child", "a", "a"]
    table.select([1])
    assert seen[-1] == [items.iloc[3]["uuid"]]
    rows = table.selected_rows()
    assert rows[0]["item_name"] == "child" and rows[0].caiman.uuid == items.iloc[3]["uuid"]

    table.set_filter(algo="summary", name="A")  # case-insensitive name filter
    assert list(table.visible_rows()["item_name"]) == ["a", "a"]
    assert seen[-1] == [] and table.selected_uuids == []  # the hidden row left the selection
    table.select([1])
    assert seen[-1] == [items.iloc[1]["uuid"]]
    table.set_filter(algo=None, name=None, status="pending")
    assert len(table.visible_rows()) == 4
    table.sort_by("duration")
    table.sort_by(None)
    assert list(table.visible_rows()["item_name"]) == ["a", "a", "pre", "child"]
    # the filter widgets drive the same filter
    table.status_filter.value = "done"
    assert table.visible_rows().empty
    table.status_filter.value = "all"
    table.name_filter.value = "chi"
    assert list(table.visible_rows()["item_name"]) == ["child"]


def test_datagrid_selection_maps_through_the_frontend_view_order(items):
    pytest.importorskip("ipydatagrid")
    table = BatchTable(items, view="datagrid")
    seen = []
    table.on_selection(lambda rows: seen.append([r["item_name"] for r in rows]))
    grid = table.view.grid
    grid.selections = [{"r1": 1, "c1": 0, "r2": 2, "c2": 3}]  # what the browser syncs: rows 1-2
    assert seen[-1] == ["a", "pre"]
    grid._visible_rows = [3, 2, 1, 0]  # the user sorted by a header in the browser
    grid.selections = [{"r1": 0, "c1": 0, "r2": 0, "c2": 0}, {"r1": 3, "c1": 0, "r2": 3, "c2": 0}]
    assert seen[-1] == ["child", "a"]
    assert table.selected_uuids == [items.iloc[3]["uuid"], items.iloc[0]["uuid"]]
    assert list(table.visible_rows()["item_name"]) == ["child", "pre", "a", "a"]


def test_list_view_without_datagrid(items):
    table = BatchTable(items, view="list")
    seen = []
    table.on_selection(lambda rows: seen.append([r["item_name"] for r in rows]))
    table.view.select.value = (items.iloc[2]["uuid"],)  # a click in the list
    assert seen[-1] == ["pre"]
    table.select([0, 1])
    assert table.view.select.value == tuple(items["uuid"][:2])
    assert "<table" in table.view.table.value


def test_comment_cell_edit_is_saved_in_the_store(items):
    pytest.importorskip("ipydatagrid")
    table = BatchTable(items, view="datagrid")
    table.sort_by("item_name")  # a, a, child, pre: data rows differ from batch positions
    grid = table.view.grid
    col = list(grid.data.columns).index("comments")
    # the message the browser sends after an edit of the 'child' row's comments cell
    grid._handle_custom_msg({"event_type": "cell-changed", "row": 2, "column_index": col, "value": "looks good"}, [])
    disk = mw.load_batch(items.attrs["batch_path"])
    assert disk.iloc[3]["comments"] == "looks good" and items.iloc[3]["comments"] == "looks good"
    assert list(disk["comments"][:3]) == [None, None, None]
    # editing another column is refused and reverted
    col = list(grid.data.columns).index("item_name")
    grid._handle_custom_msg({"event_type": "cell-changed", "row": 2, "column_index": col, "value": "x"}, [])
    assert "only comments" in table.last_message
    assert mw.load_batch(items.attrs["batch_path"]).iloc[3]["item_name"] == "child"
    assert grid.data["item_name"].iloc[2] == "child"
    # the comment box saves for the selected item
    table.select([0])
    table.comment_text.value = "baseline"
    table.comment_button.click()
    assert _store(items).get(items.iloc[0]["uuid"])["comments"] == "baseline"


def test_refresh_shows_changes_made_elsewhere(items):
    table = BatchTable(items)
    other = mw.load_batch(items.attrs["batch_path"])  # another notebook
    other.caiman.update_item(0, {"comments": "from elsewhere"})
    other.caiman.remove_item(1)
    table.refresh()
    rows = table.visible_rows()
    assert list(rows["item_name"]) == ["a", "pre", "child"]
    assert rows.iloc[0]["comments"] == "from elsewhere"
    assert len(items) == 3  # the user's DataFrame follows


@pytest.mark.usefixtures("client")
def test_run_from_the_table_updates_rows_live(items):
    table = BatchTable(items, poll_interval=0.1)
    table.select([0, 1])
    seen = set()

    def both_done():
        statuses = list(table.visible_rows()["status"])  # no refresh(): the live poll updates them
        seen.update(statuses[:2])
        return statuses == ["done", "done", "pending", "pending"]

    assert table.run_selected() is not None
    wait_for(both_done, what="the table to show both items done")
    assert seen - {"pending", "done"}  # queued/running were shown on the way
    sub = table._submissions[0]
    wait_for(lambda: sub["bar"].value == 2, what="the progress bar to fill")
    assert sub["label"].value.startswith("2/2 finished") and sub["bar"].bar_style == "success"
    assert all(d.endswith(" sec") for d in table.visible_rows()["duration"][:2])
    assert list(items["status"]) == ["done", "done", "pending", "pending"]  # the user's df follows
    table.wait(timeout=10)
    table.close()


@pytest.mark.usefixtures("client")
def test_cancel_a_long_running_item(batch, slow_movie):
    batch.caiman.add_item("summary", "slow", slow_movie, {"main": {"chunk_frames": 1}})
    table = BatchTable(batch, poll_interval=0.1)
    table.select([0])
    table.run_button.click()
    wait_for(lambda: table.visible_rows().iloc[0]["status"] not in ("pending", "queued", "running 0%"),
              what="progress to show in the table")
    assert table.visible_rows().iloc[0]["status"].startswith("running ")
    table.run_selected()  # already running: refused, said, nothing breaks
    assert "already queued or running" in table.last_message
    table.remove_selected(confirm=True)
    assert "cancel these items" in table.last_message
    table.cancel_button.click()
    wait_for(lambda: table.visible_rows().iloc[0]["status"] == "cancelled", what="cancelled in the table")
    assert _store(batch).get(batch.iloc[0]["uuid"])["status"] == "cancelled"
    table.wait(timeout=30)
    table.close()


def test_remove_asks_for_confirmation(items):
    table = BatchTable(items)
    table.select([1])
    table.remove_button.click()
    assert table.confirm_box.layout.display == "flex" and "remove <b>1</b>" in table.confirm_html.value
    assert len(_store(items).items()) == 4  # only asked
    table.confirm_button.click()
    assert table.confirm_box.layout.display == "none"
    assert [r["item_name"] for r in _store(items).items()] == ["a", "pre", "child"]
    assert list(table.visible_rows()["item_name"]) == ["a", "pre", "child"]
    assert table.selected_uuids == []


def test_remove_refused_for_a_parent_unless_dependents_go_too(items):
    table = BatchTable(items)
    pre, child = items.iloc[2]["uuid"], items.iloc[3]["uuid"]
    table.select([2])
    assert table.remove_selected(confirm=True) == []
    assert "'pre' is the input of 'child'" in table.last_message and "Traceback" not in table.message.value
    assert len(_store(items).items()) == 4
    table.remove_button.click()
    assert table.confirm_button.disabled  # the confirm step shows the refusal
    table.remove_dependents.value = True  # the user ticks "also remove dependents"
    assert not table.confirm_button.disabled and "1 dependent(s) included" in table.confirm_html.value
    table.confirm_button.click()
    assert [r["item_name"] for r in _store(items).items()] == ["a", "a"]
    assert not (Path(items.attrs["batch_path"]) / pre).exists()
    assert child not in set(items["uuid"])


def test_remove_parent_and_child_selected_together(items):
    table = BatchTable(items)
    pre, child = items.iloc[2]["uuid"], items.iloc[3]["uuid"]
    table.select([2, 3])  # no dependent outside the selection: allowed, children removed first
    assert table.remove_selected(confirm=True, remove_dependents=False) == [child, pre]
    assert [r["item_name"] for r in _store(items).items()] == ["a", "a"]


def test_duplicate_with_edited_params(items):
    table = BatchTable(items)
    table.select([2])  # pre, ds_factor=2
    table.duplicate_button.click()
    assert table.duplicate_box.layout.display == "flex"
    assert "'ds_factor': 2" in table.duplicate_params.value and table.duplicate_name.value == "pre"
    table.duplicate_params.value = table.duplicate_params.value.replace("'ds_factor': 2", "'ds_factor': 3")
    table.duplicate_add.click()
    store = _store(items)
    recs = store.items()
    assert len(recs) == 5
    new = recs[-1]
    assert new["item_name"] == "pre" and new["algo"] == "preprocess"
    assert new["params"]["main"]["ds_factor"] == 3 and new["params"]["main"]["chunk_frames"] == 200
    assert new["input_movie_path"] == recs[2]["input_movie_path"]
    rows = table.visible_rows()
    assert list(rows["differs"].iloc[[2, 4]]) == ["ds_factor=2", "ds_factor=3"]
    # a chained child keeps its parent as input; edits are validated, bad ones write nothing
    table.select([3])
    row = table.duplicate_selected({"max_frames": 10}, item_name="child 10")
    assert row["parent_uuid"] == items.iloc[2]["uuid"] and row["params"]["main"]["max_frames"] == 10
    for bad in ("{'max_frames': 'ten'}", "{'nope': 1}", "not python(", "[1, 2]"):
        assert table.duplicate_selected(bad) is None
        assert table.last_message.startswith("not added")
    assert len(store.items()) == 6


def test_open_request_and_messages_instead_of_tracebacks(items):
    table = BatchTable(items)
    opened = []
    table.on_open(opened.append)
    table.open_button.click()
    assert opened == [] and "select" in table.last_message
    for button in (table.run_button, table.cancel_button, table.remove_button, table.duplicate_button):
        button.click()
        assert "select one or more items first" in table.last_message
    table.select([items.iloc[3]["uuid"]])
    table.open_button.click()
    assert opened[0]["uuid"] == items.iloc[3]["uuid"] and opened[0].caiman.record()["item_name"] == "child"
    with pytest.raises(ValueError):
        table.sort_by("nope")
    with pytest.raises(ValueError):
        table.set_filter(status="finished")


@pytest.mark.usefixtures("client")
def test_a_run_refused_at_once_ends_the_live_refresh(items):
    """A child whose parent has no output fails in the submission itself: nothing is ever active,
    and the table still shows it and stops following the batch."""
    table = BatchTable(items, poll_interval=0.05)
    table.select([3])  # 'child' of the pending 'pre'
    assert table.run_selected() is not None
    table.wait(timeout=10)
    assert table.visible_rows().iloc[3]["status"] == "failed" and not table._polling_active()
    table.close()
