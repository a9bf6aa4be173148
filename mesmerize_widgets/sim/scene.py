"""Building blocks of the simulator: footprints, spike trains, backgrounds, motion.

Everything that is spatial is evaluated analytically in field-of-view coordinates, so the
same seed gives the same neurons and background whatever padding motion needs; every
component draws from its own seeded stream so that, e.g., switching motion on or off does
not change the neurons or their activity.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter

# Independent random streams (SeedSequence spawn keys) for each component.  The nuisance
# layers have their own keys, so switching one on leaves every other component unchanged.
KEY_LAYOUT, KEY_SPIKES, KEY_BACKGROUND, KEY_MOTION, KEY_NOISE, KEY_LATE = 1, 2, 3, 4, 5, 6
KEY_NEUROPIL, KEY_DRIFT, KEY_VESSEL = 7, 8, 9


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """Independent, reproducible stream for one component (and frame) of a simulation."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def place_centers(
    rng: np.random.Generator,
    n: int,
    dims: tuple[int, int],
    min_distance: float,
    border: float,
) -> np.ndarray:
    """Uniform random centres at least ``min_distance`` apart (dart throwing), ``(n, 2)``."""
    lo = np.array([border, border], dtype=float)
    hi = np.array(dims, dtype=float) - 1.0 - border
    if np.any(hi <= lo):
        raise ValueError(f"field of view {dims} too small for border {border}")
    centers = np.empty((n, 2))
    k = 0
    min_d2 = float(min_distance) ** 2
    for _ in range(200):
        for c in rng.uniform(lo, hi, size=(max(64, 4 * n), 2)):
            if k == n:
                break
            if k == 0 or np.min(np.sum((centers[:k] - c) ** 2, axis=1)) >= min_d2:
                centers[k] = c
                k += 1
        if k == n:
            return centers
    raise ValueError(
        f"could only place {k} of {n} neurons {min_distance:.1f} px apart in {dims}; "
        "lower n_neurons or min_distance"
    )


