"""CNMF-E's ring-model background (``nb=0``), as CaImAn stores it: a sparse ``W`` and ``b0``.

The background of pixel ``i`` at frame ``t`` is ``b0[i] + sum_j W[i, j] * X[j, t]`` where
``X = Y - A·C - b0`` and ``W[i, j]`` is nonzero only for the pixels ``j`` on a one-pixel-wide
ring of radius ``ring_size_factor * gSiz`` around ``i``. The ring lies outside the neuron at
``i`` but inside the smooth out-of-focus glow that surrounds it, so regressing each pixel's
fluctuations on its ring (ridge least squares, one small system per pixel) predicts the
local background without borrowing the neuron's own signal. Like CaImAn (``ssub_B``), W lives
on a grid downsampled ``ssub`` x ``ssub`` (mean of each block) and its output is upsampled by
repetition; ``b0`` is full resolution.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import numpy as np
import scipy.sparse as sp

from ...formats.memmap import require_free_space, reserve
from .model import pixel_blocks


def ring_offsets(radius: int) -> np.ndarray:
    """(n, 2) [drow, dcol] of the pixels at distance in (radius, radius + 1] from the centre."""
    r = int(radius) + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    d2 = yy**2 + xx**2
    sel = (d2 > radius**2) & (d2 <= (radius + 1) ** 2)
    return np.stack([yy[sel], xx[sel]], 1)


def ds_dims(dims: tuple[int, int], ssub: int) -> tuple[int, int]:
    """Grid of the downsampled background (CaImAn's ``(d - 1) // ssub + 1``)."""
    return ((dims[0] - 1) // ssub + 1, (dims[1] - 1) // ssub + 1)


def ds_index(dims: tuple[int, int], ssub: int) -> np.ndarray:
    """For each full-resolution pixel (Fortran order) its pixel on the downsampled grid."""
    d1s = ds_dims(dims, ssub)[0]
    p = np.arange(dims[0] * dims[1])
    return (p % dims[0]) // ssub + ((p // dims[0]) // ssub) * d1s


def decimation_matrix(dims: tuple[int, int], ssub: int) -> sp.csr_matrix:
    """Sparse (P_ds, P) averaging each ssub x ssub block (partial blocks at the edges)."""
    P = dims[0] * dims[1]
    idx = ds_index(dims, ssub)
    D = sp.csr_matrix((np.ones(P, np.float32), (idx, np.arange(P))), shape=(int(idx.max()) + 1, P))
    counts = np.asarray(D.sum(1)).ravel()
    return sp.diags(1.0 / counts).dot(D).tocsr().astype(np.float32)


def fit_ring_weights(X: np.ndarray, dims: tuple[int, int], radius: int, tile: int = 48,
                     ridge: float = 1e-5) -> sp.csr_matrix:
    """W (P x P, CSR) by ridge regression of each pixel's row of ``X`` (P, T) on its ring.

    Works tile by tile: one BLAS Gram matrix of the tile and its ring-wide halo, from which
    every pixel's small normal equations are gathered and solved in a batch. The ridge adds
    ``ridge * trace`` to each system's diagonal; ring pixels off the field point at a zero
    row, so their weights come out exactly 0 and are dropped.
    """
    d1, d2 = dims
    P, T = X.shape
    off = ring_offsets(radius)
    n_ring = len(off)
    halo = int(radius) + 1
    X = np.asarray(X, np.float32)
    data = np.zeros((P, n_ring), np.float32)
    nbr_all = np.full((P, n_ring), -1, np.int64)
    lut = np.full(P + 1, -1, np.int64)
    diag = np.arange(n_ring)
    for i0 in range(0, d1, tile):
        for j0 in range(0, d2, tile):
            i1, j1 = min(i0 + tile, d1), min(j0 + tile, d2)
            h0, h1 = max(i0 - halo, 0), min(i1 + halo, d1)
            w0, w1 = max(j0 - halo, 0), min(j1 + halo, d2)
            rr, cc = np.meshgrid(np.arange(h0, h1), np.arange(w0, w1), indexing="ij")
            local = (rr + cc * d1).ravel(order="F")
            lut[local] = np.arange(len(local))
            lut[P] = len(local)  # the zero row
            Xl = np.vstack([X[local], np.zeros((1, T), np.float32)])
            Gl = (Xl @ Xl.T).astype(np.float64)
            pr, pc = np.meshgrid(np.arange(i0, i1), np.arange(j0, j1), indexing="ij")
            pr, pc = pr.ravel(), pc.ravel()
            rows = pr[:, None] + off[None, :, 0]
            cols = pc[:, None] + off[None, :, 1]
            inside = (rows >= 0) & (rows < d1) & (cols >= 0) & (cols < d2)
            gidx = np.where(inside, rows + cols * d1, P)
            li = lut[gidx]
            me = lut[pr + pc * d1]
            G = Gl[li[:, :, None], li[:, None, :]]
            G[:, diag, diag] += (ridge * np.maximum(np.trace(G, axis1=1, axis2=2), 1e-12))[:, None]
            rhs = Gl[li, me[:, None]]
            w = np.linalg.solve(G, rhs[..., None])[..., 0]
            w[~inside] = 0
            p = pr + pc * d1
            data[p] = w
            nbr_all[p] = np.where(inside, gidx, -1)
            lut[local] = -1
    keep = nbr_all >= 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(1))])
    return sp.csr_matrix((data[keep], nbr_all[keep], indptr), shape=(P, P))


