"""Builtin CNMF keeps neurons, not their pieces, duplicates or noise (issue #11's precision goal).

The params are those of mesmerize-core's demo notebook (patches of rf 15, K 4), the flow a user
brings over; the movies are the simulator's, matched to their ground truth.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from scipy.stats import norm

from mesmerize_widgets.algorithms import RunContext, get_algorithm
from mesmerize_widgets.algorithms.cnmf import core, evaluation
from mesmerize_widgets.formats.cnmf_hdf5 import load_cnmf, save_cnmf
from mesmerize_widgets.sim import (
    match_to_truth,
    simulate_2p,
    simulate_realistic_1p,
    simulate_realistic_2p,
)

DEMO_PARAMS = {
    "fr": 30, "p": 1, "nb": 2, "merge_thr": 0.85, "rf": 15, "stride": 6, "K": 4, "gSig": (4, 4),
    "method_init": "greedy_roi", "min_SNR": 2.0, "rval_thr": 0.7, "use_cnn": False,
}  # fmt: skip


def _fit(tmp_path: Path, movie: np.ndarray, main: dict) -> tuple[np.ndarray, np.ndarray, object]:
    src = tmp_path / "movie.tif"
    tifffile.imwrite(src, np.asarray(movie, np.float32))
    out = tmp_path / "out"
    out.mkdir()
    algo = get_algorithm("cnmf")
    ctx = RunContext(input_path=src, params=algo.schema.validate({"main": main, "refit": True}),
                     output_dir=out, prefix="item", n_processes=2)
    e = load_cnmf(algo.run_function("builtin")(ctx)["cnmf-hdf5-path"]).estimates
    good = np.asarray(e.idx_components, int)
    return e.A.toarray()[:, good], np.asarray(e.C)[good], e


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_demo_flow_accepts_neurons_only(tmp_path, seed):
    sim = simulate_2p(n_frames=400, dims=(128, 128), n_neurons=40, motion=None, seed=seed)
    A, C, _ = _fit(tmp_path, sim.movie, DEMO_PARAMS)
    m = match_to_truth(A, C, sim.truth)
    print(f"seed {seed}:", m)
    assert m["precision"] >= 0.95 and m["recall"] >= 0.95


def test_small_patches_after_mcorr_keep_the_second_rounds_merging(tmp_path):
    """A user's flow: a movie with rigid motion, rigid mcorr, then CNMF with small patches
    (rf 16, stride 8, gSig 3). A cell on a patch border is seeded by each patch; the second
    whole-field round merges such pieces. With one round (session 14, reverted) this accepted 52
    components for 25 cells, precision 0.48; with two, 39 and 0.64. The bar guards that
    regression: the precision here is still short of the other movies'."""
    from mesmerize_widgets.sim.io import write_tiff

    sim = simulate_2p(n_frames=1500, dims=(96, 96), n_neurons=25, motion="rigid", max_shift=2.0, seed=3)
    write_tiff(sim, tmp_path / "raw.tif")

    def run(algo: str, movie: Path, main: dict) -> dict:
        out = tmp_path / algo
        out.mkdir()
        a = get_algorithm(algo)
        ctx = RunContext(input_path=movie, params=a.schema.validate({"main": main}), output_dir=out,
                         prefix="item", n_processes=2)
        return a.run_function("builtin")(ctx)

    mc = run("mcorr", tmp_path / "raw.tif", {"pw_rigid": False, "max_shifts": (6, 6)})
    cn = run("cnmf", Path(mc["mcorr-output-path"]), {"fr": 30, "rf": 16, "stride": 8, "K": 6, "gSig": (3, 3), "p": 1})
    e = load_cnmf(cn["cnmf-hdf5-path"]).estimates
    good = np.asarray(e.idx_components, int)
    m = match_to_truth(e.A.toarray()[:, good], np.asarray(e.C)[good], sim.truth)
    assert m["recall"] >= 0.95 and m["precision"] >= 0.56, (len(good), m)


def test_white_noise_gives_no_component(tmp_path):
    rng = np.random.default_rng(3)
    movie = 100 + 5 * rng.standard_normal((300, 64, 64)).astype(np.float32)
    A, _, e = _fit(tmp_path, movie, {**DEMO_PARAMS, "rf": None, "K": 20})
    assert A.shape[1] == 0, f"accepted {A.shape[1]} components in pure noise (SNR {e.SNR_comp})"


