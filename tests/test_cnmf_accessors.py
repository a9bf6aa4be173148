"""``row.cnmf`` on real outputs built from a simulated movie's ground truth (no CNMF run)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.ndimage
import tifffile

import mesmerize_widgets as mw
from mesmerize_widgets.accessors import cnmf as cnmf_acc
from mesmerize_widgets.algorithms.caiman_env import caiman_installed
from mesmerize_widgets.algorithms.cnmf.dfof import mode_percentile
from mesmerize_widgets.formats.cnmf_hdf5 import CNMFResult, Estimates, load_cnmf, save_cnmf
from mesmerize_widgets.formats.memmap import save_memmap
from mesmerize_widgets.sim import simulate_2p
from mesmerize_widgets.store import BatchStore

DIMS = (48, 40)
T = 150
K = 8
SNR = np.array([0.3, 1.0, 2.0, 3.0, 4.0, 6.0, 0.8, 5.0])
RVAL = np.array([0.9, 0.95, 0.5, 0.1, -0.9, 0.85, 0.2, 0.99])


@pytest.fixture(scope="module")
def sim():
    return simulate_2p(n_frames=T, dims=DIMS, n_neurons=K, motion=None, seed=3, noise=2.0)


def accept(snr, r, q):
    """CaImAn's rule written out plainly (no CNN, no ecc)."""
    good = [
        i for i in range(len(snr))
        if (r[i] >= q["rval_thr"] or snr[i] > q["min_SNR"])
        and not (r[i] <= q["rval_lowest"] or snr[i] <= q["SNR_lowest"])
    ]  # fmt: skip
    return np.array(good, dtype=int)


def make_item(batch, raw_dir: Path, sim, *, algo: str = "cnmf", status: str = "done"):
    """A done cnmf item whose outputs are real files written from the ground truth."""
    path = Path(batch.attrs["batch_path"])
    store = BatchStore(path)
    movie = np.asarray(sim.movie, dtype=np.float32)
    tifffile.imwrite(raw_dir / "sim.tif", movie)
    rec = store.add(algo=algo, item_name="sim", params={"main": {"p": 1}}, input_root="raw",
                    input_movie_path="sim.tif")
    uuid = rec["uuid"]
    out_dir = store.item_dir(uuid)
    out_dir.mkdir(parents=True)
    mmap = save_memmap(movie, out_dir, f"{uuid}_cnmf-memmap_", order="C")
    tr = sim.truth
    rng = np.random.default_rng(0)
    q = {"min_SNR": 2.5, "rval_thr": 0.8, "SNR_lowest": 0.5, "rval_lowest": -1, "use_cnn": False}
    good = accept(SNR, RVAL, q)
    est = Estimates(
        A=tr.A.astype(np.float64).tocsc(),
        C=tr.C.astype(np.float64),
        S=tr.S.astype(np.float64),
        b=tr.b.astype(np.float64),
        f=tr.f.astype(np.float64),
        YrA=rng.normal(0, 1, (K, T)),
        SNR_comp=SNR,
        r_values=RVAL,
        cnn_preds=np.array([]),
        idx_components=good,
        idx_components_bad=np.setdiff1d(np.arange(K), good),
        dims=DIMS,
    )
    save_cnmf(out_dir / f"{uuid}.hdf5", est, {"quality": q, "init": {"K": K}}, dims=DIMS,
              mmap_file=str(mmap))
    for name in ("mean", "std", "max"):
        np.save(out_dir / f"{uuid}_{name}_projection.npy", getattr(movie, name)(0))
    np.save(out_dir / f"{uuid}_cn.npy", np.zeros(DIMS, dtype=np.float32))
    outputs = {
        "success": True, "traceback": None,
        "cnmf-hdf5-path": f"{uuid}/{uuid}.hdf5",
        "cnmf-memmap-path": f"{uuid}/{mmap.name}",
        "corr-img-path": f"{uuid}/{uuid}_cn.npy",
        **{f"{n}-projection-path": f"{uuid}/{uuid}_{n}_projection.npy" for n in ("mean", "std", "max")},
    }  # fmt: skip
    store.update(uuid, status=status, outputs=outputs)
    df = mw.load_batch(path)
    return df, df.iloc[-1], est, store


@pytest.fixture
def item(batch, raw_dir, sim):
    cnmf_acc.clear_cache()
    return make_item(batch, raw_dir, sim)


def frame_of(vec, dims=DIMS):
    return np.asarray(vec).reshape(dims, order="F")


