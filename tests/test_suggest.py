"""Params from the data: suggestions on simulated movies of known cell size, rate and motion,
the warnings of add_item and of the grid, and the ParamGrid's suggest button."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mesmerize_widgets.accessors.grid import plan_warnings
from mesmerize_widgets.algorithms.suggest import (
    Suggestion,
    check_params,
    measure_movie,
    suggest_params,
)
from mesmerize_widgets.sim import simulate_1p, simulate_2p
from mesmerize_widgets.widgets import ParamGrid

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def _write(path: Path, movie: np.ndarray, fr: float | None) -> Path:
    """A float32 TIFF; with ``fr`` an ImageJ one whose ``finterval`` gives the frame rate."""
    if fr is None:
        tifffile.imwrite(path, movie.astype(np.float32))
    else:
        tifffile.imwrite(path, movie.astype(np.float32), imagej=True,
                         metadata={"axes": "TYX", "finterval": 1.0 / fr})
    return path


# gSig, decay_time (s), neurons; 30 Hz, 300 frames, 128 x 128, slight rigid motion
CASES = {"small-fast": (3, 0.4, 40), "large-slow": (6, 1.0, 25)}


@pytest.fixture(scope="module")
def sims(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("suggest")
    out = {}
    for name, (g, decay, n) in CASES.items():
        sim = simulate_2p(n_frames=300, dims=(128, 128), n_neurons=n, gSig=(g, g), fr=30.0,
                          decay_time=decay, seed=7)
        out[name] = _write(d / f"{name}.tif", sim.movie, fr=30.0)
    moving = simulate_2p(n_frames=300, dims=(128, 128), n_neurons=40, gSig=(4, 4), max_shift=10,
                         seed=3)
    out["moving"] = _write(d / "moving.tif", moving.movie, fr=None)
    one_p = simulate_1p(n_frames=300, dims=(128, 128), n_neurons=30, gSig=(4, 4), seed=4)
    out["1p"] = _write(d / "onep.tif", one_p.movie, fr=20.0)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_cnmf_suggestion_within_20_percent(sims, case):
    g, decay, n = CASES[case]
    sug = suggest_params(sims[case], "cnmf")
    main = sug.main
    assert isinstance(sug, Suggestion)
    assert main["fr"] == pytest.approx(30.0) and "ImageJ finterval" in sug.reasons["fr"]
    assert main["gSig"][0] == main["gSig"][1]
    assert main["gSig"][0] == pytest.approx(g, rel=0.2)
    assert main["gSiz"] == (2 * main["gSig"][0] + 1,) * 2
    assert main["decay_time"] == pytest.approx(decay, rel=0.2)
    # active cells found: most of the simulated ones, not many more
    assert 0.7 * n <= sug.stats.n_cells <= 1.5 * n
    assert main["rf"] == 4 * main["gSig"][0] and main["stride"] == 2 * main["gSig"][0]
    patch_cells = n / 128**2 * (2 * main["rf"] + 1) ** 2
    assert patch_cells * 0.7 <= main["K"] <= patch_cells * 2
    for name in ("fr", "decay_time", "gSig", "gSiz", "rf", "stride", "K"):
        assert sug.reasons[name], name
    assert "gSig" in repr(sug) and "<table>" in sug._repr_html_()


def test_user_params_kept_where_not_estimated(sims):
    sug = suggest_params(sims["small-fast"], "cnmf", {"main": {"merge_thr": 0.7, "gSig": (9, 9)}})
    assert sug.main["merge_thr"] == 0.7
    assert sug.main["gSig"] == (3, 3)  # measured beats the guess
    assert any("gSig=(9, 9)" in w for w in sug.warnings)


def test_frame_rate_absent_is_said(sims):
    sug = suggest_params(sims["moving"], "cnmf", {"main": {"fr": 15.0}})
    assert sug.main["fr"] == 15.0
    assert "not in the file" in sug.reasons["fr"] and "your value 15" in sug.reasons["fr"]


def test_slow_frame_rates_get_an_ar1_model_and_fast_ones_keep_the_order(sims):
    """At 7.5 Hz a frame lasts as long as a GCaMP transient's rise: p 1, said why. At 30 Hz
    the given order (or the default) is kept."""
    slow = suggest_params(sims["moving"], "cnmf", {"main": {"fr": 7.5, "p": 2}})
    assert slow.main["p"] == 1 and "133 ms" in slow.reasons["p"]
    fast = suggest_params(sims["moving"], "cnmf", {"main": {"fr": 30.0, "p": 2}})
    assert fast.main["p"] == 2 and "kept your value" in fast.reasons["p"]


def test_a_field_that_brightens_as_a_whole_is_said_with_its_frames():
    """Neurofinder 01.01's first 101 frames brighten by three quarters at the end, cells and
    tissue alike; the suggestion says so (cells firing only then cannot be found), and a movie
    without such a change gets no such warning."""
    kw = dict(n_frames=200, dims=(64, 64), n_neurons=15, motion=None, seed=5, baseline=10.0)
    rising = suggest_params(np.asarray(simulate_2p(**kw, brightening=0.8).movie), "cnmf", {"main": {"fr": 30.0}})
    said = [w for w in rising.warnings if "whole field brightens" in w]
    assert len(said) == 1, rising.warnings
    a, b = rising.stats.field_rise_frames
    assert 165 <= a <= 180 and b == 199  # the rise is centred on frame 170 (85 %) and holds to the end
    assert 0.5 <= rising.stats.field_rise <= 0.9  # 0.8 of the fluorescence, over a detector offset
    plain = suggest_params(np.asarray(simulate_2p(**kw).movie), "cnmf", {"main": {"fr": 30.0}})
    assert not any("whole field" in w for w in plain.warnings) and plain.stats.field_rise < 0.15


def test_decay_not_measurable_is_said_and_the_users_value_kept(tmp_path):
    """A slow indicator in a short movie: no transient falls back within it, so there is no
    decay to measure; the suggestion keeps the user's value and says why rather than guess."""
    sim = simulate_2p(n_frames=40, dims=(96, 96), n_neurons=20, gSig=(4, 4), fr=30.0, decay_time=3.0,
                      seed=2)
    path = _write(tmp_path / "slow.tif", sim.movie, fr=30.0)
    sug = suggest_params(path, "cnmf", {"main": {"decay_time": 2.5}})
    assert sug.main["decay_time"] == 2.5
    assert "not measured" in sug.reasons["decay_time"] and "kept your value" in sug.reasons["decay_time"]
    assert "decay_time" in repr(sug)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_slow_indicator_whose_transients_never_fall_gets_a_slower_decay_than_the_default(tmp_path, seed):
    """The same short, slow movie without a user's value: no fall can be fitted, but the cells'
    transients stay high to the end. A decay of at least what they held is suggested (never
    more than the truth, never the 0.4 s default that makes such cells look like background);
    a user's own value is kept, and the reason names the bound."""
    sim = simulate_2p(n_frames=40, dims=(96, 96), n_neurons=20, gSig=(4, 4), fr=30.0, decay_time=3.0,
                      seed=seed)
    path = _write(tmp_path / "slow.tif", sim.movie, fr=30.0)
    sug = suggest_params(path, "cnmf")
    assert sug.stats.decay_frames is None  # nothing fell: a bound, not a measurement
    assert 0.5 <= sug.main["decay_time"] <= 3.0
    assert "at least" in sug.reasons["decay_time"] and "slow indicator" in sug.reasons["decay_time"]
    mine = suggest_params(path, "cnmf", {"main": {"decay_time": 0.3}})
    assert mine.main["decay_time"] == 0.3
    assert "kept your value" in mine.reasons["decay_time"] and "at least" in mine.reasons["decay_time"]