def test_noise_snr_floor_is_what_noise_reaches():
    floor = core.noise_snr_floor(400, 12)
    rng = np.random.default_rng(0)
    snr = core.snr_from_traces(rng.standard_normal((1000, 400)), 12)
    assert 0.97 <= np.mean(snr < floor) <= 1.0
    # one transient of 8 noise SDs (SNR_comp scales z by 3 SDs) stands clear of it
    t = np.arange(400)
    trace = rng.standard_normal(400) + 8 * np.exp(-(t - 200) / 12.0) * (t >= 200)
    assert core.snr_from_traces(trace[None], 12)[0] > 1.5 * floor


def _disk(dims: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: dims[0], : dims[1]]
    img = np.exp(-((yy - center[0]) ** 2 + (xx - center[1]) ** 2) / (2 * (radius / 2) ** 2))
    img[img < 0.1] = 0
    return img.reshape(-1, order="F")


def test_a_piece_of_a_cell_is_merged_into_it():
    dims = (40, 40)
    rng = np.random.default_rng(0)
    cell = _disk(dims, (20, 20), 8)
    piece = _disk(dims, (22, 21), 3)  # lies inside the cell
    c = np.maximum(rng.standard_normal(300).cumsum(), 0)
    A = np.stack([cell, piece], 1)
    # the two split the cell's signal: their traces correlate well below merge_thr
    C = np.stack([c + 3 * rng.standard_normal(300), c + 3 * rng.standard_normal(300)])
    corr = np.corrcoef(C)[0, 1]
    assert core.PIECE_CORR < corr < 0.85
    A2, C2, groups = core.merge_components(A, C, 0.85, dims)
    assert A2.shape[1] == 1 and groups == [[0, 1]]


def test_neighbouring_cells_with_shared_raw_traces_do_not_chain():
    """Initial traces of touching cells share the unfitted background; the patch-stage merge
    (touching=False) must not fuse a row of cells into one."""
    dims = (30, 90)
    rng = np.random.default_rng(1)
    shared = rng.standard_normal(300).cumsum()
    A = np.stack([_disk(dims, (15, 10 + 14 * i), 8) for i in range(6)], 1)
    C = np.stack([shared + 0.2 * rng.standard_normal(300) for _ in range(6)])
    assert core.merge_components(A, C, 0.85, dims)[0].shape[1] == 1  # the post-fit rule would
    A2, _, groups = core.merge_components(A, C, 0.85, dims, touching=False)
    assert A2.shape[1] == 6 and groups == []


def test_footprints_smaller_than_half_a_cell_are_dropped():
    assert core.min_footprint_pixels((4, 4)) == int(np.ceil(np.pi * 16 / 2))
    opts = core.Options(gSig=(4, 4))
    dims = (30, 30)
    A = np.stack([_disk(dims, (15, 15), 8), _disk(dims, (5, 5), 1.5)], 1)
    C = np.ones((2, 10))
    A2, _ = core._drop_small(A, C, opts)
    assert A2.shape[1] == 1 and np.array_equal(A2.toarray()[:, 0], A[:, 0])


# ------------------------------------------------------------------------------------------
# the nuisances of real data (issue #11): neuropil, touching cells, drift, bleaching, a vessel
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_realistic_2p_accepts_neurons_only(tmp_path, seed):
    sim = simulate_realistic_2p(seed=seed)
    A, C, _ = _fit(tmp_path, sim.movie, DEMO_PARAMS)
    m = match_to_truth(A, C, sim.truth)
    print(f"seed {seed}:", m)
    assert m["precision"] >= 0.95 and m["recall"] >= 0.95


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_realistic_2p_without_cells_accepts_nothing(tmp_path, seed):
    """Neuropil, a vessel, drift and bleaching but no soma: CaImAn's default evaluation params
    accept nothing (its neuropil blobs are coherent enough for a high r-value, but slow)."""
    sim = simulate_realistic_2p(seed=seed, n_neurons=0)
    main = {**DEMO_PARAMS, "min_SNR": 2.5, "rval_thr": 0.8}
    A, _, e = _fit(tmp_path, sim.movie, main)
    assert A.shape[1] == 0, f"accepted {A.shape[1]}: SNR {e.SNR_comp[e.idx_components]}, r {e.r_values[e.idx_components]}"


def _transients(rng: np.random.Generator, T: int, n_decay: float, n_events: int) -> np.ndarray:
    s = np.zeros(T)
    s[rng.choice(np.arange(10, T - 10), n_events, replace=False)] = rng.uniform(5, 10, n_events)
    c = np.zeros(T)
    g = np.exp(-1 / n_decay)
    for t in range(T):
        c[t] = (g * c[t - 1] if t else 0.0) + s[t]
    return c