def test_output_and_paths(item, sim):
    df, row, est, store = item
    path = row.cnmf.get_output_path()
    assert path.name == f"{row['uuid']}.hdf5" and path.is_file()
    out = row.cnmf.get_output()
    # CaImAn's own CNMF object (read by its load_CNMF) where CaImAn is installed, else ours:
    # notebooks use the same attribute paths on either
    assert isinstance(out, CNMFResult) != caiman_installed()
    assert tuple(out.dims) == DIMS and out.estimates.A.shape == (DIMS[0] * DIMS[1], K)
    np.testing.assert_array_equal(out.estimates.C, est.C)
    assert out.params.quality["min_SNR"] == 2.5
    out.estimates.C[:] = 0  # a copy: the cache is unaffected
    assert row.cnmf.get_output().estimates.C.any()
    mm = row.cnmf.get_cnmf_memmap()
    assert mm.shape == (T, *DIMS)
    np.testing.assert_array_equal(mm[5], np.asarray(sim.movie[5], dtype=np.float32))
    assert row.cnmf.get_n_components() == K
    good = accept(SNR, RVAL, {"min_SNR": 2.5, "rval_thr": 0.8, "SNR_lowest": 0.5, "rval_lowest": -1})
    np.testing.assert_array_equal(row.cnmf.get_good_components(), good)
    np.testing.assert_array_equal(row.cnmf.get_bad_components(), np.setdiff1d(np.arange(K), good))
    # the summary images through the caiman accessor still work on this item
    assert row.caiman.get_projection("mean").shape == DIMS


def test_masks(item):
    _, row, est, _ = item
    masks = row.cnmf.get_masks()
    assert masks.shape == (*DIMS, K) and masks.dtype == bool
    dense = est.A.toarray()
    for k in range(K):
        np.testing.assert_array_equal(masks[:, :, k], frame_of(dense[:, k]) >= 0.01)
    m2 = row.cnmf.get_masks(np.array([3, 1]), threshold=0.05)
    np.testing.assert_array_equal(m2[:, :, 0], frame_of(dense[:, 3]) >= 0.05)
    np.testing.assert_array_equal(m2[:, :, 1], frame_of(dense[:, 1]) >= 0.05)
    good = row.cnmf.get_masks("good")
    assert good.shape[2] == len(row.cnmf.get_good_components())
    assert row.cnmf.get_masks("bad").shape[2] == K - good.shape[2]
    masks[:] = False  # copies
    assert row.cnmf.get_masks().any()


def test_contours(item, sim):
    _, row, _, _ = item
    coords, coms = row.cnmf.get_contours()
    assert len(coords) == len(coms) == K
    centers = sim.truth.centers  # [row, col]
    for k in range(K):
        c = coords[k]
        assert c.ndim == 2 and c.shape[1] == 2 and np.isnan(c[0]).all()
        # swap_dim=True (mesmerize-core's default): points are (row, col)
        assert np.linalg.norm(coms[k] - centers[k]) < 1.5, (k, coms[k], centers[k])
        pts = c[~np.isnan(c[:, 0])]
        assert pts[:, 0].max() < DIMS[0] and pts[:, 1].max() < DIMS[1]
    coords_f, coms_f = row.cnmf.get_contours(swap_dim=False)
    for k in range(K):
        np.testing.assert_allclose(coms_f[k], coms[k][::-1])
        np.testing.assert_allclose(coords_f[k], coords[k][:, ::-1])
    sub, sub_coms = row.cnmf.get_contours(np.array([2]))
    np.testing.assert_allclose(sub[0], coords[2])


def test_temporal(item):
    _, row, est, _ = item
    np.testing.assert_allclose(row.cnmf.get_temporal(), est.C)
    idx = np.array([5, 0])
    bg = (est.A.toarray().T @ est.b @ est.f)[idx]
    np.testing.assert_allclose(row.cnmf.get_temporal(idx, add_background=True), est.C[idx] + bg, rtol=1e-10)
    np.testing.assert_allclose(
        row.cnmf.get_temporal(idx, add_background=True, add_residuals=True),
        est.C[idx] + bg + est.YrA[idx], rtol=1e-10,
    )
    np.testing.assert_allclose(row.cnmf.get_temporal("good", add_residuals=True),
                               (est.C + est.YrA)[est.idx_components])
    with pytest.raises(ValueError, match="component_indices"):
        row.cnmf.get_temporal("some")