def test_mcorr_max_shifts_from_motion(sims):
    sug = suggest_params(sims["moving"], "mcorr")
    assert min(sug.main["max_shifts"]) >= 9  # the simulation moves up to 9 px from its median
    assert "gSig_filt" not in sug.reasons  # a two-photon movie needs no high-pass
    assert check_params(sims["moving"], "mcorr", {"main": {"max_shifts": (3, 3)}})
    still = suggest_params(sims["small-fast"], "mcorr")
    assert max(still.main["max_shifts"]) <= 6


def test_cnmfe_suggestion(sims):
    sug = suggest_params(sims["1p"], "cnmfe")
    main = sug.main
    assert main["fr"] == pytest.approx(20.0)
    # one-photon: measured on the activity image under a strong background (the simulator
    # draws 1p sizes 1.0-1.35x gSig)
    assert main["gSig"][0] == pytest.approx(4, rel=0.2)
    assert main["gSiz"] == (4 * main["gSig"][0] + 1,) * 2
    assert 0.5 <= main["min_corr"] <= 0.95 and 3 <= main["min_pnr"] <= 60
    assert "background" in sug.reasons["min_pnr"]
    mc = suggest_params(sims["1p"], "mcorr", one_photon=True)
    assert mc.main["gSig_filt"] == main["gSig"]


def test_measurement_is_cached(sims):
    a = measure_movie(sims["small-fast"])
    assert measure_movie(sims["small-fast"]) is a


def test_add_item_warns_on_wrong_gsig_only(batch, raw_dir, sims):
    movie = sims["small-fast"]
    with pytest.warns(UserWarning, match=r"gSig=\(12, 12\) is .*x the cell size"):
        batch.caiman.add_item("cnmf", "too big", movie, {"main": {"gSig": (12, 12)}})
    with pytest.warns(UserWarning, match=r"gSig=\(1, 1\)"):
        batch.caiman.add_item("cnmf", "too small", movie, {"main": {"gSig": (1, 1)}})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        batch.caiman.add_item("cnmf", "right", movie, {"main": {"gSig": (3, 3), "fr": 30.0}})
        batch.caiman.add_item("cnmf", "no checked params", movie, {"main": {"K": 5}})
    assert len(batch) == 4  # warnings never refuse an item


def test_add_item_warns_on_small_max_shifts(batch, raw_dir, sims):
    with pytest.warns(UserWarning, match="max_shifts=.*smaller than the rigid motion"):
        batch.caiman.add_item("mcorr", "shifts", sims["moving"], {"main": {"max_shifts": (3, 3)}})