def make_footprints(
    rng: np.random.Generator,
    centers: np.ndarray,
    gSig: tuple[float, float],
    size_range: tuple[float, float],
    nucleus: float,
    dims: tuple[int, int],
    pad: int,
    max_half_size: float | None = None,
) -> tuple[sp.csr_matrix, sp.csc_matrix]:
    """Soma-shaped footprints: rotated elliptical Gaussians, optionally with a dim nucleus.

    Returns the footprints on the padded canvas (C pixel order, for rendering) and cropped
    to the field of view (Fortran order, CaImAn's ``A``).  Both are scaled so that the
    visible part has unit L2 norm, hence ``crop(canvas @ C) == A @ C`` exactly.
    """
    d1, d2 = dims
    H, W = d1 + 2 * pad, d2 + 2 * pad
    K = len(centers)
    sig = np.asarray(gSig, dtype=float)[None, :] * rng.uniform(*size_range, size=(K, 2))
    theta = rng.uniform(0.0, np.pi, K)
    depth = np.clip(nucleus * rng.uniform(0.6, 1.4, K), 0.0, 0.9)
    can_rows, can_cols, can_vals = [], [], []
    out_rows, out_cols, out_vals = [], [], []
    for k in range(K):
        cy, cx = centers[k] + pad
        R = 3.0 * sig[k].max()
        if max_half_size is not None:
            R = min(R, float(max_half_size))
        y0, y1 = max(0, int(np.floor(cy - R))), min(H, int(np.ceil(cy + R)) + 1)
        x0, x1 = max(0, int(np.floor(cx - R))), min(W, int(np.ceil(cx + R)) + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        c, s = np.cos(theta[k]), np.sin(theta[k])
        m2 = ((c * dy + s * dx) / sig[k, 0]) ** 2 + ((-s * dy + c * dx) / sig[k, 1]) ** 2
        val = np.exp(-0.5 * m2) - depth[k] * np.exp(-0.5 * m2 / 0.45**2)
        val[(m2 > 9.0) | (np.abs(dy) > R) | (np.abs(dx) > R)] = 0.0
        val = np.maximum(val, 0.0)
        vis = (yy >= pad) & (yy < pad + d1) & (xx >= pad) & (xx < pad + d2) & (val > 0)
        val /= np.sqrt(np.sum(val[vis] ** 2))
        nz = val > 0
        can_rows.append(yy[nz] * W + xx[nz])
        can_cols.append(np.full(nz.sum(), k))
        can_vals.append(val[nz])
        out_rows.append((yy[vis] - pad) + (xx[vis] - pad) * d1)
        out_cols.append(np.full(vis.sum(), k))
        out_vals.append(val[vis])
    if K == 0:
        empty = (np.zeros(0, np.float32), (np.zeros(0, int), np.zeros(0, int)))
        return sp.csr_matrix(empty, shape=(H * W, 0)), sp.csc_matrix(empty, shape=(d1 * d2, 0))
    canvas = sp.csr_matrix(
        (
            np.concatenate(can_vals).astype(np.float32),
            (np.concatenate(can_rows), np.concatenate(can_cols)),
        ),
        shape=(H * W, K),
    )
    A = sp.csc_matrix(
        (
            np.concatenate(out_vals).astype(np.float32),
            (np.concatenate(out_rows), np.concatenate(out_cols)),
        ),
        shape=(d1 * d2, K),
    )
    return canvas, A


def ar_coefficients(fr: float, decay_time: float, rise_time: float | None) -> tuple[float, ...]:
    """AR(2) (difference of exponentials) or AR(1) coefficients for the indicator kinetics."""
    d = float(np.exp(-1.0 / (decay_time * fr)))
    if not rise_time:
        return (d,)
    r = float(np.exp(-1.0 / (rise_time * fr)))
    return (d + r, -d * r)


def spike_trains(
    rng: np.random.Generator,
    rng_late: np.random.Generator,
    K: int,
    T: int,
    fr: float,
    firing_rate: float,
    late_fraction: float,
    min_spikes: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Bursty spike counts (Poisson with slowly modulated, per-neuron log-normal rates).

    Late neurons stay silent until their ``appear_frame`` and fire exactly there; every
    neuron fires at least ``min_spikes`` times so it is detectable in principle.
    """
    rates = firing_rate * rng.lognormal(-0.125, 0.5, K)
    sigma = max(fr, 1.0)
    mod = gaussian_filter1d(rng.standard_normal((K, T)), sigma=sigma, axis=1, mode="reflect")
    mod = np.clip(mod * np.sqrt(2.0 * np.sqrt(np.pi) * sigma), -3.0, 3.0)  # ~unit std, bounded
    lam = (rates[:, None] / fr) * np.exp(0.8 * mod - 0.32)
    counts = np.minimum(rng.poisson(lam), 255).astype(np.uint8)
    appear = np.zeros(K, dtype=np.int64)
    n_late = int(round(late_fraction * K))
    if n_late and T > 4:
        late = rng_late.permutation(K)[:n_late]
        appear[late] = rng_late.integers(T // 4, max(T // 4 + 1, (3 * T) // 4), n_late)
        for k in late:
            counts[k, : appear[k]] = 0
            counts[k, appear[k]] = max(counts[k, appear[k]], 1)
    for k in np.flatnonzero(counts.sum(axis=1) < min_spikes):
        need = min_spikes - int(counts[k].sum())
        counts[k, rng.integers(appear[k], T, need)] += 1
    return counts, appear


def calcium(S: np.ndarray, g: tuple[float, ...]) -> np.ndarray:
    """Calcium traces from the AR input: ``c_t = sum_i g_i c_{t-1-i} + s_t``."""
    return lfilter([1.0], np.r_[1.0, -np.asarray(g)], S, axis=1).astype(np.float32)


def kernel_peak(g: tuple[float, ...]) -> float:
    """Peak of the AR impulse response (so amplitudes can be stated as peak dF)."""
    imp = np.zeros(2000)
    imp[0] = 1.0
    return float(lfilter([1.0], np.r_[1.0, -np.asarray(g)], imp).max())


def smooth_field(
    rng: np.random.Generator, H: int, W: int, pad: int, length: float, n_modes: int = 32
) -> np.ndarray:
    """Stationary smooth random field (std ~1, correlation length ~``length`` px) on the canvas.

    A sum of random plane waves, evaluated analytically so padding does not change it.
    """
    k = 2 * np.pi / (length * rng.uniform(0.7, 1.6, n_modes))
    ang = rng.uniform(0, 2 * np.pi, n_modes)
    phase = rng.uniform(0, 2 * np.pi, n_modes)
    y = np.arange(H) - pad
    x = np.arange(W) - pad
    ey = np.exp(1j * ((k * np.sin(ang))[:, None] * y[None, :] + phase[:, None]))
    ex = np.exp(1j * (k * np.cos(ang))[:, None] * x[None, :])
    return (np.real(ey.T @ ex) * np.sqrt(2.0 / n_modes)).astype(np.float32)


def smooth_trace(rng: np.random.Generator, T: int, sigma_frames: float) -> np.ndarray:
    """Smooth zero-mean random trace with max |value| == 1."""
    sigma = max(min(sigma_frames, T / 6.0), 0.5)  # short movies still get independent wiggles
    z = gaussian_filter1d(rng.standard_normal(T), sigma=sigma, mode="reflect")
    z -= z.mean()
    m = np.abs(z).max()
    return z / m if m > 0 else z


def rigid_trajectory(rng: np.random.Generator, T: int, fr: float, amplitude: float) -> np.ndarray:
    """Brain-like rigid motion ``(T, 2)``: slow drift + breathing/heartbeat oscillation + jitter.

    Bounded by ``amplitude``; continuous sub-pixel values (float32, applied exactly).
    """
    out = np.zeros((T, 2))
    t = np.arange(T) / fr
    for ax in range(2):
        drift = gaussian_filter1d(
            np.cumsum(rng.standard_normal(T)), sigma=max(min(2.0 * fr, T / 6.0), 1.0)
        )
        drift -= drift.mean()
        m = np.abs(drift).max()
        drift = drift / m if m > 0 else drift
        osc = np.sin(2 * np.pi * rng.uniform(0.5, 2.5) * t + rng.uniform(0, 2 * np.pi))
        jitter = smooth_trace(rng, T, 1.0)
        out[:, ax] = 0.55 * drift + 0.3 * osc + 0.15 * jitter
    return (out * amplitude).astype(np.float32)


def nonrigid_coefficients(
    rng: np.random.Generator, T: int, fr: float, amplitude: float
) -> np.ndarray:
    """Slowly varying amplitudes ``(T, 3, 2)`` of the three field modes, |sum| <= amplitude."""
    out = np.empty((T, 3, 2), dtype=np.float32)
    for m in range(3):
        for c in range(2):
            out[:, m, c] = smooth_trace(rng, T, max(fr, 1.0)) * (amplitude / 3.0)
    return out


def vessel_band(
    rng: np.random.Generator,
    yy: np.ndarray,
    xx: np.ndarray,
    dims: tuple[int, int],
    width_scale: float,
) -> np.ndarray:
    """Profile in [0, 1] of one meandering blood vessel across the field of view.

    A Gaussian cross-section (std ``0.7-1.5 * width_scale`` px) around a sinusoidally
    meandering centre line at a random angle; shared by the dark 1p shadows and the bright
    2p vessels so both look alike.
    """
    ang = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.2, 0.8) * dims[0], rng.uniform(0.2, 0.8) * dims[1]
    u = np.cos(ang) * (xx - cx) + np.sin(ang) * (yy - cy)
    v = -np.sin(ang) * (xx - cx) + np.cos(ang) * (yy - cy)
    wav = rng.uniform(0.5, 1.5) * max(dims)
    v0 = (
        rng.uniform(0.03, 0.1) * max(dims) * np.sin(2 * np.pi * u / wav + rng.uniform(0, 2 * np.pi))
    )
    width = rng.uniform(0.7, 1.5) * width_scale
    return np.exp(-0.5 * ((v - v0) / width) ** 2)


def lowpass(x: np.ndarray, frames: float) -> np.ndarray:
    """Causal exponential low-pass (time constant ``frames``) along the last axis, unit DC gain."""
    a = float(np.exp(-1.0 / max(frames, 1e-6)))
    zi = x[..., :1] * a  # start in steady state: no artificial onset transient
    return lfilter([1.0 - a], [1.0, -a], x, axis=-1, zi=zi)[0]


def brightening_factor(T: int, brightening: float) -> np.ndarray:
    """1 until about 80 % of the movie, then a rise over a tenth of it to ``1 + brightening``
    (float32): the whole field brightening at once, as a change of laser power or focus does."""
    if brightening < 0:
        raise ValueError(f"brightening must be >= 0, not {brightening}")
    t = np.arange(T, dtype=np.float64)
    return (1.0 + brightening / (1.0 + np.exp(-(t - 0.85 * T) / max(0.02 * T, 0.5)))).astype(np.float32)


def bleach_factor(T: int, bleaching: float) -> np.ndarray:
    """``exp(-t / tau)`` per frame with ``1 - exp(-(T - 1) / tau) == bleaching`` (float32)."""
    if not 0.0 <= bleaching < 1.0:
        raise ValueError(f"bleaching must be in [0, 1), not {bleaching}")
    return ((1.0 - bleaching) ** (np.arange(T) / max(T - 1, 1))).astype(np.float32)