def test_reconstructions(item, sim):
    _, row, est, _ = item
    A = est.A.toarray()
    rcm = row.cnmf.get_rcm()
    assert rcm.shape == (T, *DIMS) and rcm.dtype == np.float32
    for t in (0, 17, T - 1):
        np.testing.assert_allclose(rcm[t], frame_of(A @ est.C[:, t]), rtol=1e-5, atol=1e-4)
    good = row.cnmf.get_good_components()
    rg = row.cnmf.get_rcm("good")
    np.testing.assert_allclose(rg[9], frame_of(A[:, good] @ est.C[good, 9]), rtol=1e-5, atol=1e-4)
    Z = est.C * 2.0
    rz = row.cnmf.get_rcm(np.array([1, 2]), temporal_components=Z)
    np.testing.assert_allclose(rz[3], frame_of(A[:, [1, 2]] @ Z[[1, 2], 3]), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="one row per"):
        row.cnmf.get_rcm(temporal_components=Z[:3])
    rcb = row.cnmf.get_rcb()
    np.testing.assert_allclose(rcb[4], frame_of(est.b @ est.f[:, 4]), rtol=1e-5, atol=1e-3)
    res = row.cnmf.get_residuals()
    Y = np.asarray(sim.movie, dtype=np.float64)
    for t in (2, 77):
        expect = Y[t] - frame_of(A @ est.C[:, t]) - frame_of(est.b @ est.f[:, t])
        np.testing.assert_allclose(res[t], expect, rtol=1e-5, atol=2e-3)
    # the windowed mean is exact
    expect = (Y[10:20] - np.stack([frame_of(A @ est.C[:, t] + est.b @ est.f[:, t]) for t in range(10, 20)])).mean(0)
    np.testing.assert_allclose(res.window(15, 10), expect, rtol=1e-5, atol=2e-3)
    assert row.cnmf.get_rcm() is rcm  # cached lazy arrays


