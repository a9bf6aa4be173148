"""Numerical core of the built-in OnACID (online CNMF), on plain arrays, frame by frame.

The model is CNMF's, ``y_t ≈ A c_t + b f_t``, fitted one frame at a time (Giovannucci et al.
2017). State kept between frames, none of it growing with the movie except the traces:

* footprints ``A`` on a fixed disk of radius ``3*max(gSig)+1`` around each neuron's centre
  (the same confinement the offline HALS uses), as a CSC matrix with that fixed structure,
  so that changing a shape only rewrites its values;
* the sufficient statistics ``CY = Σ c_t y_tᵀ`` (on each disk only, and in full for the
  background) and ``CC = Σ c_t c_tᵀ``, from which shapes are re-estimated by HALS;
* a ring buffer of the last ``minibatch_shape`` residuals ``y - A c - b f`` where new neurons
  are sought, and an exponential moving sum of its blurred, noise-normalised positive energy
  that ranks candidate locations without storing a second buffer.

Per frame: traces by block-coordinate descent on ``AᵀA`` / ``Aᵀy`` (components grouped so no
two in a group overlap: a whole group updates at once and exactly), the statistics, the
residual; then up to ``min_num_trial`` candidates are tested (rank-1 NMF on the buffer patch,
space correlation >= rval_thr, event exceptionality <= thresh_fitness_raw, overlap with known
footprints < thresh_overlap, buffer trace correlated < dup_corr with that of every known
component whose disk holds the candidate's peak: CaImAn's duplicate rule, which keeps a neuron's
faint rim, left in the residual, from adding copies of it over a long movie) and up to
``max_num_added`` accepted. Every ``update_freq`` frames all shapes are refitted from the
statistics.

What keeps a frame cheap (512 x 512 frames, hundreds of neurons, at acquisition rate): no
per-frame allocation of frame-sized temporaries beyond a few vectors; the candidate search
looks only at the local maxima above threshold of a box-filtered max (separable); a candidate's
patch is sliced out of the ring buffer, not gathered; an accepted component is appended
incrementally (a CSC column, a row and column of AᵀA, the first free colour of its group), and
shape updates rewrite ``A.data`` in place with one rebuild of AᵀA and the groups at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.special

from ..cnmf import core, model

_NOISE_E = 0.5  # mean of max(z, 0)**2 for z ~ N(0, 1): the energy of noise alone


@dataclass
class OnlineOptions:
    """The online params the builtin backend uses (CaImAn's names)."""

    gSig: tuple[int, int] = (5, 5)
    fr: float = 30.0
    decay_time: float = 0.4
    min_SNR: float = 2.5
    rval_thr: float = 0.8
    thresh_fitness_raw: float | None = None
    thresh_overlap: float = 0.5
    N_samples_exceptionality: int | None = None
    max_num_added: int = 5
    min_num_trial: int = 5
    update_freq: int = 200
    minibatch_shape: int = 100
    update_num_comps: bool = True
    expected_comps: int = 500
    iters: int = 5
    maxthr: float = 0.1
    dup_corr: float = 0.8  # a candidate whose trace is a neighbour's (within its disk) is that neighbour

    @property
    def n_samples(self) -> int:
        return int(self.N_samples_exceptionality or max(1, math.ceil(self.fr * self.decay_time)))

    @property
    def fitness_thr(self) -> float:
        if self.thresh_fitness_raw is not None:
            return float(self.thresh_fitness_raw)
        return float(scipy.special.log_ndtr(-self.min_SNR) * self.n_samples)

    @property
    def radius(self) -> int:
        return int(3 * max(self.gSig) + 1)


def _disk(center: tuple[int, int], radius: int, dims: tuple[int, int]) -> np.ndarray:
    """Sorted Fortran-order pixel indices within ``radius`` of ``center``."""
    d1, d2 = dims
    i, j = center
    r0, r1 = max(i - radius, 0), min(i + radius + 1, d1)
    c0, c1 = max(j - radius, 0), min(j + radius + 1, d2)
    yy, xx = np.mgrid[r0:r1, c0:c1]
    inside = (yy - i) ** 2 + (xx - j) ** 2 <= radius * radius
    return np.sort((yy[inside] + xx[inside] * d1).astype(np.int64))


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _disk_footprints(A: np.ndarray | sp.spmatrix, dims: tuple[int, int], radius: int
                     ) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[int, float]], list[tuple[int, int]]]:
    """Each nonzero footprint of A (P x K) confined to a disk of ``radius`` around its brightest
    pixel, unit norm: the disks' pixels, the values, (column, norm) of each footprint kept, and
    the disks' centres."""
    px: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    keep: list[tuple[int, float]] = []
    centres: list[tuple[int, int]] = []
    As = sp.csc_matrix(A)  # dense or sparse (P, K) in; columns read through indptr
    a = np.zeros(dims[0] * dims[1], np.float32)
    for k in range(As.shape[1]):
        sl = slice(As.indptr[k], As.indptr[k + 1])
        idx, val = As.indices[sl], As.data[sl]
        if not np.any(val > 0):
            continue
        a[idx] = val
        i, j = np.unravel_index(int(idx[np.argmax(val)]), dims, order="F")
        d = _disk((int(i), int(j)), radius, dims)
        v = np.maximum(a[d], 0).astype(np.float32)
        a[idx] = 0
        n = float(np.linalg.norm(v))
        if n <= 0:
            continue
        px.append(d)
        vals.append(v / n)
        keep.append((k, n))
        centres.append((int(i), int(j)))
    return px, vals, keep, centres


