"""CNMF's sparse footprints and fast paths give what the dense (pixels x K) products and the
reference numpy/scipy functions gave."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp

from mesmerize_widgets.algorithms.cnmf import core, footprints, model

DIMS = (40, 36)


def _blobs(rng: np.random.Generator, K: int, dims: tuple[int, int] = DIMS,
           centres: list[tuple[float, float]] | None = None) -> np.ndarray:
    """(P, K) nonnegative footprints: Gaussian blobs cut at a radius, Fortran pixel order,
    close enough together that some overlap."""
    yy, xx = np.mgrid[: dims[0], : dims[1]]
    A = np.zeros((dims[0] * dims[1], K))
    for k in range(K):
        cy, cx = centres[k] if centres else (rng.uniform(4, dims[0] - 4), rng.uniform(4, dims[1] - 4))
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        img = np.exp(-d2 / 8) * (d2 < 16) * rng.uniform(0.5, 2)
        A[:, k] = img.reshape(-1, order="F")
    return A


def _movie(rng: np.random.Generator, A: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    C = np.maximum(rng.standard_normal((A.shape[1], T)), 0) * 5
    Y = A @ C + 10 + rng.standard_normal((A.shape[0], T))
    return Y.astype(np.float32), C


def test_sparse_movie_products_equal_the_dense_ones():
    rng = np.random.default_rng(0)
    A = _blobs(rng, 12)
    Y, _ = _movie(rng, A, 300)
    b = rng.uniform(0, 1, (A.shape[0], 2))
    mov = model.Movie(Y)
    mov.blocks = model.pixel_blocks(mov.P, mov.T, 50 * mov.T)  # several blocks, footprints across them
    dense = mov.AtY(np.hstack([A, b]))
    np.testing.assert_allclose(mov.AtY_sparse(sp.csc_matrix(A), b), dense, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(mov.AtY_sparse(sp.csc_matrix(A), b[:, :0]), dense[:12], rtol=1e-5, atol=1e-3)
    C = rng.uniform(0, 1, (14, 300))
    full = Y @ C.T.astype(np.float32)  # the dense product, every pixel and trace
    idx = [np.flatnonzero(A[:, k] > 0) for k in range(12)] + [np.zeros(0, int)]
    U, Ub = mov.YCt_support(C[:13], idx, C[13:])
    for k in range(13):
        np.testing.assert_allclose(U[k], full[idx[k], k], rtol=1e-5)
    np.testing.assert_allclose(Ub, full[:, 13:], rtol=1e-5)


def test_support_index_equals_the_whole_field_dilation():
    rng = np.random.default_rng(1)
    A = _blobs(rng, 10)
    A[:, 3] = 0  # an empty footprint has no support
    A[: DIMS[0], 4] = 1.0  # one touching the field's edge, flat (ties for its brightest pixel)
    cross = ndi.generate_binary_structure(2, 1)
    idx = footprints.support_index(A, DIMS, 2, 5.0)
    for k in range(A.shape[1]):
        img = A[:, k].reshape(DIMS, order="F")
        want = ndi.binary_dilation(img > 0, cross, iterations=2) if img.any() else np.zeros(DIMS, bool)
        if img.any():
            pi, pj = np.unravel_index(int(np.argmax(img)), DIMS)
            yy, xx = np.ogrid[: DIMS[0], : DIMS[1]]
            want &= (yy - pi) ** 2 + (xx - pj) ** 2 <= 25
        np.testing.assert_array_equal(idx[k], np.flatnonzero(want.reshape(-1, order="F")))


def _dense_hals(mov, A, C, b, f, dims, opts, n_outer=3, n_inner=3):
    """The dense HALS the sparse one replaced: every product over all pixels and components."""
    K, nb = A.shape[1], b.shape[1]
    radius = max(1, int(round(np.mean(opts.gSig) / 2)))
    Ab, Cf = np.hstack([A, b]).astype(np.float64), np.vstack([C, f]).astype(np.float64)
    for _ in range(n_outer):
        AtY, AtA = mov.AtY(Ab), Ab.T @ Ab
        for _ in range(n_inner):
            for k in range(K + nb):
                if AtA[k, k] > 0:
                    Cf[k] = np.maximum(Cf[k] + (AtY[k] - AtA[k] @ Cf) / AtA[k, k], 0)
        U, V = (mov.Yr @ Cf.T.astype(np.float32)).astype(np.float64), Cf @ Cf.T
        allowed = np.zeros(Ab[:, :K].shape, bool)
        for k, ix in enumerate(footprints.support_index(Ab[:, :K], dims, radius, 3.0 * max(opts.gSig) + 1)):
            allowed[ix, k] = True
        for _ in range(n_inner):
            for k in range(K + nb):
                if V[k, k] <= 0:
                    continue
                if k < K:
                    px = np.flatnonzero(allowed[:, k])
                    new = Ab[px, k] + (U[px, k] - Ab[px] @ V[:, k]) / V[k, k]
                    Ab[:, k] = 0
                    Ab[px, k] = np.maximum(new, 0)
                else:
                    Ab[:, k] = np.maximum(Ab[:, k] + (U[:, k] - Ab @ V[:, k]) / V[k, k], 0)
        for k in range(K):
            Ab[:, k] = model.clean_footprint(Ab[:, k], dims, opts.maxthr, opts.extract_cc)
    return Ab[:, :K], Cf[:K], Ab[:, K:], Cf[K:]


def test_sparse_hals_gives_the_dense_hals_result():
    """Footprints that overlap, one whose support reaches past its allowed disk (its far pixels
    are dropped at its first update, after its neighbours read them), one empty: the sparse
    bookkeeping must give the dense sweeps' footprints and traces."""
    rng = np.random.default_rng(2)
    centres = [(6, 6), (9, 10), (6, 15), (20, 18), (22, 22), (8, 28), (32, 8), (30, 28), (33, 31), (18, 8)]
    A_true = _blobs(rng, 10, centres=centres)
    Y, C_true = _movie(rng, A_true, 200)
    A0 = A_true * rng.uniform(0.7, 1.3, A_true.shape) * (A_true > 0)
    A0[:, 6] += 0.3 * A0[:, 5]  # footprint 6 also covers footprint 5, far outside its allowed disk
    A0[:, 8] = 0
    C0 = np.maximum(C_true + rng.standard_normal(C_true.shape), 0)
    opts = core.Options(gSig=(2, 2), nb=1)
    mov = model.Movie(Y)
    b0, f0 = model.init_background(mov, A0, C0, 1, np.random.default_rng(0))
    A, C, b, f = core.hals(mov, A0, C0, b0, f0, DIMS, opts)
    got = (A.toarray(), C, b, f)  # the footprints come back sparse
    want = _dense_hals(mov, A0, C0, b0, f0, DIMS, opts)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * np.abs(w).max())
    np.testing.assert_array_equal(got[0] > 0, want[0] > 0)


