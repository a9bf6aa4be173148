"""Detrended dF/F of CNMF traces, as CaImAn's ``detrend_df_f`` defines it (our own code)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.optimize
import scipy.sparse

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 (CaImAn's environments)


def _botev_fixed_point(t: float, M: int, I2: np.ndarray, a2: np.ndarray) -> float:
    ell = 7
    f = 2 * np.pi ** (2 * ell) * np.sum(I2**ell * a2 * np.exp(-I2 * np.pi**2 * t))
    for s in range(ell, 1, -1):  # CaImAn starts at ell (Botev's paper at ell - 1)
        k0 = np.prod(np.arange(1, 2 * s, 2)) / np.sqrt(2 * np.pi)
        const = (1 + 0.5 ** (s + 0.5)) / 3
        time = (2 * const * k0 / M / f) ** (2 / (3 + 2 * s))
        f = 2 * np.pi ** (2 * s) * np.sum(I2**s * a2 * np.exp(-I2 * np.pi**2 * time))
    return t - (2 * M * np.sqrt(np.pi) * f) ** (-0.4)


def mode_percentile(x: np.ndarray, n_mesh: int = 2**12) -> float:
    """Percentile at which the trace's density peaks (Botev et al. 2010 diffusion KDE).

    This is how CaImAn picks each trace's baseline level when ``flag_auto=True``; falls back to
    the median (50) when the estimate fails, as CaImAn does.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    lo, hi = x.min(), x.max()
    span = hi - lo
    lo, hi = lo - span / 10, hi + span / 10
    if not np.isfinite(span) or span == 0:
        return 50.0
    hist, edges = np.histogram(x, bins=n_mesh, range=(lo, hi))
    hist = hist / x.size
    dct = scipy.fft.dct(hist, type=2)
    I2 = np.arange(1, n_mesh, dtype=np.float64) ** 2
    a2 = (dct[1:] / 2) ** 2
    try:
        t_star = scipy.optimize.brentq(_botev_fixed_point, 0, 0.1, args=(x.size, I2, a2))
    except ValueError:
        return 50.0
    smoothed = dct * np.exp(-(np.arange(n_mesh) ** 2) * np.pi**2 * t_star / 2)
    density = scipy.fft.dct(smoothed, type=3)  # unnormalised inverse; scale cancels below
    mesh = (edges[:-1] + edges[1:]) / 2
    density = density / _trapezoid(density, mesh)
    cdf = np.cumsum(density) * (mesh[1] - mesh[0])
    prct = float(cdf[np.argmax(density)] * 100)
    if not np.isfinite(prct) or prct < 0 or prct >= 100:
        return 50.0
    return prct


def _fast_baseline(trace: np.ndarray, level: float, window: int) -> np.ndarray:
    """Approximate running percentile: one percentile per block of ``window`` frames, cubic-zoomed."""
    T = trace.shape[-1]
    missing = int(np.ceil(T / window) * window - T)
    before, after = missing // 2, missing - missing // 2
    padded = np.pad(trace, (before, after), mode="reflect")
    blocks = padded.reshape(-1, window)  # block j = frames j*window .. (j+1)*window - 1
    base = np.percentile(blocks, level, axis=1)
    full = scipy.ndimage.zoom(base.astype(np.float32), window, order=3, mode="nearest")
    return full[before : before + T].astype(np.float64)


def detrend_df_f(
    A: Any,
    b: np.ndarray | None,
    C: np.ndarray,
    f: np.ndarray | None,
    YrA: np.ndarray | None = None,
    quantileMin: float = 8,
    frames_window: int | None = 500,
    flag_auto: bool = True,
    use_fast: bool = False,
    detrend_only: bool = False,
) -> np.ndarray:
    """Detrended dF/F of each component, as CaImAn's ``detrend_df_f`` defines it.

    Traces are scaled by their footprint's l2 norm, F = C (+ YrA); the baseline F0 is a running
    percentile of F over ``frames_window`` frames (the percentile at the trace's density mode
    when ``flag_auto``, else ``quantileMin``) and the background under the footprint, B =
    Aᵀ b f, gives its running percentile B0: dF/F = (F - F0) / (B0 + F0), or F - F0 with
    ``detrend_only`` (forced when there is no background). ``use_fast`` approximates the running
    percentile per block (CaImAn's fast path subtracts it once more; we return the documented
    quantity).
    """
    A = scipy.sparse.csc_matrix(A)
    C = np.asarray(C, dtype=np.float64)
    T = C.shape[1]
    if b is None or f is None:
        b = np.zeros((A.shape[0], 1))
        f = np.zeros((1, T))
        detrend_only = True
    norms = np.sqrt(np.asarray(A.power(2).sum(axis=0)).ravel())
    An = A @ scipy.sparse.diags(1.0 / norms)
    F = norms[:, None] * C
    if YrA is not None:
        F = F + norms[:, None] * np.asarray(YrA, dtype=np.float64)
    B = np.asarray(An.T @ np.asarray(b)) @ np.asarray(f)
    whole = frames_window is None or frames_window > T
    if flag_auto:
        levels = [mode_percentile(tr[:frames_window] if frames_window else tr) for tr in F]
    else:
        levels = [quantileMin] * F.shape[0]
    if whole:
        F0 = np.array([np.percentile(tr, q) for tr, q in zip(F, levels, strict=True)])[:, None]
        B0 = np.array([np.percentile(tr, q) for tr, q in zip(B, levels, strict=True)])[:, None]
    elif use_fast:
        F0 = np.stack([_fast_baseline(tr, q, frames_window) for tr, q in zip(F, levels, strict=True)])
        B0 = np.stack([_fast_baseline(tr, q, frames_window) for tr, q in zip(B, levels, strict=True)])
    else:
        F0 = np.stack([scipy.ndimage.percentile_filter(tr, q, frames_window) for tr, q in zip(F, levels, strict=True)])
        B0 = np.stack([scipy.ndimage.percentile_filter(tr, q, frames_window) for tr, q in zip(B, levels, strict=True)])
    if detrend_only:
        return F - F0
    return (F - F0) / (B0 + F0)