class RingModel:
    """A fitted ring background: ``W`` on the ssub-downsampled grid, full-resolution ``b0``."""

    def __init__(self, W: sp.csr_matrix, b0: np.ndarray, dims: tuple[int, int], ssub: int):
        self.W, self.b0, self.dims, self.ssub = W, np.asarray(b0, np.float32), dims, int(ssub)
        self.D = decimation_matrix(dims, self.ssub)
        self.up = ds_index(dims, self.ssub)

    @classmethod
    def fit(cls, mov: Any, A: np.ndarray, C: np.ndarray, dims: tuple[int, int], radius: float,
            ssub: int = 2, max_frames: int = 3000) -> RingModel:
        """Fit on a movie ``mov`` (``.rows(blk) -> (n, T)`` over ``.blocks``, ``.T``).

        ``b0 = mean(Y) - A·mean(C)``; W from ``ds(Y - A·C) - ds(b0)`` on at most ``max_frames``
        evenly spaced frames (a regression needs no more). One pass over the movie.
        """
        ssub = max(1, int(ssub))
        D = decimation_matrix(dims, ssub)
        T = int(mov.T)
        frames = np.arange(T) if T <= max_frames else np.linspace(0, T - 1, max_frames).round().astype(int)
        Xd = np.zeros((D.shape[0], len(frames)), np.float32)
        means = []
        for blk in mov.blocks:
            Yb = mov.rows(blk)
            means.append(Yb.mean(1))
            Xd += D[:, blk] @ Yb[:, frames]
        b0 = np.concatenate(means) - (A @ C.mean(1) if A.shape[1] else 0.0)
        if A.shape[1]:
            Xd -= (D @ A).astype(np.float32) @ C[:, frames].astype(np.float32)
        Xd -= (D @ b0)[:, None].astype(np.float32)
        W = fit_ring_weights(Xd, ds_dims(dims, ssub), max(1, int(round(radius / ssub))))
        return cls(W, b0, dims, ssub)

    def fluctuation(self, mov: Any, A: np.ndarray, C: np.ndarray, keep_bytes: float = math.inf,
                    scratch: str | os.PathLike | None = None) -> np.ndarray:
        """``W·(ds(Y - A·C) - ds(b0))`` on the downsampled grid, (P_ds, T) float32.

        It grows with the movie (P/ssub² x T, two arrays while computed, a block of rows of
        the movie's size at a time): past ``keep_bytes`` they are files in ``scratch`` (see
        :func:`scratch_bytes`), unlinked at once."""
        P_ds, T = self.D.shape[0], int(mov.T)
        directory = scratch or tempfile.gettempdir()
        on_disk = scratch_bytes(P_ds, T, keep_bytes) > 0
        if on_disk:
            require_free_space(directory, scratch_bytes(P_ds, T, 0), "CNMF-E's ring background")

        def array() -> np.ndarray:
            return scratch_array((P_ds, T), directory) if on_disk else np.zeros((P_ds, T), np.float32)

        Xd = array()
        Dc = self.D.tocsc()
        for blk in mov.blocks:  # a block of Fortran-order pixels lands on a run of grid rows
            up = self.up[blk]
            r = slice(int(up.min()), int(up.max()) + 1)
            Xd[r] += Dc[:, blk].tocsr()[r] @ mov.rows(blk)
        DA, C32 = (self.D @ A).astype(np.float32), C.astype(np.float32)
        Db0 = (self.D @ self.b0).astype(np.float32)
        first = mov.blocks[0]
        rows = pixel_blocks(P_ds, T, budget=(first.stop - first.start) * T)  # the movie's block size
        for r in rows:
            Xd[r] -= DA[r] @ C32 + Db0[r, None]
        out = array()
        for r in rows:  # the ring of a run of rows reaches a wider, still contiguous run
            Wr = self.W[r]
            if Wr.nnz:
                c = slice(int(Wr.indices.min()), int(Wr.indices.max()) + 1)
                out[r] = Wr[:, c] @ Xd[c]
        return out

    def background(self, fluct: np.ndarray, blk: slice | np.ndarray) -> np.ndarray:
        """Background of the full-resolution pixels ``blk`` from a :meth:`fluctuation`."""
        return self.b0[blk, None] + fluct[self.up[blk]]

    def low_rank(self, fluct: np.ndarray, tol: float = 0.01, max_rank: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """``b`` (P, 1 + k), ``f`` (1 + k, T) with ``b·f`` ≈ the ring background: b0 (f = 1) plus
        the fewest leading modes of the fluctuation leaving < ``tol`` of its energy (<= max_rank),
        so a plain ``b ⊗ f`` reconstruction (rcb, residuals) shows the ring model's background."""
        T = fluct.shape[1]
        F = np.asarray(fluct, np.float32)
        total = float(np.einsum("ij,ij->", F, F, dtype=np.float64))
        # randomised range finder (two power iterations): the leading modes only
        rng = np.random.default_rng(0)
        Q = np.linalg.qr(F @ rng.standard_normal((T, max_rank + 4)).astype(np.float32))[0]
        for _ in range(2):
            Q = np.linalg.qr(F @ (F.T @ Q))[0]
        _, sv, Vt = np.linalg.svd((Q.T @ F).astype(np.float64), full_matrices=False)
        e = np.cumsum(sv**2) / max(total, 1e-30)
        k = int(min(max_rank, np.searchsorted(e, 1 - tol) + 1, len(sv)))
        Vk = Vt[:k].astype(np.float32)  # orthonormal rows
        b = np.empty((len(self.b0), 1 + k), np.float32)
        b[:, 0] = self.b0
        b[:, 1:] = (F @ Vk.T)[self.up]
        f = np.vstack([np.ones((1, T), np.float32), Vk])
        return b, f


def scratch_bytes(n_ds: int, T: int, keep_bytes: float) -> int:
    """Disk the ring fluctuation of ``n_ds`` grid pixels x ``T`` frames needs (two float32 files),
    or 0 where its two arrays and the blocks beside them fit in ``keep_bytes`` (three copies'
    worth: the bound the in-memory computation had)."""
    size = 4 * n_ds * T
    return 0 if 3 * size <= keep_bytes else 2 * size


def scratch_array(shape: tuple[int, int], directory: str | os.PathLike) -> np.ndarray:
    """A zeroed float32 array in a file that is unlinked at once: Linux keeps the mapping until
    the array is dropped, and a killed worker leaves no file behind. File-backed pages are not
    private memory, so neither the memory budget nor ``memory_limit`` counts them."""
    fd, path = tempfile.mkstemp(prefix=".ring-fluct-", suffix=".f32", dir=directory)
    os.close(fd)
    try:
        reserve(path, 4 * shape[0] * shape[1], "CNMF-E's ring background")
        return np.memmap(path, np.float32, "r+", shape=shape)
    finally:
        try:
            os.unlink(path)
        except OSError:  # a system that cannot unlink an open file: it stays until removed
            pass
