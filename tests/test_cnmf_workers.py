"""The builtin CNMF's deconvolution and its steps spread over a fit's worker processes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import assert_each_cell_once, cells_found
from scipy.signal import lfilter

from mesmerize_widgets.algorithms.cnmf import core
from mesmerize_widgets.algorithms.cnmf.deconvolution import (
    AR_FUDGE,
    ar_coefficients,
    deconvolve_in,
    deconvolve_traces,
)
from mesmerize_widgets.formats.memmap import load_memmap, save_memmap
from mesmerize_widgets.processes import Workers
from mesmerize_widgets.sim import simulate_2p
from mesmerize_widgets.sim.scene import ar_coefficients as kinetics


def _ar_traces(g: tuple[float, ...], K: int = 40, T: int = 3000, sn: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spikes = rng.poisson(0.03, (K, T)).astype(np.float64)
    c = lfilter([1.0], np.concatenate([[1.0], -np.asarray(g)]), spikes, axis=1)
    return (c + 2.0 + sn * rng.standard_normal((K, T))).astype(np.float32)


@pytest.mark.parametrize("g", [kinetics(30.0, 0.4, None), kinetics(30.0, 0.4, 0.05)], ids=["AR1", "AR2"])
def test_the_decay_is_estimated_from_the_traces_and_handed_to_oasis(g):
    """The AR coefficients come back from simulated traces of known kinetics, OASIS deconvolves
    with exactly those (no second estimate of its own), through no deprecated call, and the
    spikes it finds are the simulated ones."""
    Y = _ar_traces(g)
    p = len(g)
    sn = core.noise_psd(Y).astype(np.float64)
    est = ar_coefficients(Y, p, sn)
    decay = [max(np.roots(np.concatenate([[1.0], -e])).real) for e in est]
    true_decay = max(np.roots(np.concatenate([[1.0], -np.asarray(g)])).real)
    # the decay per frame, shrunk by OASIS's 0.98 as CaImAn's is, within 0.015
    assert np.median(np.abs(np.asarray(decay) - AR_FUDGE * true_decay)) < 0.015
    # the estimate OASIS itself makes from the same noise level, for all the traces at once
    from oasis.functions import estimate_time_constant

    theirs = np.array([estimate_time_constant(y.astype(np.float64), p, s, fudge_factor=AR_FUDGE)
                       for y, s in zip(Y, sn, strict=True)])
    np.testing.assert_allclose(est, theirs, rtol=1e-6, atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        out = deconvolve_traces(Y, p, True, (0.25, 0.5))
    np.testing.assert_allclose(out["g"], est, rtol=1e-9)
    assert np.all(out["bl"] > 1.0) and np.all(out["neurons_sn"] > 0)
    Ytrue = _ar_traces(g, sn=0.0)
    corr = [np.corrcoef(c, y)[0, 1] for c, y in zip(out["C"], Ytrue, strict=True)]
    assert np.median(corr) > 0.95


def test_a_noise_trace_is_deconvolved_without_error():
    """White noise has no decay: its AR roots fall outside (0, 1) and are replaced, the same on
    every run (OASIS would draw them at random)."""
    Y = np.random.default_rng(1).standard_normal((6, 500)).astype(np.float32) + 5
    a = deconvolve_traces(Y, 1, True, (0.25, 0.5))
    b = deconvolve_traces(Y, 1, True, (0.25, 0.5))
    assert np.all(np.isfinite(a["C"])) and np.all((a["g"] > 0) & (a["g"] < 1))
    np.testing.assert_array_equal(a["C"], b["C"])


@pytest.fixture(scope="module")
def workers():
    w = Workers.start(2, preload=core.__name__)
    yield w
    w.close()


def test_the_fits_workers_compute_what_one_process_computes(tmp_path, workers):
    """Deconvolution, the noise image and the residual pass for missed cells, each spread over
    two real worker processes that read the memmap, give exactly one process's results: a fit
    must not depend on how many processes ran it. The residual pass cuts a 256-row field in two
    bands either way, each cell kept by the band holding its peak, and finds the cells the
    whole-field pass finds."""
    sim = simulate_2p(n_frames=300, dims=(256, 64), n_neurons=40, motion=None, seed=5)
    path = save_memmap(np.asarray(sim.movie, np.float32), tmp_path, "w", order="C")
    Yr, dims, T = load_memmap(path)
    mov = core._Movie(Yr)
    # deconvolution: the traces in two blocks, one per worker
    Y = _ar_traces(kinetics(30.0, 0.4, None), K=9, T=400)
    one, two = deconvolve_traces(Y, 1, True, (0.25, 0.5)), deconvolve_in(workers, Y, 1, True, (0.25, 0.5))
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
    # the noise image: the pixels in two halves
    np.testing.assert_array_equal(core.pixel_noise(Yr, (0.25, 0.5)), core.pixel_noise(Yr, (0.25, 0.5), workers))
    # the residual pass, in this process and in the workers (K 150: 50 residual seeds, more than
    # the 40 cells, so the budget does not choose among them)
    opts = core.Options.from_main({"gSig": (4, 4), "fr": 30, "K": 150, "nb": 1, "rf": None, "tsub": 1})
    assert len(core._bands(dims, 8)) == 2
    A0, C0 = np.zeros((Yr.shape[0], 0), np.float32), np.zeros((0, T), np.float32)
    b, f = core._init_background(mov, A0, C0, 1, np.random.default_rng(0))
    here, C1 = core._seeds_from_residual(mov, A0, C0, b, f, dims, opts)
    there, C2 = core._seeds_from_residual(mov, A0, C0, b, f, dims, opts, workers)
    np.testing.assert_array_equal(here, there)
    np.testing.assert_array_equal(C1, C2)
    # the two bands find the cells (one pass over the whole field finds 39 of the 40 too), once
    assert len(cells_found(sim.truth.A.toarray(), here)) >= 37
    assert_each_cell_once(here, 0.5)


def test_a_patched_fit_with_workers_matches_the_single_process_fit(tmp_path, workers):
    """The whole fit, patches and all, with the workers: exactly the single-process result."""
    sim = simulate_2p(n_frames=300, dims=(256, 96), n_neurons=50, motion=None, seed=2)
    path = save_memmap(np.asarray(sim.movie, np.float32), tmp_path, "f", order="C")
    Yr, dims, _ = load_memmap(path)
    main = {"gSig": (4, 4), "fr": 30, "K": 6, "rf": 24, "stride": 12, "nb": 1, "p": 1, "use_cnn": False}
    one = core.fit(Yr, dims, core.Options.from_main(main), mmap_path=path)
    two = core.fit(Yr, dims, core.Options.from_main(main), mmap_path=path, workers=workers)
    for key in ("A", "C", "S", "idx_components", "SNR_comp", "r_values", "sn"):
        np.testing.assert_array_equal(one[key], two[key])
    assert len(cells_found(sim.truth.A.toarray(), one["A"][:, one["idx_components"]])) >= 40


def test_the_noise_of_a_long_movie_is_measured_on_3072_frames():
    """Past 3,072 frames the noise comes from three stretches of 1,024 (start, middle, end), as
    CaImAn's does: as accurate for white noise, and frames between them are never read."""
    rng = np.random.default_rng(3)
    sd = np.linspace(1.0, 3.0, 200)
    Y = (rng.standard_normal((200, 20_000)) * sd[:, None]).astype(np.float32)
    np.testing.assert_allclose(core.noise_psd(Y), sd, rtol=0.08)
    Y[:, 1024:9488] = np.nan  # between the first stretch and the middle one
    Y[:, 10_512:18_976] = np.nan
    assert np.all(np.isfinite(core.noise_psd(Y)))
    short = Y[:, :3000]
    assert np.isnan(core.noise_psd(short)).all()  # a movie up to 3,072 frames is read whole


def test_without_a_forkserver_the_workers_are_spawned_and_compute_the_same(monkeypatch):
    """Windows has no forkserver: the fit's workers are then spawned, import what they run
    themselves, and give what one process gives."""
    import multiprocessing as mp

    import psutil

    def spawned() -> set[int]:
        return {p.pid for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())}

    monkeypatch.setattr(mp, "get_all_start_methods", lambda: ["spawn"])
    Y = _ar_traces(kinetics(30.0, 0.4, None), K=6, T=400)
    before = spawned()
    with Workers.start(2, preload=core.WORKER_MODULES) as w:
        two = deconvolve_in(w, Y, 1, True, (0.25, 0.5))
        assert len(spawned() - before) == 2
    one = deconvolve_traces(Y, 1, True, (0.25, 0.5))
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