def test_row_accessor_suggest_params(batch, raw_dir, sims):
    row = batch.caiman.add_item("summary", "s", sims["large-slow"], {"main": {}})
    sug = row.caiman.suggest_params("cnmf")
    assert sug.main["gSig"][0] == pytest.approx(6, rel=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        added = batch.caiman.add_item("cnmf", "suggested", sims["large-slow"], sug.params)
    assert added["params"]["main"]["gSig"] == sug.main["gSig"]


def test_param_grid_suggest_button_fills_the_form(batch, raw_dir, sims):
    pg = ParamGrid(batch, "cnmf", [sims["small-fast"]])
    pg.set_text("merge_thr", "0.7")
    pg.suggest_button.click()
    sug = pg.suggestion
    assert sug is not None and sug.main["gSig"] == (3, 3)
    for name in ("gSig", "gSiz", "K", "rf", "stride", "decay_time", "fr"):
        assert pg.fields[name].value == repr(sug.main[name]), name
    assert pg.fields["merge_thr"].value == "0.7"
    assert "LoG scale search" in pg.suggest_html.value and "filled" in pg.message.value
    assert not pg.errors and pg.n_combinations == 1 and pg.warnings_html.value == ""
    # a grid over gSig: the wrong value is flagged before anything is added
    pg.set_text("gSig", "(3, 3) | (12, 12)")
    assert "gSig=(12, 12)" in pg.warnings_html.value
    assert plan_warnings(batch, "cnmf", pg.plan()) and pg.n_combinations == 2


def test_param_grid_suggest_without_input_says_so(batch):
    pg = ParamGrid(batch, "cnmf", [])
    assert pg.suggest_button.click() is None
    assert "choose an input" in pg.message.value


@pytest.mark.parametrize("seed", [1, 3])
def test_cells_silent_and_cells_dim_at_rest_are_both_counted(seed):
    """A field of 20 cells that are bright but (nearly) never fire plus 20 that fire but have no
    resting glow: the mean image shows the first, the activity image the second. The count took
    the larger of the two images' counts (32 of 40 here); each cell seen in either counts once."""
    still = simulate_2p(n_frames=300, dims=(128, 128), n_neurons=20, firing_rate=1e-4, motion=None,
                        seed=seed)
    active = simulate_2p(n_frames=300, dims=(128, 128), n_neurons=20, neuron_brightness=0.0,
                         motion=None, seed=seed + 100)
    n = still.truth.n_neurons + active.truth.n_neurons
    stats = measure_movie(np.asarray(still.movie) + np.asarray(active.movie))
    assert 0.85 * n <= stats.n_cells <= 1.15 * n


@pytest.mark.skipif(not REAL.exists(), reason=f"real recordings not found at {REAL} (../shared/data/real)")
def test_real_recordings():
    nf = suggest_params(REAL / "neurofinder-01.01-crop" / "movie.tif", "cnmf", {"main": {"fr": 7.5}})
    # Neurofinder 01.01: somata ~10-15 um at 0.8 px/um -> gSig about 3-7 px
    assert 3 <= nf.main["gSig"][0] <= 7
    # 101 frames at 7.5 Hz: the brightest cells' transients rise near the end and never fall
    # back, so decay_time is not measured, and the reason says so instead of staying silent
    # (only two cells' transients are clear in the raw movie: too few for a lower bound)
    assert "not measured" in nf.reasons["decay_time"] and nf.main["decay_time"] == 0.4
    # its whole field brightens by three quarters over its last frames: said, with the frames
    assert any("whole field brightens" in w and "-100 " in w for w in nf.warnings), nf.warnings
    print("\nneurofinder-01.01-crop:", nf, sep="\n")
    ix = suggest_params(REAL / "inscopix-1p" / "movie_part2_108x123x63.tiff", "cnmfe", {"main": {"fr": 10.0}})
    assert ix.stats.one_photon
    assert 2 <= ix.main["gSig"][0] <= 10
    print("inscopix-1p:", ix, sep="\n")


def test_a_movie_of_shot_noise_suggests_no_motion_and_says_it_found_no_cells(tmp_path):
    """A flat field of photon shot noise, no cell, no motion (what Allen's 792757260 test crop
    is: 180 counts plus 300 per photon, about 0.15 photons per pixel and frame). The chance
    peaks of noise images' cross-correlation suggested max_shifts of 7-20 px on such movies,
    and noise blobs a gSig of 11-14 px; now the motion is 0 and the reason says no cells."""
    rng = np.random.default_rng(0)
    movie = 180 + 300.0 * rng.poisson(0.15, (100, 100, 100)) + rng.normal(0, 5, (100, 100, 100))
    path = _write(tmp_path / "noise.tif", movie, fr=10.0)
    stats = measure_movie(path)
    assert stats.motion == (0.0, 0.0)
    assert stats.n_cells == 0 and stats.gsig is None
    sug = suggest_params(path, "cnmf")
    assert "no cells found" in sug.reasons["gSig"]
    assert suggest_params(path, "mcorr").main["max_shifts"] == (2, 2)  # the margin only
