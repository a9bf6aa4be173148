"""OnACID: accuracy on a simulated movie with late neurons and motion, seeding, the batch, bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import run_caiman_backend

from mesmerize_widgets.algorithms import RunContext, get_algorithm
from mesmerize_widgets.algorithms.onacid import builtin
from mesmerize_widgets.algorithms.onacid import live as onacid_live
from mesmerize_widgets.errors import ParamError
from mesmerize_widgets.formats.cnmf_hdf5 import load_cnmf
from mesmerize_widgets.sim import match_to_truth as match
from mesmerize_widgets.sim import simulate_2p

MAIN = {"gSig": (4, 4), "p": 1, "K": 40, "fr": 30.0, "init_batch": 200, "max_shifts_online": 6}


def _run(tmp_path: Path, movie: np.ndarray, main: dict, **extra) -> tuple[dict, Path]:
    src = tmp_path / "in" / "movie.tif"
    src.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(src, np.asarray(movie, np.float32), photometric="minisblack")
    out = tmp_path / "out"
    out.mkdir()
    params = get_algorithm("onacid").schema.validate({"main": main, **extra})
    ctx = RunContext(input_path=src, params=params, output_dir=out, prefix="item")
    return builtin.run(ctx), out


@pytest.fixture(scope="module")
def sim_late():
    """60 neurons, a fifth of them silent until late in the movie, slight rigid motion."""
    return simulate_2p(n_frames=1000, dims=(128, 128), n_neurons=60, late_fraction=0.2,
                       max_shift=2.0, seed=1)


@pytest.mark.slow
def test_onacid_finds_neurons_including_late_ones(tmp_path, sim_late):
    truth = sim_late.truth
    assert (truth.appear_frame > 300).sum() >= 8  # several appear well after init_batch
    outputs, out = _run(tmp_path, sim_late.movie, MAIN)
    res = load_cnmf(outputs["cnmf-hdf5-path"])
    e = res.estimates
    good = np.asarray(e.idx_components, int)
    m = match(e.A.toarray()[:, good], np.asarray(e.C)[good], truth)
    print("onacid accepted:", m)
    assert m["f1"] >= 0.85 and m["trace_corr"] >= 0.85
    # the late neurons were found after the initialisation
    late = np.flatnonzero(truth.appear_frame > 300)
    m_late = match(e.A.toarray(), np.asarray(e.C), dataclasses.replace(truth, A=truth.A[:, late], C=truth.C[late]))
    assert m_late["recall"] >= 0.85
    # layout and extra outputs
    K, T = e.A.shape[1], 1000
    assert e.C.shape == e.S.shape == e.YrA.shape == (K, T) and e.f.shape == (1, T)
    np.testing.assert_allclose(np.linalg.norm(e.A.toarray(), axis=0), 1.0, rtol=1e-4)
    shifts = np.load(outputs["shifts"])
    err = shifts - truth.shifts
    assert shifts.shape == (T, 2) and np.sqrt(((err - err.mean(0)) ** 2).mean()) < 0.3
    ncomp = np.load(outputs["n-components-path"])
    assert len(ncomp) == T and ncomp[0] <= ncomp[-1] == K and ncomp[-1] > ncomp[200]
    live = onacid_live.read_live(outputs["live-path"])
    assert live["n_components"] == K and live["A"].shape == e.A.shape
    for key in ("corr-img-path", "mean-projection-path", "std-projection-path", "max-projection-path"):
        assert Path(outputs[key]).parent == out
    assert res.params.get("online", "init_batch") == 200 and list(res.params.get("init", "gSig")) == [4, 4]


@pytest.mark.slow
def test_seeded_onacid_recovers_every_true_mask(tmp_path, sim_late):
    fp = sim_late.truth.footprints()
    masks = fp > 0.2 * fp.max(axis=(1, 2), keepdims=True)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "masks.npy", masks)
    outputs, _ = _run(tmp_path, sim_late.movie, {**MAIN, "init_method": "seeded", "update_num_comps": False},
                      Ain_path="masks.npy")
    e = load_cnmf(outputs["cnmf-hdf5-path"]).estimates
    m = match(e.A.toarray(), np.asarray(e.C), sim_late.truth)
    print("seeded:", m)
    assert m["recall"] == 1.0 and m["K"] == 60 and m["trace_corr"] >= 0.9


@pytest.mark.slow
def test_long_onacid_run_does_not_fill_up_with_copies_of_neurons(tmp_path):
    """4,000 frames: the accepted components stay one per neuron. A footprint's faint rim is
    left in the residual and fires with its neuron; retested every few dozen frames over a
    long movie it used to pass sooner or later, adding copies beside the neurons (F1 ~0.7)."""
    sim = simulate_2p(n_frames=4000, dims=(96, 96), n_neurons=30, late_fraction=0.2, max_shift=2.0, seed=1)
    outputs, _ = _run(tmp_path, sim.movie, MAIN)
    e = load_cnmf(outputs["cnmf-hdf5-path"]).estimates
    good = np.asarray(e.idx_components, int)
    m = match(e.A.toarray()[:, good], np.asarray(e.C)[good], sim.truth)
    print("onacid 4000 frames, accepted:", m, "of", e.A.shape[1])
    assert m["recall"] >= 0.9 and m["f1"] >= 0.85 and m["trace_corr"] >= 0.85
    assert e.A.shape[1] <= 1.3 * sim.truth.n_neurons


def _upsampled(A, dims: tuple[int, int], f: int) -> np.ndarray:
    """Footprints found on ``f``-times downsampled frames, on the full-resolution grid."""
    imgs = A.toarray().reshape(dims[0], dims[1], -1, order="F")
    return imgs.repeat(f, 0).repeat(f, 1).reshape(dims[0] * f * dims[1] * f, -1, order="F")


def test_downsampled_onacid_finds_the_neurons(tmp_path):
    """ds_factor=2: frames, gSig and the shift range are halved; the neurons are still found."""
    sim = simulate_2p(n_frames=500, dims=(96, 96), n_neurons=20, max_shift=1.5, seed=5)
    outputs, _ = _run(tmp_path, sim.movie, {**MAIN, "K": 30, "ds_factor": 2})
    e = load_cnmf(outputs["cnmf-hdf5-path"]).estimates
    assert tuple(e.dims) == (48, 48) and e.A.shape[0] == 48 * 48
    good = np.asarray(e.idx_components, int)
    m = match(_upsampled(e.A[:, good], (48, 48), 2), np.asarray(e.C)[good], sim.truth)
    print("onacid ds_factor=2:", m)
    assert m["recall"] >= 0.85 and m["f1"] >= 0.75 and m["trace_corr"] >= 0.85
    shifts = np.load(outputs["shifts"])
    assert shifts.shape == (500, 2) and np.abs(shifts).max() <= 3  # in downsampled pixels


def test_cnmf_initialised_onacid_finds_the_neurons(tmp_path):
    """init_method='cnmf': a full builtin CNMF fit on the init batch, then online."""
    sim = simulate_2p(n_frames=400, dims=(64, 64), n_neurons=12, late_fraction=0.25, max_shift=1.5, seed=6)
    outputs, _ = _run(tmp_path, sim.movie, {**MAIN, "K": 15, "init_batch": 150, "init_method": "cnmf"})
    e = load_cnmf(outputs["cnmf-hdf5-path"]).estimates
    good = np.asarray(e.idx_components, int)
    m = match(e.A.toarray()[:, good], np.asarray(e.C)[good], sim.truth)
    print("onacid init_method=cnmf:", m)
    assert m["recall"] >= 0.85 and m["f1"] >= 0.75 and m["trace_corr"] >= 0.85
    assert e.C.shape == (e.A.shape[1], 400)


def test_schema_has_caimans_online_names_and_defaults():
    algo = get_algorithm("onacid")
    d = algo.schema.defaults()["main"]
    assert d["init_batch"] == 200 and d["init_method"] == "bare" and d["epochs"] == 1
    assert d["max_num_added"] == 5 and d["min_num_trial"] == 5 and d["min_SNR"] == 2.5
    assert d["rval_thr"] == 0.8 and d["thresh_fitness_raw"] is None and d["update_freq"] == 200
    assert d["ds_factor"] == 1 and d["motion_correct"] is True and d["max_shifts_online"] == 10
    assert d["expected_comps"] == 500 and d["p"] == 2 and d["nb"] == 1
    assert algo.needs_deconvolution and set(algo.backends) == {"builtin", "caiman"}
    with pytest.raises(ParamError):
        algo.schema.validate({"main": {"init_method": "greedy"}})


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return simulate_2p(n_frames=120, dims=(48, 48), n_neurons=6, motion=None, seed=4).movie


def test_init_batch_longer_than_the_movie(tmp_path, small):
    with pytest.raises(ValueError, match="init_batch=500 is longer than the movie"):
        _run(tmp_path, small, {**MAIN, "init_batch": 500})


def test_movie_of_a_few_frames(tmp_path, small):
    with pytest.raises(ValueError, match="has 4 frame.*at least 10"):
        _run(tmp_path, small[:4], {**MAIN, "init_batch": 2})


def test_masks_of_the_wrong_shape(tmp_path, small):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "m.npy", np.ones((3, 30, 30), bool))
    with pytest.raises(ValueError, match="masks have shape"):
        _run(tmp_path, small, {**MAIN, "init_batch": 50, "init_method": "seeded"}, Ain_path="m.npy")


def test_nan_frames(tmp_path, small):
    movie = small.copy()
    movie[90, 3, 3] = np.nan
    with pytest.raises(ValueError, match="frame 90 .* NaN"):
        _run(tmp_path, movie, {**MAIN, "init_batch": 50, "motion_correct": False})


def test_cnn_options_are_caiman_only(tmp_path, small):
    with pytest.raises(ValueError, match="CaImAn-only"):
        _run(tmp_path, small, {**MAIN, "sniper_mode": True})


def test_live_snapshot_is_replaced_atomically(tmp_path):
    import scipy.sparse as sp

    A = sp.random(100, 3, density=0.1, format="csc", random_state=0)
    p = tmp_path / "u_live.npz"
    onacid_live.write_live(p, A, (10, 10), 5, 0, 50)
    onacid_live.write_live(p, A[:, :2], (10, 10), 9, 0, 50)
    got = onacid_live.read_live(p)
    assert got["n_components"] == 2 and got["frame"] == 9 and list(tmp_path.iterdir()) == [p]


# ------------------------------------------------------------------------------------------
# through the batch
# ------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("client")
def test_onacid_item_runs_end_to_end(batch, raw_dir):
    sim = simulate_2p(n_frames=400, dims=(64, 64), n_neurons=12, late_fraction=0.25, max_shift=1.5, seed=3)
    tifffile.imwrite(raw_dir / "cells.tif", sim.movie)
    batch.caiman.add_item("onacid", "x", "cells.tif", {"main": {**MAIN, "K": 10, "init_batch": 150}})
    tifffile.imwrite(raw_dir / "nan.tif", np.full((30, 16, 16), np.nan, np.float32))
    batch.caiman.add_item("onacid", "bad", "nan.tif", {"main": {**MAIN, "gSig": (2, 2), "init_batch": 20}})
    batch.caiman.run(progress=False)
    row = batch.iloc[0]
    assert row["status"] == "done", row.get("error")
    outs = row["outputs"]
    for key in ("cnmf-hdf5-path", "corr-img-path", "mean-projection-path", "shifts", "n-components-path"):
        assert (Path(batch.attrs["batch_path"]) / outs[key]).exists(), key
    res = load_cnmf(Path(batch.attrs["batch_path"]) / outs["cnmf-hdf5-path"])
    assert res.estimates.A.shape[1] >= 8
    bad = batch.iloc[1]
    assert bad["status"] == "failed" and "NaN" in bad["error"]


# ------------------------------------------------------------------------------------------
# CaImAn backend (skipped where CaImAn is not installed)
# ------------------------------------------------------------------------------------------
@pytest.mark.caiman
def test_caiman_backend_writes_the_same_layout(tmp_path):
    sim = simulate_2p(n_frames=600, dims=(64, 64), n_neurons=15, motion=None, seed=2)
    main = {"gSig": (4, 4), "K": 10, "p": 1, "init_batch": 200, "motion_correct": False}
    outputs = run_caiman_backend("onacid", sim.movie, {"main": main}, tmp_path)
    res = load_cnmf(outputs["cnmf-hdf5-path"])
    e = res.estimates
    assert e.C.shape[1] == 600 and e.A.shape[0] == 64 * 64
    m = match(e.A.toarray(), np.asarray(e.C), sim.truth)
    print("caiman onacid:", m)
    assert m["recall"] >= 0.7
    assert Path(outputs["n-components-path"]).exists() and Path(outputs["shifts"]).exists()
