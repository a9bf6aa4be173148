"""CNMF model pieces that the offline fit (:mod:`.core`) and OnACID (:mod:`..onacid`) share.

Products with the movie in pixel blocks, the background's starting point, a footprint's
cleaning, the rank-1 NMF that seeds a component, and the frames around a trace's transients
that the r-value compares. Public here so that OnACID does not reach into the core's private
names, and one definition serves both.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import scipy.fft
import scipy.sparse as sp

__all__ = ["Movie", "activity_frames", "clean_footprint", "even_slices", "init_background", "noise_psd", "pixel_blocks",
           "rank1"]


def pixel_blocks(n: int, T: int, budget: int = 1 << 24) -> list[slice]:
    """Slices of ``n`` rows of ``T`` values, each at most about ``budget`` values."""
    step = max(1, budget // max(T, 1))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def even_slices(n: int, parts: int) -> list[slice]:
    """``n`` items cut into ``parts`` consecutive slices of sizes differing by at most one
    (empty slices left out)."""
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


#: frames the noise is measured on, at most: three stretches of 1,024 (the start, the middle, the
#: end), as CaImAn caps its own estimate at 3,072 samples; the noise of a long movie costs no more
NOISE_FRAMES = 3072


def median_last(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=-1, keepdims=True)``, the same values for arrays without NaN, from one
    partition at the middle (the lower middle of an even count is the largest value below it):
    numpy partitions at both middles, 5x slower on a patch's pixels. Float32 is partitioned as
    integers (:func:`_float32_order`): numpy 1 partitions them a third faster than floats."""
    n = x.shape[-1]
    m = n // 2
    if n == 0:
        return x[..., :1].copy()
    as_int = x.dtype == np.float32
    part = np.partition(_float32_order(x) if as_int else x, m, axis=-1)
    mid = part[..., m : m + 1].copy()
    low = part[..., :m].max(axis=-1, keepdims=True) if n % 2 == 0 else None
    if as_int:
        mid = _float32_order(mid)
        low = None if low is None else _float32_order(low)
    return mid if low is None else (mid + low) / x.dtype.type(2)


def _float32_order(x: np.ndarray) -> np.ndarray:
    """Float32 values as int32 in the same order (and back: the map is its own inverse). A
    float's bits, read as an integer, order the positive values; flipping all but the sign bit
    of the negative ones reverses their order, which puts them below in the right order."""
    i = np.ascontiguousarray(x).view(np.int32)
    out = i ^ ((i >> 31) & np.int32(0x7FFFFFFF))
    return out.view(np.float32) if x.dtype == np.int32 else out


def running_min_max(x: np.ndarray, w: int) -> np.ndarray:
    """A minimum then a maximum filter of width ``w`` (odd) along the last axis of the float32
    contiguous ``x`` (``scipy.ndimage`` modes "nearest"), in place: OpenCV's erode/dilate give the same
    values as ``minimum_filter1d``/``maximum_filter1d``, 3x faster."""
    flat = x.reshape(-1, x.shape[-1])  # a view: x is contiguous
    kernel = np.ones((1, w), np.uint8)
    cv2.erode(flat, kernel, dst=flat, borderType=cv2.BORDER_REPLICATE)
    cv2.dilate(flat, kernel, dst=flat, borderType=cv2.BORDER_REPLICATE)
    return x


