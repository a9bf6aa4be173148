"""CNMF / CNMF-E: accuracy against simulated ground truth, seeded fits, the batch, bad input."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import tifffile
from helpers import run_caiman_backend

from mesmerize_widgets.algorithms import RunContext, get_algorithm
from mesmerize_widgets.algorithms.cnmf import builtin, core
from mesmerize_widgets.algorithms.cnmf.ring import ring_offsets
from mesmerize_widgets.errors import ParamError
from mesmerize_widgets.formats.cnmf_hdf5 import load_cnmf
from mesmerize_widgets.sim import match_to_truth as match
from mesmerize_widgets.sim import simulate_1p, simulate_2p


def _run(tmp_path: Path, movie: np.ndarray, main: dict, algo: str = "cnmf", **extra) -> tuple[dict, Path]:
    src = tmp_path / "in" / "movie.tif"
    src.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(src, np.asarray(movie, np.float32))
    out = tmp_path / "out"
    out.mkdir()
    params = get_algorithm(algo).schema.validate({"main": main, **extra})
    ctx = RunContext(input_path=src, params=params, output_dir=out, prefix="item", n_processes=2)
    fn = builtin.run if algo == "cnmf" else builtin.run_cnmfe
    return fn(ctx), out


def _accepted(res) -> tuple[np.ndarray, np.ndarray]:
    e = res.estimates
    good = np.asarray(e.idx_components, int)
    return e.A.toarray()[:, good], np.asarray(e.C)[good]


@pytest.fixture(scope="module")
def sim2p():
    return simulate_2p(n_frames=1000, dims=(128, 128), n_neurons=60, motion=None, seed=1)


@pytest.mark.slow
def test_cnmf_finds_the_simulated_neurons(tmp_path, sim2p):
    outputs, out = _run(tmp_path, sim2p.movie, {"K": 100, "gSig": (4, 4), "p": 1, "fr": 30.0})
    for key in ("cnmf-hdf5-path", "cnmf-memmap-path", "corr-img-path", "mean-projection-path",
                "std-projection-path", "max-projection-path"):
        assert Path(outputs[key]).exists() and Path(outputs[key]).parent == out
    assert "_cnmf-memmap__d1_128_d2_128_d3_1_order_C_frames_1000.mmap" in Path(outputs["cnmf-memmap-path"]).name
    res = load_cnmf(outputs["cnmf-hdf5-path"])
    A, C = _accepted(res)
    m = match(A, C, sim2p.truth)
    print("cnmf accepted:", m)
    assert m["recall"] >= 0.9 and m["precision"] >= 0.9 and m["trace_corr"] >= 0.9
    e = res.estimates
    K = e.A.shape[1]
    assert e.C.shape == e.S.shape == e.YrA.shape == (K, 1000)
    assert e.b.shape == (128 * 128, 1) and e.f.shape == (1, 1000) and e.sn.shape == (128 * 128,)
    assert len(e.SNR_comp) == len(e.r_values) == K
    np.testing.assert_allclose(np.linalg.norm(e.A.toarray(), axis=0), 1.0, rtol=1e-4)
    assert res.params.get("init", "K") == 100 and res.params.get("quality", "use_cnn") is False


@pytest.mark.slow
def test_fit_shows_its_stages_to_an_observer():
    """``bench_real --stages`` follows where a cell is lost: the observer sees the seeds, then the
    refined footprints, each a (pixels, K) array on the field, before pruning keeps some."""
    sim = simulate_2p(n_frames=300, dims=(48, 48), n_neurons=8, motion=None, seed=2)
    Yr = np.asarray(sim.movie, np.float32).transpose(1, 2, 0).reshape(-1, 300, order="F")
    seen: list[tuple[str, np.ndarray]] = []
    opts = core.Options.from_main({"K": 12, "gSig": (3, 3), "p": 1, "fr": 30.0})
    res = core.fit(Yr, (48, 48), opts, observe=lambda stage, A: seen.append((stage, A.copy())))
    assert [stage for stage, _ in seen] == ["initialised", "refined"]
    seeds, refined = seen[0][1], seen[1][1]
    assert seeds.shape[0] == refined.shape[0] == 48 * 48
    truth = sim.truth.A.toarray()
    cos = (truth / np.linalg.norm(truth, axis=0)).T @ (seeds / np.linalg.norm(seeds, axis=0))
    assert (cos.max(1) >= 0.7).mean() >= 0.75  # the seeds sit on the cells
    assert res["A"].shape[1] <= refined.shape[1]


def test_cnmf_with_patches_in_parallel(tmp_path, sim2p):
    outputs, _ = _run(tmp_path, sim2p.movie, {"K": 12, "gSig": (4, 4), "p": 1, "rf": 24, "stride": 10})
    A, C = _accepted(load_cnmf(outputs["cnmf-hdf5-path"]))
    m = match(A, C, sim2p.truth)
    print("cnmf patches accepted:", m)
    assert m["recall"] >= 0.85 and m["precision"] >= 0.85 and m["trace_corr"] >= 0.9


@pytest.mark.slow
def test_seeded_cnmf_recovers_every_true_mask(tmp_path, sim2p):
    masks = sim2p.truth.footprints() > 0.2 * sim2p.truth.footprints().max(axis=(1, 2), keepdims=True)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "masks.npy", masks)  # (K, rows, cols) bool, relative to the input dir
    outputs, _ = _run(tmp_path, sim2p.movie, {"gSig": (4, 4), "p": 1, "rf": 20}, Ain_path="masks.npy")
    res = load_cnmf(outputs["cnmf-hdf5-path"])
    m = match(res.estimates.A.toarray(), np.asarray(res.estimates.C), sim2p.truth)
    print("seeded:", m)
    assert m["recall"] == 1.0 and m["K"] == 60 and m["trace_corr"] >= 0.95
    assert res.params.get("patch", "rf") is None


def test_seed_from_another_items_footprints(tmp_path):
    """Ain_path may name another cnmf item's HDF5: its accepted components seed the fit."""
    from mesmerize_widgets.formats.cnmf_hdf5 import Estimates, save_cnmf

    sim = simulate_2p(n_frames=300, dims=(64, 64), n_neurons=12, motion=None, seed=4)
    K = sim.truth.A.shape[1]
    good = np.arange(0, K, 2)  # only the accepted ones (every other) must seed the new fit
    (tmp_path / "in").mkdir()
    save_cnmf(tmp_path / "in" / "other.hdf5",
              Estimates(A=sim.truth.A.astype(np.float64).tocsc(), C=sim.truth.C.astype(np.float64),
                        idx_components=good, idx_components_bad=np.setdiff1d(np.arange(K), good),
                        dims=(64, 64)),
              None, dims=(64, 64), mmap_file="")
    outputs, _ = _run(tmp_path, sim.movie, {"gSig": (4, 4), "p": 1}, Ain_path="other.hdf5")
    res = load_cnmf(outputs["cnmf-hdf5-path"])
    assert res.estimates.A.shape[1] == len(good)
    corr = np.corrcoef(res.estimates.A.toarray().T, sim.truth.A[:, good].toarray().T)[: len(good), len(good):]
    assert np.all(corr.diagonal() > 0.9)