def _dilated_support(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Support of a patch footprint (Fortran order) grown by one pixel (4-connected)."""
    m = (a.reshape(hw[::-1]).T > 0).astype(np.uint8)
    return cv2.dilate(m, _CROSS).T.ravel() > 0


def _colors(AtA: np.ndarray) -> np.ndarray:
    """Greedy colouring of the overlap graph (nonzero AᵀA off the diagonal): components of
    one colour share no pixel, so a whole colour group updates at once and exactly."""
    K = len(AtA)
    color = np.full(K, -1)
    adj = AtA != 0
    np.fill_diagonal(adj, False)
    for k in np.argsort(-adj.sum(1), kind="stable"):
        used = set(color[adj[k]].tolist())
        c = 0
        while c in used:
            c += 1
        color[k] = c
    return color


class OnlineCNMF:
    """OnACID's state and its per-frame update; frames are Fortran-order pixel vectors.

    Images kept per pixel (the candidate energy ``sv``, the retest block) are stored
    transposed, (d2, d1) in C order, so that their flat index is the Fortran pixel index and
    OpenCV filters them without a copy.
    """

    def __init__(self, dims: tuple[int, int], opts: OnlineOptions, A: np.ndarray | sp.spmatrix, C: np.ndarray,
                 b: np.ndarray, f: np.ndarray, Yr: np.ndarray, sn: np.ndarray, fixed: bool = False,
                 refine: int = 0):
        """Start from an initialisation on the (P, T0) frames ``Yr`` (A P x K, dense or sparse;
        C K x T0);
        ``fixed``: the initial shapes are seeds and keep their shapes (new ones are updated);
        ``refine``: rounds of HALS (traces, then shapes) on the batch first, sparse on the
        disks (the dense offline HALS costs more than the whole online pass)."""
        self.dims = dims
        self.P = dims[0] * dims[1]
        self.opts = opts
        T0 = Yr.shape[1]
        self.nb = b.shape[1]
        self.sn = np.maximum(sn.astype(np.float32), max(float(np.percentile(sn, 10)), 1e-6))
        self.px, vals, keep, centres = _disk_footprints(A, dims, opts.radius)
        C = np.array([C[k] * n for k, n in keep], np.float64).reshape(len(keep), T0)
        self._centres = np.array(centres, np.int64).reshape(-1, 2)  # each disk's centre (i, j)
        self.b = np.ascontiguousarray(b, np.float32)
        self.K = len(self.px)
        # traces: noisy (raw) traces of every frame of the current epoch, preallocated
        self.cap = max(opts.expected_comps, self.K + opts.max_num_added)
        self.T_epoch = T0
        self.noisy = np.zeros((self.cap + self.nb, 0), np.float32)
        self.t_total = T0  # frames the statistics have seen
        lens = np.array([len(d) for d in self.px], np.int64)
        self._set_A(np.concatenate(vals) if self.K else np.zeros(0, np.float32),
                    np.concatenate(self.px) if self.K else np.zeros(0, np.int64),
                    np.concatenate([[0], np.cumsum(lens)]).astype(np.int64))
        self._rebuild()
        self.n_fixed = self.K if fixed else 0
        self.born = [0] * self.K  # t_total when each component appeared
        ip = self.A.indptr
        self.allowed = [self._allowed(self.A.data[ip[k] : ip[k + 1]], d) for k, d in enumerate(self.px)]
        self.CC = np.zeros((self.cap + self.nb,) * 2)
        self.sn2 = self.sn.astype(np.float64) ** 2
        Cf = self._fit_batch(Yr, np.vstack([C, np.asarray(f, np.float64)]), refine)
        self.c = Cf[:, -1].copy()
        self._start_search(Yr, Cf)
        self.t = T0
        self.init_traces = Cf.astype(np.float32)
        self.n_added = 0
        self.start_epoch(T0)

    def _fit_batch(self, Yr: np.ndarray, Cf: np.ndarray, refine: int) -> np.ndarray:
        """Traces (and first ``refine`` rounds of shapes) on the init batch, then its statistics."""
        for _ in range(refine):
            Cf = self._batch_traces(Yr, Cf)
            self._batch_stats(Yr, Cf)
            self.update_shapes()
        if refine:
            Cf = self._batch_traces(Yr, Cf)
        # sufficient statistics on the initial batch (sums, not means: no rescaling per frame)
        self._batch_stats(Yr, Cf)
        return Cf

    def _start_search(self, Yr: np.ndarray, Cf: np.ndarray) -> None:
        """The residual ring buffer, holding the init batch's last frames, and the candidate
        energy accumulated over them."""
        opts, dims = self.opts, self.dims
        T0 = Yr.shape[1]
        B = min(opts.minibatch_shape, T0)
        self.B = opts.minibatch_shape
        self.Rbuf = np.zeros((self.B, self.P), np.float32)
        self.Cbuf = np.zeros((self.B, self.cap + self.nb), np.float32)
        self.pos = 0  # next slot in the ring
        self.lam = 1.0 - 1.0 / self.B
        # the energy of a residual: blur(r / sn), scaled to unit variance for pure noise and by
        # 1/sqrt(1 - lam) so that cv2.accumulateWeighted gives sv = lam * sv + energy
        g = opts.gSig
        self._ks = (2 * g[0] + 1, 2 * g[1] + 1)  # (width, height) of the transposed image
        k1 = cv2.getGaussianKernel(2 * g[0] + 1, g[0])
        k2 = cv2.getGaussianKernel(2 * g[1] + 1, g[1])
        unit = 1.0 / float(np.sqrt((k1**2).sum() * (k2**2).sum()))
        self._zscale = (unit / np.sqrt(1.0 - self.lam) / self.sn).astype(np.float32)
        self._z = np.empty(self.P, np.float32)
        self._e = np.empty((dims[1], dims[0]), np.float32)
        self.sv = np.zeros((dims[1], dims[0]), np.float32)
        last = slice(T0 - B, T0)
        R = np.asarray(Yr[:, last], np.float32) - self._model(Cf[:, last])
        for t in range(B):
            self._push(R[:, t], Cf[:, T0 - B + t])
            self._accumulate(self.Rbuf[(self.pos - 1) % self.B])
        del R
        self.blocked = np.zeros((dims[1], dims[0]), np.int64)  # frame until which not retested
        self.n_tries = 0  # candidate locations tested so far (a diagnostic of the search cost)
        self._box_kernel = np.ones(self._ks[::-1], np.uint8)  # local-maximum window

    def _batch_traces(self, Yr: np.ndarray, Cf: np.ndarray, iters: int = 3) -> np.ndarray:
        """Traces of the (P, T) frames ``Yr`` by block-coordinate descent, all frames at once."""
        K = self.K
        AtY = np.empty((K + self.nb, Yr.shape[1]))
        AtY[:K] = self.At @ Yr
        AtY[K:] = self.b.T @ Yr
        Cf = Cf.copy()
        for _ in range(iters):
            for g, rows, dg in self._grows:
                Cf[g] = np.maximum(Cf[g] + (AtY[g] - rows @ Cf) / dg[:, None], 0)
        return Cf

    def _batch_stats(self, Yr: np.ndarray, Cf: np.ndarray) -> None:
        """CC, CY (on each disk) and the background's CY of the frames ``Yr`` with traces ``Cf``."""
        K = self.K
        M = K + self.nb
        self.CC[:] = 0
        self.CC[:M, :M] = Cf @ Cf.T
        C32 = Cf.astype(np.float32)
        self.CYv = (np.concatenate([(Yr[d] @ C32[k]).astype(np.float64) for k, d in enumerate(self.px)])
                    if K else np.zeros(0))  # Σ c_k y on each disk, aligned with A.data
        self.CYb = np.ascontiguousarray((C32[K:] @ np.asarray(Yr, np.float32).T).astype(np.float64))  # (nb, P)

    # -- structure ---------------------------------------------------------------------------
    def _set_A(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> None:
        """A as CSC with the disks as its fixed structure; Aᵀ a CSR view of the same arrays,
        so shape updates that rewrite ``A.data`` in place reach both."""
        K = len(indptr) - 1
        self.A = sp.csc_matrix((data.astype(np.float32, copy=False), indices, indptr), shape=(self.P, K))
        self.At = self.A.T
        self._lens = np.diff(indptr)
        self.owner = np.repeat(np.arange(K), self._lens)
        self.pix_all = self.A.indices

    def _rebuild(self) -> None:
        """AᵀA (with the background) and the non-overlapping groups, from scratch."""
        K = self.K
        AtA = (self.At @ self.A).toarray()
        M = K + self.nb
        self.AtA = np.zeros((M, M))
        self.AtA[:K, :K] = AtA
        Atb = self.At @ self.b
        self.AtA[:K, K:] = Atb
        self.AtA[K:, :K] = Atb.T
        self.AtA[K:, K:] = self.b.T.astype(np.float64) @ self.b
        # footprints are nonnegative, so a nonzero AᵀA entry is exactly an overlap of supports
        self.color = _colors(AtA)
        self._set_groups()

    def _set_groups(self) -> None:
        K = self.K
        ncol = int(self.color.max()) + 1 if K else 0
        self.groups = [np.flatnonzero(self.color == c) for c in range(ncol)]
        self.groups += [np.array([K + j]) for j in range(self.nb)]
        self.diag = np.maximum(np.diag(self.AtA), 1e-12)
        self._bT = np.ascontiguousarray(self.b.T)  # background columns, contiguous
        self._grows = [(g, self.AtA[g], self.diag[g]) for g in self.groups]

    def _model(self, Cf: np.ndarray) -> np.ndarray:
        return (self.A @ Cf[: self.K] + self.b @ Cf[self.K :]).astype(np.float32)

    def _push(self, r: np.ndarray, c: np.ndarray) -> None:
        self.Rbuf[self.pos] = r
        self.Cbuf[self.pos, : len(c)] = c
        self.Cbuf[self.pos, len(c) :] = 0
        self.pos = (self.pos + 1) % self.B

    def _ordered(self) -> np.ndarray:
        """Ring slots from oldest to newest."""
        return (self.pos + np.arange(self.B)) % self.B

    def _accumulate(self, r: np.ndarray) -> None:
        """sv = lam * sv + (positive part of the noise-normalised, neuron-scale-blurred r)²."""
        z = np.multiply(r, self._zscale, out=self._z).reshape(self.dims[1], self.dims[0])
        g = self.opts.gSig
        e = cv2.GaussianBlur(z, self._ks, g[0], dst=self._e, sigmaY=g[1], borderType=cv2.BORDER_REFLECT)
        np.maximum(e, 0, out=e)
        np.multiply(e, e, out=e)
        cv2.accumulateWeighted(e, self.sv, 1.0 - self.lam)

    # -- per frame -----------------------------------------------------------------------------
    def fit_next(self, y: np.ndarray) -> int:
        """Process one registered frame (P,) float32; returns the number of components added."""
        K, nb = self.K, self.nb
        M = K + nb
        AtY = np.empty(M)
        AtY[:K] = self.At @ y
        AtY[K:] = self.b.T @ y
        c = self.c[:M].copy()
        for _ in range(self.opts.iters):
            for g, rows, dg in self._grows:
                c[g] = np.maximum(c[g] + (AtY[g] - rows @ c) / dg, 0)
        self.c = c
        # stored trace = c plus its unexplained projection (CaImAn's noisyC = C + YrA), so the
        # noise below the baseline stays visible to the SNR and the deconvolution
        self._store_trace(c + (AtY - self.AtA @ c) / self.diag)
        # statistics
        self.CC[:M, :M] += np.outer(c, c)
        if K:
            self.CYv += np.repeat(c[:K], self._lens) * y[self.pix_all]
        for j in range(nb):
            self.CYb[j] += c[K + j] * y
        # residual, straight into the ring buffer
        c32 = c.astype(np.float32)
        r = self.Rbuf[self.pos]
        np.subtract(y, self.A @ c32[:K], out=r)
        for j in range(nb):
            r -= c32[K + j] * self._bT[j]
        self.Cbuf[self.pos, :M] = c
        self.Cbuf[self.pos, M:] = 0
        self.pos = (self.pos + 1) % self.B
        self._accumulate(r)
        self.t += 1
        self.t_total += 1
        added = 0
        if self.opts.update_num_comps and self.opts.max_num_added > 0 and self.opts.min_num_trial > 0:
            added = self._detect()
        if self.t_total % self.opts.update_freq == 0:
            self.update_shapes()
        return added

    def _store_trace(self, c: np.ndarray) -> None:
        if self.noisy.shape[1] <= self.t_idx:
            grow = max(256, self.noisy.shape[1])
            self.noisy = np.concatenate([self.noisy, np.zeros((self.noisy.shape[0], grow), np.float32)], 1)
        self.noisy[: self.K, self.t_idx] = c[: self.K]
        self.noisy[self.cap : self.cap + self.nb, self.t_idx] = c[self.K :]
        self.t_idx += 1

    def start_epoch(self, offset: int) -> None:
        """Traces of this epoch start at frame ``offset`` (init_batch in the first epoch)."""
        self.t_idx = offset
        self.noisy = np.zeros((self.cap + self.nb, max(offset, 1)), np.float32)
        if offset:
            self.noisy[: self.K, :offset] = self.init_traces[: self.K]
            self.noisy[self.cap : self.cap + self.nb, :offset] = self.init_traces[self.K :]

    # -- new components -----------------------------------------------------------------------
    def _peaks(self, thr: float) -> list[tuple[int, int]]:
        """Up to min_num_trial local maxima of sv (over a (2gSig+1)² box) above ``thr`` and not
        blocked, best first. A box max filter is separable: a fraction of an ellipse's cost."""
        sv = self.sv
        if float(sv.max()) <= thr:
            return []
        dil = cv2.dilate(sv, self._box_kernel)
        idx = np.flatnonzero((sv > thr) & (sv >= dil))
        idx = idx[self.blocked.ravel()[idx] <= self.t]
        if not len(idx):
            return []
        flat = sv.ravel()
        idx = idx[np.argsort(-flat[idx], kind="stable")[: self.opts.min_num_trial]]
        d1 = self.dims[0]
        return [(int(p % d1), int(p // d1)) for p in idx]

    def _detect(self) -> int:
        o = self.opts
        thr = _NOISE_E / (1 - self.lam) * 3.0  # three times what noise alone accumulates
        peaks = self._peaks(thr)
        added = 0
        h = max(o.gSig)
        for i, j in peaks:
            if added >= o.max_num_added:
                break
            if self.K + 1 > self.cap:
                self._grow()
            self.n_tries += 1
            if self._try_add(i, j):
                added += 1
            else:
                self.blocked[max(j - h, 0) : j + h + 1, max(i - h, 0) : i + h + 1] = self.t + self.B // 2
        return added

    def _grow(self) -> None:
        """More room than expected_comps: double the preallocated traces and statistics."""
        old, nb = self.cap, self.nb
        self.cap = 2 * old
        noisy = np.zeros((self.cap + nb, self.noisy.shape[1]), np.float32)
        noisy[:old] = self.noisy[:old]
        noisy[self.cap :] = self.noisy[old:]
        self.noisy = noisy
        CC = np.zeros((self.cap + nb,) * 2)
        CC[: old + nb, : old + nb] = self.CC
        self.CC = CC
        Cbuf = np.zeros((self.B, self.cap + nb), np.float32)
        Cbuf[:, : old + nb] = self.Cbuf
        self.Cbuf = Cbuf

    def _try_add(self, i: int, j: int) -> bool:
        """Test one candidate location in the residual buffer; add it when it passes."""
        o, dims = self.opts, self.dims
        d1, d2 = dims
        h0, h1 = 2 * o.gSig[0], 2 * o.gSig[1]
        r0, r1 = max(i - h0, 0), min(i + h0 + 1, d1)
        c0, c1 = max(j - h1, 0), min(j + h1 + 1, d2)
        box = (np.arange(r0, r1)[:, None] + np.arange(c0, c1)[None, :] * d1).ravel(order="F")
        order = self._ordered()
        # the patch of every buffered residual by slicing (Fortran patch order = columns outer),
        # frames in ring order: the rank-1 fit does not depend on the order of the frames, so
        # only the 1-D traces are put in time order
        pat = self.Rbuf.reshape(self.B, d2, d1)[:, c0:c1, r0:r1]
        ii, jj = i - r0, j - c0
        seed = pat[:, max(jj - 1, 0) : jj + 2, max(ii - 1, 0) : ii + 2].reshape(self.B, -1).mean(1)
        Y = pat.reshape(self.B, -1).T.astype(np.float64)  # (n, B)
        a, c = model.rank1(Y, seed, 5)
        if not (np.any(a > 0) and np.any(c > 0)):
            return False
        img = model.clean_footprint(a, (r1 - r0, c1 - c0), o.maxthr)
        if (img > 0).sum() < 3:
            return False
        a = img / np.linalg.norm(img)
        # trace of the candidate in the buffer, unconstrained (noise stays visible to the test)
        c_raw = (a @ Y)[order]  # oldest first
        fitness = core.event_exceptionality(c_raw[None], o.n_samples)[0]
        if not fitness < o.fitness_thr:
            return False
        # space correlation, cross-validated: the mean residual images of two interleaved halves
        # of the active frames must agree (fitting a and testing it on the same frames would
        # always agree, noise included)
        act = np.flatnonzero(c_raw > np.mean(c_raw) + np.std(c_raw))
        if len(act) < 4:
            return False
        sup = _dilated_support(a, (r1 - r0, c1 - c0))
        act = order[act]  # their ring slots
        m1, m2 = Y[sup][:, act[0::2]].mean(1), Y[sup][:, act[1::2]].mean(1)
        if np.std(m1) <= 0 or np.std(m2) <= 0:
            return False
        rval = float(np.corrcoef(m1, m2)[0, 1])
        if rval < o.rval_thr:
            return False
        # not a duplicate of a known footprint
        full = np.zeros(self.P, np.float32)
        full[box] = a
        if self.K:
            ov = np.asarray(self.At @ full).ravel()
            if ov.max() > o.thresh_overlap:
                return False
            if self._copies_a_neighbour(full, c_raw, order):
                return False
        self._add(full, np.maximum(c_raw, 0), c_raw, order)
        return True

    def _copies_a_neighbour(self, full: np.ndarray, c_raw: np.ndarray, order: np.ndarray) -> bool:
        """Whether the candidate's buffer trace (oldest first) is that of a known component
        whose disk holds the candidate's peak: CaImAn's duplicate rule (overlap and correlated
        traces), with "overlap" read as "where that footprint may be". A footprint's faint
        rim (below ``maxthr`` of its peak, or beyond its support at birth) stays in the
        residual and fires with the neuron; tested again and again over a long movie it
        would pass sooner or later and add a copy of the neuron beside it."""
        i, j = np.unravel_index(int(np.argmax(full)), self.dims, order="F")
        d2 = ((self._centres - (int(i), int(j))) ** 2).sum(1)
        near = np.flatnonzero(d2 <= self.opts.radius ** 2)
        if not len(near):
            return False
        Cn = self.Cbuf[:, near][order].astype(np.float64)  # (B, n) oldest first
        Cn -= Cn.mean(0)
        x = c_raw - c_raw.mean()
        den = np.linalg.norm(Cn, axis=0) * np.linalg.norm(x)
        r = (x @ Cn) / np.where(den > 0, den, np.inf)
        return bool(r.max() >= self.opts.dup_corr)

    def _add(self, full: np.ndarray, cbuf: np.ndarray, raw: np.ndarray, order: np.ndarray) -> None:
        """Append a component whose buffer trace is ``cbuf`` (``raw``: unclipped; oldest first).

        Incremental: A gains a column, AᵀA a row and column, the new component the first
        colour none of its overlapping neighbours has; nothing is rebuilt."""
        K, nb, B = self.K, self.nb, self.B
        M = K + nb
        i, j = (int(x) for x in np.unravel_index(int(np.argmax(full)), self.dims, order="F"))
        d = _disk((i, j), self.opts.radius, self.dims)
        v = full[d]
        v /= np.linalg.norm(v)
        Rbox, inbox = self._ring_box(i, j, d)
        cring = np.empty(B)
        cring[order] = cbuf  # the new trace in ring order
        self._insert_stats(*self._new_stats(i, j, d, Rbox, inbox, cring, cbuf, order), cbuf)
        # remove it from the residual buffer and its energy
        vbox = np.zeros(Rbox.shape[1] * Rbox.shape[2], np.float32)
        vbox[inbox] = v
        Rbox -= (cring[:, None].astype(np.float32) * vbox[None, :]).reshape(Rbox.shape)
        self.Cbuf[:, K + 1 : M + 1] = self.Cbuf[:, K:M].copy()
        self.Cbuf[order, K] = cbuf
        self.sv.ravel()[d] = 0
        c = np.zeros(M + 1)
        c[:K] = self.c[:K]
        c[K] = cbuf[-1]
        c[K + 1 :] = self.c[K:M]
        self.c = c
        # traces of this epoch: the buffer frames (older ones stay 0)
        n = min(B, self.t_idx)
        self.noisy[K, self.t_idx - n : self.t_idx] = raw[B - n :]
        self._append_column(d, v, (i, j))

    def _ring_box(self, i: int, j: int, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bounding box of the disk ``d`` around (i, j) in the ring buffer, as a view
        (B, cols, rows), and the places of the disk's pixels in the box."""
        d1, d2 = self.dims
        R_ = self.opts.radius
        r0, c0 = max(i - R_, 0), max(j - R_, 0)
        r1, c1 = min(i + R_ + 1, d1), min(j + R_ + 1, d2)
        Rbox = self.Rbuf.reshape(self.B, d2, d1)[:, c0:c1, r0:r1]
        inbox = (d // d1 - c0) * (r1 - r0) + (d % d1 - r0)
        return Rbox, inbox

    def _new_stats(self, i: int, j: int, d: np.ndarray, Rbox: np.ndarray, inbox: np.ndarray, cring: np.ndarray,
                   cbuf: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The new component's CY (on its disk) and CC row, as if it had been silent before
        the buffer: the buffer's residual plus the model of the known components there."""
        K, M = self.K, self.K + self.nb
        R_ = self.opts.radius
        Cb = self.Cbuf[order][:, :M].astype(np.float64)  # (B, M) oldest first
        model_d = Cb[:, K:] @ self.b[d].T.astype(np.float64)
        near = np.flatnonzero(((self._centres - (i, j)) ** 2).sum(1) <= (2 * R_ + 1) ** 2)
        if len(near):  # the known footprints on this disk, from the disks that can reach it
            ip = self.A.indptr
            Ad = np.zeros((len(d), len(near)))
            for col, k in enumerate(near):
                _, ia, ib = np.intersect1d(d, self.px[k], assume_unique=True, return_indices=True)
                Ad[ia, col] = self.A.data[ip[k] + ib]
            model_d += Cb[:, near] @ Ad.T
        cy = (cring @ Rbox.reshape(self.B, -1))[inbox] + cbuf @ model_d
        return cy, Cb.T @ cbuf

    def _insert_stats(self, cy: np.ndarray, cc: np.ndarray, cbuf: np.ndarray) -> None:
        """The new component takes row/col K of CC; background rows move from K.. to K+1.."""
        K, M = self.K, self.K + self.nb
        CC = self.CC
        CC[K + 1 : M + 1, :] = CC[K:M, :].copy()
        CC[:, K + 1 : M + 1] = CC[:, K:M].copy()
        CC[K, :] = 0
        CC[:, K] = 0
        CC[K, :K] = cc[:K]
        CC[:K, K] = cc[:K]
        CC[K, K + 1 : M + 1] = cc[K:]
        CC[K + 1 : M + 1, K] = cc[K:]
        CC[K, K] = cbuf @ cbuf
        self.CYv = np.concatenate([self.CYv, cy])

    def _append_column(self, d: np.ndarray, v: np.ndarray, centre: tuple[int, int]) -> None:
        """The structure gains the new footprint ``v`` on disk ``d``: its overlaps (AᵀA row and
        column, background included), its colour, its column of A."""
        K, M = self.K, self.K + self.nb
        fv = np.zeros(self.P, np.float32)
        fv[d] = v
        at = np.asarray(self.At @ fv, np.float64).ravel() if K else np.zeros(0)
        atb = self.b[d].T.astype(np.float64) @ v
        AtA = np.zeros((M + 1, M + 1))
        AtA[:K, :K] = self.AtA[:K, :K]
        AtA[K + 1 :, K + 1 :] = self.AtA[K:, K:]
        AtA[:K, K + 1 :] = self.AtA[:K, K:]
        AtA[K + 1 :, :K] = self.AtA[K:, :K]
        AtA[K, :K] = at
        AtA[:K, K] = at
        AtA[K, K] = float(v.astype(np.float64) @ v)
        AtA[K, K + 1 :] = atb
        AtA[K + 1 :, K] = atb
        self.AtA = AtA
        used = set(self.color[at != 0].tolist())
        col = 0
        while col in used:
            col += 1
        self.color = np.append(self.color, col)
        A = self.A
        self._set_A(np.concatenate([A.data, v.astype(np.float32)]), np.concatenate([A.indices, d]),
                    np.append(A.indptr, A.indptr[-1] + len(d)))
        self.px.append(d)
        self._centres = np.vstack([self._centres, list(centre)])
        self.K += 1
        self.n_added += 1
        self.born.append(self.t_total)
        self.allowed.append(self._allowed(v, d))
        self._set_groups()

    # -- shapes ---------------------------------------------------------------------------------
    def update_shapes(self, iters: int = 2) -> None:
        """HALS on the statistics, one non-overlapping group at a time; background last.

        Shapes are rewritten in place in ``A.data`` (the disks are the fixed structure); AᵀA
        and the groups are rebuilt once at the end."""
        K, nb = self.K, self.nb
        if K == 0:
            return
        M = K + nb
        CC = self.CC[:M, :M]
        A = self.A
        ip = A.indptr
        groups = [g for g in self.groups if g[0] < K]
        for _ in range(iters):
            for grp in groups:
                grp = np.array([k for k in grp if k >= self.n_fixed], int)
                if not len(grp):
                    continue
                rows = np.concatenate([self.px[k] for k in grp])
                kk = np.repeat(grp, [len(self.px[k]) for k in grp])  # owner of each row
                # G[r] = Σ_j A[rows[r], j] CC[j, kk[r]] + b[rows[r]] CC[K:, kk[r]]: only the
                # stored entries of those rows, summed per row
                sub = A.tocsr()[rows]
                er = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
                G = np.bincount(er, weights=sub.data * CC[sub.indices, kk[er]], minlength=len(rows))
                G += np.einsum("rj,jr->r", self.b[rows], CC[K:][:, kk])
                start = 0
                for k in grp:
                    d = self.px[k]
                    n = len(d)
                    gk = G[start : start + n]
                    start += n
                    a = A.data[ip[k] : ip[k + 1]].astype(np.float64)
                    if not self._active(k, a, d, CC[k, k]):
                        continue
                    cy = self.CYv[ip[k] : ip[k + 1]]
                    new = np.maximum(a + (cy - gk) / CC[k, k], 0)
                    new = self._confine(new, k, d)
                    nrm = float(np.linalg.norm(new))
                    if nrm > 0:
                        A.data[ip[k] : ip[k + 1]] = new / nrm
        # background: b_j = max(0, b_j + (CYb_j - Ab CC_j) / CC_jj)
        for j in range(nb):
            jj = K + j
            if CC[jj, jj] <= 0:
                continue
            Ab_cc = A @ CC[:K, jj] + self.b @ CC[K:, jj]
            self.b[:, j] = np.maximum(self.b[:, j] + (self.CYb[j] - Ab_cc) / CC[jj, jj], 0)
        self._rebuild()

    def _active(self, k: int, a: np.ndarray, d: np.ndarray, cc: float) -> bool:
        """Whether a trace has carried more than noise: a shape fitted to a still-silent
        neuron's statistics (seeded, or found before it fired much) would be noise."""
        noise = float((a * a) @ self.sn2[d])  # var of the projection
        frames = max(self.t_total - self.born[k], 1)
        return cc / frames > 4.0 * _NOISE_E * noise

    def _box(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        d1 = self.dims[0]
        r, c = d % d1, d // d1
        r, c = r - r.min(), c - c.min()
        return r, c, (int(r.max()) + 1, int(c.max()) + 1)

    def _allowed(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Where a shape may grow: its support at birth dilated by ~gSig/2 (fixed, so repeated
        updates cannot creep over neuropil; the offline HALS has the same bound)."""
        radius = max(1, int(round(np.mean(self.opts.gSig) / 2)))
        r, c, hw = self._box(d)
        img = np.zeros(hw, np.uint8)
        img[r, c] = v > 0
        img = cv2.dilate(img, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)), iterations=radius)
        return img[r, c] > 0

    def _confine(self, new: np.ndarray, k: int, d: np.ndarray) -> np.ndarray:
        """Keep a shape where it may be, thresholded at maxthr, in one connected piece."""
        new = np.where(self.allowed[k], new, 0.0)
        r, c, hw = self._box(d)
        img = np.zeros(hw)
        img[r, c] = new
        flat = model.clean_footprint(img.reshape(-1, order="F"), hw, self.opts.maxthr)
        return flat.reshape(hw, order="F")[r, c]

    # -- results --------------------------------------------------------------------------------
    def footprints(self) -> sp.csc_matrix:
        """A without the explicit zeros of the disks (P x K, unit-norm columns)."""
        A = self.A.copy()
        A.eliminate_zeros()
        return A

    def traces(self) -> tuple[np.ndarray, np.ndarray]:
        """Noisy traces (K, T) and background traces (nb, T) of the current epoch."""
        T = self.t_idx
        return self.noisy[: self.K, :T].copy(), self.noisy[self.cap : self.cap + self.nb, :T].copy()

