"""LazyArrayRCM / RCB / Residuals against dense numpy on small random data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from mesmerize_widgets.arrays import LazyNpy
from mesmerize_widgets.arrays.reconstruction import (
    LazyArrayRCB,
    LazyArrayRCM,
    LazyArrayResiduals,
    LazyArrayRingBackground,
    ring_ssub,
    window_bounds,
)

D1, D2, K, T, NB = 9, 7, 6, 40, 2


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    A = scipy.sparse.random(D1 * D2, K, density=0.2, format="csc", random_state=2)
    C = rng.random((K, T))
    b = rng.random((D1 * D2, NB))
    f = rng.random((NB, T))
    Y = (rng.random((T, D1, D2)) * 5).astype(np.float32)
    return A, C, b, f, Y


def dense_movie(spatial, temporal):
    """(T, d1, d2) from Fortran-ordered pixels, the obvious way."""
    sp = spatial.toarray() if scipy.sparse.issparse(spatial) else spatial
    prod = sp @ temporal  # (P, T)
    return np.stack([prod[:, t].reshape((D1, D2), order="F") for t in range(prod.shape[1])])


INDEXES = [
    0, -1, 5, slice(None), slice(3, 17), slice(2, 30, 4), slice(None, None, -3),
    np.array([3, 1, 3, 39]), [0, 5], np.arange(T) % 3 == 0, (slice(1, 4), 2),
    (7, slice(2, 5), slice(None, None, 2)), (Ellipsis, 3), (np.array([2, 4]), np.array([1, 3])),
    (slice(None), 0, 0),
]  # fmt: skip


@pytest.mark.parametrize("key", INDEXES, ids=[repr(k)[:30] for k in INDEXES])
def test_rcm_rcb_residuals_every_index(data, key):
    A, C, b, f, Y = data
    rcm = LazyArrayRCM(A, C, (D1, D2))
    rcb = LazyArrayRCB(b, f, (D1, D2))
    res = LazyArrayResiduals(Y, rcm, rcb)
    M = dense_movie(A, C)
    B = dense_movie(b, f)
    for lazy, dense in ((rcm, M), (rcb, B), (res, Y - M - B)):
        assert lazy.shape == (T, D1, D2) and lazy.dtype == np.float32
        got = lazy[key]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, dense[key], rtol=1e-5, atol=1e-5)


def test_component_subset_and_temporal_replacement(data):
    A, C, *_ = data
    idx = np.array([4, 0, 2])
    rcm = LazyArrayRCM(A, C, (D1, D2), component_indices=idx)
    np.testing.assert_allclose(rcm[:], dense_movie(A[:, idx], C[idx]), rtol=1e-5, atol=1e-6)
    assert rcm.n_components == 3
    Z = (C - C.mean(1, keepdims=True)) / C.std(1, keepdims=True)
    rz = LazyArrayRCM(A, Z, (D1, D2), component_indices=idx)
    np.testing.assert_allclose(rz[10:20], dense_movie(A[:, idx], Z[idx])[10:20], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not equal"):
        LazyArrayRCM(A, C[:3], (D1, D2))
    empty = LazyArrayRCM(A, C, (D1, D2), component_indices=np.array([], dtype=int))
    assert np.all(empty[3] == 0) and empty.window(3, 4).shape == (D1, D2)


def test_dense_spatial_and_lazy_movie(data, tmp_path):
    A, C, b, f, Y = data
    np.save(tmp_path / "y.npy", Y)
    lazyY = LazyNpy(tmp_path / "y.npy")
    rcm = LazyArrayRCM(A.toarray(), C, (D1, D2))
    res = LazyArrayResiduals(lazyY, rcm, LazyArrayRCB(b, f, (D1, D2)))
    np.testing.assert_allclose(res[5:9], (Y - dense_movie(A, C) - dense_movie(b, f))[5:9], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res[[1, 7]], (Y - dense_movie(A, C) - dense_movie(b, f))[[1, 7]], rtol=1e-5, atol=1e-5)


def test_window_bounds():
    assert window_bounds(10, 5, 100) == (8, 13)
    assert window_bounds(10, 4, 100) == (8, 12)
    assert window_bounds(0, 5, 100) == (0, 3)
    assert window_bounds(99, 10, 100) == (94, 100)
    assert window_bounds(0, 5, 100, "shift") == (0, 5)
    assert window_bounds(99, 10, 100, "shift") == (90, 100)
    assert window_bounds(3, 1000, 100, "shift") == (0, 100)
    with pytest.raises(IndexError):
        window_bounds(100, 3, 100)
    with pytest.raises(ValueError):
        window_bounds(1, 0, 100)


FUNCS = ["mean", "max", "min", "std", "median", lambda x, axis: np.percentile(x, 90, axis=axis)]


@pytest.mark.parametrize("func", FUNCS, ids=["mean", "max", "min", "std", "median", "p90"])
@pytest.mark.parametrize("t,size,edge", [(0, 5, "clip"), (1, 10, "clip"), (20, 10, "clip"),
                                          (20, 7, "clip"), (39, 6, "clip"), (39, 6, "shift"),
                                          (0, 4, "shift"), (15, 1, "clip"), (10, 100, "clip")])
def test_windows_exact(data, func, t, size, edge):
    A, C, b, f, Y = data
    M, B = dense_movie(A, C), dense_movie(b, f)
    start, stop = window_bounds(t, size, T, edge)
    ref_fn = {"mean": np.mean, "max": np.max, "min": np.min, "std": np.std, "median": np.median}
    fn = ref_fn[func] if isinstance(func, str) else func
    idx = np.array([1, 3, 5])
    sub = dense_movie(A[:, idx], C[idx])
    cases = [
        (LazyArrayRCM(A, C, (D1, D2)), M),
        (LazyArrayRCM(A, C, (D1, D2), component_indices=idx), sub),
        (LazyArrayRCB(b, f, (D1, D2)), B),
        (LazyArrayResiduals(Y, LazyArrayRCM(A, C, (D1, D2)), LazyArrayRCB(b, f, (D1, D2))), Y - M - B),
    ]
    for lazy, dense in cases:
        got = lazy.window(t, size, func, edge=edge)
        assert got.shape == (D1, D2) and got.dtype == np.float32
        np.testing.assert_allclose(got, fn(dense[start:stop], axis=0), rtol=1e-5, atol=1e-5)


def test_projection_images(data):
    A, C, b, f, Y = data
    M, B = dense_movie(A, C), dense_movie(b, f)
    rcm = LazyArrayRCM(A, C, (D1, D2))
    res = LazyArrayResiduals(Y, rcm, LazyArrayRCB(b, f, (D1, D2)))
    for lazy, dense in ((rcm, M), (res, Y - M - B)):
        np.testing.assert_allclose(lazy.mean_image, dense.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lazy.max_image, dense.max(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lazy.min_image, dense.min(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lazy.std_image, dense.std(0), rtol=1e-4, atol=1e-5)
        assert lazy.std_image is lazy.std_image  # computed once


def test_projection_streams_in_chunks(data, monkeypatch):
    """Small chunks give the same images: streaming, never the whole movie at once."""
    import mesmerize_widgets.arrays.reconstruction as rec

    A, C, *_ = data
    monkeypatch.setattr(rec, "_CHUNK_ELEMENTS", 3 * D1 * D2)
    rcm = LazyArrayRCM(A, C, (D1, D2))
    calls = []
    orig = rcm._read_range
    rcm._read_range = lambda a, b: (calls.append(b - a), orig(a, b))[1]
    M = dense_movie(A, C)
    np.testing.assert_allclose(rcm.std_image, M.std(0), rtol=1e-4, atol=1e-5)
    assert max(calls) <= 3


def test_bad_inputs(data):
    A, C, b, f, Y = data
    with pytest.raises(ValueError, match="expected"):
        LazyArrayRCM(A, C, (D1 + 1, D2))
    with pytest.raises(ValueError, match="does not match"):
        LazyArrayResiduals(Y[:-1], LazyArrayRCM(A, C, (D1, D2)), None)
    with pytest.raises(ValueError, match="needs both"):
        LazyArrayRCB(None, f, (D1, D2))
    with pytest.raises(IndexError):
        LazyArrayRCM(A, C, (D1, D2))[T]
    with pytest.raises(ValueError, match="window func"):
        LazyArrayRCM(A, C, (D1, D2)).window(3, 3, "sum")
    # no background: residuals are Y - A C
    res = LazyArrayResiduals(Y, LazyArrayRCM(A, C, (D1, D2)), None)
    np.testing.assert_allclose(res[4], (Y - dense_movie(A, C))[4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.window(4, 3), (Y - dense_movie(A, C))[3:6].mean(0), rtol=1e-5, atol=1e-5)


# -- CNMF-E's ring model (nb=0) ----------------------------------------------------------------------
def ring_dense(W, b0, A, C, Y, s):
    """CaImAn's formula with explicit matrices: b0 + U W D (Y - A C - b0), pixels in Fortran order."""
    d1s, d2s = (D1 - 1) // s + 1, (D2 - 1) // s + 1
    P = D1 * D2
    block = np.array([(p % D1) // s + ((p // D1) // s) * d1s for p in range(P)])
    U = np.zeros((P, d1s * d2s))
    U[np.arange(P), block] = 1.0  # repeat each grid value over its block
    D = U.T / U.sum(0)[:, None]  # block means (partial edge blocks: mean of the pixels they have)
    Yr = Y.transpose(1, 2, 0).reshape(P, -1, order="F").astype(np.float64)
    X = Yr - A.toarray() @ C - b0[:, None]
    B = b0[:, None] + U @ (W.toarray() @ (D @ X))
    return B.reshape(D1, D2, -1, order="F").transpose(2, 0, 1)


def ring_data(s, seed=5):
    rng = np.random.default_rng(seed)
    n_ds = ((D1 - 1) // s + 1) * ((D2 - 1) // s + 1)
    W = scipy.sparse.random(n_ds, n_ds, density=0.3, format="csr", random_state=seed) * 0.2
    b0 = rng.random(D1 * D2) * 3 + 1
    return W, b0


@pytest.mark.parametrize("s", [1, 2, 3, 4])
@pytest.mark.parametrize("key", INDEXES, ids=[repr(k)[:30] for k in INDEXES])
def test_ring_background_every_index(data, s, key):
    A, C, _, _, Y = data
    W, b0 = ring_data(s)
    rcm = LazyArrayRCM(A, C, (D1, D2))
    bg = LazyArrayRingBackground(W, b0, Y, rcm)
    assert bg.ssub == s and bg.shape == (T, D1, D2) and bg.dtype == np.float32
    B = ring_dense(W, b0, A, C, Y, s)
    M = dense_movie(A, C)
    got = bg[key]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, B[key], rtol=1e-5, atol=1e-5)
    # residuals: fused (same movie and rcm objects) and through the background's own reads
    for res in (LazyArrayResiduals(Y, rcm, bg), LazyArrayResiduals(Y.copy(), LazyArrayRCM(A, C, (D1, D2)), bg)):
        np.testing.assert_allclose(res[key], (Y - M - B)[key], rtol=1e-5, atol=1e-5)
    assert LazyArrayResiduals(Y, rcm, bg)._ring is bg


@pytest.mark.parametrize("func", FUNCS, ids=["mean", "max", "min", "std", "median", "p90"])
@pytest.mark.parametrize("t,size,edge", [(0, 5, "clip"), (20, 10, "clip"), (20, 7, "clip"),
                                          (39, 6, "shift"), (15, 1, "clip"), (10, 100, "clip")])
def test_ring_windows_exact(data, func, t, size, edge):
    A, C, _, _, Y = data
    W, b0 = ring_data(2)
    rcm = LazyArrayRCM(A, C, (D1, D2))
    bg = LazyArrayRingBackground(W, b0, Y, rcm, ssub=2)
    B, M = ring_dense(W, b0, A, C, Y, 2), dense_movie(A, C)
    start, stop = window_bounds(t, size, T, edge)
    ref_fn = {"mean": np.mean, "max": np.max, "min": np.min, "std": np.std, "median": np.median}
    fn = ref_fn[func] if isinstance(func, str) else func
    cases = [(bg, B), (LazyArrayResiduals(Y, rcm, bg), Y - M - B),
             (LazyArrayResiduals(Y.copy(), LazyArrayRCM(A, C, (D1, D2)), bg), Y - M - B)]
    for lazy, dense in cases:
        got = lazy.window(t, size, func, edge=edge)
        assert got.shape == (D1, D2) and got.dtype == np.float32
        np.testing.assert_allclose(got, fn(dense[start:stop], axis=0), rtol=1e-5, atol=1e-5)


def test_ring_projections_and_lazy_reads(data, tmp_path):
    A, C, _, _, Y = data
    W, b0 = ring_data(3)
    np.save(tmp_path / "y.npy", Y)
    lazyY = LazyNpy(tmp_path / "y.npy")
    rcm = LazyArrayRCM(A, C, (D1, D2))
    bg = LazyArrayRingBackground(W, b0, lazyY, rcm)
    B, M = ring_dense(W, b0, A, C, Y, 3), dense_movie(A, C)
    res = LazyArrayResiduals(lazyY, rcm, bg)
    for lazy, dense in ((bg, B), (res, Y - M - B)):
        np.testing.assert_allclose(lazy.mean_image, dense.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lazy.max_image, dense.max(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lazy.std_image, dense.std(0), rtol=1e-4, atol=1e-5)
    # a frame reads only that frame of the movie
    seen = []
    orig = lazyY._read_frames
    lazyY._read_frames = lambda idx: (seen.append(list(idx)), orig(idx))[1]
    np.testing.assert_allclose(bg[[4, 30]], B[[4, 30]], rtol=1e-5, atol=1e-5)
    assert seen == [[4, 30]]


def test_ring_ssub_and_bad_inputs(data):
    A, C, _, _, Y = data
    assert ring_ssub((D1, D2), 5 * 4) == 2 and ring_ssub((D1, D2), 3 * 3) == 3
    assert ring_ssub((D1, D2), D1 * D2) == 1
    # 10 rows: ssub 5 and 6 both give 2 blocks; the hint picks, CaImAn's rule otherwise
    assert ring_ssub((10, 1), 2, hint=6) == 6 and ring_ssub((10, 1), 2) == 5
    with pytest.raises(ValueError, match="no downsampling factor"):
        ring_ssub((D1, D2), 7)
    W, b0 = ring_data(2)
    rcm = LazyArrayRCM(A, C, (D1, D2))
    with pytest.raises(ValueError, match="does not give"):
        LazyArrayRingBackground(W, b0, Y, rcm, ssub=3)
    with pytest.raises(ValueError, match="b0 has"):
        LazyArrayRingBackground(W, b0[:-1], Y, rcm)
    with pytest.raises(ValueError, match="sparse"):
        LazyArrayRingBackground(W.toarray(), b0, Y, rcm)
    with pytest.raises(ValueError, match="does not match"):
        LazyArrayRingBackground(W, b0, Y[:-1], rcm)
