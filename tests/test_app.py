"""App: selecting rows in the BatchTable loads them in the right viewer, reused across rows."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("RENDERCANVAS_FORCE_OFFSCREEN", "1")
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mesmerize_widgets as mw  # noqa: E402
from mesmerize_widgets.accessors import cnmf as cnmf_acc  # noqa: E402
from mesmerize_widgets.store import BatchStore  # noqa: E402

pytest.importorskip("fastplotlib")
from test_viewers import CT, T, add_cnmf_item, add_mcorr_item  # noqa: E402

from mesmerize_widgets.widgets import App, CNMFViewer, McorrViewer  # noqa: E402


@pytest.fixture
def app_df(batch, raw_dir):
    cnmf_acc.clear_cache()
    df, movie, corr = add_mcorr_item(batch, raw_dir, name="m1")
    df, movie2, corr2 = add_mcorr_item(df, raw_dir, name="m2", seed=7)
    df, sim, est = add_cnmf_item(df, raw_dir, name="c1")
    df, *_ = add_cnmf_item(df, raw_dir, name="c-failed", status="failed")
    df, *_ = add_cnmf_item(df, raw_dir, name="o1", algo="onacid", seed=5)  # same HDF5 layout
    store = BatchStore(df.attrs["batch_path"])
    store.add(algo="summary", item_name="s", params={"main": {}}, input_root="raw", input_movie_path="m1.tif")
    df = mw.load_batch(df.attrs["batch_path"])
    return df, {"m1": corr, "m2": corr2, "c1": sim}


def uuid_of(df, name):
    return str(df.loc[df["item_name"] == name, "uuid"].iloc[0])


def test_app_selection_loads_and_swaps_viewers(app_df):
    df, data = app_df
    app = App(df, table_view="list")
    assert app.viewer is None and "select an item" in app.viewer_message.value

    app.table.select(uuid_of(df, "m1"))
    v = app.viewer
    assert isinstance(v, McorrViewer) and v.row["item_name"] == "m1"
    assert app.viewer_box.children[-1] is v
    v.set_time(6)
    np.testing.assert_array_equal(v.shown_frame(1), data["m1"][6])
    img_m1 = v.snapshot(0)
    iw = v.iw

    app.table.select(uuid_of(df, "m2"))  # same kind: the same viewer, its data swapped in place
    assert app.viewer is v and v.iw is iw and v.row["item_name"] == "m2"
    np.testing.assert_array_equal(v.shown_frame(1), data["m2"][v.time])
    assert (v.snapshot(0) != img_m1).any()
    assert v.n_frames == T

    app.table.select(uuid_of(df, "c1"))
    c = app.viewer
    assert isinstance(c, CNMFViewer) and c.n_components == 8 and c.n_frames == CT
    assert app.viewer_box.children[-1] is c
    np.testing.assert_allclose(c.shown_frame(0), np.asarray(data["c1"].movie[c.time], np.float32), rtol=1e-6)
    # the selected done items became the grid's inputs
    assert len(app.grid.selected_inputs()) == 1

    app.table.select(uuid_of(df, "o1"))  # an onacid item opens in the same cnmf viewer
    assert app.viewer is c and c.row["algo"] == "onacid" and c.n_components == 8 and c.last_message == ""

    app.table.select(uuid_of(df, "c-failed"))  # readable message in the viewer, no traceback
    assert app.viewer is c and "failed" in c.last_message and c.body.layout.display == "none"

    app.table.select(uuid_of(df, "s"))
    assert app.viewer is None and "no viewer" in app.message

    app.table.select(uuid_of(df, "c1"))  # back: the cnmf viewer is reused
    assert app.viewer is c and c.last_message == "" and c.body.layout.display is None
    app.table.select(uuid_of(df, "m1"))
    assert app.viewer is v and v.row["item_name"] == "m1"
    # the open action of the table goes through the same path
    app.table.select(uuid_of(df, "c1"))
    assert app.table.open_selected()["item_name"] == "c1" and app.viewer is c
    app.close()


def test_show_in_sidecar(app_df):
    from sidecar import Sidecar

    df, _ = app_df
    app = App(df, table_view="list")
    assert isinstance(app.show(sidecar=True), Sidecar)
    app.table.select(uuid_of(df, "m1"))
    assert isinstance(app.viewer.show(sidecar=True, title="mcorr"), Sidecar)
    app.close()