def noise_psd(Y: np.ndarray, noise_range: tuple[float, float] = (0.25, 0.5),
              max_frames: int = NOISE_FRAMES) -> np.ndarray:
    """Per-row noise std from the mean power spectral density in ``noise_range`` (x Nyquist*2).
    Past ``max_frames`` frames, the spectra of three stretches of a third of that each (start,
    middle, end) are averaged. scipy.fft, not numpy.fft: it transforms several rows at once, 4x
    faster on a patch."""
    Y = np.asarray(Y)
    T = Y.shape[-1]
    flat = Y.reshape(-1, T)
    if T < 8:
        return np.std(flat, axis=1).astype(np.float32)
    n = T if T <= max_frames else max_frames // 3
    starts = [0] if n == T else [0, (T - n) // 2, T - n]
    ff = np.fft.rfftfreq(n)
    ind = (ff > noise_range[0]) & (ff <= noise_range[1])
    out = np.empty(len(flat), np.float32)
    for blk in pixel_blocks(len(flat), n, 1 << 20):  # 4 MiB in, 8 MiB of spectrum out
        power = np.zeros(blk.stop - blk.start)
        for s in starts:
            X = scipy.fft.rfft(np.asarray(flat[blk, s : s + n], np.float32), axis=1)[:, ind]
            power += np.mean(X.real**2 + X.imag**2, axis=1)
        out[blk] = np.sqrt(power / len(starts) / n)
    return out.reshape(Y.shape[:-1])


class Movie:
    """Pixel-block products with a (P, T) movie held in memory or in a C-order memmap.

    The background's one or two columns multiply the movie a vector at a time: for a matrix
    product OpenBLAS first copies (packs) the whole block, and with two columns the copy is most
    of the work, 2-4x the time of two matrix-vector products, on both cores."""

    def __init__(self, Yr: np.ndarray):
        self.Yr = Yr
        self.P, self.T = Yr.shape
        self.blocks = pixel_blocks(self.P, self.T)

    def rows(self, idx: slice | np.ndarray) -> np.ndarray:
        """(n, T) float32 of the pixels ``idx`` (a slice or sorted index array)."""
        return np.asarray(self.Yr[idx], np.float32)

    def AtY(self, A: np.ndarray) -> np.ndarray:
        out = np.zeros((A.shape[1], self.T), np.float64)
        for blk in self.blocks:
            out += A[blk].T.astype(np.float32) @ self.rows(blk)
        return out

    def AtY_sparse(self, A: sp.spmatrix, b: np.ndarray) -> np.ndarray:
        """``[A, b].T @ Y`` (float32, K + nb rows) for sparse footprints ``A`` (P, K) and a dense
        background ``b`` (P, nb). Each footprint covers a few hundred pixels: a block of pixel rows
        multiplies only the footprint entries on it (nnz(A)·T products, not P·T·K as
        :meth:`AtY` takes); a block without any is not read when there is no background.
        Float32 as the products are: a float64 K x T would double what grows with the movie."""
        K, nb = A.shape[1], b.shape[1]
        A = sp.csr_matrix(A, dtype=np.float32)
        bT = np.ascontiguousarray(np.asarray(b, np.float32).T)
        out = np.zeros((K + nb, self.T), np.float32)
        for blk in self.blocks:
            Ablk = A[blk]
            if not Ablk.nnz and not nb:
                continue
            Y = self.rows(blk)
            if Ablk.nnz:
                out[:K] += Ablk.T @ Y
            for i in range(nb):  # a vector at a time (see the class's note)
                out[K + i] += bT[i, blk] @ Y
        return out

    def YCt_support(self, C: np.ndarray, idx: list[np.ndarray], Cb: np.ndarray
                    ) -> tuple[list[np.ndarray], np.ndarray]:
        """``Y @ C[k]`` on the pixels ``idx[k]`` only (sorted, one array per row of ``C``), and
        ``Y @ Cb.T`` on every pixel (the background's traces), float64. HALS updates a footprint
        on its allowed pixels alone, so the rest of a dense (P, K) product is never used.

        A footprint's pixels in one column of the image are consecutive (Fortran order): each such
        run multiplies a view of the block, where gathering the rows first copied them (numpy 1
        gathers slowly: 2x the time of the whole product)."""
        C32 = np.asarray(C, np.float32)
        Cb32 = np.ascontiguousarray(Cb, np.float32)
        nb = len(Cb32)
        U = [np.zeros(len(i), np.float64) for i in idx]
        Ub = np.zeros((self.P, nb), np.float64)
        runs = [consecutive_runs(i) for i in idx]
        first = np.array([i[0] if len(i) else self.P for i in idx], np.int64)
        last = np.array([i[-1] if len(i) else -1 for i in idx], np.int64)
        for blk in self.blocks:
            ks = np.flatnonzero((first < blk.stop) & (last >= blk.start))
            if not ks.size and not nb:
                continue
            Y = self.rows(blk)
            for i in range(nb):  # a vector at a time (see the class's note)
                Ub[blk, i] = Y @ Cb32[i]
            for k in ks:
                c, u = C32[k], U[k]
                for p0, p1, at in runs[k]:  # the run's part on this block
                    lo, hi = max(p0, blk.start), min(p1, blk.stop)
                    if lo < hi:
                        u[at + lo - p0 : at + hi - p0] = Y[lo - blk.start : hi - blk.start] @ c
        return U, Ub

    def mean(self) -> np.ndarray:
        return np.concatenate([self.rows(blk).mean(1) for blk in self.blocks])


def consecutive_runs(ix: np.ndarray) -> list[tuple[int, int, int]]:
    """The runs of consecutive values of the sorted index array ``ix``, as (first, stop, position
    of the first in ``ix``)."""
    if not ix.size:
        return []
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ix) != 1) + 1])
    stops = np.append(starts[1:], len(ix))
    return list(zip(ix[starts].tolist(), (ix[stops - 1] + 1).tolist(), starts.tolist(), strict=True))


def leading_modes(X: np.ndarray, k: int, rng: np.random.Generator, n_iter: int = 4) -> np.ndarray:
    """The ``k`` leading right singular vectors (k, T) of ``X`` (n, T), by a randomised range
    finder with power iterations: a full SVD costs n·T·min(n, T), minutes on a long movie,
    for modes that only start the background's traces."""
    n, T = X.shape
    q = min(n, T, k + 10)
    if k <= 0 or q == 0:
        return np.zeros((0, T))
    Q = np.linalg.qr(X @ rng.standard_normal((T, q)))[0]
    for _ in range(n_iter):
        Q = np.linalg.qr(X @ np.linalg.qr(X.T @ Q)[0])[0]
    return np.linalg.svd(Q.T @ X, full_matrices=False)[2][:k]