def test_fast_fraction_tells_transients_from_slow_signals():
    rng = np.random.default_rng(0)
    T, N = 600, 12
    t = np.arange(T)
    neurons = np.stack([_transients(rng, T, N, k) for k in (3, 8, 20)])
    slow = np.stack([
        30 + 10 * np.sin(2 * np.pi * t / 300),  # vasomotion, 0.1 Hz at 30 Hz
        100 * np.exp(-t / 400),  # bleaching
        300 * ndi.gaussian_filter1d(rng.standard_normal(T), 40),  # neuropil-like slow swings
    ])
    assert np.all(core.fast_fraction(neurons, N) >= evaluation.RV_ONLY_FAST_MIN)
    assert np.all(core.fast_fraction(slow, N) < core.FAST_FRACTION_MIN)


def test_remove_slow_trend_keeps_the_transient():
    rng = np.random.default_rng(1)
    T, N = 400, 6
    c = _transients(rng, T, N, 4)
    trend = 50 * np.exp(-np.arange(T) / 150) + 20 * np.sin(np.arange(T) / 60)
    Y = (trend + c + 0.3 * rng.standard_normal(T)).astype(np.float32)[None, None]
    assert np.corrcoef(Y[0, 0], c)[0, 1] < 0.3
    out = core.remove_slow_trend(Y.copy(), N)[0, 0]
    assert np.corrcoef(out, c)[0, 1] > 0.85
    assert abs(out.max() - c.max()) < 0.2 * c.max()
    assert np.abs(out - c)[:40].max() < 0.1 * c.max()  # the steep start of bleaching too


def test_greedy_init_finds_a_cell_on_the_flank_of_a_brighter_one():
    """Seeds were once the local maxima of the first energy image only; a dim cell whose energy
    sat on a bright neighbour's slope was never one, and stayed unfound whatever K."""
    rng = np.random.default_rng(2)
    dims, T = (40, 40), 300
    A = np.stack([_disk(dims, (20, 14), 10), _disk(dims, (20, 25), 10)], 1)
    C = np.stack([_transients(rng, T, 6, 25), 0.5 * _transients(rng, T, 6, 3)])
    Y = (A @ C).reshape(dims[1], dims[0], T).transpose(1, 0, 2) + 0.2 * rng.standard_normal((*dims, T))
    opts = core.Options(gSig=(3, 3), gSiz=(7, 7), fr=30, decay_time=0.2)
    found, _ = core.greedy_init(Y.astype(np.float32), opts, 4, n_decay=6)
    corr = (A / np.linalg.norm(A, axis=0)).T @ (found / np.linalg.norm(found, axis=0))
    assert corr.max(1).min() > 0.8, corr.round(2)


def test_components_on_the_same_pixels_merge_whatever_their_traces():
    dims = (40, 40)
    rng = np.random.default_rng(3)
    cell = _disk(dims, (20, 20), 8)
    twin = _disk(dims, (20.5, 20), 8)
    # one cell's events split between two components: the traces barely correlate
    C = np.stack([_transients(rng, 300, 10, 5), _transients(rng, 300, 10, 5)])
    assert np.corrcoef(C)[0, 1] < core.PIECE_CORR
    A2, _, groups = core.merge_components(np.stack([cell, twin], 1), C, 0.85, dims)
    assert A2.shape[1] == 1 and groups == [[0, 1]]


def test_rv_only_acceptance_needs_a_transients_pace():
    snr = np.array([1.0, 1.0, 5.0])
    rv = np.array([0.95, 0.95, 0.1])
    fast = np.array([0.05, 0.3, 0.05])
    q = {"min_SNR": 2.5, "rval_thr": 0.8, "SNR_lowest": 0.5, "rval_lowest": -1.0}
    good, _ = evaluation.select_components(snr, rv, q, fast_fraction=fast)
    assert good.tolist() == [1, 2]
    assert evaluation.select_components(snr, rv, q)[0].tolist() == [0, 1, 2]  # CaImAn's results
    # and an SNR above what noise reaches (the builtin stores its own floor with the result)
    good, _ = evaluation.select_components(snr, rv, q, fast_fraction=fast, rv_only_snr_min=1.5)
    assert good.tolist() == [2]


PHOTON_LIMITED = dict(gain=300.0, photon_counting=True, background=40.0, baseline=180.0, noise=5.0)


