"""McorrViewer and CNMFViewer on real items, rendered offscreen (lavapipe), checked on pixels.

Items are built in a real batch from simulated ground truth (no algorithm run): an mcorr item
with an F-order memmap and a shifts file, a cnmf item with a CNMF HDF5 written by
``save_cnmf`` (as tests/test_cnmf_accessors.py does).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("RENDERCANVAS_FORCE_OFFSCREEN", "1")
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402

import mesmerize_widgets as mw  # noqa: E402
from mesmerize_widgets.accessors import cnmf as cnmf_acc  # noqa: E402
from mesmerize_widgets.accessors.cnmf import select_components  # noqa: E402
from mesmerize_widgets.formats.cnmf_hdf5 import Estimates, save_cnmf  # noqa: E402
from mesmerize_widgets.formats.memmap import save_memmap  # noqa: E402
from mesmerize_widgets.sim import simulate_2p  # noqa: E402
from mesmerize_widgets.store import BatchStore  # noqa: E402

pytest.importorskip("fastplotlib")
from mesmerize_widgets.widgets import _fpl  # noqa: E402
from mesmerize_widgets.widgets.cnmf_viewer import ACCEPTED, REJECTED, CNMFViewer  # noqa: E402
from mesmerize_widgets.widgets.mcorr_viewer import McorrViewer  # noqa: E402

T, DIMS = 40, (48, 56)
CT, CDIMS, K = 60, (48, 40), 8
SNR = np.linspace(0.6, 6.0, K)
RVAL = np.linspace(-0.5, 1.0, K)
Q = {"min_SNR": 2.5, "rval_thr": 0.8, "SNR_lowest": 0.5, "rval_lowest": -1.0, "use_cnn": False}


# -- items ---------------------------------------------------------------------------------------------
def blob_movie(n: int = T, dims: tuple[int, int] = DIMS, seed: int = 0) -> np.ndarray:
    """Noise plus a bright 5x10 blob whose row moves with time (row 10 + t % 20)."""
    rng = np.random.default_rng(seed)
    movie = rng.normal(100, 5, (n, *dims)).astype(np.float32)
    for t in range(n):
        movie[t, 10 + t % 20 : 15 + t % 20, 10:20] += 300
    return movie


def add_mcorr_item(df, raw_dir: Path, name: str = "m", pw: bool = False, seed: int = 0):
    """A done mcorr item: F-order memmap of the 'corrected' movie (rows flipped), shifts, images."""
    store = BatchStore(Path(df.attrs["batch_path"]))
    movie = blob_movie(seed=seed)
    tifffile.imwrite(raw_dir / f"{name}.tif", movie)
    rec = store.add(algo="mcorr", item_name=name, params={"main": {"pw_rigid": pw}}, input_root="raw",
                    input_movie_path=f"{name}.tif")
    u = rec["uuid"]
    d = store.item_dir(u)
    d.mkdir(parents=True)
    corr = movie[:, ::-1].copy()
    mm = save_memmap(corr, d, f"{u}_{'els' if pw else 'rig'}_", order="F")
    t = np.arange(T)
    if pw:
        shifts = np.stack([np.outer(np.sin(t), [1.0, 2.0, 3.0]), np.outer(np.cos(t), [1.0, 1.0, 4.0])])
    else:
        shifts = np.column_stack([np.sin(t), 2 * np.cos(t)])
    np.save(d / f"{u}_shifts.npy", shifts)
    np.save(d / f"{u}_mean_projection.npy", corr.mean(0))
    np.save(d / f"{u}_cn.npy", corr.std(0))
    store.update(u, status="done", outputs={
        "mcorr-output-path": f"{u}/{mm.name}", "shifts": f"{u}/{u}_shifts.npy",
        "mean-projection-path": f"{u}/{u}_mean_projection.npy", "corr-img-path": f"{u}/{u}_cn.npy"})
    return mw.load_batch(df.attrs["batch_path"]), movie, corr


def add_cnmf_item(df, raw_dir: Path, name: str = "c", status: str = "done", seed: int = 3, algo: str = "cnmf"):
    """A cnmf item whose CNMF HDF5 holds the simulation's ground truth and known SNR / r-values."""
    store = BatchStore(Path(df.attrs["batch_path"]))
    sim = simulate_2p(n_frames=CT, dims=CDIMS, n_neurons=K, motion=None, seed=seed, noise=2.0)
    movie = np.asarray(sim.movie, dtype=np.float32)
    tifffile.imwrite(raw_dir / f"{name}.tif", movie)
    rec = store.add(algo=algo, item_name=name, params={"main": {"p": 1}}, input_root="raw",
                    input_movie_path=f"{name}.tif")
    u = rec["uuid"]
    d = store.item_dir(u)
    d.mkdir(parents=True)
    mmap = save_memmap(movie, d, f"{u}_cnmf-memmap_", order="C")
    tr = sim.truth
    good, bad = select_components(SNR, RVAL, Q)
    est = Estimates(
        A=tr.A.astype(np.float64).tocsc(), C=tr.C.astype(np.float64), S=tr.S.astype(np.float64),
        b=tr.b.astype(np.float64), f=tr.f.astype(np.float64),
        YrA=np.random.default_rng(0).normal(0, 1, (K, CT)), SNR_comp=SNR, r_values=RVAL,
        cnn_preds=np.array([]), idx_components=good, idx_components_bad=bad, dims=CDIMS,
    )
    save_cnmf(d / f"{u}.hdf5", est, {"quality": Q}, dims=CDIMS, mmap_file=str(mmap))
    outputs = {"success": True, "cnmf-hdf5-path": f"{u}/{u}.hdf5", "cnmf-memmap-path": f"{u}/{mmap.name}"}
    if status == "failed":
        store.update(u, status="failed", error="Traceback...\nValueError: gSig too large for the frame")
    else:
        store.update(u, status=status, outputs=outputs)
    return mw.load_batch(df.attrs["batch_path"]), sim, est