@pytest.mark.slow
def test_cnmfe_finds_the_simulated_neurons(tmp_path):
    sim = simulate_1p(n_frames=1000, dims=(128, 128), n_neurons=60, seed=1)
    outputs, out = _run(tmp_path, sim.movie, {"fr": 20.0, "decay_time": 0.5, "min_corr": 0.8, "min_pnr": 10.0},
                        algo="cnmfe")
    assert Path(outputs["pnr-image-path"]).name == "item_pnr.npy"
    assert np.load(outputs["pnr-image-path"]).shape == (128, 128)
    res = load_cnmf(outputs["cnmf-hdf5-path"])
    A, C = _accepted(res)
    m = match(A, C, sim.truth)
    print("cnmfe accepted:", m)
    assert m["recall"] >= 0.9 and m["precision"] >= 0.9 and m["trace_corr"] >= 0.9
    assert res.params.get("init", "method_init") == "corr_pnr"
    # nb=0: CaImAn's ring model (sparse W on the ssub_B=2 grid, full-resolution b0), and b, f
    # a low-rank summary of that same background (b[:, 0] = b0 with f[0] = 1)
    e = res.estimates
    assert sp.issparse(e.W) and e.W.shape == (64 * 64, 64 * 64) and e.b0.shape == (128 * 128,)
    assert 0 < e.W.getnnz(axis=1).max() <= len(ring_offsets(9))
    np.testing.assert_allclose(e.b[:, 0], e.b0, rtol=1e-5)
    np.testing.assert_allclose(e.f[0], 1.0)
    # the ring background is the true (slowly varying) one up to noise
    bg = sim.truth.b @ sim.truth.f + sim.truth.baseline
    model = e.b @ e.f
    assert np.corrcoef(bg.mean(1), model.mean(1))[0, 1] > 0.99