def test_photon_counting_noise_is_skewed_like_allen_data():
    """The simulator's photon-limited mode: most pixels sit at the floor, whole photons of
    ``gain`` counts above it (Allen's test crop: median 189, 90th percentile 501)."""
    sim = simulate_2p(n_frames=50, dims=(64, 64), n_neurons=0, motion=None, seed=0, **PHOTON_LIMITED)
    y = np.asarray(sim.movie, np.float64) - 180.0
    assert abs(np.median(y)) < 20  # most pixels see no photon in a frame
    assert np.mean(y > 250) > 0.05  # and a few see one (300 counts)
    assert np.mean(y) == pytest.approx(40.0, rel=0.1)  # the mean is the signal
    skew = ((y - y.mean()) ** 3).mean() / y.std() ** 3
    assert skew > 1.5


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_photon_limited_movie_without_cells_accepts_nothing(tmp_path, seed):
    """Shot noise of a few photons per pixel and frame, no cell: a footprint fitted to a frame's
    chance coincidence of photons scored SNR 5-25 by CaImAn's noise estimate (25 of 26 accepted
    on such a movie, 26 of 26 on Allen's real noise crop); the builtin now accepts none."""
    sim = simulate_2p(n_frames=100, dims=(100, 100), n_neurons=0, fr=10.0, motion=None, seed=seed,
                      **PHOTON_LIMITED)
    main = {"rf": 8, "stride": 4, "K": 1, "gSig": (2, 2), "p": 2, "fr": 10.0, "use_cnn": False}
    A, _, e = _fit(tmp_path, sim.movie, main)
    assert A.shape[1] == 0, f"accepted {A.shape[1]}: SNR {e.SNR_comp[e.idx_components]}, r {e.r_values[e.idx_components]}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_photon_limited_movie_keeps_its_cells(tmp_path, seed):
    """The same noise with cells: the stricter noise estimate costs no cell."""
    kw = {**PHOTON_LIMITED, "gain": 100.0}
    sim = simulate_realistic_2p(seed=seed, n_frames=400, spike_amplitude=200.0, neuron_brightness=40.0, **kw)
    main = {"rf": None, "K": 40, "gSig": (4, 4), "p": 1, "fr": 30.0, "decay_time": 0.4, "use_cnn": False}
    A, C, _ = _fit(tmp_path, sim.movie, main)
    m = match_to_truth(A, C, sim.truth)
    print(f"seed {seed}:", m)
    assert m["precision"] >= 0.95 and m["recall"] >= 0.9


def test_snr_of_skewed_noise_stays_low_and_of_transients_high():
    """SNR_comp on photon-limited noise (a few photons per frame) stays at what Gaussian noise
    gives, where CaImAn's estimate (noise from below the mode) makes single-photon frames look
    like events; a calcium transient in Gaussian noise keeps its SNR."""
    rng = np.random.default_rng(0)
    T, N = 200, 4
    shot = 300.0 * rng.poisson(0.5, (200, T)) + rng.normal(0, 5, (200, T))
    floor = core.noise_snr_floor(T, N, 0.999)
    assert np.median(core.snr_from_traces(shot, N)) < floor

    def caiman_snr(x: np.ndarray) -> np.ndarray:  # noise from below the mode only
        x = x - core._percentile_baseline(x)
        return -norm.ppf(np.exp(core.event_exceptionality(x, N) / N))

    assert np.median(caiman_snr(shot)) > 2.5  # what the Gaussian-only estimate made of it
    noise = 0.5 * rng.standard_normal((20, T))
    cells = np.stack([_transients(rng, T, N, 4) for _ in range(20)]) + noise
    snr = core.snr_from_traces(cells, N)
    assert np.all(snr > 2 * floor)
    # unchanged where the noise is Gaussian, except a strong cell's sharp rises (at most a third)
    assert np.all(snr <= caiman_snr(cells) + 1e-9) and np.all(snr >= 0.6 * caiman_snr(cells))
    weak = np.stack([0.3 * _transients(rng, T, N, 4) for _ in range(20)]) + noise
    np.testing.assert_allclose(core.snr_from_traces(weak, N), caiman_snr(weak), rtol=0.05)


