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
footprints < thresh_overlap) and up to ``max_num_added`` accepted. Every ``update_freq`` frames
all shapes are refitted from the statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.special

from ..cnmf import core

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


def _groups(AtA: np.ndarray) -> list[np.ndarray]:
    """Greedy colouring of the overlap graph: components in one group share no pixel."""
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
    return [np.flatnonzero(color == c) for c in range(color.max() + 1)] if K else []


class OnlineCNMF:
    """OnACID's state and its per-frame update; frames are Fortran-order pixel vectors."""

    def __init__(self, dims: tuple[int, int], opts: OnlineOptions, A: np.ndarray, C: np.ndarray,
                 b: np.ndarray, f: np.ndarray, Yr: np.ndarray, sn: np.ndarray, fixed: bool = False):
        """Start from an initialisation on the (P, T0) frames ``Yr`` (A dense P x K, C K x T0);
        ``fixed``: the initial shapes are seeds and keep their shapes (new ones are updated)."""
        self.dims = dims
        self.P = dims[0] * dims[1]
        self.opts = opts
        T0 = Yr.shape[1]
        self.nb = b.shape[1]
        self.sn = np.maximum(sn.astype(np.float32), max(float(np.percentile(sn, 10)), 1e-6))
        # footprints: unit norm, confined to a disk around their brightest pixel
        self.px: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        keep = []
        for k in range(A.shape[1]):
            a = A[:, k]
            if not np.any(a > 0):
                continue
            i, j = np.unravel_index(int(np.argmax(a)), dims, order="F")
            d = _disk((int(i), int(j)), opts.radius, dims)
            v = np.maximum(a[d], 0).astype(np.float32)
            n = float(np.linalg.norm(v))
            if n <= 0:
                continue
            self.px.append(d)
            vals.append(v / n)
            keep.append((k, n))
        C = np.array([C[k] * n for k, n in keep], np.float64).reshape(len(keep), T0)
        self.vals = vals
        self.b = np.ascontiguousarray(b, np.float32)
        self.K = len(self.px)
        # traces: noisy (raw) traces of every frame of the current epoch, preallocated
        self.cap = max(opts.expected_comps, self.K + opts.max_num_added)
        self.T_epoch = T0
        self.noisy = np.zeros((self.cap + self.nb, 0), np.float32)
        self.t_total = T0  # frames the statistics have seen
        self._rebuild()
        # sufficient statistics on the initial batch (sums, not means: no rescaling per frame)
        Cf = np.vstack([C, np.asarray(f, np.float64)])
        self.CC = np.zeros((self.cap + self.nb,) * 2)
        M = self.K + self.nb
        self.CC[:M, :M] = Cf @ Cf.T
        self.CYv = (np.concatenate([np.asarray(Yr[d], np.float64) @ C[k] for k, d in enumerate(self.px)])
                    if self.K else np.zeros(0))  # Σ c_k y on each disk, aligned with A.data
        self.CYb = np.asarray(Yr, np.float64) @ Cf[self.K :].T  # (P, nb)
        self.c = Cf[:, -1].copy()
        # residual buffer (ring) and the traces of its frames
        B = min(opts.minibatch_shape, T0)
        self.B = opts.minibatch_shape
        self.Rbuf = np.zeros((self.B, self.P), np.float32)
        self.Cbuf = np.zeros((self.B, self.cap + self.nb), np.float32)
        self.pos = 0  # next slot in the ring
        last = slice(T0 - B, T0)
        R = np.asarray(Yr[:, last], np.float32) - self._model(Cf[:, last])
        for t in range(B):
            self._push(R[:, t], Cf[:, T0 - B + t])
        self.lam = 1.0 - 1.0 / self.B
        self.sv = np.zeros(dims, np.float32)
        for t in range(B):
            self.sv = self.lam * self.sv + self._energy(R[:, t])
        self.blocked = np.zeros(dims, np.int64)  # frame until which a location is not retested
        self.t = T0
        self.init_traces = Cf.astype(np.float32)
        self.n_fixed = self.K if fixed else 0
        self.born = [0] * self.K  # t_total when each component appeared
        self.allowed = [self._allowed(v, d) for v, d in zip(self.vals, self.px, strict=True)]
        self.n_added = 0
        self.start_epoch(T0)

    # -- structure ---------------------------------------------------------------------------
    def _rebuild(self) -> None:
        """A as CSC with the disks as fixed structure, AᵀA and the non-overlapping groups."""
        K = self.K
        lens = np.array([len(d) for d in self.px], np.int64)
        indptr = np.concatenate([[0], np.cumsum(lens)]) if K else np.zeros(1, np.int64)
        idx = np.concatenate(self.px) if K else np.zeros(0, np.int64)
        data = np.concatenate(self.vals) if K else np.zeros(0, np.float32)
        self.A = sp.csc_matrix((data, idx, indptr), shape=(self.P, K))
        self.At = self.A.T.tocsr()
        self.owner = np.repeat(np.arange(K), lens)
        self.pix_all = idx
        AtA = (self.At @ self.A).toarray()
        M = K + self.nb
        self.AtA = np.zeros((M, M))
        self.AtA[:K, :K] = AtA
        Atb = self.At @ self.b
        self.AtA[:K, K:] = Atb
        self.AtA[K:, :K] = Atb.T
        self.AtA[K:, K:] = self.b.T.astype(np.float64) @ self.b
        # overlap by support (values may be exactly zero on a disk)
        S = sp.csc_matrix(((self.A.data > 0).astype(np.float32), self.A.indices, self.A.indptr),
                          shape=self.A.shape)
        self.groups = _groups((S.T @ S).toarray())
        self.groups += [np.array([K + j]) for j in range(self.nb)]
        self.diag = np.maximum(np.diag(self.AtA), 1e-12)

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

    def _energy(self, r: np.ndarray) -> np.ndarray:
        """Positive part of the noise-normalised, neuron-scale-blurred residual, squared."""
        z = (r / self.sn).reshape(self.dims, order="F")
        g = self.opts.gSig
        ks = (2 * g[1] + 1, 2 * g[0] + 1)
        zb = cv2.GaussianBlur(z, ks, g[1], sigmaY=g[0], borderType=cv2.BORDER_REFLECT)
        k1 = cv2.getGaussianKernel(ks[1], g[0])
        k2 = cv2.getGaussianKernel(ks[0], g[1])
        zb /= float(np.sqrt((k1**2).sum() * (k2**2).sum()))  # unit variance for pure noise
        np.maximum(zb, 0, out=zb)
        return zb * zb

    # -- per frame -----------------------------------------------------------------------------
    def fit_next(self, y: np.ndarray) -> int:
        """Process one registered frame (P,) float32; returns the number of components added."""
        K, nb = self.K, self.nb
        M = K + nb
        AtY = np.empty(M)
        AtY[:K] = self.At @ y
        AtY[K:] = self.b.T @ y
        c = self.c[:M].copy()
        AtA = self.AtA
        for _ in range(self.opts.iters):
            for g in self.groups:
                c[g] = np.maximum(c[g] + (AtY[g] - AtA[g] @ c) / self.diag[g], 0)
        self.c = c
        # stored trace = c plus its unexplained projection (CaImAn's noisyC = C + YrA), so the
        # noise below the baseline stays visible to the SNR and the deconvolution
        self._store_trace(c + (AtY - AtA @ c) / self.diag)
        # statistics
        self.CC[:M, :M] += np.outer(c, c)
        if K:
            self.CYv += c[self.owner] * y[self.pix_all]
        self.CYb += y[:, None].astype(np.float64) * c[K:][None, :]
        r = y - self.A @ c[:K] - self.b @ c[K:]
        r = r.astype(np.float32)
        self._push(r, c)
        self.sv *= self.lam
        self.sv += self._energy(r)
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
    def _detect(self) -> int:
        o = self.opts
        thr = _NOISE_E / (1 - self.lam) * 3.0  # three times what noise alone accumulates
        sv = self.sv
        if float(sv.max()) <= thr:
            return 0
        g = o.gSig
        dil = cv2.dilate(sv, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g[1] + 1, 2 * g[0] + 1)))
        cand = (sv >= dil) & (sv > thr) & (self.blocked <= self.t)
        if not cand.any():
            return 0
        rr, cc = np.nonzero(cand)
        order = np.argsort(-sv[rr, cc])[: o.min_num_trial]
        added = 0
        for i, j in zip(rr[order], cc[order], strict=True):
            if added >= o.max_num_added:
                break
            if self.K + 1 > self.cap:
                self._grow()
            if self._try_add(int(i), int(j)):
                added += 1
            else:
                h = max(g)
                self.blocked[max(i - h, 0) : i + h + 1, max(j - h, 0) : j + h + 1] = self.t + self.B // 2
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
        yy, xx = np.mgrid[r0:r1, c0:c1]
        box = (yy + xx * d1).ravel(order="F")  # patch pixels, patch in Fortran order
        order = self._ordered()
        Y = self.Rbuf[:, box][order].T.astype(np.float64)  # (n, B)
        ii, jj = i - r0, j - c0
        pimg = Y.reshape(r1 - r0, c1 - c0, -1, order="F")
        seed = pimg[max(ii - 1, 0) : ii + 2, max(jj - 1, 0) : jj + 2].reshape(-1, Y.shape[1]).mean(0)
        a, c = core._rank1(Y, seed, 5)
        if not (np.any(a > 0) and np.any(c > 0)):
            return False
        img = core._clean_footprint(a, (r1 - r0, c1 - c0), o.maxthr, True)
        if (img > 0).sum() < 3:
            return False
        a = img / np.linalg.norm(img)
        # trace of the candidate in the buffer, unconstrained (noise stays visible to the test)
        c_raw = a @ Y
        fitness = core.event_exceptionality(c_raw[None], o.n_samples)[0]
        if not fitness < o.fitness_thr:
            return False
        # space correlation, cross-validated: the mean residual images of two interleaved halves
        # of the active frames must agree (fitting a and testing it on the same frames would
        # always agree, noise included)
        act = np.flatnonzero(c_raw > np.mean(c_raw) + np.std(c_raw))
        if len(act) < 4:
            return False
        sup = core._support_masks(a[:, None], (r1 - r0, c1 - c0), 1)[:, 0]
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
        self._add(full, np.maximum(c_raw, 0), c_raw, order)
        return True

    def _add(self, full: np.ndarray, cbuf: np.ndarray, raw: np.ndarray, order: np.ndarray) -> None:
        """Append a component whose buffer trace is ``cbuf`` (``raw``: unclipped; oldest first)."""
        K, nb, B = self.K, self.nb, self.B
        i, j = np.unravel_index(int(np.argmax(full)), self.dims, order="F")
        d = _disk((int(i), int(j)), self.opts.radius, self.dims)
        v = full[d]
        v /= np.linalg.norm(v)
        # statistics as if the neuron had been silent before the buffer
        Cb = self.Cbuf[order][:, : K + nb].astype(np.float64)  # (B, M) oldest first
        Y_d = self.Rbuf[:, d][order].astype(np.float64)  # residuals on the disk
        model_d = Cb[:, K:] @ self.b[d].T.astype(np.float64)
        if K:
            model_d += np.asarray(self.A.tocsr()[d] @ Cb[:, :K].T).T
        cy = cbuf @ (Y_d + model_d)
        cc = Cb.T @ cbuf
        # the new component takes row/col K; background rows move from K.. to K+1..
        M = K + nb
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
        self.px.append(d)
        self.vals.append(v.astype(np.float32))
        # remove it from the residual buffer and its energy
        for s, slot in enumerate(order):
            self.Rbuf[slot, d] -= cbuf[s] * v
        self.Cbuf[:, K + 1 : M + 1] = self.Cbuf[:, K:M].copy()
        self.Cbuf[order, K] = cbuf
        svf = self.sv.ravel(order="F").copy()
        svf[d] = 0
        self.sv = svf.reshape(self.dims, order="F").astype(np.float32)
        c = np.zeros(M + 1)
        c[:K] = self.c[:K]
        c[K] = cbuf[-1]
        c[K + 1 :] = self.c[K:M]
        self.c = c
        # traces of this epoch: the buffer frames (older ones stay 0)
        n = min(B, self.t_idx)
        self.noisy[K, self.t_idx - n : self.t_idx] = raw[B - n :]
        self.K += 1
        self.n_added += 1
        self.born.append(self.t_total)
        self.allowed.append(self._allowed(self.vals[-1], d))
        self._rebuild()

    # -- shapes ---------------------------------------------------------------------------------
    def update_shapes(self, iters: int = 2) -> None:
        """HALS on the statistics, one non-overlapping group at a time; background last."""
        K, nb = self.K, self.nb
        if K == 0:
            return
        M = K + nb
        CC = self.CC[:M, :M]
        groups = [g for g in self.groups if g[0] < K]
        for _ in range(iters):
            for grp in groups:
                rows = np.concatenate([self.px[k] for k in grp])
                owner = np.repeat(np.arange(len(grp)), [len(self.px[k]) for k in grp])
                G = self.A.tocsr()[rows] @ CC[:K][:, grp] + self.b[rows] @ CC[K:][:, grp]  # (R, g)
                G = np.asarray(G)[np.arange(len(rows)), owner]
                start = 0
                for k in grp:
                    d = self.px[k]
                    n = len(d)
                    gk = G[start : start + n]
                    start += n
                    a = self.vals[k].astype(np.float64)
                    if k < self.n_fixed or not self._active(k, a, d, CC[k, k]):
                        continue
                    cy = self.CYv[self.A.indptr[k] : self.A.indptr[k + 1]]
                    new = np.maximum(a + (cy - gk) / CC[k, k], 0)
                    new = self._confine(new, k, d)
                    nrm = float(np.linalg.norm(new))
                    if nrm > 0:
                        self.vals[k] = (new / nrm).astype(np.float32)
                self._rebuild()
        # background: b_j = max(0, b_j + (CYb_j - Ab CC_j) / CC_jj)
        for j in range(nb):
            jj = K + j
            if CC[jj, jj] <= 0:
                continue
            Ab_cc = self.A @ CC[:K, jj] + self.b @ CC[K:, jj]
            self.b[:, j] = np.maximum(self.b[:, j] + (self.CYb[:, j] - Ab_cc) / CC[jj, jj], 0)
        self._rebuild()

    def _active(self, k: int, a: np.ndarray, d: np.ndarray, cc: float) -> bool:
        """Whether a trace has carried more than noise: a shape fitted to a still-silent
        neuron's statistics (seeded, or found before it fired much) would be noise."""
        noise = float((a * a) @ (self.sn[d].astype(np.float64) ** 2))  # var of the projection
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
        flat = core._clean_footprint(img.reshape(-1, order="F"), hw, self.opts.maxthr, True)
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

