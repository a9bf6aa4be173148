"""Numerical core of the built-in CNMF and CNMF-E (numpy/scipy/OpenCV + OASIS).

The model is CaImAn's: ``Y ≈ A·C + B`` with nonnegative footprints ``A`` (pixels x K, Fortran
pixel order; sparse from seeding to pruning, :mod:`.footprints`), traces ``C`` (K x T)
following an AR(p) process and a background ``B``. Steps:

* initialisation: CaImAn's greedyROI idea (Gaussian-blurred movie, the pixel of highest
  blurred energy seeds a rank-1 NMF on a local window, which is then subtracted) or, for
  CNMF-E, seeds from the correlation x peak-to-noise images of a high-pass-filtered movie;
* alternating HALS updates of A (each footprint confined to a dilation of its support, then
  thresholded and reduced to its largest connected piece) and C, with a low-rank nonnegative
  background ``b·f`` updated jointly; CNMF-E with ``nb=0`` instead uses CaImAn's ring model
  (:mod:`.ring`: sparse ``W`` and ``b0``, fitted twice, A and C refined on ``Y - B``);
* merging of spatially overlapping components whose traces correlate above ``merge_thr``
  (a footprint lying mostly inside another's merges at a lower correlation: a piece of the
  cell), then dropping footprints under half a cell and traces at white-noise level;
* AR(p) deconvolution of each trace with OASIS (C, S, g, bl, c1, neurons_sn, lam);
* evaluation: CaImAn's event-exceptionality SNR and spatial r-values (the builtin's r-value
  compares the footprint with its transients' image over the footprint and a ring around it).

Everything here works on plain arrays; the run functions in ``builtin.py`` deal with files.
Products with the movie are taken in pixel blocks from the C-order memmap, so the refinement
over the whole field never holds more than one block of the movie; initialisation holds one
patch (the whole field when ``rf`` is None) in memory.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.special

from ...errors import MemoryBudgetError, ParamError
from ...processes import Workers
from ..checkpoint import report_resume
from . import budget, resume
from . import footprints as fp
from .deconvolution import deconvolve_in
from .evaluation import accept_thresholds, select_components
from .model import Movie as _Movie
from .model import activity_frames as _activity_frames
from .model import even_slices, median_last, noise_psd, running_min_max
from .model import init_background as _init_background
from .model import pixel_blocks as _blocks
from .model import rank1 as _rank1
from .ring import RingModel, ds_dims, scratch_bytes

log = logging.getLogger(__name__)

#: what a fit's worker processes run: this module's patch fits and residual pass, and OASIS
#: (which imports scipy.signal, half a second) for the deconvolutions
WORKER_MODULES = (__name__, "oasis.functions")

ProgressFn = Callable[[float, str], None]

#: initialisations the builtin backend implements (the others are CaImAn-only)
BUILTIN_INITS = ("greedy_roi", "corr_pnr")


def _noprogress(fraction: float, message: str = "") -> None:
    return None


# ------------------------------------------------------------------------------------------
# options
# ------------------------------------------------------------------------------------------
@dataclass
class Options:
    """The CaImAn params the built-in backend uses, read from the flat ``main`` dict."""

    fr: float = 30.0
    decay_time: float = 0.4
    K: int | None = 30
    gSig: tuple[int, int] = (5, 5)
    gSiz: tuple[int, int] | None = None
    nb: int = 1
    method_init: str = "greedy_roi"
    min_corr: float = 0.85
    min_pnr: float = 20.0
    center_psf: bool = False
    ring_size_factor: float = 1.5
    ssub_B: int = 2
    normalize_init: bool = True
    rolling_sum: bool = True
    rolling_length: int = 100
    tsub: int = 2
    nIter: int = 5
    maxIter: int = 5
    rf: int | None = None
    stride: int | None = None
    only_init: bool = True
    merge_thr: float = 0.8
    do_merge: bool = True
    p: int = 2
    bas_nonneg: bool = False
    ITER: int = 2
    noise_range: tuple[float, float] = (0.25, 0.5)
    min_SNR: float = 2.5
    rval_thr: float = 0.8
    SNR_lowest: float = 0.5
    rval_lowest: float = -1.0
    use_cnn: bool = False
    maxthr: float = 0.1
    extract_cc: bool = True
    memory_budget_mb: float = 1024.0
    cnmfe: bool = False
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_main(cls, main: dict[str, Any], *, cnmfe: bool = False) -> Options:
        names = {f.name for f in cls.__dataclass_fields__.values()}  # type: ignore[attr-defined]
        kw = {k: v for k, v in main.items() if k in names}
        o = cls(**kw, cnmfe=cnmfe)
        o.gSig = tuple(int(round(float(g))) for g in (o.gSig if np.ndim(o.gSig) else (o.gSig, o.gSig)))[:2]  # type: ignore[assignment]
        if o.gSiz is None:
            o.gSiz = tuple(2 * g + 1 for g in o.gSig) if not cnmfe else tuple(4 * g + 1 for g in o.gSig)  # type: ignore[assignment]
        else:
            o.gSiz = tuple(int(g) for g in (o.gSiz if np.ndim(o.gSiz) else (o.gSiz, o.gSiz)))[:2]  # type: ignore[assignment]
        o.noise_range = tuple(float(v) for v in o.noise_range)  # type: ignore[assignment]
        if isinstance(o.rf, (list, tuple)):
            o.rf = int(o.rf[0])
        if isinstance(o.stride, (list, tuple)):
            o.stride = int(o.stride[0])
        if o.method_init not in BUILTIN_INITS:
            raise ParamError(
                f"method_init={o.method_init!r} is not available in the builtin backend, which "
                f"supports {', '.join(map(repr, BUILTIN_INITS))}; run the item with backend='caiman' "
                "for CaImAn's other initialisations"
            )
        o.extra = dict(main)
        return o

    @property
    def n_samples(self) -> int:
        """Frames in one transient (CaImAn's N for event exceptionality)."""
        return max(1, int(math.ceil(self.fr * self.decay_time)))

    @property
    def held_bytes(self) -> float:
        """What the refinement may hold whole beside the seeding (CNMF-E's ``Y - B`` and its ring
        fluctuation, each): a quarter of ``memory_budget_mb``; past it, they are recomputed
        per pass or kept in files."""
        return self.memory_budget_mb * budget.MiB / 4


def background_rank(opts: Options) -> int:
    """Rank of the low-rank background ``b·f`` fitted with the components: ``nb`` (0 when
    ``nb <= 0``; CNMF-E then uses the ring model instead, see :func:`uses_ring`)."""
    return max(int(opts.nb), 0)


def uses_ring(opts: Options) -> bool:
    """CNMF-E with ``nb <= 0``: CaImAn's ring-model background (sparse ``W`` and ``b0``)."""
    return bool(opts.cnmfe) and opts.nb <= 0


# ------------------------------------------------------------------------------------------
# small utilities
# ------------------------------------------------------------------------------------------
def mode_robust(x: np.ndarray) -> float:
    """Half-sample mode (as CaImAn's ``mode_robust``), iteratively."""
    d = np.sort(np.asarray(x, np.float64).ravel())
    while d.size > 3:
        n = d.size // 2 + d.size % 2
        w = d[n - 1 :] - d[: d.size - n + 1]
        j = int(np.argmin(w))
        d = d[j : j + n]
    if d.size == 3:
        i1, i2 = d[1] - d[0], d[2] - d[1]
        return float(d[:2].mean() if i1 < i2 else d[1:].mean() if i2 < i1 else d[1])
    return float(d.mean()) if d.size else 0.0


def _percentile_baseline(traces: np.ndarray) -> np.ndarray:
    """8th percentile in windows of min(T//5, 800) frames, interpolated (CaImAn's fast baseline)."""
    K, T = traces.shape
    win = max(1, min(T // 5, 800))
    if K == 0 or win < 2:
        return np.zeros_like(traces)
    nwin = int(math.ceil(T / win))
    pad = nwin * win - T
    padded = np.pad(traces, ((0, 0), (pad // 2, pad - pad // 2)), mode="reflect") if pad else traces
    bl = np.percentile(padded.reshape(K, nwin, win), 8, axis=2)
    centers = (np.arange(nwin) + 0.5) * win - pad // 2
    t = np.arange(T)
    return np.stack([np.interp(t, centers, row) for row in bl])


def event_exceptionality(traces: np.ndarray, N: int, sigma_factor: float = 3.0,
                         sd_floor: np.ndarray | None = None) -> np.ndarray:
    """CaImAn's ``compute_event_exceptionality`` fitness: min over time of the log-probability
    of N consecutive values under the noise estimated below the mode (lower = more exceptional).
    ``sd_floor`` (per trace) is the least noise SD used (see :func:`snr_from_traces`)."""
    K, T = traces.shape
    if K == 0:
        return np.zeros(0)
    N = max(1, min(N, T))
    md = np.array([mode_robust(tr) for tr in traces])
    ff1 = traces - md[:, None]
    ff1 = -ff1 * (ff1 < 0)
    ns = np.maximum(np.sum(ff1 > 0, axis=1), 1)
    sd_r = np.sqrt(np.sum(ff1**2, axis=1) / ns)
    if sd_floor is not None:
        sd_r = np.maximum(sd_r, sd_floor)
    sd_r[sd_r == 0] = np.finfo(np.float32).eps
    z = (traces - md[:, None]) / (sigma_factor * sd_r[:, None])
    erf = scipy.special.log_ndtr(-z)
    erfc = np.cumsum(erf, axis=1)
    erfc[:, N:] -= erfc[:, :-N]
    return np.min(erfc, axis=1)


#: how far a trace's spread below its mode may understate its white noise (:func:`noise_psd`)
#: before the latter sets the noise instead; see :func:`snr_from_traces`
SKEWED_NOISE_RATIO = 1.5


def snr_from_traces(traces: np.ndarray, N: int, skewed_noise: bool = True) -> np.ndarray:
    """SNR_comp as CaImAn computes it (baseline removed, exceptionality turned into a z value),
    with one difference: the noise SD is at least the trace's high-frequency noise
    (:func:`noise_psd`) over ``SKEWED_NOISE_RATIO``.

    CaImAn measures the noise below the mode, which suits Gaussian noise. Photon-limited 2p data
    (Allen's: a few photons per pixel and frame) has skewed noise, narrow below the mode and
    with single-frame jumps above it, so a component fitted to that noise scored SNR 5-25. On
    such traces the high-frequency noise is 5-20x the spread below the mode; on a cell's trace
    with Gaussian noise it is about 1x and the SNR does not change, except on strong cells whose
    sharp rises reach the high frequencies: their SNR drops by up to a third and stays far above
    any threshold (measured on the simulator and the Neurofinder crop).

    The floor needs transients that last: with ``N`` < 2 (a slow frame rate) or
    ``skewed_noise=False`` (seeding on frames averaged over a decay) a transient is one frame
    high, as a shot-noise jump is, and CaImAn's estimate is used alone.
    """
    if len(traces) == 0:
        return np.zeros(0)
    tr = np.asarray(traces, np.float64)
    tr = tr - _percentile_baseline(tr)
    floor = None
    if skewed_noise and N >= 2:
        floor = noise_psd(tr).astype(np.float64) / SKEWED_NOISE_RATIO
    fitness = event_exceptionality(tr, N, sd_floor=floor)
    return -scipy.special.ndtri(np.exp(fitness / N))  # norm.ppf, without scipy.stats' import


#: below this share of its variance at the indicator's time scale, a trace is background
FAST_FRACTION_MIN = 0.04


def fast_fraction(C: np.ndarray, N: int) -> np.ndarray:
    """Share of each trace's variance left after a moving average over ``2N + 1`` frames (N: the
    frames of one transient's decay), once its slow baseline (:func:`_percentile_baseline`) is
    removed. A calcium transient rises within a frame or two and decays over N frames, so its
    trace keeps a tenth or more; a vessel's vasomotion, neuropil's slow swings or a drifting
    baseline change over many N and keep a few percent."""
    if len(C) == 0:
        return np.zeros(0)
    X = np.asarray(C, np.float64)
    X = X - _percentile_baseline(X)
    X -= X.mean(1, keepdims=True)
    slow = ndi.uniform_filter1d(X, size=2 * max(1, int(N)) + 1, axis=1, mode="reflect")
    return ((X - slow) ** 2).sum(1) / np.maximum((X * X).sum(1), 1e-12)


@functools.lru_cache(maxsize=16)
def _white_noise_snrs(n: int, N: int) -> np.ndarray:
    """SNR_comp of 400 white-noise traces of ``n`` frames: one sample for every quantile asked
    of it (the prune's floor and the r-value-only floor of one fit share it)."""
    rng = np.random.default_rng(12345)
    return snr_from_traces(rng.standard_normal((400, n)), N)


def noise_snr_floor(T: int, N: int, quantile: float = 0.99) -> float:
    """SNR_comp that a trace of pure white noise (``T`` frames, events of ``N`` frames) reaches
    with probability ``1 - quantile``: a component below it shows no event that noise alone
    would not give. Computed on at most 3,000 frames (the floor only falls with T)."""
    return float(np.quantile(_white_noise_snrs(min(max(int(T), 8), 3000), int(N)), quantile))


# ------------------------------------------------------------------------------------------
# footprint helpers
# ------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------
# initialisation
# ------------------------------------------------------------------------------------------
def _blur(Y3: np.ndarray, gSig: tuple[int, int], gSiz: tuple[int, int]) -> np.ndarray:
    """Gaussian blur of each frame of a (d1, d2, T) array, kernel std gSig over a gSiz window."""
    out = np.empty(Y3.shape, dtype=np.float32)
    ks = (int(gSiz[1]) | 1, int(gSiz[0]) | 1)
    for t0 in range(0, Y3.shape[-1], 128):  # frames as channels (OpenCV 5 takes < 256)
        chunk = np.ascontiguousarray(Y3[..., t0 : t0 + 128], np.float32)
        res = cv2.GaussianBlur(chunk, ks, gSig[1], sigmaY=gSig[0], borderType=cv2.BORDER_REFLECT)
        out[..., t0 : t0 + 128] = res.reshape(chunk.shape)
    return out


#: a pixel that keeps less than this share of its energy after a neighbour's subtraction was
#: that neighbour's halo, not a cell of its own, and is not a seed
HALO_ENERGY = 0.5


def remove_slow_trend(Y: np.ndarray, n_decay: int) -> np.ndarray:
    """Each pixel's trace (last axis) minus its rolling baseline, in place: the lower envelope
    (a minimum then maximum filter over ``8 * n_decay`` frames) of the trace smoothed over half
    a decay. Transients, which fall back within a few decays, stay whole; bleaching, drifting
    baselines, vasomotion and slow neuropil swings, which hold for longer, go."""
    T = Y.shape[-1]
    w = 8 * max(1, int(n_decay)) + 1
    h = w // 2
    for blk in _row_blocks(Y):  # the trend's copies a block of rows at a time, not the movie's
        Yb = Y[blk]
        if T >= 2 * w:
            sm = ndi.uniform_filter1d(Yb, size=max(1, int(n_decay) // 2), axis=-1, mode="nearest")
            # point-symmetric padding continues a trend past the ends (bleaching is steepest at
            # the start): a flat padding would leave the first frames' decay in the trace
            base = np.concatenate([2 * sm[..., :1] - sm[..., h:0:-1], sm, 2 * sm[..., -1:] - sm[..., -2 : -h - 2 : -1]],
                                  axis=-1)
            del sm
            running_min_max(base, w)
            Yb -= base[..., h : h + T]
            del base
        Yb -= median_last(Yb)
    return Y


def _row_blocks(Y: np.ndarray, values: int = 1 << 22) -> list[slice]:
    """Slices of ``Y``'s first axis holding about ``values`` values each (16 MiB of float32);
    a single trace is one block."""
    if Y.ndim < 2:
        return [slice(None)]
    return _blocks(len(Y), max(1, Y[:1].size), values)


def window_energy(sq: np.ndarray, L: int) -> np.ndarray:
    """The largest mean over ``L`` consecutive values of each row of the float32 ``sq`` (n, T):
    OpenCV's box filter sums the windows in float64, 1.5x as fast as float32 running sums and
    closer to the exact sums."""
    sums = cv2.boxFilter(sq, -1, (L, 1), anchor=(0, 0), normalize=False, borderType=cv2.BORDER_CONSTANT)
    return sums[:, : sq.shape[1] - L + 1].max(axis=1) / L


# long: one greedy loop whose state (the residual movie, its blur, the energy, the blocked
# pixels) every step updates around the last seed; split, it would pass all of it back and forth
def greedy_init(Y3: np.ndarray, opts: Options, K: int, n_decay: int | None = None, *,
                overwrite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """CaImAn's greedyROI idea on a (d1, d2, T) movie; returns A (P, K') and C (K', T).

    Stops before K when no pixel's blurred energy rises above what noise alone gives (5 sigma
    of its fluctuation), so a field without cells gives no components; a candidate whose
    trace is not exceptional (SNR < max(SNR_lowest, 1)) is skipped. Unlike CaImAn's, it seeds
    on transients: with ``n_decay`` (frames of one decay in this, possibly downsampled, movie)
    slow trends are removed first (:func:`remove_slow_trend`) and the energy is the largest mean
    over ``4 * n_decay`` frames rather than ``rolling_length``, else a bleaching or drifting field
    outweighs every sparse neuron, and a neuron firing thrice ranks far below one firing often.
    With ``overwrite`` a float32 ``Y3`` is worked on in place (a caller done with it saves a copy).
    """
    d1, d2, T = Y3.shape
    P = d1 * d2
    if K <= 0:
        return np.zeros((P, 0), np.float32), np.zeros((0, T), np.float32)
    Y = Y3.astype(np.float32, copy=not overwrite)
    if n_decay:
        remove_slow_trend(Y, n_decay)
    else:
        Y -= median_last(Y)
    if opts.normalize_init:
        sn = noise_psd(Y, opts.noise_range)
        sn = np.maximum(sn, np.percentile(sn, 10) + 1e-6)
        Y /= sn[..., None]
    else:
        sn = None
    # the rank-1 window reaches 2*gSig from the seed: a gSiz (2*gSig+1) box would leave the
    # footprint's tails behind, and they would seed duplicates
    gHalf = np.maximum(np.array(opts.gSiz) // 2, 2 * np.array(opts.gSig))
    rho = _blur(Y, opts.gSig, opts.gSiz)
    kh = ((int(opts.gSiz[0]) | 1) // 2, (int(opts.gSiz[1]) | 1) // 2)  # the blur kernel's reach
    L = int(min(opts.rolling_length, T, 4 * n_decay if n_decay else T))

    def energy(r: np.ndarray) -> np.ndarray:
        out = np.empty(r.shape[:-1], np.float32)
        for blk in _row_blocks(r):  # squares and running sums a block of rows at a time
            r2 = r[blk] * r[blk]
            if opts.rolling_sum and L < T:
                out[blk] = window_energy(r2.reshape(-1, T), L).reshape(out[blk].shape)
            else:
                out[blk] = r2.mean(axis=-1)
        return out

    v = energy(rho)
    # energy of pure noise at each pixel, and its fluctuation over the windows searched
    noise_e = noise_psd(rho, opts.noise_range).astype(np.float64) ** 2
    n_win = L if (opts.rolling_sum and L < T) else T
    floor = noise_e * (1.0 + 5.0 * math.sqrt(2.0 / max(n_win, 1))) + 1e-12
    # seeds are local maxima of the energy, found again around each subtraction
    size = (int(opts.gSig[0]) + 1, int(opts.gSig[1]) + 1)
    blocked = ~((v >= ndi.maximum_filter(v, size=size, mode="nearest")) & (v > floor))
    tried = np.zeros((d1, d2), bool)
    v0 = v.copy()
    A = np.zeros((P, K), np.float32)
    C = np.zeros((K, T), np.float32)
    n_ok = 0
    N = max(1, int(math.ceil(opts.n_samples)))
    full_rate = not n_decay or n_decay >= 2  # else a transient is one (averaged) frame high
    while n_ok < K:
        vv = np.where(blocked | (v <= floor), -np.inf, v)
        ind = int(np.argmax(vv))
        if not np.isfinite(vv.flat[ind]):
            break  # nothing left above the noise
        i, j = np.unravel_index(ind, (d1, d2))
        blocked[i, j] = True
        tried[i, j] = True
        r0, r1 = max(i - gHalf[0], 0), min(i + gHalf[0] + 1, d1)
        c0, c1 = max(j - gHalf[1], 0), min(j + gHalf[1] + 1, d2)
        data = Y[r0:r1, c0:c1].reshape(-1, T)
        # start from the seed's own 3x3 trace: the blurred one mixes in close neighbours
        c_seed = Y[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].reshape(-1, T).mean(0)
        a, c = _rank1(data, c_seed, opts.nIter)
        snr = snr_from_traces(c[None].astype(np.float64), N, full_rate)[0] if T >= 20 else np.inf
        if not (np.any(a > 0) and np.any(c > 0)) or snr < max(opts.SNR_lowest, 1.0):
            continue
        patch = np.outer(a.astype(np.float32), c.astype(np.float32))  # float32 as Y: no float64 copy
        Y[r0:r1, c0:c1] -= patch.reshape(r1 - r0, c1 - c0, T)
        img = np.zeros((d1, d2), np.float32)
        img[r0:r1, c0:c1] = a.reshape(r1 - r0, c1 - c0)
        A[:, n_ok] = img.reshape(-1, order="F")
        if sn is not None:  # undo the normalisation for the footprint
            A[:, n_ok] *= sn.reshape(-1, order="F")
        C[n_ok] = c
        n_ok += 1
        m0, m1 = max(i - 2 * gHalf[0], 0), min(i + 2 * gHalf[0] + 1, d1)
        n0, n1 = max(j - 2 * gHalf[1], 0), min(j + 2 * gHalf[1] + 1, d2)
        e0, e1 = max(m0 - gHalf[0], 0), min(m1 + gHalf[0], d1)
        f0, f1 = max(n0 - gHalf[1], 0), min(n1 + gHalf[1], d2)
        # the blur is linear and frame by frame: the movie's less a ⊗ c is its blur less
        # blur(a) ⊗ c, which differs from zero within the kernel's reach of a (the window's
        # margin keeps its border rule out of it), and only there does the energy change
        u0, u1 = max(r0 - kh[0], 0), min(r1 + kh[0], d1)
        w0, w1 = max(c0 - kh[1], 0), min(c1 + kh[1], d2)
        blur_a = _blur(img[e0:e1, f0:f1, None], opts.gSig, opts.gSiz)[u0 - e0 : u1 - e0, w0 - f0 : w1 - f0]
        rho[u0:u1, w0:w1] -= blur_a * c.astype(np.float32)
        v[u0:u1, w0:w1] = energy(rho[u0:u1, w0:w1])
        # local maxima again there: a neuron on the flank of the one just removed becomes one;
        # the halo an imperfect subtraction leaves does not, as it loses most of its energy
        loc = v[e0:e1, f0:f1] >= ndi.maximum_filter(v[e0:e1, f0:f1], size=size, mode="nearest")
        loc = loc[m0 - e0 : m1 - e0, n0 - f0 : n1 - f0] & (v[m0:m1, n0:n1] >= HALO_ENERGY * v0[m0:m1, n0:n1])
        blocked[m0:m1, n0:n1] = ~loc | tried[m0:m1, n0:n1]
    return A[:, :n_ok], C[:n_ok]


def highpass_filter(Y3: np.ndarray, gSig: tuple[int, int], gSiz: tuple[int, int], center_psf: bool) -> np.ndarray:
    """CNMF-E's spatial filter: a Gaussian (std gSig, window gSiz), made zero-mean with center_psf."""
    ks = (int(gSiz[0]) | 1, int(gSiz[1]) | 1)
    gy = cv2.getGaussianKernel(ks[0], gSig[0])
    gx = cv2.getGaussianKernel(ks[1], gSig[1])
    ker = (gy @ gx.T).astype(np.float32)
    if center_psf:
        ker -= ker.mean()
    out = np.empty_like(Y3, dtype=np.float32)
    for t in range(Y3.shape[-1]):
        out[..., t] = cv2.filter2D(np.ascontiguousarray(Y3[..., t], np.float32), -1, ker,
                                   borderType=cv2.BORDER_REFLECT)
    return out


def local_correlation(Y3: np.ndarray) -> np.ndarray:
    """Mean correlation of each pixel with its 8 neighbours, for a (d1, d2, T) array."""
    X = Y3 - Y3.mean(-1, keepdims=True)
    sd = np.sqrt((X * X).mean(-1))
    Z = np.divide(X, sd[..., None], out=np.zeros_like(X), where=sd[..., None] > 0)
    d1, d2, _ = X.shape
    tot = np.zeros((d1, d2))
    cnt = np.zeros((d1, d2))
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ra, rb = slice(0, d1 - dy), slice(dy, d1)
        ca, cb = (slice(0, d2 - dx), slice(dx, d2)) if dx >= 0 else (slice(-dx, d2), slice(0, d2 + dx))
        r = (Z[ra, ca] * Z[rb, cb]).mean(-1)
        tot[ra, ca] += r
        tot[rb, cb] += r
        cnt[ra, ca] += 1
        cnt[rb, cb] += 1
    return (tot / np.maximum(cnt, 1)).astype(np.float32)


def without_common_signal(X: np.ndarray, common: np.ndarray) -> np.ndarray:
    """Each pixel's trace (last axis) minus its regression on ``common``, the whole field's mean
    trace, in place. A brightness change shared by the field (illumination, a global neuropil
    swing) shows through the filters as every cell-shaped feature of the resting image moving
    together; no cell owns it, and it must not seed one."""
    g = np.asarray(common, np.float64) - np.median(common)
    gg = float(g @ g)
    if gg > 0:
        g32 = g.astype(np.float32)
        X -= (X @ g32 / np.float32(gg))[..., None] * g32
    return X


def corr_pnr_images(Y3: np.ndarray, opts: Options, common: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Correlation and peak-to-noise images of the high-pass-filtered movie (CNMF-E).

    With ``common`` (the field's mean trace) the filtered movie's share of it is removed first
    (:func:`without_common_signal`). Returns (cn, pnr, filtered movie minus its median, per-pixel
    noise of the filtered movie).
    """
    F = highpass_filter(Y3, opts.gSig, opts.gSiz, opts.center_psf)
    F -= np.median(F, axis=-1, keepdims=True)
    if common is not None:
        without_common_signal(F, common)
    sn = noise_psd(F, opts.noise_range)
    sn = np.maximum(sn, 1e-6)
    pnr = (F.max(-1) / sn).astype(np.float32)
    tmp = F.copy()
    tmp[tmp < 3 * sn[..., None]] = 0
    cn = local_correlation(tmp)
    return cn, pnr, F, sn


# long: like greedy_init, one loop over seeds sharing the filtered movie and the images it
# updates after each seed
def corr_pnr_init(Y3: np.ndarray, opts: Options, K: int | None, common: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CNMF-E seeds: pixels with correlation > min_corr and PNR > min_pnr, best (cn*pnr) first.

    Each seed's trace is its filtered time series; its footprint is the regression of the raw
    (median-removed) data of the gSiz window on that trace over pixels correlated with it
    (> 0.3), with the window's uncorrelated pixels as a local background. Returns A, C and the
    two images.
    """
    d1, d2, T = Y3.shape
    cn, pnr, F, sn = corr_pnr_images(Y3, opts, common)
    if T < 3:
        return np.zeros((d1 * d2, 0), np.float32), np.zeros((0, T), np.float32), cn, pnr
    R = Y3.astype(np.float32) - np.median(Y3, axis=-1, keepdims=True).astype(np.float32)
    v = cn * pnr
    searched = ~((cn > opts.min_corr) & (pnr > opts.min_pnr))
    # seeds are local maxima of cn*pnr over a ~gSiz/4 neighbourhood, recomputed after each pass:
    # a dim neuron next to a bright one only becomes a maximum once the bright one is removed
    size = tuple(max(3, int(round(g / 4))) for g in opts.gSiz)
    gHalf = np.array(opts.gSiz) // 2
    kmax = np.inf if K is None else K
    A, C = [], []
    queue: list[tuple[int, int]] = []
    while len(A) < kmax:
        if not queue:
            vm = np.where(searched, 0.0, v)
            peaks = ~searched & (vm >= ndi.maximum_filter(vm, size=size, mode="nearest"))
            if not peaks.any():
                break
            order = np.argsort(vm[peaks])[::-1]
            queue = [(int(a), int(b)) for a, b in np.argwhere(peaks)[order]][::-1]
        i, j = queue.pop()
        if searched[i, j]:
            continue
        searched[i, j] = True
        r0, r1 = max(i - gHalf[0], 0), min(i + gHalf[0] + 1, d1)
        c0, c1 = max(j - gHalf[1], 0), min(j + gHalf[1] + 1, d2)
        y = F[i, j].astype(np.float64)
        if y.std() <= 0:
            continue
        box_f = F[r0:r1, c0:c1].reshape(-1, T).astype(np.float64)
        yc = (y - y.mean()) / y.std()
        bc = box_f - box_f.mean(1, keepdims=True)
        bsd = bc.std(1)
        corr = np.divide(bc @ yc / T, bsd, out=np.zeros(len(bsd)), where=bsd > 0)
        member = corr > 0.3
        if member.sum() < 3:
            continue
        box_r = R[r0:r1, c0:c1].reshape(-1, T).astype(np.float64)
        bg = np.median(box_r[~member], axis=0) if (~member).sum() >= 3 else np.zeros(T)
        c = np.maximum(y - np.median(y), 0)
        if c @ c <= 0:
            continue
        X = box_r - bg[None]
        a = np.maximum(X @ c / (c @ c), 0) * member
        if not np.any(a > 0):
            continue
        # refine the trace on the footprint, then remove the component from both movies
        c = np.maximum(a @ X / (a @ a), 0)
        img = np.zeros((d1, d2), np.float32)
        img[r0:r1, c0:c1] = a.reshape(r1 - r0, c1 - c0)
        A.append(img.reshape(-1, order="F"))
        C.append(c.astype(np.float32))
        R[r0:r1, c0:c1] -= np.outer(a, c).reshape(r1 - r0, c1 - c0, T).astype(np.float32)
        m0, m1 = max(i - 2 * gHalf[0], 0), min(i + 2 * gHalf[0] + 1, d1)
        n0, n1 = max(j - 2 * gHalf[1], 0), min(j + 2 * gHalf[1] + 1, d2)
        loc = np.zeros((m1 - m0, n1 - n0), np.float32)
        loc[r0 - m0 : r1 - m0, c0 - n0 : c1 - n0] = img[r0:r1, c0:c1]
        floc = highpass_filter(loc[..., None], opts.gSig, opts.gSiz, opts.center_psf)[..., 0]
        F[m0:m1, n0:n1] -= floc[..., None] * c[None, None, :].astype(np.float32)
        snl = sn[m0:m1, n0:n1]
        pnr[m0:m1, n0:n1] = F[m0:m1, n0:n1].max(-1) / snl
        tmp = F[m0:m1, n0:n1].copy()
        tmp[tmp < 3 * snl[..., None]] = 0
        cn[m0:m1, n0:n1] = local_correlation(tmp)
        v[m0:m1, n0:n1] = cn[m0:m1, n0:n1] * pnr[m0:m1, n0:n1]
        searched[m0:m1, n0:n1] |= ~((cn[m0:m1, n0:n1] > opts.min_corr) & (pnr[m0:m1, n0:n1] > opts.min_pnr))
    if not A:
        return np.zeros((d1 * d2, 0), np.float32), np.zeros((0, T), np.float32), cn, pnr
    return np.stack(A, 1), np.stack(C), cn, pnr


# ------------------------------------------------------------------------------------------
# HALS refinement with a low-rank background
# ------------------------------------------------------------------------------------------
class _BackgroundSubtracted(_Movie):
    """``Y - B`` for a ring-model background B held fixed (CaImAn refits A, C on ``Y - B``);
    computed block by block from the raw movie and the (P_ds, T) ring fluctuation, and kept
    whole only when it takes at most ``cache_bytes`` (a quarter of the run's memory budget:
    a long movie's ``Y - B`` is recomputed per pass rather than held, 512 MiB at 128x128x8,000)."""

    def __init__(self, raw: _Movie, ring: RingModel, fluct: np.ndarray, cache_bytes: float = 2.0**28):
        super().__init__(raw.Yr)
        self.raw, self.ring, self.fluct = raw, ring, fluct
        self.cache: np.ndarray | None = None
        if 4 * self.P * self.T <= cache_bytes:  # small enough: subtract once
            self.cache = np.concatenate([self._compute(blk) for blk in self.blocks])

    def _compute(self, idx: slice | np.ndarray) -> np.ndarray:
        return self.raw.rows(idx) - self.ring.background(self.fluct, idx)

    def rows(self, idx: slice | np.ndarray) -> np.ndarray:
        return self.cache[idx] if self.cache is not None else self._compute(idx)


def hals(
    mov: _Movie,
    A: np.ndarray | sp.spmatrix,
    C: np.ndarray,
    b: np.ndarray,
    f: np.ndarray,
    dims: tuple[int, int],
    opts: Options,
    n_outer: int = 3,
    n_inner: int = 3,
    radius: int | None = None,
) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray, np.ndarray]:
    """Alternate HALS updates of C (with f) and A (with b); footprints stay inside a dilation of
    their support, are thresholded at ``maxthr`` and reduced to one connected piece. Returns
    the footprints as a float32 CSC (:mod:`.footprints`).

    Each footprint covers a few hundred of the field's pixels, so the products with the movie
    are taken on them alone (:meth:`Movie.AtY_sparse`, :meth:`Movie.YCt_support`) and each
    update meets only the components it overlaps: the same sweeps, in the same order, as with
    dense (P, K) products, at a fraction of their cost."""
    A = fp.as_csc(A, np.float64)
    K, nb = A.shape[1], b.shape[1]
    if K + nb == 0:
        return A.astype(np.float32), C, b, f
    radius = max(1, int(round(np.mean(opts.gSig) / 2))) if radius is None else radius
    b = np.array(b, np.float64)
    Cf = np.vstack([C, f]).astype(np.float64)
    for _ in range(n_outer):
        # temporal
        AtA = _gram(A, b)
        _trace_sweeps(Cf, mov.AtY_sparse(A, b), AtA, range(K + nb), n_inner)
        # spatial: each footprint only on its allowed pixels
        idx = fp.support_index(A, dims, radius, 3.0 * max(opts.gSig) + 1)
        ext = [np.union1d(fp.pixels(A, k), idx[k]) for k in range(K)]  # all it may touch in this sweep
        U, Ub = mov.YCt_support(Cf[:K], idx, Cf[K:])
        A = _footprint_sweeps(A, b, U, Ub, Cf @ Cf.T, idx, ext, n_inner, dims, opts)
    return A.astype(np.float32), Cf[:K].astype(np.float32), b.astype(np.float32), Cf[K:].astype(np.float32)


def _gram(As: sp.csc_matrix, b: np.ndarray) -> np.ndarray:
    """``[A, b].T @ [A, b]`` (float64) with sparse footprints ``As``: only overlapping ones meet."""
    K, nb = As.shape[1], b.shape[1]
    G = np.empty((K + nb, K + nb))
    G[:K, :K] = (As.T @ As).toarray()
    Atb = np.asarray(As.T @ b)
    G[:K, K:] = Atb
    G[K:, :K] = Atb.T
    G[K:, K:] = b.T @ b
    return G


def _trace_sweeps(Cf: np.ndarray, AtY: np.ndarray, AtA: np.ndarray, order: range, n_inner: int) -> None:
    """HALS sweeps over the traces ``order`` of ``Cf``, in place. A trace meets only those whose
    footprints overlap its own (the nonzero entries of its row of AtA): the others add zeros."""
    nz = {k: np.flatnonzero(AtA[k]) for k in order}
    for _ in range(n_inner):
        for k in order:
            if AtA[k, k] <= 0:
                continue
            Cf[k] = np.maximum(Cf[k] + (AtY[k] - AtA[k, nz[k]] @ Cf[nz[k]]) / AtA[k, k], 0)


class _OnPixels:
    """Footprints held as their values on given pixels (``ext[k]``: every pixel where footprint k
    is or may become nonzero in a sweep), one flat float64 array, footprint after footprint,
    with one zero at the end: where a neighbour's pixels miss a footprint, its value is read
    there."""

    def __init__(self, A: sp.csc_matrix, ext: list[np.ndarray]):
        self.ext = ext
        self.lens = np.array([len(e) for e in ext], np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.lens)])
        self.zero = int(self.start[-1])
        self.vals = np.zeros(self.zero + 1)
        self.px = np.concatenate(ext) if ext else np.zeros(0, np.intp)
        for k in range(A.shape[1]):
            self.vals[self.where(k, fp.pixels(A, k))] = fp.values(A, k)

    def where(self, k: int, px: np.ndarray) -> np.ndarray:
        """Positions in ``vals`` of footprint k's values on the pixels ``px`` (within ``ext[k]``)."""
        return self.start[k] + np.searchsorted(self.ext[k], px)

    def reading(self, j: int, px: np.ndarray) -> np.ndarray:
        """Positions of footprint j's values on the pixels ``px``: the zero where it has none."""
        p = np.searchsorted(self.ext[j], px)
        hit = p < self.lens[j]
        hit[hit] = self.ext[j][p[hit]] == px[hit]
        return np.where(hit, self.start[j] + p, self.zero)

    def span(self, k: int) -> slice:
        return slice(int(self.start[k]), int(self.start[k + 1]))

    def times(self, w: np.ndarray, P: int) -> np.ndarray:
        """``A @ w`` over the P pixels."""
        return np.bincount(self.px, self.vals[:-1] * np.repeat(w, self.lens), minlength=P)

    def to_csc(self, P: int) -> sp.csc_matrix:
        out = sp.csc_matrix((self.vals[:-1], self.px, self.start), shape=(P, len(self.ext)))
        out.eliminate_zeros()
        return out


def _footprint_sweeps(A: sp.csc_matrix, b: np.ndarray, U: list[np.ndarray], Ub: np.ndarray, V: np.ndarray,
                      idx: list[np.ndarray], ext: list[np.ndarray], n_inner: int, dims: tuple[int, int],
                      opts: Options) -> sp.csc_matrix:
    """HALS sweeps over the footprints (each on its allowed pixels ``idx[k]``), then the
    background (``b``, in place), then each footprint cleaned (:func:`footprints.clean_on_pixels`).
    ``ext[k]``: every pixel where footprint k is or may become nonzero; footprint k's update
    reads only the components whose ``ext`` meets its allowed pixels. Returns the new footprints."""
    P, K = A.shape
    nb = b.shape[1]
    near = (fp.indicator(idx, P).T @ fp.indicator(ext, P)).tocsr()
    near.sort_indices()
    on = _OnPixels(A, ext)
    vals = on.vals
    todo = [k for k in range(K) if V[k, k] > 0]
    # positions of each footprint's allowed pixels, and of its neighbours' values there (fixed
    # for the sweeps: 1-D takes)
    own = {k: on.where(k, idx[k]) for k in todo}
    cross = {}
    for k in todo:
        nk = near.indices[near.indptr[k] : near.indptr[k + 1]]
        pos = np.empty((len(idx[k]), len(nk)), np.int64)
        for m, j in enumerate(nk):
            pos[:, m] = on.reading(j, idx[k])
        cross[k] = (pos, V[nk, k])
    for _ in range(n_inner):
        for k in todo:
            pos, v = cross[k]
            new = vals[own[k]] + (U[k] - vals.take(pos) @ v - b[idx[k]] @ V[K:, k]) / V[k, k]
            vals[on.span(k)] = 0
            vals[own[k]] = np.maximum(new, 0)
        for i in range(nb):
            j = K + i
            if V[j, j] > 0:
                b[:, i] = np.maximum(b[:, i] + (Ub[:, i] - on.times(V[:K, j], P) - b @ V[K:, j]) / V[j, j], 0)
    for k in range(K):
        if ext[k].size:
            vals[on.span(k)] = fp.clean_on_pixels(vals[on.span(k)], ext[k], dims, opts.maxthr, opts.extract_cc)
    return on.to_csc(P)


def _drop_empty(A: np.ndarray | sp.spmatrix, C: np.ndarray, min_pixels: int = 3) -> tuple[sp.csc_matrix, np.ndarray]:
    """Footprints (as CSC) with at least ``min_pixels`` pixels above 0 and a trace above 0."""
    A = fp.as_csc(A)
    keep = (fp.positive_pixels(A) >= min_pixels) & (C.max(1) > 0) if A.shape[1] else np.zeros(0, bool)
    return A[:, keep], C[keep]


def min_footprint_pixels(gSig: tuple[int, int]) -> int:
    """Fewest pixels a footprint of a cell of half-size ``gSig`` can have: half a disk of radius
    gSig. A neuron's footprint covers about 10·gSig² pixels; the smaller ones HALS leaves are
    noise that the fit shaped to itself (their r-values are high because of it)."""
    return max(3, int(math.ceil(math.pi * gSig[0] * gSig[1] / 2)))


def _drop_small(A: np.ndarray | sp.spmatrix, C: np.ndarray, opts: Options) -> tuple[sp.csc_matrix, np.ndarray]:
    return _drop_empty(A, C, min_footprint_pixels(opts.gSig))


def _unit_footprints(A: sp.csc_matrix, C: np.ndarray) -> tuple[sp.csc_matrix, np.ndarray]:
    """Footprints scaled to unit l2 norm (CaImAn's convention), traces scaled to keep A·C."""
    nrm = fp.norms(A)
    nrm[nrm == 0] = 1
    return fp.scale_columns(A, 1.0 / nrm), (C * nrm[:, None]).astype(C.dtype)


# ------------------------------------------------------------------------------------------
# merging
# ------------------------------------------------------------------------------------------
#: a footprint lying at least this much inside another's support is a candidate piece of it
PIECE_CONTAINMENT = 0.5
#: ... and is merged into it when their traces correlate above this (below ``merge_thr``)
PIECE_CORR = 0.6
#: footprints this similar (cosine) are one cell whatever their traces: two components on the
#: same pixels split its events between them, and no fit can tell them apart
SAME_FOOTPRINT = 0.8


def merge_components(A: np.ndarray | sp.spmatrix, C: np.ndarray, thr: float, dims: tuple[int, int] | None = None,
                     touch: int = 2, touching: bool = True) -> tuple[sp.csc_matrix, np.ndarray, list[list[int]]]:
    """Merge groups of spatially overlapping components whose traces correlate above ``thr``.

    With ``dims``, supports count as overlapping when they come within ``touch`` pixels (a
    bright neuron's thresholded-away rim can otherwise survive as a separate component).
    A component whose support lies mostly inside another's (``PIECE_CONTAINMENT``) is a piece
    or duplicate of that cell once their traces correlate above ``PIECE_CORR``: the two split
    one cell's signal between them, which lowers their correlation below ``merge_thr``.
    ``touching=False`` merges only such contained pairs: for the patches' raw initial traces,
    which share the unfitted background and would chain neighbouring cells into one group.

    A group (connected through such pairs) becomes one rank-1 component fitted to the sum of
    its members' contributions ``sum_i a_i c_i`` on the union of their supports. The
    footprints come back as a CSC (:mod:`.footprints`).
    """
    A = fp.as_csc(A)
    P, K = A.shape
    if K < 2:
        return A, C, []
    pos = A.copy()
    pos.data = (pos.data > 0).astype(np.float32)
    pos.eliminate_zeros()
    S = fp.indicator(fp.support_index(A, dims, touch), P) if dims is not None and touch > 0 else pos
    inter = (S.T @ pos).toarray()  # [i, j]: pixels of j's support inside i's
    overlap = (inter > 0) | (inter.T > 0)
    contained = inter / np.maximum(np.diff(pos.indptr), 1)[None, :] >= PIECE_CONTAINMENT
    contained |= contained.T
    Cc = C - C.mean(1, keepdims=True)
    sd = np.linalg.norm(Cc, axis=1)
    corr = (Cc @ Cc.T) / np.maximum(np.outer(sd, sd), 1e-12)
    same = fp.cosine(A) >= SAME_FOOTPRINT
    if touching:
        adj = (overlap & (corr > thr)) | (contained & (corr > min(thr, PIECE_CORR))) | same
    else:
        adj = (contained & (corr > thr)) | same
    np.fill_diagonal(adj, False)
    if not adj.any():
        return A, C, []
    n, lab = sp.csgraph.connected_components(sp.csr_matrix(adj), directed=False)
    cols, data, newC, groups = [], [], [], []
    for g in range(n):
        idx = np.flatnonzero(lab == g)
        if len(idx) == 1:
            cols.append(fp.pixels(A, idx[0]))
            data.append(fp.values(A, idx[0]))
            newC.append(C[idx[0]])
            continue
        groups.append(idx.tolist())
        Ag = A[:, idx]
        px = np.flatnonzero(np.asarray(Ag.sum(1)).ravel() > 0)
        Ad = Ag[px].toarray().astype(np.float64)
        Y = Ad @ C[idx].astype(np.float64)
        best = idx[np.argmax((Ad**2).sum(0) * (C[idx] ** 2).sum(1))]
        a, c = _rank1(Y, C[best], 10)
        cols.append(px)
        data.append(a.astype(A.dtype))
        newC.append(c.astype(np.float32))
    out = fp.from_columns(cols, np.concatenate(data), P)
    out.eliminate_zeros()
    return out, np.stack(newC), groups


# ------------------------------------------------------------------------------------------
# deconvolution
# ------------------------------------------------------------------------------------------
def temporal_with_deconvolution(mov: _Movie, A: np.ndarray, C: np.ndarray, b: np.ndarray, f: np.ndarray, opts: Options,
                                 workers: Workers | None = None) -> dict[str, Any]:
    """Block-coordinate update of each trace through OASIS (``ITER`` sweeps); returns the
    deconvolution outputs plus YrA (raw trace minus C, baseline included) and the updated f.
    The deconvolution of each sweep is spread over ``workers``."""
    K, nb = A.shape[1], b.shape[1]
    As = fp.as_csc(A, np.float64)
    b = np.asarray(b, np.float64)
    Cf = np.vstack([C, f]).astype(np.float64)
    AtY = mov.AtY_sparse(As, b)
    AtA = _gram(As, b)
    nz = [np.flatnonzero(AtA[k]) for k in range(K)]  # the traces each one's footprint overlaps
    res: dict[str, Any] = {}
    Yk = np.zeros((K, mov.T), np.float32)  # the raw traces: float32 as the movie and AtY are
    for _ in range(max(1, opts.ITER)):
        _trace_sweeps(Cf, AtY, AtA, range(K, K + nb), 1)  # background traces first (plain HALS)
        for k in range(K):
            Yk[k] = Cf[k] + (AtY[k] - AtA[k, nz[k]] @ Cf[nz[k]]) / max(AtA[k, k], 1e-12)
        res = deconvolve_in(workers, Yk, opts.p, opts.bas_nonneg, opts.noise_range)
        # the baseline is part of the model for the next sweep's residuals
        Cf[:K] = res["C"] + res["bl"][:, None]
    res["YrA"] = (Yk - res["C"]).astype(np.float32)
    res["f"] = Cf[K:].astype(np.float32)
    return res


# ------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------
def r_values(mov: _Movie, A: np.ndarray, C: np.ndarray, b: np.ndarray, f: np.ndarray, fr: float, Athresh: float = 0.1,
             dims: tuple[int, int] | None = None, surround: int = 0) -> np.ndarray:
    """Spatial r-values: correlation of each footprint with the background-subtracted movie
    averaged over the frames around its 10 largest peaks, leaving out frames when an
    overlapping component (normalised overlap > Athresh) peaks (CaImAn's classify_components_ep,
    with the background ``b·f`` removed first). With ``dims`` and ``surround`` (the builtin's
    rule, see :func:`_surround`), the footprint's support is dilated by ``surround`` pixels, where
    the footprint is zero, and the movie's mean over all frames is subtracted: the footprint is
    compared with the image of its transients, not with resting structure (a vessel, neuropil,
    a neighbour's glow) that any blob placed there would match."""
    K = A.shape[1]
    rv = np.zeros(K)
    if K == 0:
        return rv
    A = fp.as_csc(A)
    AA = fp.cosine(A)
    np.fill_diagonal(AA, 0)
    loc = _activity_frames(C, fr)
    for i in range(K):
        if loc[i] is None:
            continue
        idx = set(loc[i].tolist())
        for j in np.flatnonzero(AA[:, i] > Athresh):
            if loc[j] is not None:
                idx -= set(loc[j].tolist())
        frames = np.array(sorted(idx if idx else set(loc[i].tolist())), int)
        px = fp.pixels(A, i)[fp.values(A, i) > 0]
        if px.size < 3:
            continue
        if dims is not None and surround > 0:
            px = fp.support_index(A[:, i : i + 1], dims, surround)[0]
        rows = mov.rows(px)
        y = rows[:, frames].mean(1)
        if b.shape[1]:
            y = y - b[px] @ f[:, frames].mean(1)
        if surround > 0:  # the transient's image: what the active frames add to the pixels' mean
            y = y - (rows.mean(1) - (b[px] @ f.mean(1) if b.shape[1] else 0))
        a = fp.dense_column(A, i)[px]
        if np.std(y) <= 0 or np.std(a) <= 0:
            continue
        rv[i] = float(np.corrcoef(y, a)[0, 1])
    return rv


def _surround(opts: Options) -> int:
    """Ring (pixels) of a footprint's surround that its r-value also compares: within the
    footprint alone, a component fitted to noise correlates with the frames it was fitted on;
    a cell's transient also leaves its surround dark, noise does not."""
    return max(1, int(math.ceil(max(opts.gSig) / 2)))


#: quantile of white noise's SNR_comp that an r-value-only acceptance must reach
RV_ONLY_NOISE_QUANTILE = 0.999


def rv_only_snr_min(T: int, opts: Options) -> float:
    """The SNR an r-value-only acceptance needs (see the evaluation module): what one white-noise
    trace of ``T`` frames in a thousand reaches. Stored with the result, so run_eval and the
    viewer apply the same rule without the movie."""
    return noise_snr_floor(T, opts.n_samples, RV_ONLY_NOISE_QUANTILE)


def classify(snr: np.ndarray, rv: np.ndarray, opts: Options, fast: np.ndarray | None = None,
             snr_min: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Accept/reject with CaImAn's rule (shared with run_eval and the viewer)."""
    good, bad = select_components(snr, rv, accept_thresholds(vars(opts)), fast_fraction=fast,
                                  rv_only_snr_min=snr_min)
    return good.astype(int), bad.astype(int)


# ------------------------------------------------------------------------------------------
# patches
# ------------------------------------------------------------------------------------------
def _stride(opts: Options) -> int:
    """Patch overlap in pixels: ``stride``, or half of ``rf`` when unset."""
    return int(opts.stride) if opts.stride is not None else max(1, int(opts.rf or 0) // 2)


def patch_grid(dims: tuple[int, int], rf: int, stride: int) -> list[tuple[slice, slice]]:
    """Patches of side 2*rf+1 overlapping by ``stride`` pixels, the last flush with the edge."""
    size = 2 * rf + 1
    step = max(1, size - stride)

    def starts(n: int) -> list[int]:
        if n <= size:
            return [0]
        s = list(range(0, n - size, step))
        s.append(n - size)
        return sorted(set(s))

    return [(slice(r, min(r + size, dims[0])), slice(c, min(c + size, dims[1])))
            for r in starts(dims[0]) for c in starts(dims[1])]


def _decay_frames(opts: Options, T: int, T_seen: int, ts: int | None = None) -> int:
    """Frames of one transient's decay in the ``T_seen`` frames made of ``T`` by averaging
    ``ts`` (default ``tsub``) at a time."""
    ts = 1 if T_seen == T else (opts.tsub if ts is None else ts)
    return max(1, int(round(opts.n_samples / ts)))


def _common_trace(mov: _Movie, opts: Options) -> np.ndarray | None:
    """The field's mean trace, which CNMF-E's seeding removes (:func:`without_common_signal`)."""
    if opts.method_init != "corr_pnr":
        return None
    return (mov.AtY(np.full((mov.P, 1), 1.0 / mov.P, np.float32))[0]).astype(np.float32)


def _init_patch(Y3: np.ndarray, opts: Options, K: int | None, common: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    d1, d2, T = Y3.shape
    if opts.method_init == "corr_pnr":
        A, C, _, _ = corr_pnr_init(Y3, opts, K, common)
    else:
        Ys = budget.average_frames(Y3, opts.tsub)
        A, C = greedy_init(Ys, opts, int(K or 0), _decay_frames(opts, T, Ys.shape[-1]))
        if not A.shape[1]:
            C = np.zeros((0, T), np.float32)
        elif C.shape[1] != T:
            # traces came from the temporally downsampled movie: project the full movie
            A64 = A.astype(np.float64)
            G = A64.T @ A64
            Yf = Y3.reshape(-1, T, order="F")
            C = np.linalg.lstsq(G, A64.T @ Yf - (A64.T @ _median_under(Yf, A))[:, None], rcond=None)[0]
            C = np.maximum(C, 0).astype(np.float32)
    return A, C


def _median_under(Y: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Each pixel's median over time (rows of ``Y``), 0 where no footprint (column of ``A``)
    lies: ``A.T @`` it is the same, and the median is the slowest step of a patch's projection."""
    px = np.flatnonzero(np.any(A != 0, axis=1))
    med = np.zeros(len(Y), np.float32 if Y.dtype == np.float32 else np.float64)
    if px.size:
        med[px] = median_last(Y[px])[:, 0]
    return med


def _init_region(Yr: np.ndarray, dims: tuple[int, int], rows: slice, cols: slice, opts: Options,
                 K: int | None, common: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Initialise the components of a rectangle of the field (a patch, or all of it).

    A movie of up to ``tsub * SEED_FRAMES`` frames within ``memory_budget_mb`` is read whole
    (:func:`_init_patch`, unchanged). A longer one is seeded on more frames averaged
    (:func:`budget.seeding_tsub`), so seeding holds about as much at any length, and the traces
    are projected on the full-rate movie a block at a time. CNMF-E averages frames only past the
    budget (:func:`budget.corr_pnr_tsub`; CaImAn's ``tsub`` does it always), its traces held per
    averaged frame until the refinement fits them at full rate."""
    T = Yr.shape[1]
    ts = _seeding_plan((rows.stop - rows.start) * (cols.stop - cols.start), T, opts, what)
    if ts is None:
        return _init_patch(budget.read_region(Yr, dims, rows, cols), opts, K, common)
    Ys = budget.read_region(Yr, dims, rows, cols, ts)
    log.info("seeding %s on %d frames (%d averaged at a time; memory_budget_mb=%g)",
             what, Ys.shape[-1], ts, opts.memory_budget_mb)
    if opts.method_init == "corr_pnr":
        A, C, _, _ = corr_pnr_init(Ys, opts, K, None if common is None else budget.average_frames(common, ts))
        return A, _hold_frames(C, ts, T)
    A, C = greedy_init(Ys, opts, int(K or 0), _decay_frames(opts, T, Ys.shape[-1], ts))
    if not A.shape[1]:
        return A, np.zeros((0, T), np.float32)
    if C.shape[1] != T:
        A64 = A.astype(np.float64)
        base = A64.T @ _median_under(Ys.reshape(-1, Ys.shape[-1], order="F"), A)
        rhs = budget.project_region(Yr, dims, rows, cols, A) - base[:, None]
        C = np.maximum(np.linalg.lstsq(A64.T @ A64, rhs, rcond=None)[0], 0).astype(np.float32)
    return A, C


def _hold_frames(C: np.ndarray, ts: int, T: int) -> np.ndarray:
    """(K, T) traces from traces of frames averaged ``ts`` at a time, each value held over its
    frames (the dropped tail holds the last): a start the full-rate refinement fits."""
    if C.shape[1] == T:
        return C
    out = np.repeat(C, ts, axis=1)[:, :T]
    if out.shape[1] < T:
        out = np.hstack([out, np.repeat(out[:, -1:], T - out.shape[1], axis=1)])
    return np.ascontiguousarray(out, np.float32)


def _seeding_plan(n_px: int, T: int, opts: Options, what: str) -> int | None:
    """How a region of ``n_px`` pixels is seeded: None when it is read whole at full rate (a
    movie short enough to be seeded at ``tsub``, within the budget), else the frames averaged
    at a time (:func:`budget.seeding_tsub`: what a patch holds then stops growing with the
    movie; CNMF-E's: :func:`budget.corr_pnr_tsub`); a MemoryBudgetError naming the estimate
    where neither fits."""
    if opts.method_init == "corr_pnr":
        ts = budget.corr_pnr_tsub(n_px, T, opts.n_samples, opts.memory_budget_mb)
        if ts is None:
            cap = max(1, int(opts.n_samples))
            raise MemoryBudgetError(
                f"CNMF-E seeding {what} ({n_px} pixels x {T} frames) needs "
                f"{budget.corr_pnr_bytes(n_px, T, cap) / budget.MiB:.0f} MiB even with {cap} frames averaged "
                f"(one decay: more would average transients away), over memory_budget_mb="
                f"{opts.memory_budget_mb:g}. Use smaller patches (rf, stride) or raise memory_budget_mb"
            )
        return None if ts == 1 else ts
    fits = budget.full_rate_bytes(n_px, T, opts.tsub) <= opts.memory_budget_mb * budget.MiB
    if fits and budget.target_tsub(T, opts.tsub, opts.n_samples) == max(1, int(opts.tsub)):
        return None
    return budget.require_seeding_tsub(n_px, T, opts.tsub, opts.n_samples, opts.memory_budget_mb, what)


def fit_patch(args: tuple) -> tuple[tuple[slice, slice], sp.csc_matrix, np.ndarray]:
    """Initialise (and, unless only_init, refine) one patch; run in a worker process."""
    mmap_path, dims, rows, cols, opts, common = args
    from ...formats.memmap import load_memmap

    Yr, _, _ = load_memmap(mmap_path)
    A, C = _init_region(Yr, dims, rows, cols, opts, opts.K, common, f"the patch at rows {rows.start}-{rows.stop}, "
                        f"columns {cols.start}-{cols.stop}")
    if A.shape[1] and not opts.only_init:
        # refining each patch (only_init=False) holds it at full rate, as CaImAn does
        Y3 = budget.read_region(Yr, dims, rows, cols)
        pdims = Y3.shape[:2]
        mov = _Movie(Y3.reshape(-1, Y3.shape[-1], order="F"))
        b, f = _init_background(mov, A, C, max(background_rank(opts), 1), np.random.default_rng(opts.seed))
        A, C, b, f = hals(mov, A, C, b, f, pdims, opts, n_outer=2)
        A, C = _drop_empty(A, C)
    return (rows, cols), sp.csc_matrix(A), C


# ------------------------------------------------------------------------------------------
# the whole pipeline
# ------------------------------------------------------------------------------------------
def _residual_budget(dims: tuple[int, int], opts: Options) -> int:
    """Seeds the residual pass may add: a third of what the first pass could find (K per patch,
    or K over the field), at least 5; greedy_init stops sooner where the residual is noise."""
    if opts.K is not None and opts.K <= 0:
        return 0
    n_patches = 1 if opts.rf is None else len(patch_grid(dims, int(opts.rf), int(_stride(opts))))
    return max(5, int(math.ceil(int(opts.K or 0) * n_patches / 3)))


def _residual_rows(mov: _Movie, A_idx: sp.csr_matrix, C_seen: np.ndarray, b_idx: np.ndarray, f_seen: np.ndarray,
                   idx: np.ndarray, ts: int, h: int) -> np.ndarray:
    """``Y - A·C - b·f`` on the pixels ``idx`` (a rectangle ``h`` rows high, Fortran order),
    averaged ``ts`` frames at a time, a block at a time, as a C-contiguous (h, w, frames) movie.
    ``A_idx``, ``b_idx``: the footprints' and the background's rows there; ``C_seen``,
    ``f_seen``: the traces averaged as the movie is (the model is linear in them), so what a
    worker is sent is as long as what seeding sees, not as the movie."""
    out = np.empty((h, len(idx) // h, budget.n_seen(mov.T, ts)), np.float32)
    pos = 0
    for blk in budget.index_blocks(idx, mov.T):
        n = len(blk)
        R = budget.average_frames(mov.rows(blk), ts)  # an index array: a copy, never a view of the memmap
        R -= A_idx[pos : pos + n] @ C_seen
        R -= b_idx[pos : pos + n] @ f_seen
        j = np.arange(pos, pos + n)
        out[j % h, j // h] = R  # pixel j of the rectangle: row j % h, column j // h
        pos += n
    return out


@dataclass
class _ResidualTile:
    """One tile of the residual pass: what a worker needs besides the movie."""

    dims: tuple[int, int]
    rows: slice
    cols: slice
    core_r: slice
    core_c: slice
    A_idx: sp.csr_matrix
    C: np.ndarray
    b_idx: np.ndarray
    f: np.ndarray
    ts: int
    k: int
    opts: Options


def _tile_seeds(mov: _Movie, t: _ResidualTile) -> tuple[np.ndarray, np.ndarray]:
    """The residual pass on one tile: the footprints (over the tile's pixels) and traces of the
    seeds whose peak lies in the tile's core (the margin's are the neighbouring tiles')."""
    h, w = t.rows.stop - t.rows.start, t.cols.stop - t.cols.start
    idx = budget.region_pixels(t.dims, t.rows, t.cols)
    R3 = _residual_rows(mov, t.A_idx, t.C, t.b_idx, t.f, idx, t.ts, h)
    A2, C2 = greedy_init(R3, t.opts, t.k, _decay_frames(t.opts, mov.T, R3.shape[-1], t.ts), overwrite=True)
    del R3
    pr, pc = np.unravel_index(np.argmax(A2, axis=0), (h, w), order="F")
    own = ((pr + t.rows.start >= t.core_r.start) & (pr + t.rows.start < t.core_r.stop)
           & (pc + t.cols.start >= t.core_c.start) & (pc + t.cols.start < t.core_c.stop))
    return A2[:, own], C2[own]


def _tile_seeds_in_worker(path: str, tile: _ResidualTile) -> tuple[np.ndarray, np.ndarray]:
    from ...formats.memmap import load_memmap

    return _tile_seeds(_Movie(load_memmap(path)[0]), tile)


#: the residual pass cuts the field into bands of about this many rows (or columns, along its
#: longer side), whatever the number of processes: the seeds depend on the cut, and a fit's
#: result must not depend on how many processes ran it
RESIDUAL_BAND = 128


def _bands(dims: tuple[int, int], margin: int) -> list[tuple[slice, slice, slice, slice]]:
    """Bands of about :data:`RESIDUAL_BAND` across the longer side of the field, as
    :func:`budget.core_tiles`' tiles (one band, the whole field, under 1.5 bands)."""
    axis = 0 if dims[0] >= dims[1] else 1
    whole = slice(0, dims[1 - axis])
    out = []
    for core in even_slices(dims[axis], max(1, round(dims[axis] / RESIDUAL_BAND))):
        grown = slice(max(core.start - margin, 0), min(core.stop + margin, dims[axis]))
        out.append((grown, whole, core, whole) if axis == 0 else (whole, grown, whole, core))
    return out


def _seeds_from_residual(mov: _Movie, A: np.ndarray, C: np.ndarray, b: np.ndarray, f: np.ndarray,
                         dims: tuple[int, int], opts: Options, workers: Workers | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """A second greedy pass on the residual ``Y - A·C - b·f``: finds neurons the first pass
    missed because a brighter neighbour's window had swallowed part of them.

    The residual is seeded on ``tsub``-averaged frames, more when the field would not fit in
    ``memory_budget_mb``; when even one decay's averaging does not fit, tile by tile (each
    seed kept by the tile whose core holds its peak), else in bands of :data:`RESIDUAL_BAND`
    (side by side in ``workers`` when given, with a memmap they can open)."""
    T, P = mov.T, mov.P
    k_extra = _residual_budget(dims, opts)
    ts = budget.seeding_tsub(P, T, opts.tsub, opts.n_samples, opts.memory_budget_mb)
    margin = 2 * max(opts.gSig)
    path = getattr(mov.Yr, "filename", None)
    # bands in workers where the whole field fits the budget (each worker holds a band); the
    # memory-driven tiles stay here, one at a time
    spread = False
    if ts is not None:
        tiles = _bands(dims, margin)
        spread = workers is not None and workers.n > 1 and path is not None and type(mov) is _Movie
    else:
        ts = max(1, int(opts.tsub), opts.n_samples)
        tiles = budget.core_tiles(dims, budget.tile_side(T, ts, margin, opts.memory_budget_mb), margin)
        log.info("residual pass in %d tiles to stay within memory_budget_mb=%g", len(tiles), opts.memory_budget_mb)
    As = fp.as_csc(A).tocsr()  # a tile's rows meet a few footprints
    b = np.asarray(b, np.float32)
    C_seen = budget.average_frames(np.asarray(C, np.float32), ts)
    f_seen = budget.average_frames(np.asarray(f, np.float32), ts)
    jobs = []
    for rows, cols, core_r, core_c in tiles:
        h, w = rows.stop - rows.start, cols.stop - cols.start
        idx = budget.region_pixels(dims, rows, cols)
        # the tile's share of the seeds (margins included: seeds there are the neighbours'), and
        # two more, as missed cells need not be spread evenly; greedy_init stops sooner where
        # a tile's residual is noise
        k = k_extra if len(tiles) == 1 else math.ceil(k_extra * h * w / P) + 2
        jobs.append((idx, _ResidualTile(dims, rows, cols, core_r, core_c, As[idx], C_seen, b[idx], f_seen, ts, k, opts)))
    if spread and len(jobs) > 1:
        found = list(workers.map(_tile_seeds_in_worker, [str(path)] * len(jobs), [t for _, t in jobs]))
    else:
        found = [_tile_seeds(mov, t) for _, t in jobs]
    A_parts, C_parts = [], []
    for (idx, _), (A2, C2) in zip(jobs, found, strict=True):
        if A2.shape[1]:
            full = np.zeros((P, A2.shape[1]), np.float32)
            full[idx] = A2
            A_parts.append(full)
            C_parts.append(C2)
    if not A_parts:
        return np.zeros((P, 0), np.float32), np.zeros((0, T), np.float32)
    A2, C2 = np.hstack(A_parts), np.vstack(C_parts)
    if A2.shape[1] > k_extra:  # tiles together may offer more: keep the strongest, as one pass would
        energy = np.linalg.norm(A2, axis=0) * np.linalg.norm(C2, axis=1)
        keep = np.sort(np.argsort(energy)[::-1][:k_extra])
        A2, C2 = A2[:, keep], C2[keep]
    return A2, np.maximum(_hold_frames(C2, ts, T), 0)


def _trace_metrics(dec: dict[str, Any], opts: Options) -> tuple[np.ndarray, np.ndarray]:
    """SNR_comp and fast_fraction of the deconvolved components, a block of traces at a time:
    both are per trace, and whole they would hold several float64 copies of K x T."""
    C, YrA = dec["C"], dec["YrA"]
    snr, fast = np.zeros(len(C)), np.zeros(len(C))
    for blk in _blocks(len(C), C.shape[1], 1 << 20):  # 8 MiB per float64 copy
        snr[blk] = snr_from_traces(C[blk] + YrA[blk], opts.n_samples)
        fast[blk] = fast_fraction(C[blk], opts.n_samples)
    return snr, fast


def _prune(mov: _Movie, A: np.ndarray, b: np.ndarray, dec: dict[str, Any], dims: tuple[int, int],
           opts: Options, workers: Workers | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any], np.ndarray, np.ndarray]:
    """After deconvolution: merge the pieces of one cell that the denoised traces reveal, and drop
    components whose trace is no more exceptional than white noise (:func:`noise_snr_floor`);
    such a component is noise that the fit shaped to itself, and its r-value is high because of
    it. Each change is followed by one HALS pass and a new deconvolution. Returns A, b, the
    deconvolution outputs and the components' SNR_comp and fast_fraction. Not applied to
    seeded (``Ain``) runs."""

    def refit(A: np.ndarray, C: np.ndarray, b: np.ndarray, f: np.ndarray) -> tuple:
        A, C, b, f = hals(mov, A, C, b, f, dims, opts, n_outer=1)
        A, C = _unit_footprints(*_drop_small(A, C, opts))
        dec = temporal_with_deconvolution(mov, A, C, b, f, opts, workers)
        return A, b, dec

    if opts.do_merge:
        A2, C2, merged = merge_components(A, dec["C"], opts.merge_thr, dims)
        if merged:
            A, b, dec = refit(A2, C2, b, dec["f"])
    floor = noise_snr_floor(mov.T, opts.n_samples)
    snr, fast = _trace_metrics(dec, opts)
    for _ in range(3):  # a refit moves signal between components: check again, a few times
        keep = (snr >= floor) & (fast >= FAST_FRACTION_MIN)
        if keep.all():
            break
        A, b, dec = refit(A[:, keep], dec["C"][keep], b, dec["f"])
        snr, fast = _trace_metrics(dec, opts)
    return A, b, dec, snr, fast


def check_geometry(dims: tuple[int, int], opts: Options) -> None:
    """Refuse neuron sizes that cannot fit the field (or a patch) with a clear message."""
    side = min(dims) if opts.rf is None else min(min(dims), 2 * opts.rf + 1)
    if 2 * max(opts.gSig) + 1 > side:
        where = "field of view" if opts.rf is None else f"patch (rf={opts.rf})"
        raise ValueError(
            f"gSig {tuple(opts.gSig)} describes neurons larger than the {side}-pixel {where} "
            f"of this {dims[0]}x{dims[1]} movie: set gSig to the neuron half-size in pixels"
        )


def check_budget(dims: tuple[int, int], T: int, opts: Options) -> None:
    """Refuse, before anything is written, a fit whose seeding cannot keep to the memory budget
    (what :func:`_init_region` would find only after the movie's memmap was written)."""
    side = (dims[0], dims[1]) if opts.rf is None else (min(dims[0], 2 * opts.rf + 1), min(dims[1], 2 * opts.rf + 1))
    what = "the whole field (rf=None)" if opts.rf is None else f"each {side[0]}x{side[1]} patch (rf={opts.rf})"
    _seeding_plan(side[0] * side[1], T, opts, what)


def corr_pnr_images_tiled(Yr: np.ndarray, dims: tuple[int, int], opts: Options
                          ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`corr_pnr_images`' (cn, pnr) of the whole field, computed tile by tile within the
    memory budget. Each tile is read with a margin wider than the filter's reach plus the one
    pixel the correlation looks at, so its core's values are those of the whole-field pass."""
    T = Yr.shape[1]
    margin = max(int(opts.gSiz[0]), int(opts.gSiz[1])) // 2 + 2
    per_pixel = budget.CORR_PNR_COPIES * 4 * T
    side = max(8, int(math.sqrt(opts.memory_budget_mb * budget.MiB / per_pixel)) - 2 * margin)
    if side >= max(dims):
        side = max(dims)
    cn = np.zeros(dims, np.float32)
    pnr = np.zeros(dims, np.float32)
    for rows, cols, core_r, core_c in budget.core_tiles(dims, side, margin):
        if (rows.stop - rows.start) * (cols.stop - cols.start) * per_pixel > opts.memory_budget_mb * budget.MiB \
                and side == 8:
            raise MemoryBudgetError(
                f"CNMF-E's correlation and PNR images need {T} frames of at least a "
                f"{2 * margin + 8}-pixel tile within memory_budget_mb={opts.memory_budget_mb:g}: raise it"
            )
        Y3 = budget.read_region(Yr, dims, rows, cols)
        c, p, _, _ = corr_pnr_images(Y3, opts)
        del Y3
        ir = slice(core_r.start - rows.start, core_r.stop - rows.start)
        ic = slice(core_c.start - cols.start, core_c.stop - cols.start)
        cn[core_r, core_c] = c[ir, ic]
        pnr[core_r, core_c] = p[ir, ic]
    return cn, pnr


def _seed_from_masks(mov: _Movie, Ain: np.ndarray, progress: ProgressFn) -> tuple[np.ndarray, np.ndarray]:
    """Footprints given (``Ain``): their traces by least squares on the movie, floored at 0."""
    A = np.asarray(Ain, np.float32)
    C = np.zeros((A.shape[1], mov.T), np.float32)
    if A.shape[1]:
        G = A.astype(np.float64).T @ A
        C = np.maximum(np.linalg.lstsq(G + 1e-9 * np.eye(len(G)), mov.AtY(A), rcond=None)[0], 0)
        C -= C.min(1, keepdims=True)
        C = C.astype(np.float32)
    progress(0.3, f"seeded with {A.shape[1]} masks")
    return A, C


def _init_patches(mov: _Movie, dims: tuple[int, int], opts: Options, mmap_path: str | os.PathLike | None,
                  workers: Workers | None, progress: ProgressFn, checkpoint_dir: Path | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Initialise every patch (spread over ``workers`` when given), then put the pieces
    together and merge what the patches' overlaps found twice. Patches an interrupted attempt
    saved in ``checkpoint_dir`` are reused, and each patch fitted here is saved there."""
    if mmap_path is None:
        raise ValueError("patches need the C-order memmap path")
    grid = patch_grid(dims, int(opts.rf), _stride(opts))
    common = _common_trace(mov, opts)
    found = resume.load_patches(checkpoint_dir, grid)
    todo = [i for i in range(len(grid)) if i not in found]
    jobs = [(str(mmap_path), dims, *grid[i], opts, common) for i in todo]
    note = report_resume("patches", sorted(found), len(grid))
    parts = dict(found)

    def done(i: int, res: tuple) -> None:
        resume.save_patch(checkpoint_dir, i, res)
        parts[i] = res
        progress(0.05 + 0.3 * len(parts) / len(grid), f"patch {len(parts)}/{len(grid)}" + (f" ({note})" if note else ""))

    if workers is not None and len(jobs) > 1:
        for i, res in zip(todo, workers.map(fit_patch, jobs), strict=True):
            done(i, res)
    else:
        for i, job in zip(todo, jobs, strict=True):
            done(i, fit_patch(job))
    ordered = [parts[i] for i in range(len(grid))]  # the grid's order, however many were resumed
    A = fp.hstack([fp.embed(Al, r, c, dims) for (r, c), Al, _ in ordered], mov.P)
    Cs = [Cl for _, _, Cl in ordered]
    C = np.vstack(Cs) if Cs else np.zeros((0, mov.T), np.float32)
    A, C = _drop_empty(A, C)
    if opts.do_merge:
        A, C, _ = merge_components(A, C, opts.merge_thr, dims, touching=False)
    progress(0.4, f"{A.shape[1]} components from {len(grid)} patches")
    return A, C


@dataclass
class _Refined:
    """The model after the HALS rounds; ``mov`` is ``Y - B`` when CNMF-E's ring model is used."""

    mov: _Movie
    A: sp.csc_matrix
    C: np.ndarray
    b: np.ndarray
    f: np.ndarray
    ring: RingModel | None = None
    fluct: np.ndarray | None = None


def _scratch_dir(mov: _Movie) -> str | None:
    """Where the movie's memmap lies (its disk was checked for the run), else the temp folder."""
    name = getattr(mov.Yr, "filename", None)
    return os.path.dirname(name) if name else None


def ring_scratch_bytes(dims: tuple[int, int], T: int, opts: Options) -> int:
    """Disk CNMF-E's ring background will take beside the memmap (0 when it fits in memory)."""
    if not uses_ring(opts):
        return 0
    n_ds = int(np.prod(ds_dims(dims, max(1, int(opts.ssub_B)))))
    return scratch_bytes(n_ds, T, opts.held_bytes)


def _refine(raw: _Movie, A: np.ndarray, C: np.ndarray, dims: tuple[int, int], opts: Options, n_rounds: int,
            seeded: bool, rng: np.random.Generator, progress: ProgressFn, workers: Workers | None = None
            ) -> _Refined:
    """HALS rounds over the whole field: background, footprints and traces; in the first round
    a residual pass for missed neurons (not with given masks, nor CNMF-E), then merging."""
    A, C = _drop_empty(A, C)
    b, f = _init_background(raw, A, C, background_rank(opts), rng)
    mov, rm, fluct = raw, None, None

    def drop(A: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _drop_empty(A, C) if seeded else _drop_small(A, C, opts)

    for r in range(n_rounds):
        if uses_ring(opts):
            # CaImAn's order: ring background from the current components, then A and C refitted
            # on Y - B with B held fixed; twice, so the second ring sees the refined neurons
            rm = RingModel.fit(raw, A, C, dims, opts.ring_size_factor * opts.gSiz[0], opts.ssub_B)
            fluct = rm.fluctuation(raw, A, C, opts.held_bytes, _scratch_dir(raw))
            mov = _BackgroundSubtracted(raw, rm, fluct, opts.held_bytes)
        A, C, b, f = hals(mov, A, C, b, f, dims, opts, n_outer=3 if r == 0 else 2)
        A, C = drop(A, C)
        if r == 0 and not seeded and not opts.cnmfe:
            A2, C2 = _seeds_from_residual(mov, A, C, b, f, dims, opts, workers)
            if A2.shape[1]:
                A, C = fp.hstack([A, fp.as_csc(A2)], mov.P), np.vstack([C, C2])
                A, C, b, f = hals(mov, A, C, b, f, dims, opts, n_outer=2)
                A, C = drop(A, C)
        if opts.do_merge and not seeded:
            A, C, merged = merge_components(A, C, opts.merge_thr, dims)
            if merged:
                A, C, b, f = hals(mov, A, C, b, f, dims, opts, n_outer=1)
                A, C = drop(A, C)
        progress(0.4 + 0.3 * (r + 1) / n_rounds, f"refined {A.shape[1]} components")
    return _Refined(mov, A, C, b, f, rm, fluct)


def _noise_of_rows(path: str, rows: slice, noise_range: tuple[float, float]) -> np.ndarray:
    """:func:`noise_psd` of the pixels ``rows`` of the memmap at ``path`` (in a worker)."""
    from ...formats.memmap import load_memmap

    return noise_psd(load_memmap(path)[0][rows], noise_range)


def pixel_noise(Yr: np.ndarray, noise_range: tuple[float, float], workers: Workers | None = None) -> np.ndarray:
    """Each pixel's noise (the ``sn`` image; :func:`noise_psd` reads a memmap a block of pixels
    at a time): it reads the movie, so the pixels are split among ``workers`` when the movie
    is a memmap they can open."""
    P = Yr.shape[0]
    path = getattr(Yr, "filename", None)
    if workers is None or workers.n <= 1 or path is None or P < 2 * workers.n:
        return noise_psd(Yr, noise_range)
    rows = even_slices(P, workers.n)
    return np.concatenate(list(workers.map(_noise_of_rows, [str(path)] * len(rows), rows,
                                           [noise_range] * len(rows))))


def _deconvolve_and_evaluate(Yr: np.ndarray, m: _Refined, dims: tuple[int, int], opts: Options, seeded: bool,
                             progress: ProgressFn, workers: Workers | None = None) -> dict[str, Any]:
    """Deconvolve the traces, prune (unless the masks were given), classify; CaImAn's outputs."""
    A, C = _unit_footprints(m.A, m.C)
    dec = temporal_with_deconvolution(m.mov, A, C, m.b, m.f, opts, workers)
    b = m.b
    if not seeded:
        A, b, dec, snr, fast = _prune(m.mov, A, b, dec, dims, opts, workers)
    else:
        snr, fast = _trace_metrics(dec, opts)
    f = dec["f"]
    progress(0.85, "deconvolved")
    rv = r_values(m.mov, A, dec["C"], b, f, opts.fr, dims=dims, surround=_surround(opts))
    T = Yr.shape[1]
    snr_min = rv_only_snr_min(T, opts)
    good, bad = classify(snr, rv, opts, fast, snr_min)
    sn = pixel_noise(Yr, opts.noise_range, workers)
    extra: dict[str, Any] = {}
    if m.ring is not None and m.fluct is not None:
        # CaImAn's nb=0 outputs (W, b0), plus b, f = a low-rank summary of the same background
        # so that a plain b ⊗ f reconstruction (rcb, residuals) shows it
        extra.update(W=m.ring.W, b0=m.ring.b0)
        b, f = m.ring.low_rank(m.fluct)
    progress(0.95, f"{len(good)} of {A.shape[1]} components accepted")
    return dict(
        A=A.toarray().astype(np.float32, copy=False), C=dec["C"], S=dec["S"], YrA=dec["YrA"], b=b.astype(np.float32), f=f,
        g=dec["g"], bl=dec["bl"], c1=dec["c1"], neurons_sn=dec["neurons_sn"], lam=dec["lam"],
        sn=sn.astype(np.float32), SNR_comp=snr, r_values=rv, fast_fraction=fast, idx_components=good,
        idx_components_bad=bad, rv_only_snr_min=snr_min, **extra,
    )


def fit(
    Yr: np.ndarray,
    dims: tuple[int, int],
    opts: Options,
    *,
    mmap_path: str | os.PathLike | None = None,
    Ain: np.ndarray | None = None,
    refit: bool = False,
    n_processes: int = 1,
    progress: ProgressFn = _noprogress,
    checkpoint_dir: Path | None = None,
    observe: Callable[[str, np.ndarray], None] | None = None,
    workers: Workers | None = None,
) -> dict[str, Any]:
    """Run CNMF (or CNMF-E with ``opts.cnmfe``) on a (P, T) movie; returns CaImAn's estimates
    as a dict of arrays (A dense P x K, l2-normalised columns), plus ``cn``/``pnr`` for CNMF-E.
    With ``checkpoint_dir``, the patches (``rf``) of an interrupted attempt are reused.
    ``observe(stage, A)`` sees the footprints after seeding (``"initialised"``) and after the
    HALS rounds (``"refined"``), so a benchmark can tell where a cell was lost; the returned
    ``A`` is what pruning kept. A fit with patches and ``n_processes > 1`` spreads its patches,
    residual pass, deconvolutions and noise image over ``workers`` (started here when not given,
    and closed on return; a caller that starts them before writing the memmap has their start-up
    overlap it). The result is the same whatever the number of processes."""
    if opts.use_cnn:
        raise ValueError(
            "the CNN classifier is CaImAn-only: set use_cnn=False for the builtin backend "
            "(or run this item with backend='caiman')"
        )
    seeded = Ain is not None
    if seeded:
        opts.rf = None
    check_geometry(dims, opts)
    if workers is None and opts.rf is not None and n_processes > 1:
        with Workers.start(n_processes, preload=WORKER_MODULES) as own:
            return _fit(Yr, dims, opts, mmap_path, Ain, refit, own, progress, checkpoint_dir, observe)
    return _fit(Yr, dims, opts, mmap_path, Ain, refit, workers, progress, checkpoint_dir, observe)


def _fit(Yr: np.ndarray, dims: tuple[int, int], opts: Options, mmap_path: str | os.PathLike | None,
         Ain: np.ndarray | None, refit: bool, workers: Workers | None, progress: ProgressFn,
         checkpoint_dir: Path | None, observe: Callable[[str, np.ndarray], None] | None) -> dict[str, Any]:
    rng = np.random.default_rng(opts.seed)
    mov = _Movie(Yr)
    seeded = Ain is not None
    if seeded:
        A, C = _seed_from_masks(mov, Ain, progress)
    elif opts.rf is None:
        A, C = _init_region(Yr, dims, slice(0, dims[0]), slice(0, dims[1]), opts, opts.K,
                            _common_trace(mov, opts), "the whole field (rf=None)")
        progress(0.3, f"initialised {A.shape[1]} components")
    else:
        A, C = _init_patches(mov, dims, opts, mmap_path, workers, progress, checkpoint_dir)
    if observe is not None:
        observe("initialised", A.toarray() if sp.issparse(A) else A)
    patched = not seeded and opts.rf is not None
    n_rounds = 2 if (refit or patched or uses_ring(opts)) else 1
    refined = _refine(mov, A, C, dims, opts, n_rounds, seeded, rng, progress, workers)
    if observe is not None:
        observe("refined", refined.A.toarray())
    return _deconvolve_and_evaluate(Yr, refined, dims, opts, seeded, progress, workers)