@pytest.mark.usefixtures("client")
def test_run_eval_classifies_with_the_stored_kinetics(batch, raw_dir):
    """What the fit stored (fast_fraction) is what run_eval classifies with: re-evaluating with
    the fit's own thresholds gives the fit's accepted set, and r-value-only acceptances follow
    the stored kinetics."""
    sim = simulate_realistic_2p(seed=1, n_frames=300, dims=(64, 64), n_neurons=12)
    tifffile.imwrite(raw_dir / "m.tif", np.asarray(sim.movie, np.float32))
    main = {**DEMO_PARAMS, "rf": None, "K": 20}
    row = batch.caiman.add_item("cnmf", "c", "m.tif", {"main": main})
    row.caiman.run(progress=False)
    row = batch.caiman.reload_from_disk().iloc[0]
    path = row.cnmf.get_output_path()
    res = load_cnmf(path)
    e = res.estimates
    assert e.extra["fast_fraction"].shape == e.SNR_comp.shape
    fitted = row.cnmf.get_good_components()
    assert len(fitted)
    row.cnmf.run_eval({"min_SNR": 0.1})
    row.cnmf.run_eval({"min_SNR": main["min_SNR"], "rval_thr": main["rval_thr"]})
    np.testing.assert_array_equal(row.cnmf.get_good_components(), fitted)
    # r-value alone (SNR threshold out of reach): only components with a transient's pace
    K = len(e.SNR_comp)
    fast = np.where(np.arange(K) % 2 == 0, 0.0, 0.5)
    save_cnmf(path, dataclasses.replace(e, extra={**e.extra, "fast_fraction": fast}), res.params,
              dims=e.dims, mmap_file=res.mmap_file)
    row.cnmf.run_eval({"min_SNR": 1e9, "rval_thr": -0.5, "SNR_lowest": -1.0, "rval_lowest": -1.0})
    snr_min = float(e.extra["rv_only_snr_min"])
    assert 0 < snr_min < 3
    expected = np.flatnonzero((fast > 0) & (e.SNR_comp >= snr_min))
    assert len(expected)
    np.testing.assert_array_equal(row.cnmf.get_good_components(), expected)


def test_cnmfe_seeds_ignore_a_brightness_change_the_whole_field_shares():
    """A 1p field whose resting image (cells included) brightens and dims together: the
    high-pass filter turns every resting cell into a blob moving with the field's trace. No cell
    owns that signal (the Inscopix recording has it: 95% of a pixel's variance); seeding on it
    found a component on every resting cell."""
    rng = np.random.default_rng(4)
    dims, T = (64, 64), 200
    rest = sum(_disk(dims, (r, c), 7) for r, c in rng.uniform(8, 56, (12, 2)))
    rest = 100 + 30 * rest.reshape(dims[1], dims[0]).T
    g = 1 + 0.3 * ndi.gaussian_filter1d(rng.standard_normal(T), 3)
    Y3 = (rest[..., None] * g + 0.5 * rng.standard_normal((*dims, T))).astype(np.float32)
    opts = core.Options.from_main({"gSig": (3, 3), "gSiz": (13, 13), "min_corr": 0.8, "min_pnr": 10,
                                   "center_psf": True, "method_init": "corr_pnr", "K": None}, cnmfe=True)
    common = Y3.reshape(-1, T).mean(0)
    assert core.corr_pnr_init(Y3, opts, None)[0].shape[1] >= 5  # what seeding on it finds
    assert core.corr_pnr_init(Y3, opts, None, common)[0].shape[1] == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_realistic_1p_without_cells_accepts_nothing(tmp_path, seed):
    """CNMF-E on a miniscope-like field with no cells (vignetting, vessels, a fluctuating
    background, neuropil, drift, bleaching): nothing accepted with CaImAn's default evaluation."""
    sim = simulate_realistic_1p(seed=seed, n_neurons=0)
    src = tmp_path / "movie.tif"
    tifffile.imwrite(src, np.asarray(sim.movie, np.float32))
    out = tmp_path / "out"
    out.mkdir()
    algo = get_algorithm("cnmfe")
    main = {"fr": 20.0, "decay_time": 0.5, "gSig": (3, 3), "gSiz": (13, 13), "min_corr": 0.8, "min_pnr": 10.0,
            "min_SNR": 2.5, "rval_thr": 0.8, "use_cnn": False}
    ctx = RunContext(input_path=src, params=algo.schema.validate({"main": main}), output_dir=out, prefix="item",
                     n_processes=1)
    e = load_cnmf(algo.run_function("builtin")(ctx)["cnmf-hdf5-path"]).estimates
    good = np.asarray(e.idx_components, int)
    assert len(good) == 0, f"accepted {len(good)}: SNR {e.SNR_comp[good]}, r {e.r_values[good]}"
