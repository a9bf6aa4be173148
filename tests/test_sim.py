"""Tests of the calcium-imaging simulator and of the ground truth it returns."""

from __future__ import annotations

import hashlib
import json
import os

import cv2
import numpy as np
import pytest
import scipy.sparse as sp
import tifffile
from scipy import ndimage, signal

from mesmerize_widgets.sim import (
    GroundTruth,
    SimulatedMovie,
    load_truth,
    sample_movie,
    simulate_1p,
    simulate_2p,
    simulate_realistic_1p,
    simulate_realistic_2p,
    write_tiff,
)
from mesmerize_widgets.sim.io import _SAMPLES
from mesmerize_widgets.sim.scene import bleach_factor, brightening_factor, lowpass

SMALL = dict(n_frames=120, dims=(64, 80), n_neurons=12)


def _register_rigid(frame: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """CaImAn's apply_shift_iteration: the recorded shift registers the frame."""
    M = np.float32([[1, 0, shift[1]], [0, 1, shift[0]]])
    return cv2.warpAffine(
        frame, M, frame.shape[::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )


def _residual_displacement(registered: np.ndarray, ref: np.ndarray, sl: tuple) -> float:
    """Least-squares displacement (px) explaining registered - ref, via ref's gradient."""
    gy, gx = np.gradient(ref.astype(np.float64))
    G = np.stack([gy[sl].ravel(), gx[sl].ravel()], axis=1)
    d = np.linalg.lstsq(G, (registered - ref)[sl].ravel(), rcond=None)[0]
    return float(np.abs(d).max())


def test_deterministic_given_seed() -> None:
    a = simulate_2p(**SMALL, seed=3)
    b = simulate_2p(**SMALL, seed=3)
    c = simulate_2p(**SMALL, seed=4)
    np.testing.assert_array_equal(a.movie, b.movie)
    np.testing.assert_array_equal(a.truth.C, b.truth.C)
    np.testing.assert_array_equal(a.truth.A.toarray(), b.truth.A.toarray())
    np.testing.assert_array_equal(a.truth.shifts, b.truth.shifts)
    assert not np.array_equal(a.movie, c.movie)
    assert not np.array_equal(a.truth.centers, c.truth.centers)


@pytest.mark.parametrize("dtype", ["float32", "uint16", "uint8"])
def test_shapes_and_dtypes(dtype: str) -> None:
    sim = simulate_2p(**SMALL, nb=2, dtype=dtype, background=20, neuron_brightness=10, baseline=20)
    T, (d1, d2), K = SMALL["n_frames"], SMALL["dims"], SMALL["n_neurons"]
    tr = sim.truth
    assert isinstance(sim, SimulatedMovie) and isinstance(tr, GroundTruth)
    assert sim.movie.shape == sim.shape == (T, d1, d2) and sim.movie.dtype == np.dtype(dtype)
    assert sp.issparse(tr.A) and tr.A.shape == (d1 * d2, K) and tr.A.dtype == np.float32
    assert tr.C.shape == tr.S.shape == tr.spike_counts.shape == (K, T)
    assert tr.b.shape == (d1 * d2, 2) and tr.f.shape == (2, T)
    assert (
        tr.centers.shape == (K, 2) and tr.shifts.shape == (T, 2) and tr.appear_frame.shape == (K,)
    )
    assert tr.footprints().shape == (K, d1, d2)
    assert tr.dims == (d1, d2) and tr.fr == 30.0
    if dtype != "float32":
        assert sim.movie.min() >= 0


def test_footprints_normalised_positive_and_centred() -> None:
    sim = simulate_2p(n_frames=50, dims=(96, 96), n_neurons=25, motion=None, seed=1)
    tr = sim.truth
    A = tr.A.toarray()
    assert A.min() >= 0
    np.testing.assert_allclose(np.linalg.norm(A, axis=0), 1.0, rtol=1e-5)
    fp = tr.footprints()
    d1, d2 = tr.dims
    # Fortran pixel order: p = row + col * d1
    k = 0
    r, c = np.unravel_index(np.argmax(fp[k]), fp[k].shape)
    assert A[r + c * d1, k] == fp[k, r, c]
    rows, cols = np.mgrid[0:d1, 0:d2]
    interior = np.all((tr.centers > 14) & (tr.centers < np.array(tr.dims) - 15), axis=1)
    assert interior.sum() >= 5
    for k in np.flatnonzero(interior):
        w = fp[k] / fp[k].sum()
        com = np.array([(w * rows).sum(), (w * cols).sum()])
        np.testing.assert_allclose(com, tr.centers[k], atol=0.1)


def test_movie_matches_model_up_to_noise() -> None:
    sim = simulate_2p(n_frames=200, dims=(64, 64), n_neurons=15, motion=None, seed=2)
    tr = sim.truth
    resid = sim.movie - tr.clean()
    z = resid / tr.noise_std()
    assert abs(float(z.mean())) < 0.01
    assert abs(float(z.std()) - 1.0) < 0.02
    # heteroscedastic (Poisson-Gaussian): brighter pixels are noisier
    bright = tr.clean() > np.percentile(tr.clean(), 95)
    assert resid[bright].std() > resid[~bright].std()
    # neurons are visible: their activity is well above the noise
    assert (tr.neural().max(axis=0) / tr.noise_std().mean(axis=0)).max() > 5


def test_calcium_follows_spikes_with_decay_time() -> None:
    fr, tau = 30.0, 0.4
    sim = simulate_2p(
        n_frames=3000,
        dims=(48, 48),
        n_neurons=4,
        fr=fr,
        decay_time=tau,
        firing_rate=0.3,
        motion=None,
        lazy=True,
    )
    tr = sim.truth
    assert np.all(tr.S >= 0) and np.array_equal(tr.S > 0, tr.spike_counts > 0)
    # exact AR(2) relation c_t = g1 c_{t-1} + g2 c_{t-2} + s_t
    g1, g2 = tr.g
    C, S = tr.C.astype(np.float64), tr.S.astype(np.float64)
    np.testing.assert_allclose(
        C[:, 2:], g1 * C[:, 1:-1] + g2 * C[:, :-2] + S[:, 2:], rtol=1e-4, atol=1e-4
    )
    # decay time measured on the data: tails > 10 frames after the last spike decay with tau
    taus = []
    for k in range(tr.n_neurons):
        spikes = np.flatnonzero(tr.spike_counts[k])
        for s0, s1 in zip(spikes[:-1], spikes[1:], strict=True):
            if s1 - s0 > 40:
                seg = C[k, s0 + 12 : s0 + 40]
                taus.append(-1.0 / (np.polyfit(np.arange(seg.size), np.log(seg), 1)[0] * fr))
    assert len(taus) > 5
    np.testing.assert_allclose(np.median(taus), tau, rtol=0.02)
    # rise: the peak of a single-spike transient comes a few frames after the spike
    imp = np.zeros(60)
    imp[0] = 1
    h = signal.lfilter([1.0], [1.0, -g1, -g2], imp)
    assert 1 <= int(np.argmax(h)) <= 5


def test_rigid_shifts_register_frames() -> None:
    kw = dict(n_frames=60, dims=(64, 64), n_neurons=15, noise=0.0, gain=0.0, seed=5, max_shift=4.0)
    still = simulate_2p(**kw, motion=None)
    moving = simulate_2p(**kw, motion="rigid")
    sh = moving.truth.shifts
    assert np.abs(sh).max() <= 4.0 and np.abs(sh).max() > 1.0
    assert np.any(np.abs(sh - np.round(sh)) > 0.05)  # genuinely sub-pixel
    np.testing.assert_array_equal(still.truth.C, moving.truth.C)  # motion does not change activity
    m = 8
    sl = (slice(m, -m), slice(m, -m))
    ref_scale = float(np.ptp(still.movie))
    err, wrong, fine = [], [], []
    for t in range(0, 60, 3):
        ref = still.movie[t][sl]
        err.append(np.abs(_register_rigid(moving.movie[t], sh[t])[sl] - ref).max())
        wrong.append(np.abs(_register_rigid(moving.movie[t], -sh[t])[sl] - ref).max())
        # spline interpolation is more accurate than OpenCV's cubic: the tight check
        spline = ndimage.shift(moving.movie[t].astype(np.float64), sh[t], order=3, mode="nearest")
        fine.append(_residual_displacement(spline, still.movie[t], sl))
    assert max(err) < 0.02 * ref_scale  # OpenCV bicubic (a=-0.75, 1/32 px grid) limits this
    assert max(fine) < 0.01  # px: no systematic mis-registration left
    assert np.median(wrong) > 10 * max(err)


def test_piecewise_field_varies_and_registers() -> None:
    kw = dict(n_frames=40, dims=(96, 96), n_neurons=25, noise=0.0, gain=0.0, seed=6, max_shift=5.0)
    still = simulate_2p(**kw, motion=None)
    moving = simulate_2p(**kw, motion="piecewise", nonrigid_amplitude=2.0)
    tr = moving.truth
    d1, d2 = tr.dims
    yy, xx = np.mgrid[0:d1, 0:d2].astype(np.float32)
    spreads = []
    m = 10
    sl = (slice(m, -m), slice(m, -m))
    for t in range(0, 40, 4):
        field = tr.shift_field(t)
        assert np.abs(field).max() <= 5.0 + 1e-4
        np.testing.assert_allclose(field.mean(axis=(1, 2)), tr.shifts[t], atol=1e-4)
        spreads.append(float(np.ptp(field, axis=(1, 2)).max()))
        np.testing.assert_allclose(
            tr.shift_at(t, np.array([3.0, 50.0]), np.array([7.0, 20.0])),
            field[:, [3, 50], [7, 20]],
            atol=1e-5,
        )
        reg = cv2.remap(
            moving.movie[t],
            xx - field[1],
            yy - field[0],
            cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REFLECT,
        )
        rigid_only = _register_rigid(moving.movie[t], tr.shifts[t])
        ref = still.movie[t][sl]
        e_field = np.sqrt(np.mean((reg[sl] - ref) ** 2))
        e_rigid = np.sqrt(np.mean((rigid_only[sl] - ref) ** 2))
        assert e_field < 0.005 * float(np.ptp(ref))
        assert _residual_displacement(reg, still.movie[t], sl) < 0.02
        if spreads[-1] > 1.0:  # the rigid mean alone cannot register a deformed frame
            assert e_rigid > 3 * e_field
    assert max(spreads) > 1.0  # the field really varies across the field of view


def test_late_neurons_silent_before_appearing() -> None:
    sim = simulate_2p(
        n_frames=400, dims=(64, 64), n_neurons=20, late_fraction=0.3, motion=None, lazy=True, seed=7
    )
    tr = sim.truth
    late = np.flatnonzero(tr.appear_frame > 0)
    assert len(late) == 6
    for k in late:
        a = tr.appear_frame[k]
        assert 100 <= a < 300
        assert not tr.S[k, :a].any() and not tr.C[k, :a].any()
        assert tr.S[k, a] > 0
    assert np.all(tr.spike_counts.sum(axis=1) >= 2)


def test_1p_background_dominates() -> None:
    sim = simulate_1p(n_frames=200, dims=(96, 96), n_neurons=30, seed=8)
    tr = sim.truth
    bg = tr.background()
    neural = tr.neural()
    peak_df = tr.A.max(axis=0).toarray().ravel() * tr.C.max(axis=1)  # largest transient per neuron
    assert bg.mean() > 3 * np.median(peak_df)
    assert bg.mean() > 5 * neural.mean(axis=0).max()
    mean_bg = bg.mean(axis=0)
    assert mean_bg[40:56, 40:56].mean() > 1.3 * np.mean(
        [mean_bg[:8, :8], mean_bg[-8:, -8:]]
    )  # vignetting
    assert np.abs(np.diff(tr.f, axis=1)).max() > 0  # background varies in time
    assert tr.params["kind"] == "1p" and tr.b.shape[1] == 2
    assert float(sim.movie.max()) < 255 and float(sim.movie.min()) > 0  # 8-bit camera range


def test_streaming_equals_in_memory() -> None:
    kw = dict(n_frames=100, dims=(48, 56), n_neurons=10, seed=9)
    for motion in ("rigid", "piecewise"):
        full = simulate_2p(**kw, motion=motion).movie
        lazy = simulate_2p(**kw, motion=motion, lazy=True)
        assert not lazy.is_rendered
        chunks = list(lazy.frames(chunk=37))
        assert [len(c) for c in chunks] == [37, 37, 26]
        np.testing.assert_array_equal(np.concatenate(chunks), full)
    np.testing.assert_array_equal(
        simulate_1p(**kw, lazy=True).render(10, 20), simulate_1p(**kw).movie[10:20]
    )


def test_write_tiff_scaling_and_streaming(tmp_path) -> None:
    sim = simulate_2p(**SMALL, seed=10, lazy=True)
    info = write_tiff(sim, tmp_path / "a.tif")  # streamed from the lazy simulation
    assert info.scale == 1.0 and info.offset == 0.0 and not sim.is_rendered
    data = tifffile.imread(tmp_path / "a.tif")
    assert data.shape == sim.shape and data.dtype == np.uint16
    np.testing.assert_array_equal(data, np.rint(sim.movie).astype(np.uint16))
    # small float values get stretched, and the mapping is recorded
    small = (sim.movie / 1000.0).astype(np.float32)
    info = write_tiff(small, tmp_path / "b.tif", dtype="uint8")
    stored = tifffile.imread(tmp_path / "b.tif").astype(np.float64)
    np.testing.assert_allclose((stored - info.offset) / info.scale, small, atol=0.6 / info.scale)
    with tifffile.TiffFile(tmp_path / "b.tif") as tf:
        meta = json.loads(tf.pages[0].description)
    assert meta["scale"] == pytest.approx(info.scale)


def test_sample_movie_cached_and_truth_roundtrip(tmp_path) -> None:
    path = sample_movie("2p", dest_dir=tmp_path)
    truth_path = path.with_name(path.stem + "_truth.npz")
    assert path.exists() and truth_path.exists()
    mtime = os.stat(path).st_mtime_ns
    assert sample_movie("2p", dest_dir=tmp_path) == path
    assert os.stat(path).st_mtime_ns == mtime  # cached, not rewritten
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    data = tifffile.imread(path)
    assert data.shape == (500, 128, 128) and data.dtype == np.uint16
    truth = load_truth(path)
    ref = simulate_2p(**_SAMPLES["2p"], lazy=True).truth
    np.testing.assert_array_equal(truth.A.toarray(), ref.A.toarray())
    for name in ("C", "S", "spike_counts", "b", "f", "centers", "shifts", "appear_frame"):
        np.testing.assert_array_equal(getattr(truth, name), getattr(ref, name))
    assert truth.g == ref.g and truth.dims == ref.dims and truth.motion == "rigid"
    assert truth.params["n_neurons"] == 40 and truth.tiff_scale == 1.0
    np.testing.assert_array_equal(load_truth(truth_path).C, truth.C)
    # the TIFF is the simulation rounded to uint16 (scale 1)
    np.testing.assert_array_equal(
        data[:20], np.rint(simulate_2p(**_SAMPLES["2p"], lazy=True).render(0, 20))
    )


def test_truth_save_load_piecewise(tmp_path) -> None:
    sim = simulate_2p(**SMALL, motion="piecewise", lazy=True, seed=11)
    p = sim.truth.save(tmp_path / "t.npz")
    back = load_truth(p)
    np.testing.assert_array_equal(back.field_coeffs, sim.truth.field_coeffs)
    np.testing.assert_allclose(back.shift_field(5), sim.truth.shift_field(5))
    assert back.noise_sigma == sim.truth.noise_sigma and back.baseline == sim.truth.baseline


# --- nuisances of real data (issue #11) -------------------------------------------------

# sha256 of the movies rendered by the simulator BEFORE the nuisance options existed: they
# pin the default output, which other tests and the benchmarks rely on, bit for bit.
_PINNED_DEFAULTS = [
    (simulate_2p, {}, "304ef41d41cc488db42f23f667cd2f45076c17e7541fda047c3f861a4ea1ebd2"),
    (simulate_1p, {}, "9d5f30a602eaaf26795b7c12b67bdb9678ff8ac89fbeae5c1547fd7cc117fa3e"),
    (
        simulate_2p,
        dict(
            n_frames=40,
            dims=(48, 56),
            n_neurons=10,
            seed=1,
            motion="piecewise",
            nb=2,
            dtype="uint16",
        ),
        "f9af50c62d5fd4e445744065512d35e16b32cbb2c5cc0278db634e42fcedbd71",
    ),
]
QUIET = dict(noise=0.0, gain=0.0, motion=None)  # noise-free, motion-free: differences are exact


@pytest.mark.parametrize("case", range(len(_PINNED_DEFAULTS)))
def test_default_movies_unchanged(case: int) -> None:
    fn, kw, digest = _PINNED_DEFAULTS[case]
    sim = fn(**kw)
    assert hashlib.sha256(sim.movie.tobytes()).hexdigest() == digest
    assert "background_layers" not in sim.truth.params  # no nuisance layer was added


def _layer(sim: SimulatedMovie, name: str) -> np.ndarray:
    """One nuisance layer ``b[:, cols] @ f[cols]`` as frames ``(T, d1, d2)``."""
    tr = sim.truth
    cols = tr.params["background_layers"][name]
    d1, d2 = tr.dims
    return (tr.b[:, cols] @ tr.f[cols]).reshape(d1, d2, -1, order="F").transpose(2, 0, 1)


def test_neuropil_is_fine_grained_and_follows_population() -> None:
    kw = dict(n_frames=600, dims=(80, 80), n_neurons=30, seed=21, **QUIET)
    plain = simulate_2p(**kw)
    sim = simulate_2p(**kw, neuropil=0.5)
    tr = sim.truth
    np.testing.assert_array_equal(tr.C, plain.truth.C)  # neurons untouched
    extra = sim.movie - plain.movie  # the neuropil alone (its own random stream)
    np.testing.assert_allclose(extra, _layer(sim, "neuropil"), atol=1e-3)
    # amplitude: its brightest blobs swing by ~neuropil x a single-spike transient
    assert 0.4 * 0.5 * 40.0 < extra.max() <= 0.5 * 40.0 * 1.001
    # fine-grained (gSig-sized blobs): the spatial autocorrelation is gone within 2 gSig
    img = extra.mean(axis=0)
    img = img - img.mean()
    r = [np.corrcoef(img[:, :-lag].ravel(), img[:, lag:].ravel())[0, 1] for lag in (2, 8, 16)]
    assert r[0] > 0.5 and r[1] < 0.3 and abs(r[2]) < 0.3
    # temporal: follows the (low-passed) population activity, not any single neuron
    pop = (tr.C * tr.A.max(axis=0).toarray().ravel()[:, None]).mean(axis=0)
    trace = extra.mean(axis=(1, 2))
    assert np.corrcoef(trace, lowpass(pop.astype(np.float64), 30.0))[0, 1] > 0.8
    assert np.corrcoef(trace, pop)[0, 1] > 0.3
    assert np.corrcoef(trace, tr.C[0])[0, 1] < np.corrcoef(trace, pop)[0, 1]


def test_dense_overlapping_somata() -> None:
    sim = simulate_2p(n_frames=30, dims=(64, 64), n_neurons=40, min_distance=2.0, seed=22)
    tr = sim.truth
    d = np.linalg.norm(tr.centers[:, None] - tr.centers[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 2.0 - 1e-4 and d.min() < 4.0  # centres closer than gSig
    A = tr.A.toarray()
    overlap = A.T @ A  # unit-norm columns: inner product 1 means identical footprints
    np.fill_diagonal(overlap, 0)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    assert overlap[i, j] > 0.5  # the closest pair shares most of its pixels
    np.testing.assert_allclose(np.linalg.norm(A, axis=0), 1.0, rtol=1e-5)


def test_baseline_drift_moves_resting_level_not_calcium() -> None:
    kw = dict(n_frames=900, dims=(80, 80), n_neurons=12, seed=23, **QUIET)
    plain = simulate_2p(**kw)
    sim = simulate_2p(**kw, baseline_drift=0.2)
    tr = sim.truth
    np.testing.assert_array_equal(tr.C, plain.truth.C)
    np.testing.assert_array_equal(tr.S, plain.truth.S)
    cols = tr.params["background_layers"]["baseline_drift"]
    assert len(cols) == tr.n_neurons and tr.b.shape[1] == 1 + tr.n_neurons
    extra = sim.movie - plain.movie
    np.testing.assert_allclose(extra, _layer(sim, "baseline_drift"), atol=1e-3)
    support = (tr.A.toarray().sum(axis=1) > 0).reshape(tr.dims, order="F")
    assert np.abs(extra[:, ~support]).max() == 0  # only where the neurons are
    d1 = tr.dims[0]
    rest = tr.b[:, cols]  # each neuron's resting glow
    rel = []
    for k in range(tr.n_neurons):
        p = int(np.argmax(rest[:, k]))
        r, c = p % d1, p // d1
        own = extra[:, r, c] - (rest[p] @ tr.f[cols] - rest[p, k] * tr.f[cols[k]])
        rel.append(np.abs(own).max() / rest[p, k])
        assert np.corrcoef(own[:-1], own[1:])[0, 1] > 0.99  # slow
    np.testing.assert_allclose(rel, 0.2, rtol=1e-3)  # wanders by baseline_drift x brightness


def test_brightening_lifts_the_whole_field_late_in_the_movie() -> None:
    """Neurofinder's field-wide rise: nothing changes for most of the movie, then all the
    fluorescence (cells at rest and firing, tissue) rises by the fraction; spikes stay spikes."""
    kw = dict(n_frames=200, dims=(64, 64), n_neurons=15, seed=24, motion=None)
    plain, sim = simulate_2p(**kw), simulate_2p(**kw, brightening=0.6)
    rise = brightening_factor(200, 0.6)
    assert rise[:140].max() < 1.01 and rise[-10:].min() > 1.59
    np.testing.assert_allclose(sim.truth.C, plain.truth.C * rise, rtol=1e-6)
    np.testing.assert_allclose(sim.truth.f, plain.truth.f * rise, rtol=1e-6)
    np.testing.assert_array_equal(sim.truth.S, plain.truth.S)
    late = (sim.movie[-10:] - sim.truth.baseline).mean() / (plain.movie[-10:] - plain.truth.baseline).mean()
    assert late == pytest.approx(1.6, abs=0.01)
    with pytest.raises(ValueError, match="brightening"):
        brightening_factor(10, -0.1)


def test_bleaching_dims_everything_by_the_fraction() -> None:
    kw = dict(n_frames=300, dims=(64, 64), n_neurons=15, seed=24)
    plain = simulate_2p(**kw, motion=None)
    sim = simulate_2p(**kw, motion=None, bleaching=0.2)
    tr, base = sim.truth, plain.truth
    decay = bleach_factor(300, 0.2)
    assert decay[0] == 1 and decay[-1] == pytest.approx(0.8)
    np.testing.assert_allclose(tr.C, base.C * decay, rtol=1e-6)  # the signal itself dims
    np.testing.assert_array_equal(tr.S, base.S)  # spikes stay spikes
    np.testing.assert_allclose(tr.f, base.f * decay, rtol=1e-6)
    # on the noisy movies: late-frame fluorescence (above the detector offset) is 20% lower
    late = np.s_[-20:]
    ratio = (sim.movie[late] - tr.baseline).mean() / (plain.movie[late] - base.baseline).mean()
    assert ratio == pytest.approx(decay[-10:].mean(), abs=0.005)
    ratio_self = (sim.movie[late] - tr.baseline).mean() / (sim.movie[:20] - tr.baseline).mean()
    assert ratio_self == pytest.approx(0.8, abs=0.1)  # plus the background's own +-5% wander
    # shot noise follows the dimmer signal: the model still explains the movie
    z = (sim.movie - tr.clean()) / tr.noise_std()
    assert abs(float(z.std()) - 1.0) < 0.02


def test_bright_vessel_is_wide_and_fluctuates_slowly() -> None:
    kw = dict(n_frames=900, dims=(96, 96), n_neurons=20, seed=25, **QUIET)
    plain = simulate_2p(**kw)
    sim = simulate_2p(**kw, bright_vessels=1, vessel_brightness=1.5)
    tr = sim.truth
    extra = sim.movie - plain.movie
    np.testing.assert_allclose(extra, _layer(sim, "bright_vessels"), atol=1e-3)
    mean = extra.mean(axis=0)
    path = mean > 0.5 * mean.max()
    # along its path the tissue is much brighter: ~vessel_brightness x background
    assert mean[path].mean() > 0.8 * 1.5 * 50.0
    tissue = plain.movie.mean(axis=0) - tr.baseline
    assert tissue[path].mean() + mean[path].mean() > 1.6 * tissue.mean()
    # a band, wider than any soma and long (crosses a good part of the field of view)
    half_width = ndimage.distance_transform_edt(path).max()
    fp = tr.footprints()
    soma = max(ndimage.distance_transform_edt(f > 0.5 * f.max()).max() for f in fp)
    assert half_width > soma
    assert path.sum() > 10 * np.pi * soma**2
    # brightness fluctuates, slowly (vasomotion ~0.1 Hz dominates the spectrum)
    trace = extra[:, path].mean(axis=1)
    assert trace.std() / trace.mean() > 0.08
    freqs = np.fft.rfftfreq(trace.size, 1.0 / tr.fr)
    power = np.abs(np.fft.rfft(trace - trace.mean())) ** 2
    assert 0.03 <= freqs[np.argmax(power)] <= 0.2


def test_subpixel_residual_motion_registers() -> None:
    kw = dict(n_frames=60, dims=(64, 64), n_neurons=15, noise=0.0, gain=0.0, seed=26)
    still = simulate_2p(**kw, motion=None)
    moving = simulate_2p(**kw, motion="rigid", max_shift=0.5)
    sh = moving.truth.shifts
    assert np.abs(sh).max() <= 0.5 and np.abs(sh).max() > 0.2
    sl = (slice(6, -6), slice(6, -6))
    for t in range(0, 60, 6):
        ref = still.movie[t][sl]
        fixed = ndimage.shift(moving.movie[t].astype(np.float64), sh[t], order=3, mode="nearest")
        assert _residual_displacement(fixed, still.movie[t], sl) < 0.01
        if np.abs(sh[t]).max() > 0.2:  # sub-pixel motion is visible, and registering removes it
            assert np.abs(moving.movie[t][sl] - ref).max() > 5 * np.abs(fixed[sl] - ref).max()


@pytest.mark.parametrize("fn", [simulate_2p, simulate_1p])
def test_movie_without_cells(fn) -> None:
    nuis = dict(neuropil=0.5, baseline_drift=0.2, bleaching=0.1)
    if fn is simulate_2p:
        nuis["bright_vessels"] = 1
    sim = fn(n_frames=50, dims=(40, 48), n_neurons=0, motion="rigid", seed=27, **nuis)
    tr = sim.truth
    assert tr.A.shape == (40 * 48, 0) and tr.C.shape == tr.S.shape == (0, 50)
    assert tr.n_neurons == 0 and tr.centers.shape == (0, 2) and tr.footprints().shape == (0, 40, 48)
    assert sim.movie.shape == (50, 40, 48) and np.isfinite(sim.movie).all()
    assert "baseline_drift" not in tr.params["background_layers"]  # no neuron to drift
    assert float(np.ptp(tr.f[tr.params["background_layers"]["neuropil"]])) > 0
    assert sim.movie.std() > 0
    still = fn(n_frames=50, dims=(40, 48), n_neurons=0, motion=None, seed=27, **nuis)
    np.testing.assert_allclose(still.render(noise=False), still.truth.clean(), rtol=1e-5)


@pytest.mark.parametrize("fn", [simulate_realistic_2p, simulate_realistic_1p])
def test_clean_is_noise_free_render_with_nuisances(fn, tmp_path) -> None:
    sim = fn(n_frames=80, dims=(64, 64), n_neurons=15, motion=None, seed=28)
    tr = sim.truth
    clean = tr.clean()
    np.testing.assert_allclose(sim.render(noise=False), clean, rtol=1e-5, atol=1e-3)
    z = (sim.movie - clean) / tr.noise_std()
    assert abs(float(z.std()) - 1.0) < 0.03
    back = load_truth(tr.save(tmp_path / "t.npz"))  # extra layers survive a round trip
    np.testing.assert_array_equal(back.clean(), clean)
    assert back.params["background_layers"] == tr.params["background_layers"]


def test_realistic_presets() -> None:
    import time

    t0 = time.perf_counter()
    sim2 = simulate_realistic_2p(seed=1)
    sim1 = simulate_realistic_1p(seed=1)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0  # CI-sized: renders in a fraction of a second on one core
    assert sim2.shape == sim1.shape == (400, 96, 96)
    tr = sim2.truth
    assert set(tr.params["background_layers"]) == {"neuropil", "bright_vessels", "baseline_drift"}
    assert tr.params["bleaching"] == 0.15 and np.abs(tr.shifts).max() <= 0.5
    d = np.linalg.norm(tr.centers[:, None] - tr.centers[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert d.min() < 2 * 4.0  # denser than the default spacing: somata touch
    assert set(sim1.truth.params["background_layers"]) == {"neuropil", "baseline_drift"}
    assert sim1.truth.params["bleaching"] == 0.2
    # streaming with every layer on (sparse drift, extra components) matches in memory
    lazy = simulate_realistic_2p(seed=1, lazy=True)
    np.testing.assert_array_equal(np.concatenate(list(lazy.frames(chunk=37))), sim2.movie)
    # overrides pass through
    assert simulate_realistic_2p(n_frames=50, bright_vessels=0).truth.params["bright_vessels"] == 0