def init_background(mov: Movie, A: np.ndarray, C: np.ndarray, nb: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Nonnegative rank-nb background of the residual ``Y - A·C`` (mean image + leading modes)."""
    P, T = mov.P, mov.T
    if nb <= 0:
        return np.zeros((P, 0)), np.zeros((0, T))
    resid_mean = mov.mean() - A @ C.mean(1)
    b = np.zeros((P, nb))
    f = np.ones((nb, T))
    b[:, 0] = np.maximum(resid_mean, 0)
    if nb > 1:
        # leading temporal modes of a pixel subsample of the centred residual (at most 32 MiB
        # of float64: a long movie is seen through fewer pixels)
        n_sub = min(P, 4000, max(64, (1 << 22) // T))
        sub = np.unique(np.linspace(0, P - 1, n_sub).round().astype(int))
        Rs = mov.rows(sub).astype(np.float64)
        Rs -= A[sub] @ C
        Rs -= Rs.mean(1, keepdims=True)
        vt = leading_modes(Rs, nb - 1, rng)
        for j in range(1, nb):
            m = vt[j - 1] if j - 1 < len(vt) else rng.standard_normal(T)
            m = m * np.sign(m[np.argmax(np.abs(m))])
            f[j] = np.maximum(m - m.min(), 0) + 1e-3
            f[j] /= f[j].mean()
        b[:, 1:] = 1e-3
    return b, f


def _peaks(y: np.ndarray, thres: float = 0.3) -> np.ndarray:
    """Local maxima above ``min + thres * (max - min)`` (peakutils.indexes semantics)."""
    lo, hi = float(y.min()), float(y.max())
    if hi <= lo:
        return np.zeros(0, int)
    dy = np.diff(y)
    idx = np.flatnonzero((np.hstack([dy, 0.0]) < 0) & (np.hstack([0.0, dy]) > 0))
    return idx[y[idx] > lo + thres * (hi - lo)]


def activity_frames(C: np.ndarray, fr: float, npeaks: int = 10) -> list[np.ndarray | None]:
    """Per trace, the frames around its ``npeaks`` highest peaks (CaImAn's r-value windows:
    from ~5 frames at 30 Hz before a peak to ~25 after); None for a trace without peaks."""
    T = C.shape[1]
    tB = int(min(-2, math.floor(-5.0 / 30 * fr)))
    tA = int(max(5, math.ceil(25.0 / 30 * fr)))
    out: list[np.ndarray | None] = []
    for c in C:
        if not np.any(np.diff(c)):
            out.append(None)
            continue
        pk = _peaks(c)
        pk = pk[np.argsort(c[pk])[::-1]][:npeaks]
        if not len(pk):
            out.append(None)
            continue
        iv = (pk[:, None] + np.arange(tB, tA)[None, :]).ravel()
        out.append(np.unique(np.clip(iv, 0, T - 1)))
    return out


def clean_footprint(a: np.ndarray, dims: tuple[int, int], maxthr: float, extract_cc: bool = True) -> np.ndarray:
    """Zero values below ``maxthr`` x max and keep the connected piece holding the maximum.

    ``a`` is a footprint over a (d1, d2) field in Fortran pixel order. Pieces are 4-connected;
    OpenCV labels them several times faster than scipy.ndimage, which matters to OnACID's
    per-frame shape updates (tests/test_cnmf.py checks both give the same piece).
    """
    img = a.reshape(dims[::-1]).T.copy()  # (d1, d2)
    top = float(img.max()) if img.size else 0.0
    if top <= 0:
        return np.zeros_like(a)
    img[img < maxthr * top] = 0
    if extract_cc:
        n, lab = cv2.connectedComponents((img > 0).astype(np.uint8), connectivity=4)
        if n > 2:  # label 0 is the background
            peak = np.unravel_index(int(np.argmax(img)), img.shape)
            img[lab != lab[peak]] = 0
    return img.T.ravel()


def rank1(data: np.ndarray, trace: np.ndarray, n_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank-1 nonnegative factorisation ``data (n, T) ≈ a ⊗ c`` started from ``trace``."""
    c = np.maximum(trace, 0).astype(np.float64)
    # the products are float64: cast the data once, not twice an iteration (numpy 1 casts a
    # float32 operand through a slow path, 4x the products' time)
    data = np.asarray(data, np.float64)
    a = np.zeros(data.shape[0])
    for _ in range(max(1, n_iter)):
        cc = c @ c
        if cc <= 0:
            break
        a = np.maximum(data @ c / cc, 0)
        aa = a @ a
        if aa <= 0:
            break
        c = np.maximum(a @ data / aa, 0)
    return a, c