@pytest.fixture
def mcorr_df(batch, raw_dir):
    return add_mcorr_item(batch, raw_dir)


@pytest.fixture
def cnmf_df(batch, raw_dir):
    cnmf_acc.clear_cache()
    return add_cnmf_item(batch, raw_dir)


# -- pixel helpers ---------------------------------------------------------------------------------------
def luminance(img: np.ndarray, x: float, y: float, r: int = 1) -> float:
    xi, yi = int(round(x)), int(round(y))
    return float(img[yi - r : yi + r + 1, xi - r : xi + r + 1, :3].mean())


def subplot_rect(fig, index: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a subplot's viewport in canvas pixels (fig: a Figure or ImageWidget)."""
    x, y, w, h = list(getattr(fig, "figure", fig))[index].viewport.rect
    return int(x), int(y), int(w), int(h)


def world_to_screen(fig, index: int, x: float, y: float) -> tuple[float, float]:
    """Canvas position of a data point in a subplot."""
    sx, sy = list(getattr(fig, "figure", fig))[index].map_world_to_screen((x, y, 0))
    return float(sx), float(sy)


def panel_pixels(viewer, panel: int) -> np.ndarray:
    img = viewer.snapshot(0)
    x, y, w, h = subplot_rect(viewer.iw, panel)
    return img[y : y + h, x : x + w]


# -- McorrViewer -------------------------------------------------------------------------------------------
def test_mcorr_viewer_time_pixels_and_marker(mcorr_df):
    df, movie, corr = mcorr_df
    v = McorrViewer(df.iloc[0])
    assert v.last_message == "" and v.iw is not None and v.n_frames == T
    assert len(v.figures()) == 3  # movies, shifts, projections

    # blob of the raw movie at t=0 is rows 10..14, cols 10..19; at t=8 rows 18..22
    def blob_brightness(img, t):
        sx, sy = world_to_screen(v.iw, 0, 14.5, 12 + t % 20)
        return luminance(img, sx, sy)

    img0 = v.snapshot(0)
    v.set_time(8)
    img8 = v.snapshot(0)
    assert v.time == 8 and v.time_slider.value == 8
    np.testing.assert_array_equal(v.shown_frame(0), movie[8])  # exactly the frame, not a stale one
    np.testing.assert_array_equal(v.shown_frame(1), corr[8])
    assert (img0 != img8).any()
    assert blob_brightness(img8, 8) > blob_brightness(img8, 0) + 50  # the blob moved on screen
    assert blob_brightness(img0, 0) > blob_brightness(img0, 8) + 50

    # the shifts' marker follows the movie, and moving it (drag / click) moves the movie
    assert v.marker_time == 8
    v.marker.selection = 21  # what dragging the LinearSelector does
    assert v.time == 21 and v.time_slider.value == 21
    np.testing.assert_array_equal(v.shown_frame(1), corr[21])
    v.click_shifts(5.4)
    assert v.time == 5 and v.marker_time == 5
    v.time_slider.value = 30
    assert v.time == 30 and v.marker_time == 30
    a, b = v.shift_traces()
    np.testing.assert_allclose(a, np.sin(np.arange(T)))
    np.testing.assert_allclose(b, 2 * np.cos(np.arange(T)))


def test_mcorr_window_and_frame_apply_exact(mcorr_df):
    df, movie, corr = mcorr_df

    def invert(frame):
        return -frame

    v = McorrViewer(df.iloc[0], frame_apply=invert)
    v.set_time(10)
    v.set_window("mean", 5)
    np.testing.assert_allclose(v.shown_frame(1), corr[8:13].mean(0), rtol=1e-6)  # exactly 5 frames
    np.testing.assert_allclose(v.shown_frame(0), movie[8:13].mean(0), rtol=1e-6)
    v.set_time(11)  # odd t too (fastplotlib's own windows would average 6 frames here)
    np.testing.assert_allclose(v.shown_frame(1), corr[9:14].mean(0), rtol=1e-6)
    v.set_window("max", 4)  # even size: t - 2 .. t + 1
    np.testing.assert_array_equal(v.shown_frame(1), corr[9:13].max(0))
    v.set_window("none", 4)
    v.set_frame_apply("gaussian blur", sigma=2.0)
    expect = cv2.GaussianBlur(corr[11], (0, 0), sigmaX=2.0, borderType=cv2.BORDER_REFLECT)
    np.testing.assert_allclose(v.shown_frame(1), expect, rtol=1e-5, atol=1e-3)
    v.set_frame_apply("spatial high-pass", sigma=6.0)
    assert abs(float(v.shown_frame(1).mean())) < 5  # the baseline of ~100 is gone
    v.set_frame_apply("invert")
    np.testing.assert_array_equal(v.shown_frame(1), -corr[11])
    with pytest.raises(ValueError, match="frame_apply must be one of"):
        v.set_frame_apply("sharpen")


def test_mcorr_set_row_piecewise_and_bad_items(mcorr_df, raw_dir):
    df, movie, corr = mcorr_df
    v = McorrViewer(df.iloc[0])
    iw, shift_fig = v.iw, v.shift_fig
    df2, movie2, corr2 = add_mcorr_item(df, raw_dir, name="pw", pw=True, seed=5)
    assert v.set_row(df2.iloc[1])
    assert v.iw is iw and v.shift_fig is shift_fig  # swapped in place, not rebuilt
    assert v.pw_rigid and len(v.patch_dropdown.options) == 4
    v.set_time(3)
    np.testing.assert_array_equal(v.shown_frame(0), movie2[3])
    a, b = v.shift_traces()
    np.testing.assert_allclose(a, np.sin(np.arange(T)) * 2.0)  # mean of patches
    v.patch_dropdown.value = 2
    a, b = v.shift_traces()
    np.testing.assert_allclose(b, np.cos(np.arange(T)) * 4.0)

    # a pending item, a cnmf item and a missing output: messages, nothing shown, nothing written
    store = BatchStore(Path(df.attrs["batch_path"]))
    rec = store.add(algo="mcorr", item_name="later", params={"main": {}}, input_root="raw", input_movie_path="m.tif")
    df3 = mw.load_batch(df.attrs["batch_path"])
    assert not v.set_row(df3.iloc[2])
    assert "no output yet" in v.last_message and v.body.layout.display == "none"
    u = df3.iloc[0]["uuid"]
    out = Path(df.attrs["batch_path"]) / store.get(u)["outputs"]["mcorr-output-path"]
    out.unlink()
    before = sorted(p.name for p in store.item_dir(u).iterdir())
    assert not v.set_row(df3.iloc[0])
    assert "missing" in v.last_message
    assert sorted(p.name for p in store.item_dir(u).iterdir()) == before
    assert store.get(rec["uuid"])["status"] == "pending"
    assert v.set_row(df3.iloc[1]) and v.body.layout.display is None and v.last_message == ""


# -- CNMFViewer --------------------------------------------------------------------------------------------
def contour_pixel(v: CNMFViewer, k: int) -> tuple[float, float]:
    """Screen position of a vertex on component k's outline (input panel)."""
    pts = v.coords[k]
    r, c = pts[~np.isnan(pts[:, 0])][0]
    return world_to_screen(v.iw, 0, c, r)


def test_cnmf_viewer_time_window_and_panels(cnmf_df):
    df, sim, est = cnmf_df
    v = CNMFViewer(df.iloc[0])
    assert v.last_message == "" and v.n_components == K
    Y = np.asarray(sim.movie, dtype=np.float32)
    A = est.A.toarray()
    img0 = panel_pixels(v, 1)
    v.set_time(20)
    img20 = panel_pixels(v, 1)
    assert (img0 != img20).any()
    np.testing.assert_allclose(v.shown_frame(0), Y[20], rtol=1e-6)
    rcm20 = (A @ est.C[:, 20]).reshape(CDIMS, order="F")
    np.testing.assert_allclose(v.shown_frame(1), rcm20, rtol=1e-4, atol=1e-3)
    rcb20 = (est.b @ est.f[:, 20]).reshape(CDIMS, order="F")
    np.testing.assert_allclose(v.shown_frame(3), Y[20] - rcm20 - rcb20, rtol=1e-4, atol=2e-3)

    v.set_window("mean", 5)
    np.testing.assert_allclose(v.shown_frame(0), Y[18:23].mean(0), rtol=1e-5)
    rcm_w = (A @ est.C[:, 18:23].mean(1)).reshape(CDIMS, order="F")
    np.testing.assert_allclose(v.shown_frame(1), rcm_w, rtol=1e-4, atol=1e-3)
    res_w = (Y[18:23] - np.stack([(A @ est.C[:, t] + est.b @ est.f[:, t]).reshape(CDIMS, order="F")
                                  for t in range(18, 23)])).mean(0)
    np.testing.assert_allclose(v.shown_frame(3), res_w, rtol=1e-4, atol=2e-3)
    v.set_window("std", 5)
    np.testing.assert_allclose(v.shown_frame(0), Y[18:23].std(0), rtol=1e-4, atol=1e-3)
    # the trace marker follows the movie and drives it
    assert v.marker_time == 20
    v.marker.selection = 33
    assert v.time == 33


def test_cnmf_eval_sliders_recolor_live_without_writing(cnmf_df):
    df, sim, est = cnmf_df
    row = df.iloc[0]
    v = CNMFViewer(row)
    path = row.cnmf.get_output_path()
    stamp = path.stat().st_mtime_ns
    good0, _ = select_components(SNR, RVAL, Q)
    assert np.flatnonzero(v.accepted).tolist() == good0.tolist()
    colors0 = v.contours.component_colors().copy()
    np.testing.assert_allclose(colors0[good0], np.tile(ACCEPTED, (len(good0), 1)))
    img0 = v.snapshot(0)

    v.set_eval(min_SNR=1.0)  # components with SNR in (1.0, 2.5] become accepted
    good1, _ = select_components(SNR, RVAL, {**Q, "min_SNR": 1.0})
    assert np.flatnonzero(v.accepted).tolist() == good1.tolist()
    flipped = np.setdiff1d(good1, good0)
    assert len(flipped) >= 1
    colors1 = v.contours.component_colors()
    np.testing.assert_allclose(colors1[flipped], np.tile(ACCEPTED, (len(flipped), 1)))
    np.testing.assert_allclose(colors0[flipped], np.tile(REJECTED, (len(flipped), 1)))
    # one graphic holds every outline; its per-vertex colours changed
    assert v.contours.n == K and len(v.contours.vertex_colors()) == v.contours.offsets[-1]
    img1 = v.snapshot(0)
    k = int(flipped[0])
    sx, sy = contour_pixel(v, k)
    near = (slice(int(sy) - 1, int(sy) + 2), slice(int(sx) - 1, int(sx) + 2))
    g0 = img0[near][..., 1].astype(int) - img0[near][..., 0].astype(int)
    g1 = img1[near][..., 1].astype(int) - img1[near][..., 0].astype(int)
    assert g1.max() > g0.max() + 60  # red -> green on screen
    assert path.stat().st_mtime_ns == stamp  # sliding never writes

    v.color_by.value = "SNR"
    c_snr = v.contours.component_colors()
    assert not np.allclose(c_snr[0], c_snr[-1])  # lowest and highest SNR differ
    v.color_by.value = "accepted / rejected"


def test_cnmf_click_select_trace_and_save(cnmf_df):
    df, sim, est = cnmf_df
    row = df.iloc[0]
    v = CNMFViewer(row)
    k = 5
    r, c = v.centers[k]
    assert v.click(c, r) == k  # a click at the component's centre (data coordinates)
    assert v.selected == k and v.component_box.value == k
    line_y = np.asarray(v.trace_line.data.value)[:, 1]
    np.testing.assert_allclose(line_y, est.C[k], rtol=1e-5)
    v._iw_clicked(0, *v.centers[2][::-1], 1)  # the canvas handler's path
    assert v.selected == 2
    assert v.click(-50, -50) is None and "no component" in v.last_message
    # heatmap: rows are good components first; a click on a row selects it and moves time
    kk = v.click_heatmap(12.0, 0.0)
    assert kk == int(np.flatnonzero(v.accepted)[0]) and v.selected == kk and v.time == 12

    # manual override, then save: idx_components written, overrides recorded in the store
    v.select_component(7)  # accepted by the thresholds (SNR 6)
    v.set_override(False)
    assert not v.accepted[7] and tuple(v.contours.component_colors()[7]) == tuple(REJECTED)
    v.set_eval(min_SNR=1.0)
    out = v.save_evaluation()
    assert "saved" in v.last_message
    expect = select_components(SNR, RVAL, {**Q, "min_SNR": 1.0})[0].tolist()
    expect.remove(7)
    assert out["accepted"].tolist() == expect
    cnmf_acc.clear_cache()
    assert row.cnmf.get_good_components().tolist() == expect
    assert 7 in row.cnmf.get_bad_components().tolist()
    params = row.caiman.record()["params"]
    assert params["eval"]["min_SNR"] == 1.0 and params["eval"]["manual"] == {"accepted": [], "rejected": [7]}
    assert not list(row.cnmf.get_output_path().parent.glob("*.tmp"))


def test_cnmf_viewer_draws_its_evaluation_session_changed_from_code(cnmf_df):
    """viewer.evaluation is row.cnmf.evaluation()'s session: a change from code is drawn too."""
    df, sim, est = cnmf_df
    v = CNMFViewer(df.iloc[0])
    ev = v.evaluation
    ev.set_thresholds(min_SNR=1.0)
    good1 = select_components(SNR, RVAL, {**Q, "min_SNR": 1.0})[0]
    assert v.eval_sliders["min_SNR"].value == 1.0 and np.flatnonzero(v.accepted).tolist() == good1.tolist()
    np.testing.assert_allclose(v.contours.component_colors()[good1], np.tile(ACCEPTED, (len(good1), 1)))
    ev.reject(int(good1[-1]))
    assert tuple(v.contours.component_colors()[good1[-1]]) == tuple(REJECTED)
    assert "1 set by hand" in v.counts.value
    assert good1[-1] in v.heatmap_order[len(good1) - 1 :]  # "good first": now among the rejected rows
    v.set_row(df.iloc[0])  # a new session: the old one no longer drives the viewer
    assert v.evaluation is not ev and v.overrides == {}
    ev.accept(0)
    assert v.overrides == {} and "set by hand" not in v.counts.value


def test_cnmf_bad_items_give_messages(batch, raw_dir):
    cnmf_acc.clear_cache()
    df, sim, est = add_cnmf_item(batch, raw_dir, name="bad", status="failed")
    v = CNMFViewer(df.iloc[0])
    assert v.iw is None and "failed" in v.last_message and "gSig too large" in v.last_message
    df, *_ = add_cnmf_item(df, raw_dir, name="good")
    assert v.set_row(df.iloc[1]) and v.n_components == K
    # wrong-shape input movie: a message, nothing written
    tifffile.imwrite(raw_dir / "good.tif", np.zeros((CT - 5, *CDIMS), np.float32))
    cnmf_acc.clear_cache()
    path = df.iloc[1].cnmf.get_output_path()
    stamp = path.stat().st_mtime_ns
    assert not v.set_row(df.iloc[1])
    assert "shape" in v.last_message and path.stat().st_mtime_ns == stamp
    # missing output file
    path.unlink()
    cnmf_acc.clear_cache()
    assert not v.set_row(df.iloc[1]) and "missing" in v.last_message
    # an mcorr item in the cnmf viewer
    df, *_ = add_mcorr_item(df, raw_dir)
    assert not v.set_row(df.iloc[2]) and "mcorr" in v.last_message


def test_contours_are_one_graphic_at_2000_components():
    """2,000 outlines: one LineGraphic; building and recolouring stay fast."""
    import time

    rng = np.random.default_rng(0)
    theta = np.linspace(0, 2 * np.pi, 40)
    coords = []
    for _ in range(2000):
        r0, c0 = rng.uniform(10, 500, 2)
        ring = np.column_stack([r0 + 5 * np.sin(theta), c0 + 5 * np.cos(theta)])
        coords.append(np.vstack([[np.nan, np.nan], ring, [np.nan, np.nan]]))
    fig = _fpl.figure((1, 1), size=(400, 400))
    sp = fig[0, 0]
    _fpl.add_image(sp, np.zeros((512, 512), np.float32))
    n_before = len(sp.graphics)
    t0 = time.perf_counter()
    cs = _fpl.ContourSet(sp, coords)
    cs.set_colors(np.tile(ACCEPTED, (2000, 1)))
    _fpl.as_widget(fig)
    _fpl.render_now(fig)
    build = time.perf_counter() - t0
    assert len(sp.graphics) == n_before + 1
    t0 = time.perf_counter()
    for i in range(5):
        cs.set_colors(np.where((np.arange(2000) % 5 == i)[:, None], ACCEPTED, REJECTED))
        _fpl.render_now(fig)
    recolor = (time.perf_counter() - t0) / 5
    assert build < 5 and recolor < 0.5, (build, recolor)
    assert tuple(cs.component_colors()[4]) == tuple(ACCEPTED)


def test_processed_movie_reads_only_the_window():
    """Lazy end to end: frame t of a mean-10 view reads exactly frames t-5..t+4, nothing else."""
    from mesmerize_widgets.widgets.frames import FrameCache, ProcessedMovie, WindowSettings

    class Counting:
        shape, ndim, dtype = (30_000, 16, 16), 3, np.dtype(np.float32)

        def __init__(self):
            self.read: list[int] = []

        def __getitem__(self, key):
            ts = range(*key.indices(self.shape[0])) if isinstance(key, slice) else [int(key)]
            self.read.extend(ts)
            out = np.stack([np.full(self.shape[1:], t, np.float32) for t in ts])
            return out if isinstance(key, slice) else out[0]

    src = Counting()
    s = WindowSettings()
    s.func, s.size = "mean", 10
    pm = ProcessedMovie(src, s, FrameCache())
    frame = pm[(slice(20_000, 20_001, 1), slice(None), slice(None))]  # what fastplotlib asks for
    assert frame.shape == (1, 16, 16) and sorted(src.read) == list(range(19_995, 20_005))
    np.testing.assert_allclose(frame[0], np.mean(np.arange(19_995, 20_005)))
    src.read.clear()
    pm[20_000]  # cached: no read
    assert src.read == []
    s.func = "none"
    pm.cache.clear()
    pm[7]
    assert src.read == [7]


# -- live view of a running onacid item -----------------------------------------------------------------
LIVE_MAIN = {"gSig": (4, 4), "p": 1, "K": 4, "fr": 30.0, "init_batch": 100, "update_freq": 50,
             "motion_correct": False}


@pytest.mark.slow
def test_cnmf_viewer_live_onacid_grows_then_switches_to_finished(batch, raw_dir, client):
    """A real onacid item on the real runner: contours grow while it runs, then the finished view."""
    import time

    from mesmerize_widgets.accessors import live as onacid_live

    cnmf_acc.clear_cache()
    sim = simulate_2p(n_frames=1500, dims=(64, 64), n_neurons=14, late_fraction=0.5, motion=None, seed=4)
    tifffile.imwrite(raw_dir / "live.tif", np.asarray(sim.movie, np.float32))
    batch.caiman.add_item("onacid", "live", "live.tif", {"main": LIVE_MAIN})
    v = CNMFViewer(poll_interval=0.05)
    batch.caiman.run(client=client, wait=False, progress=False)
    row = batch.iloc[0]
    assert v.set_row(row) and v.live, v.last_message  # queued or running: the live view
    assert len(v.iw.managed_graphics) == 1 and v.live_label.layout.display is None
    assert v.finished_box.layout.display == "none"
    seen: list[tuple[str, int, int]] = []  # (label, contours in the graphic, vertices)
    shots = []
    deadline = time.monotonic() + 60
    while v.live and time.monotonic() < deadline:
        with v._lock:
            if v.live:
                n = 0 if v.contours is None else v.contours.n
                nv = 0 if v.contours is None else int(v.contours.offsets[-1])
                seen.append((v.live_label.value, n, nv))
                if n and (not shots or shots[-1][0] != n):
                    shots.append((n, v.snapshot(0)))  # a real offscreen render of the live view
        time.sleep(0.02)
    assert not v.live, f"still live after 60 s: {seen[-1:]}"
    v.wait_live(5)  # the switch to the finished view holds the viewer's lock until it is complete
    labels = [lab for lab, *_ in seen]
    assert any("waiting" in lab for lab in labels) or labels[0].startswith("running: frame")
    running = [s for s in seen if s[0].startswith("running: frame")]
    assert len({lab for lab, *_ in running}) >= 2, labels  # the label changed while it ran
    counts = [n for _, n, _ in running]
    assert counts == sorted(counts) and counts[-1] > counts[0], counts  # the contours grew
    assert max(nv for *_, nv in running) > min(nv for *_, nv in running)
    # the live contours are drawn: pixels of the input panel differ between a few and many contours
    assert len(shots) >= 2 and (shots[0][1] != shots[-1][1]).any()
    # finished: the normal four-panel view with the item's components, trace figure back
    assert v.last_message == "" and v.row is not None and v.row["status"] == "done"
    assert len(v.iw.managed_graphics) == 4 and v.n_components == v.contours.n > 0
    assert v.finished_box.layout.display is None and v.live_label.layout.display == "none"
    assert len(v.figures()) == 2 and v.snapshot(1).shape[-1] == 4
    final = onacid_live.read_live(onacid_live.live_snapshot_path(row.caiman.store, row.caiman.record()))
    assert final["frame"] == final["n_frames"] == 1500 and final["n_components"] == v.n_components
    v.close()


def test_live_snapshot_helpers_without_a_snapshot(batch, raw_dir):
    """No snapshot yet (queued, or running before the first write): a label, no error."""
    from mesmerize_widgets.accessors import live as onacid_live

    tifffile.imwrite(raw_dir / "q.tif", blob_movie())
    batch.caiman.add_item("onacid", "q", "q.tif", {"main": LIVE_MAIN})
    store = BatchStore(Path(batch.attrs["batch_path"]))
    u = batch.iloc[0]["uuid"]
    store.update(u, status="running", run_id="abc123")
    st = onacid_live.live_state(store, u)
    assert st.active and st.snapshot is None and st.path.parent.name == f".{u}.tmp-abc123"
    assert onacid_live.live_label(st) == "running: waiting for first components"
    v = CNMFViewer(mw.load_batch(batch.attrs["batch_path"]).iloc[0], poll_interval=0.05)
    assert v.live and v.last_message == "" and "waiting for first components" in v.live_label.value
    assert v.contours is None and v.snapshot(0).shape[-1] == 4
    # a snapshot appears: the next poll draws it
    import scipy.sparse

    from mesmerize_widgets.algorithms.onacid.live import write_live

    st.path.parent.mkdir()
    A = np.zeros((DIMS[0] * DIMS[1], 2), np.float32)
    for k, (r0, c0) in enumerate([(10, 10), (30, 40)]):
        m = np.zeros(DIMS, np.float32)
        m[r0 : r0 + 6, c0 : c0 + 6] = 1
        A[:, k] = m.ravel(order="F")
    write_live(st.path, scipy.sparse.csc_matrix(A), DIMS, 50, 0, T)
    v.poll_live(apply_now=True)
    assert v.contours is not None and v.contours.n == 2 and v.live_label.value == f"running: frame 50/{T}, 2 components"
    assert np.nanmax(v.coords[1][:, 0]) == pytest.approx(35) and np.nanmin(v.coords[1][:, 1]) == pytest.approx(40)
    # the item ends without output: the viewer says so
    store.update(u, status="failed", error="Traceback...\nValueError: boom")
    v.poll_live(apply_now=True)
    assert not v.live and "boom" in v.last_message
    v.close()


def test_trace_envelope_and_unchanged_trace_figure_not_redrawn(cnmf_df, monkeypatch):
    """Long traces are drawn as a min/max envelope; render() skips a trace figure whose pixels stay."""
    from mesmerize_widgets.widgets.cnmf_viewer import trace_envelope

    y = np.sin(np.arange(30_000) / 50.0).astype(np.float32)
    y[12_345] = 7.0
    xy = trace_envelope(y, 1800)
    assert len(xy) <= 1800 and xy[:, 1].max() == 7.0 and xy[:, 1].min() == y.min()
    assert xy[0, 0] == 0 and xy[-1, 0] == 29_999 and (np.diff(xy[:, 0]) >= 0).all()
    np.testing.assert_array_equal(trace_envelope(y[:100], 1800), np.column_stack([np.arange(100), y[:100]]))

    df, sim, est = cnmf_df
    v = CNMFViewer(df.iloc[0])
    canvas = v.trace_fig.canvas
    draws = []
    real_draw = canvas.draw
    monkeypatch.setattr(canvas, "draw", lambda *a, **k: (draws.append(1), real_draw(*a, **k))[1])
    v.render()
    n = len(draws)
    assert n == 1
    v.render()  # nothing changed: not drawn again
    assert len(draws) == n
    v.set_time(30)  # the marker moves on screen
    v.render()
    assert len(draws) == n + 1
    v.select_component(3)  # a new trace
    v.render()
    assert len(draws) == n + 2
    assert v.snapshot(1).shape[-1] == 4  # snapshot always draws