def test_schema_defaults_and_extras():
    schema = get_algorithm("cnmf").schema
    d = schema.defaults()["main"]
    assert d["K"] == 30 and d["gSig"] == (5, 5) and d["merge_thr"] == 0.8 and d["p"] == 2
    assert d["use_cnn"] is False and d["rf"] is None and d["min_SNR"] == 2.5
    assert "border_pix" in d and "del_duplicates" in d  # CaImAn's other keys pass through
    ok = schema.validate({"main": {"gSig": [3, 3]}, "refit": True, "Ain_path": None, "eval": {"min_SNR": 2}})
    assert ok["main"]["gSig"] == (3, 3) and ok["refit"] is True
    with pytest.raises(ParamError):
        schema.validate({"main": {"gsig": (3, 3)}})
    e = get_algorithm("cnmfe")
    assert e.schema.defaults()["main"]["method_init"] == "corr_pnr" and e.needs_deconvolution
    assert get_algorithm("cnmf").needs_deconvolution


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def test_movie_without_cells_gives_an_empty_valid_result(tmp_path):
    rng = np.random.default_rng(0)
    movie = 100 + rng.normal(0, 3, (300, 40, 40)).astype(np.float32)
    outputs, _ = _run(tmp_path, movie, {"gSig": (3, 3), "K": 10})
    res = load_cnmf(outputs["cnmf-hdf5-path"])
    assert outputs["n_components"] == 0 and res.estimates.A.shape == (1600, 0)
    assert np.asarray(res.estimates.C).size == 0
    with h5py.File(outputs["cnmf-hdf5-path"]) as f:
        assert "estimates" in f and "params" in f


def test_k_zero_gives_an_empty_result(tmp_path, sim2p):
    outputs, _ = _run(tmp_path, sim2p.movie[:200, :48, :48], {"gSig": (4, 4), "K": 0})
    assert outputs["n_components"] == 0
    assert load_cnmf(outputs["cnmf-hdf5-path"]).estimates.A.shape == (48 * 48, 0)


def test_gsig_larger_than_the_field_is_a_clear_error(tmp_path):
    movie = np.random.default_rng(0).normal(100, 3, (50, 20, 20)).astype(np.float32)
    with pytest.raises(ValueError, match="gSig .* larger than"):
        _run(tmp_path, movie, {"gSig": (15, 15)})


def test_nan_frames_are_a_clear_error(tmp_path):
    movie = np.ones((30, 20, 20), np.float32)
    movie[7, 3, 3] = np.nan
    with pytest.raises(ValueError, match="frame 7 .* NaN"):
        _run(tmp_path, movie, {"gSig": (3, 3)})


