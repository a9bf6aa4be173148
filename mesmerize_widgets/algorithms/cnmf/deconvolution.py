"""AR(p) deconvolution of CNMF's traces with OASIS, a block of traces at a time.

The AR coefficients come from each trace's autocovariance, corrected by the noise we measured
(CaImAn's and OASIS's estimate), computed for the whole block at once. OASIS is then given the
time constants (its ``tau_d``/``tau_r``), not asked to estimate them: its own estimate measures
the noise a second time (Welch's method, half of OASIS's time on a long trace), and the call that
asks for it, ``g=(None, None)``, is deprecated in oasis-deconv 0.3 and gone in 0.4.

A block is independent of every other, so a fit spreads the blocks over its worker processes
(:func:`deconvolve_in`).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg

from .model import even_slices, noise_psd

if TYPE_CHECKING:
    from ...processes import Workers

log = logging.getLogger(__name__)

#: lags of the autocovariance beyond p, and the shrinkage of the roots (OASIS's defaults)
AR_LAGS = 10
AR_FUDGE = 0.98
#: roots of a fit that leaves (0, 1): a noise-dominated trace; the values OASIS centres its
#: random replacements on, taken as they are so that a fit is reproducible
ROOT_ABOVE_ONE = 0.95
ROOT_BELOW_ZERO = 0.15

OUTPUT_KEYS = ("C", "S", "g", "bl", "c1", "neurons_sn", "lam")
#: values of the traces sent to a worker at a time (32 MiB of float32)
BLOCK_VALUES = 1 << 23


def ar_coefficients(Y: np.ndarray, p: int, sn: np.ndarray, lags: int = AR_LAGS,
                    fudge: float = AR_FUDGE) -> np.ndarray:
    """(K, p) AR coefficients of the rows of ``Y`` from their autocovariance at lags 0 to
    ``lags + p`` minus the noise variance ``sn**2`` at lag 0 (the Yule-Walker least squares that
    OASIS's ``estimate_time_constant`` solves per trace), its roots made real and kept in (0, 1)
    and shrunk by ``fudge``."""
    K, T = Y.shape
    n_lag = lags + p
    X = np.asarray(Y, np.float64)
    X = X - X.mean(1, keepdims=True)
    xc = np.empty((K, n_lag + 1))
    for i in range(n_lag + 1):
        xc[:, i] = np.einsum("kt,kt->k", X[:, i:], X[:, : T - i]) / T
    g = np.zeros((K, p))
    for k in range(K):
        M = scipy.linalg.toeplitz(xc[k, :n_lag], xc[k, :p]) - sn[k] ** 2 * np.eye(n_lag, p)
        coef = np.linalg.lstsq(M, xc[k, 1:], rcond=None)[0]
        roots = np.roots(np.concatenate([[1.0], -coef])).real
        roots = np.where(roots > 1, ROOT_ABOVE_ONE, np.where(roots < 0, ROOT_BELOW_ZERO, roots))
        g[k] = -np.poly(fudge * roots)[1:]
    return g


def _time_constants(g: np.ndarray) -> dict[str, Any]:
    """OASIS's ``tau_d`` (and ``tau_r`` for AR(2)) in frames (``framerate=1``) for the AR
    coefficients ``g`` (``tau_r`` left out for AR(1): oasis-deconv 0.3.0 and 0.3.2 default it
    differently, both to AR(1)). Where a root is 0 or 1 there is no finite time constant:
    ``g=(None, ...)``, and OASIS estimates the trace itself."""
    roots = np.sort(np.roots(np.concatenate([[1.0], -np.asarray(g, np.float64)])).real)[::-1]
    if np.any(roots <= 0) or np.any(roots >= 1):
        return {"g": (None,) * len(roots)}
    taus = -1.0 / np.log(roots)
    if len(taus) == 1:
        return {"tau_d": float(taus[0]), "framerate": 1.0}
    return {"tau_d": float(taus[0]), "tau_r": float(taus[1]), "framerate": 1.0}


def deconvolve_traces(Y: np.ndarray, p: int, bas_nonneg: bool, noise_range: tuple[float, float]) -> dict[str, Any]:
    """OASIS AR(p) deconvolution of each raw trace: C (no baseline), S, g, bl, c1, sn, lam."""
    K, T = Y.shape
    out = {
        "C": np.zeros((K, T), np.float32), "S": np.zeros((K, T), np.float32),
        "g": np.zeros((K, max(p, 1)), np.float64), "bl": np.zeros(K), "c1": np.zeros(K),
        "neurons_sn": np.zeros(K), "lam": np.zeros(K),
    }
    if K == 0:
        return out
    sn_all = noise_psd(Y, noise_range)
    out["neurons_sn"][:] = sn_all
    if p <= 0:
        for k in range(K):
            bl = float(np.percentile(Y[k], 8))
            out["C"][k] = np.maximum(Y[k] - bl, 0)
            out["bl"][k] = bl
            out["c1"][k] = out["C"][k, 0]
        return out
    from oasis.functions import deconvolve

    g_all = ar_coefficients(Y, p, sn_all.astype(np.float64))
    for k in range(K):
        y = np.asarray(Y[k], np.float64)
        model = _time_constants(g_all[k])
        try:
            with warnings.catch_warnings():
                if "g" in model:  # g=(None, None) is deprecated: only for a degenerate trace
                    warnings.simplefilter("ignore", DeprecationWarning)
                res = deconvolve(y, sn=float(sn_all[k]) or None, penalty=1, b_nonneg=bas_nonneg, **model)
            c, s, bl, g, lam = res[:5]
            g = np.atleast_1d(np.asarray(g, np.float64))
            if not (np.all(np.isfinite(c)) and np.isfinite(bl)):
                raise FloatingPointError("non-finite deconvolution")
        except Exception as e:  # degenerate traces: keep the baseline-removed trace
            log.debug("OASIS failed on component %d: %s", k, e)
            bl = float(np.percentile(y, 8))
            c, s, g, lam = np.maximum(y - bl, 0), np.zeros(T), np.zeros(p), 0.0
        out["C"][k] = c
        out["S"][k] = s
        out["g"][k, : min(p, len(g))] = g[:p]
        out["bl"][k] = bl
        out["c1"][k] = c[0]
        out["lam"][k] = lam
    return out


def deconvolve_in(workers: Workers | None, Y: np.ndarray, p: int, bas_nonneg: bool,
                  noise_range: tuple[float, float]) -> dict[str, Any]:
    """:func:`deconvolve_traces` with the traces split among the ``workers`` (in this process
    without them): each trace's deconvolution is independent of the others'. Blocks of at most
    :data:`BLOCK_VALUES` values, so what is in transit at a time stays small beside the
    K x T outputs, however long the movie."""
    K, T = Y.shape
    if workers is None or workers.n <= 1 or K < 2 * workers.n:
        return deconvolve_traces(Y, p, bas_nonneg, noise_range)
    blocks = even_slices(K, max(workers.n, math.ceil(K * T / BLOCK_VALUES)))
    out = deconvolve_traces(Y[:0], p, bas_nonneg, noise_range)
    out = {key: np.zeros((K, *v.shape[1:]), v.dtype) for key, v in out.items()}
    n = len(blocks)  # the blocks are pickled as workers take them, not all at once
    parts = workers.map(deconvolve_traces, [Y[blk] for blk in blocks], [p] * n, [bas_nonneg] * n, [noise_range] * n)
    for blk, part in zip(blocks, parts, strict=True):
        for key in OUTPUT_KEYS:
            out[key][blk] = part[key]
    return out