def ring_background_dense(W, b0, A, C, Y, s, dims=DIMS):
    """CaImAn's ring background b0 + U W D (Y - A C - b0) with explicit matrices (Fortran pixels)."""
    d1, d2 = dims
    d1s = (d1 - 1) // s + 1
    P = d1 * d2
    p = np.arange(P)
    U = np.zeros((P, W.shape[0]))
    U[p, (p % d1) // s + ((p // d1) // s) * d1s] = 1.0
    D = U.T / U.sum(0)[:, None]
    Yr = Y.transpose(1, 2, 0).reshape(P, -1, order="F")
    B = b0[:, None] + U @ (W.toarray() @ (D @ (Yr - A.toarray() @ C - b0[:, None])))
    return B.reshape(d1, d2, -1, order="F").transpose(2, 0, 1)


def test_ring_background_of_cnmfe_output(batch, raw_dir, sim):
    """A CaImAn-shaped CNMF-E result (nb=0: W, b0, empty b and f): rcb and residuals use the ring."""
    from mesmerize_widgets.algorithms.cnmf.ring import decimation_matrix, ds_dims, fit_ring_weights
    from mesmerize_widgets.arrays.reconstruction import LazyArrayRingBackground

    cnmf_acc.clear_cache()
    _, row, est, _ = make_item(batch, raw_dir, sim, algo="cnmfe")
    Y = np.asarray(sim.movie, dtype=np.float64)
    P = DIMS[0] * DIMS[1]
    Yr = Y.transpose(1, 2, 0).reshape(P, T, order="F")
    A = est.A
    b0 = (Yr.mean(1) - A @ est.C.mean(1)).astype(np.float32)
    Dm = decimation_matrix(DIMS, 2)
    X = Dm @ (Yr - A @ est.C - b0[:, None])
    W = fit_ring_weights(X, ds_dims(DIMS, 2), radius=5).astype(np.float32)
    ring_est = dataclasses.replace(
        est, b=np.zeros((P, 0), np.float32), f=np.zeros((0, T), np.float32), W=W, b0=b0
    )
    params = {"init": {"K": K, "nb": 0, "ssub_B": 2, "center_psf": True, "method_init": "corr_pnr",
                       "ring_size_factor": 1.4}}
    path = row.cnmf.get_output_path()
    save_cnmf(path, ring_est, params, dims=DIMS, mmap_file=str(row.cnmf.get_cnmf_memmap().path))
    cnmf_acc.clear_cache()
    with h5py.File(path, "r") as f:  # stored as CaImAn stores them
        assert f["estimates/b"].shape == (P, 0) and f["estimates/f"].shape == (0, T)
        assert tuple(f["estimates/W/shape"][()]) == (P // 4, P // 4)

    rcb = row.cnmf.get_rcb()
    assert isinstance(rcb, LazyArrayRingBackground) and rcb.ssub == 2
    assert rcb.shape == (T, *DIMS) and rcb.dtype == np.float32
    B = ring_background_dense(W, b0.astype(np.float64), A, est.C, Y, 2)
    M = np.stack([frame_of(A @ est.C[:, t]) for t in range(T)])
    scale = np.abs(B).max()
    for key in (0, 77, T - 1, slice(10, 14), [3, 90, 5]):
        np.testing.assert_allclose(rcb[key], B[key], rtol=0, atol=2e-5 * scale)
    res = row.cnmf.get_residuals()
    assert res.rcb is rcb
    for key in (2, 120, slice(40, 43)):
        np.testing.assert_allclose(res[key], (Y - M - B)[key], rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(rcb.window(50, 9), B[46:55].mean(0), rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(res.window(50, 9), (Y - M - B)[46:55].mean(0), rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(res.window(0, 4, "max"), (Y - M - B)[0:2].max(0), rtol=0, atol=2e-5 * scale)
    # the background is not the zeros of the empty b ⊗ f: it holds most of the movie
    assert np.abs(res[5]).mean() < 0.2 * np.abs(Y[5] - M[5]).mean()


def test_detrend_dfof(item):
    _, row, est, _ = item
    with pytest.raises(AttributeError, match="run_detrend_dfof"):
        row.cnmf.get_detrend_dfof()
    # fixed quantile over a running window: compare with a plain numpy running rank filter
    row.cnmf.run_detrend_dfof(quantileMin=8, frames_window=50, flag_auto=False)
    got = row.cnmf.get_detrend_dfof()
    A = est.A.toarray()
    nA = np.sqrt((A**2).sum(0))
    F = nA[:, None] * (est.C + est.YrA)
    B = (A / nA).T @ est.b @ est.f

    def running(x, q, w):
        pad = np.pad(x, (w // 2, w - w // 2 - 1), mode="symmetric")
        win = np.lib.stride_tricks.sliding_window_view(pad, w)
        return np.sort(win, axis=1)[:, int(w * q / 100)]

    F0 = np.stack([running(x, 8, 50) for x in F])
    B0 = np.stack([running(x, 8, 50) for x in B])
    np.testing.assert_allclose(got, (F - F0) / (B0 + F0), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(row.cnmf.get_detrend_dfof(np.array([4])), got[[4]])
    # window longer than the movie: one percentile per trace; detrend_only
    row.cnmf.run_detrend_dfof(quantileMin=20, frames_window=10_000, flag_auto=False, detrend_only=True,
                              use_residuals=False)
    F = nA[:, None] * est.C
    np.testing.assert_allclose(row.cnmf.get_detrend_dfof(), F - np.percentile(F, 20, axis=1)[:, None])
    # the default (automatic quantile) runs and is finite
    row.cnmf.run_detrend_dfof()
    assert np.isfinite(row.cnmf.get_detrend_dfof()).all()
    row.cnmf.run_detrend_dfof(frames_window=30, use_fast=True)
    assert row.cnmf.get_detrend_dfof().shape == (K, T)


def test_mode_percentile():
    rng = np.random.default_rng(0)
    assert abs(mode_percentile(rng.normal(size=50_000)) - 50) < 5
    # a baseline with sparse positive transients peaks at a low percentile
    skewed = np.concatenate([rng.normal(size=3000), rng.exponential(8, 2000) + 2])
    assert mode_percentile(skewed) < 45
    assert mode_percentile(np.ones(10)) == 50.0


def test_run_eval(item):
    df, row, est, store = item
    path = row.cnmf.get_output_path()
    inode = path.stat().st_ino
    before_good = row.cnmf.get_good_components()
    with h5py.File(path, "r") as old_reader:
        q = {"min_SNR": 4.5, "rval_thr": 0.92, "SNR_lowest": 0.5, "rval_lowest": -1}
        row.cnmf.run_eval({"min_SNR": 4.5, "rval_thr": 0.92})
        # an open reader of the old version is unaffected
        np.testing.assert_array_equal(old_reader["estimates/idx_components"][()], before_good)
    assert path.stat().st_ino != inode
    new_good = accept(SNR, RVAL, q)
    assert not np.array_equal(new_good, before_good)
    np.testing.assert_array_equal(row.cnmf.get_good_components(), new_good)
    np.testing.assert_array_equal(row.cnmf.get_bad_components(), np.setdiff1d(np.arange(K), new_good))
    assert row.cnmf.get_masks("good").shape[2] == len(new_good)
    on_disk = load_cnmf(path)
    assert on_disk.params.quality["min_SNR"] == 4.5 and on_disk.params.quality["rval_thr"] == 0.92
    np.testing.assert_array_equal(on_disk.estimates.C, est.C)  # everything else kept
    assert store.get(row["uuid"])["params"] == {"main": {"p": 1}, "eval": {"min_SNR": 4.5, "rval_thr": 0.92}}
    assert row["params"]["eval"] == {"min_SNR": 4.5, "rval_thr": 0.92}
    # loosen: more components
    row.cnmf.run_eval({"min_SNR": 0.9, "rval_thr": 0.0, "SNR_lowest": 0.1, "rval_lowest": -0.95})
    loose = accept(SNR, RVAL, {"min_SNR": 0.9, "rval_thr": 0.0, "SNR_lowest": 0.1, "rval_lowest": -0.95})
    np.testing.assert_array_equal(row.cnmf.get_good_components(), loose)
    assert len(loose) > len(new_good)
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(KeyError, match="merge_thr"):
        row.cnmf.run_eval({"merge_thr": 0.5})
    with pytest.raises(ValueError, match="CaImAn-only"):
        row.cnmf.run_eval({"use_cnn": True})
    # with stored CNN predictions the CNN thresholds take part
    res = load_cnmf(path)
    preds = np.array([0.95, 0.05, 0.5, 0.5, 0.99, 0.5, 0.5, 0.5])
    save_cnmf(path, dataclasses.replace(res.estimates, cnn_preds=preds), res.params, dims=DIMS,
              mmap_file=res.mmap_file)
    row.cnmf.run_eval({"use_cnn": True, "min_cnn_thr": 0.9, "cnn_lowest": 0.1, "min_SNR": 100,
                       "rval_thr": 2, "SNR_lowest": 0.1, "rval_lowest": -0.95})
    # accepted only through the CNN (0 and 4); 1 is rejected by cnn_lowest
    np.testing.assert_array_equal(row.cnmf.get_good_components(), [0, 4])

def test_cache_is_invalidated_by_new_file_versions(item, monkeypatch):
    _, row, est, _ = item
    calls = []
    real = cnmf_acc.load_cnmf
    monkeypatch.setattr(cnmf_acc, "load_cnmf", lambda p: (calls.append(p), real(p))[1])
    row.cnmf.get_temporal()
    row.cnmf.get_masks()
    row.cnmf.get_good_components()
    assert len(calls) == 1  # loaded once, then served from the cache
    path = row.cnmf.get_output_path()
    res = real(path)
    save_cnmf(path, dataclasses.replace(res.estimates, C=res.estimates.C * 3), res.params,
              dims=DIMS, mmap_file=res.mmap_file)
    np.testing.assert_allclose(row.cnmf.get_temporal(), est.C * 3)
    assert len(calls) == 2


def test_errors_name_the_item(batch, raw_dir, sim):
    cnmf_acc.clear_cache()
    _, row, _, store = make_item(batch, raw_dir, sim, status="failed")
    with pytest.raises(ValueError, match=r"'sim'.*'failed'"):
        row.cnmf.get_temporal()
    rec = store.add(algo="mcorr", item_name="mc", params={"main": {}}, input_root="raw",
                    input_movie_path="sim.tif")
    store.update(rec["uuid"], status="done", outputs={"success": True})
    df = mw.load_batch(store.path)
    with pytest.raises(ValueError, match=r"'mc'.*'mcorr' item, not cnmf"):
        df.iloc[-1].cnmf.get_output()


def test_row_detrend_matches_scipy_percentile_filter(item):
    """Our numpy reference above is scipy's percentile_filter (guards the reference itself)."""
    x = np.random.default_rng(1).normal(size=200)
    w = 50
    pad = np.pad(x, (w // 2, w - w // 2 - 1), mode="symmetric")
    ref = np.sort(np.lib.stride_tricks.sliding_window_view(pad, w), axis=1)[:, int(w * 8 / 100)]
    np.testing.assert_array_equal(ref, scipy.ndimage.percentile_filter(x, 8, w))