def test_footprints_stay_sparse_through_merging_dropping_and_scaling():
    """The fit hands footprints from step to step as canonical CSC matrices: the values the
    dense arrays held, nothing stored for the zeros."""
    rng = np.random.default_rng(4)
    A = _blobs(rng, 8)
    A[:, 2] = 0
    C = np.maximum(rng.standard_normal((8, 50)), 0)
    kept, C2 = core._drop_empty(A, C)
    assert sp.isspmatrix_csc(kept) and kept.has_canonical_format and not np.any(kept.data == 0)
    np.testing.assert_array_equal(kept.toarray(), A[:, [0, 1, 3, 4, 5, 6, 7]])
    unit, C3 = core._unit_footprints(kept, C2)
    np.testing.assert_allclose(np.linalg.norm(unit.toarray(), axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(unit.toarray() @ C3, kept.toarray() @ C2, rtol=1e-6, atol=1e-9)
    cos = footprints.cosine(kept)
    dense = kept.toarray() / np.linalg.norm(kept.toarray(), axis=0)
    np.testing.assert_allclose(cos, dense.T @ dense, atol=1e-12)


def test_a_patch_footprint_lands_on_its_pixels_of_the_field():
    dims, rows, cols = (30, 40), slice(5, 17), slice(20, 31)
    rng = np.random.default_rng(5)
    local = np.where(rng.random((12 * 11, 3)) < 0.3, rng.random((12 * 11, 3)), 0).astype(np.float32)
    got = footprints.embed(sp.csc_matrix(local), rows, cols, dims)
    for k in range(3):
        img = np.zeros(dims, np.float32)
        img[rows, cols] = local[:, k].reshape(12, 11, order="F")
        np.testing.assert_array_equal(got[:, k].toarray().ravel(), img.reshape(-1, order="F"))


def test_the_fast_median_and_rolling_envelope_give_numpy_and_scipy_values():
    """Seeding's per-pixel median (one partition) and lower envelope (OpenCV's erode/dilate)
    replace np.median and scipy's filters: the same values, ties and both parities included."""
    rng = np.random.default_rng(6)
    for shape in [(7, 500), (3, 4, 501), (5, 2), (9,)]:
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal(shape).astype(dtype)
            x[..., ::3] = x[..., :1]  # ties
            np.testing.assert_array_equal(model.median_last(x), np.median(x, axis=-1, keepdims=True))
    # float32 is partitioned as integers: signs, zeros of either sign, infinities, a strided view
    x = np.array([[-3, -1, -2, 5], [-0.0, 0.0, -1e-30, 1e-30], [np.inf, -np.inf, 1, 2], [-7, -5, -6, -4]], np.float32)
    np.testing.assert_array_equal(model.median_last(x), np.median(x, axis=-1, keepdims=True))
    y = rng.standard_normal((8, 301)).astype(np.float32)[::2, ::3]
    np.testing.assert_array_equal(model.median_last(y), np.median(y, axis=-1, keepdims=True))
    for w in (1, 3, 49):
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal((6, 5, 130)).astype(dtype)
            want = ndi.maximum_filter1d(ndi.minimum_filter1d(x, w, axis=-1, mode="nearest"), w, axis=-1, mode="nearest")
            np.testing.assert_array_equal(model.running_min_max(x.copy(), w), want)


def test_seedings_window_energy_is_the_largest_mean_of_consecutive_frames():
    """The energy seeding ranks pixels by (OpenCV's box sums) is the largest mean of L
    consecutive squared values: a transient's window wins wherever it lies, the ends included."""
    rng = np.random.default_rng(7)
    for T, L in [(500, 120), (130, 129), (64, 1), (300, 7)]:
        sq = rng.standard_normal((9, T)).astype(np.float32) ** 2
        sq[1, :L] += 40  # the brightest window at the start, one at the end
        sq[2, -L:] += 40
        want = np.lib.stride_tricks.sliding_window_view(sq.astype(np.float64), L, axis=-1).mean(-1).max(-1)
        got = core.window_energy(sq, L)
        assert got.dtype == np.float32 and got.shape == (9,)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # consecutive runs of a footprint's sorted pixels, as YCt_support multiplies them
    assert model.consecutive_runs(np.array([3, 4, 5, 9, 11, 12])) == [(3, 6, 0), (9, 10, 3), (11, 13, 4)]
    assert model.consecutive_runs(np.zeros(0, int)) == []