def test_the_c_order_memmap_is_written_in_large_chunks_and_checked_frame_by_frame(tmp_path):
    """Long movies are scattered into the memmap up to 1,024 frames at a time (far faster than
    200), within what the memory budget lets a chunk hold; each frame is still checked, and the
    summary images are those of the whole movie."""
    rng = np.random.default_rng(3)
    movie = (100 + rng.normal(0, 3, (1500, 16, 12))).astype(np.float32)
    src = tmp_path / "movie.tif"
    tifffile.imwrite(src, movie)
    assert builtin.write_chunk_frames((16, 12), 1 << 30) == 1024
    assert builtin.write_chunk_frames((512, 512), 256 * 2**20) == 256
    assert builtin.write_chunk_frames((512, 512), 1 << 20) == 200
    params = get_algorithm("cnmf").schema.validate({"main": {}})
    ctx = RunContext(input_path=src, params=params, output_dir=tmp_path / "ok", prefix="m")
    path, acc, dims, n = builtin.write_c_memmap(ctx, 1 << 30)
    Yr, _, _ = builtin.load_memmap(path)
    np.testing.assert_array_equal(np.asarray(Yr), movie.transpose(1, 2, 0).reshape(-1, 1500, order="F"))
    m64 = movie.astype(np.float64)
    np.testing.assert_allclose(acc.mean(), m64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(acc.std(), m64.std(0), rtol=1e-4)
    del Yr
    movie[1100, 5, 5] = np.inf  # in the second chunk, sixth block of 200
    tifffile.imwrite(src, movie)
    ctx = RunContext(input_path=src, params=params, output_dir=tmp_path / "bad", prefix="m")
    with pytest.raises(ValueError, match="frame 1100 .* infinite"):
        builtin.write_c_memmap(ctx, 1 << 30)
    assert not list((tmp_path / "bad").glob("*.mmap*"))  # no partial memmap left


@pytest.mark.parametrize("frames", [1500, 300], ids=["two chunks", "one chunk"])
def test_mcorrs_order_f_memmap_is_written_as_stored_with_the_same_file_and_images(tmp_path, frames):
    """mcorr's output (an order-F memmap) goes into the C-order memmap without being turned into
    images: the same file, and the same summary images (the correlation image summed over the
    transposed frames), as from the same movie in a TIFF; a bad frame is still named."""
    from mesmerize_widgets.formats.memmap import save_memmap

    rng = np.random.default_rng(4)
    movie = (100 + rng.normal(0, 3, (frames, 16, 12))).astype(np.float32)
    movie[:, 4:9, 3:7] += rng.normal(0, 5, (frames, 1, 1)).astype(np.float32)  # a correlated blob
    params = get_algorithm("cnmf").schema.validate({"main": {}})
    tif = tmp_path / "movie.tif"
    tifffile.imwrite(tif, movie)
    fmm = save_memmap(movie, tmp_path, "mc", order="F")
    got, want = {}, {}
    for src, out in ((fmm, got), (tif, want)):
        ctx = RunContext(input_path=src, params=params, output_dir=tmp_path / src.suffix[1:], prefix="m")
        path, acc, dims, n = builtin.write_c_memmap(ctx, 1 << 30)
        out["file"] = path.read_bytes()
        out.update(mean=acc.mean(), std=acc.std(), max=acc.max(), cn=acc.correlation_image())
    assert got["file"] == want["file"]
    for key in ("mean", "std", "max"):
        np.testing.assert_array_equal(got[key], want[key])
    assert got["cn"].shape == (16, 12) and got["cn"][6, 5] > 0.5
    np.testing.assert_allclose(got["cn"], want["cn"], atol=1e-6)
    movie[frames - 2, 3, 5] = np.nan
    bad = save_memmap(movie, tmp_path / "bad", "mc", order="F")
    ctx = RunContext(input_path=bad, params=params, output_dir=tmp_path / "badout", prefix="m")
    with pytest.raises(ValueError, match=f"frame {frames - 2} .* NaN"):
        builtin.write_c_memmap(ctx, 1 << 30)
    assert not list((tmp_path / "badout").glob("*.mmap*"))


@pytest.mark.parametrize("method", ["sparse_nmf", "pca_ica"])
def test_caiman_only_method_init_is_a_clear_error(tmp_path, method):
    movie = np.ones((30, 20, 20), np.float32)
    with pytest.raises(ParamError, match=f"method_init='{method}'.*'greedy_roi', 'corr_pnr'"):
        _run(tmp_path, movie, {"gSig": (3, 3), "method_init": method})
    with pytest.raises(ParamError, match="supports"):
        core.Options.from_main({"method_init": "local_nmf"})


def test_ring_weights_reproduce_a_ring_predictable_background():
    """A background that is the same on a pixel and its ring is predicted from the ring."""
    from mesmerize_widgets.algorithms.cnmf.ring import fit_ring_weights

    rng = np.random.default_rng(0)
    dims, T = (24, 20), 400
    yy, xx = np.mgrid[: dims[0], : dims[1]]
    modes = np.stack([np.ones(dims), yy / dims[0], xx / dims[1]]).reshape(3, -1, order="F")
    X = modes.T @ rng.normal(0, 1, (3, T))
    W = fit_ring_weights(X.astype(np.float32), dims, 3, tile=8)
    assert W.shape == (480, 480) and W.diagonal().max() == 0
    ring = {tuple(o) for o in ring_offsets(3)}
    r0, c0 = 10, 9
    cols = W.getrow(r0 + c0 * dims[0]).indices
    assert {(c % dims[0] - r0, c // dims[0] - c0) for c in cols} <= ring
    np.testing.assert_allclose(W @ X, X, atol=0.05 * np.abs(X).max())  # corners: few ring pixels


def test_use_cnn_is_refused_by_the_builtin_backend(tmp_path):
    movie = np.ones((30, 20, 20), np.float32)
    with pytest.raises(ValueError, match="CaImAn-only"):
        _run(tmp_path, movie, {"gSig": (3, 3), "use_cnn": True})


def test_event_exceptionality_snr_is_high_for_transients_and_low_for_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (5, 2000))
    spikes = noise.copy()
    kern = np.exp(-np.arange(30) / 8)
    for t in (200, 900, 1500):
        spikes[:, t : t + 30] += 20 * kern
    snr_noise = core.snr_from_traces(noise, 12)
    snr_spikes = core.snr_from_traces(spikes, 12)
    assert (snr_spikes > 3).all() and (snr_noise < 1.5).all()


def test_clean_footprint_keeps_what_scipys_4_connected_labelling_keeps():
    """model.clean_footprint labels with OpenCV (fast enough for OnACID's per-frame updates);
    the piece it keeps is scipy.ndimage's, which the offline fit used before."""
    import scipy.ndimage as ndi

    from mesmerize_widgets.algorithms.cnmf import model

    def by_scipy(a, dims, maxthr):
        if not np.any(a > 0):
            return np.zeros_like(a)
        img = a.reshape(dims, order="F").copy()
        img[img < maxthr * img.max()] = 0
        lab, n = ndi.label(img > 0)
        if n > 1:
            img[lab != lab[np.unravel_index(int(np.argmax(img)), dims)]] = 0
        return img.reshape(-1, order="F")

    rng = np.random.default_rng(0)
    for _ in range(300):
        dims = (int(rng.integers(1, 25)), int(rng.integers(1, 25)))
        a = rng.random(dims[0] * dims[1]) * (rng.random(dims[0] * dims[1]) < rng.uniform(0.2, 0.7))
        a -= rng.uniform(0, 0.3) * (rng.random(a.size) < 0.1)  # a few negative values
        maxthr = float(rng.choice([0.0, 0.1, 0.4]))
        np.testing.assert_array_equal(model.clean_footprint(a, dims, maxthr), by_scipy(a, dims, maxthr))
    a = rng.random(30)
    np.testing.assert_array_equal(model.clean_footprint(a, (5, 6), 0.0, extract_cc=False), a)


def test_cnmf_and_onacid_accept_by_the_same_thresholds():
    """One builder of the accept rule's thresholds: CaImAn's defaults where params lack them."""
    from mesmerize_widgets.algorithms.cnmf.evaluation import accept_thresholds
    from mesmerize_widgets.algorithms.onacid import SCHEMA as ONACID

    caiman = {"min_SNR": 2.5, "rval_thr": 0.8, "SNR_lowest": 0.5, "rval_lowest": -1}
    assert accept_thresholds({}) == caiman
    onacid_main = ONACID.validate({"main": {"min_SNR": 3.0}}, fill_defaults=True)["main"]
    assert accept_thresholds(onacid_main) == {**caiman, "min_SNR": 3.0}
    opts = core.Options.from_main({"min_SNR": 1.5, "SNR_lowest": 0.2})
    assert accept_thresholds(vars(opts)) == {**caiman, "min_SNR": 1.5, "SNR_lowest": 0.2}
    snr, rv = np.array([3.0, 1.6, 0.1, 1.0]), np.array([0.0, 0.0, 0.9, 0.85])  # 0.1: below SNR_lowest
    assert [g.tolist() for g in core.classify(snr, rv, opts)] == [[0, 1, 3], [2]]


# ------------------------------------------------------------------------------------------
# through the batch
# ------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("client")
def test_cnmf_item_after_preprocess_runs_end_to_end(batch, raw_dir):
    sim = simulate_2p(n_frames=300, dims=(64, 64), n_neurons=12, motion=None, seed=3)
    tifffile.imwrite(raw_dir / "cells.tif", sim.movie)
    pre = batch.caiman.add_item("preprocess", "x", "cells.tif", {"main": {}})
    row = batch.caiman.add_item("cnmf", "x", pre, {"main": {"gSig": (4, 4), "K": 20, "p": 1}, "refit": True})
    batch.caiman.run(progress=False)
    row = batch.iloc[1]
    assert list(batch["status"]) == ["done", "done"], row.get("error")
    outs = row["outputs"]
    for key in ("cnmf-hdf5-path", "cnmf-memmap-path", "corr-img-path", "mean-projection-path"):
        assert (Path(batch.attrs["batch_path"]) / outs[key]).exists(), key
    res = load_cnmf(Path(batch.attrs["batch_path"]) / outs["cnmf-hdf5-path"])
    assert Path(res.mmap_file) == Path(batch.attrs["batch_path"]) / outs["cnmf-memmap-path"]
    assert res.estimates.A.shape[1] >= 10


@pytest.mark.usefixtures("client")
def test_cnmf_after_a_failed_parent_fails_cleanly(batch, raw_dir):
    tifffile.imwrite(raw_dir / "small.tif", np.ones((10, 8, 8), np.float32))
    pre = batch.caiman.add_item("preprocess", "bad", "small.tif", {"main": {"crop": (0, 4, 0, 20)}})
    batch.caiman.add_item("cnmf", "child", pre, {"main": {"gSig": (2, 2)}})
    batch.caiman.run(progress=False)
    assert list(batch["status"]) == ["failed", "failed"]
    assert "parent item 'bad'" in batch.iloc[1]["error"]


# ------------------------------------------------------------------------------------------
# CaImAn backend (skipped where CaImAn is not installed)
# ------------------------------------------------------------------------------------------
@pytest.mark.caiman
def test_caiman_backend_writes_the_same_layout(tmp_path):
    sim = simulate_2p(n_frames=500, dims=(64, 64), n_neurons=15, motion=None, seed=2)
    outputs = run_caiman_backend("cnmf", sim.movie, {"main": {"gSig": (4, 4), "K": 25, "p": 1}, "refit": True},
                                 tmp_path)
    res = load_cnmf(outputs["cnmf-hdf5-path"])
    good = np.asarray(res.estimates.idx_components, int)
    m = match(res.estimates.A.toarray()[:, good], np.asarray(res.estimates.C)[good], sim.truth)
    assert m["recall"] >= 0.8


@pytest.mark.caiman
def test_caiman_cnmfe_writes_the_ring_model_and_pnr_image(tmp_path):
    sim = simulate_1p(n_frames=400, dims=(64, 64), n_neurons=15, seed=2)
    outputs = run_caiman_backend("cnmfe", sim.movie, {"main": {"fr": 20.0, "decay_time": 0.5, "ssub": 1}}, tmp_path)
    out = tmp_path / "out"
    assert np.load(outputs["pnr-image-path"]).shape == (64, 64)
    res = load_cnmf(outputs["cnmf-hdf5-path"])
    assert Path(outputs["cnmf-hdf5-path"]).parent == out and Path(res.mmap_file).parent == out
    e = res.estimates
    assert res.params.get("init", "nb") == 0 and res.params.get("init", "method_init") == "corr_pnr"
    assert sp.issparse(e.W) and e.b0.shape == (64 * 64,) and e.A.shape[1] >= 1


@pytest.mark.caiman
def test_caiman_seeded_cnmf_keeps_every_mask(tmp_path):
    sim = simulate_2p(n_frames=300, dims=(64, 64), n_neurons=12, motion=None, seed=4)
    np.save(tmp_path / "masks.npy", sim.truth.footprints() > 0.2 * sim.truth.footprints().max(axis=(1, 2), keepdims=True))
    outputs = run_caiman_backend("cnmf", sim.movie, {"main": {"gSig": (4, 4), "p": 1}, "Ain_path": "masks.npy"},
                                 tmp_path)
    res = load_cnmf(outputs["cnmf-hdf5-path"])
    m = match(res.estimates.A.toarray(), np.asarray(res.estimates.C), sim.truth)
    assert m["recall"] == 1.0 and m["K"] == 12
