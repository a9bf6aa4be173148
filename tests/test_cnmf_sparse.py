"""CNMF's HALS on sparse footprints gives what the dense (pixels x K) products gave."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp

from mesmerize_widgets.algorithms.cnmf import core, model

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
    idx = core._support_index(A, DIMS, 2, 5.0)
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
        for k, ix in enumerate(core._support_index(Ab[:, :K], dims, radius, 3.0 * max(opts.gSig) + 1)):
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
    got = core.hals(mov, A0, C0, b0, f0, DIMS, opts)
    want = _dense_hals(mov, A0, C0, b0, f0, DIMS, opts)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * np.abs(w).max())
    np.testing.assert_array_equal(got[0] > 0, want[0] > 0)
