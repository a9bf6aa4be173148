"""Two-photon and one-photon (miniscope) movie simulators returning their ground truth.

Model (per frame ``t``)::

    reference_t = A @ C[:, t] + b @ f[:, t]             # tissue, motion-free frame
    frame_t(q - s_t(q)) = reference_t(q)                # motion; s_t = registering shift
    movie_t = frame_t + baseline + N(0, noise_sigma**2 + gain * frame_t)

so ``registered(q) = frame(q - s(q))`` recovers the reference (CaImAn's convention).  The
reference is rendered on a canvas padded by the maximum shift, so moved frames show real
tissue at their borders.  Rigid shifts are applied exactly (separable bicubic, continuous
sub-pixel values); piecewise fields go through ``cv2.remap`` (bicubic, sub-pixel positions
resolved to OpenCV's 1/32 px grid, i.e. <= 0.016 px per pixel).  Noise is drawn per frame
from ``SeedSequence(seed, spawn_key=(5, t))`` (16-bit inverse-CDF normals, tails cut at
4.3 sigma), so chunked and in-memory rendering agree bit for bit whatever the chunk size.

Nuisances of real data (active neuropil, per-neuron baseline drift, bright vessels) are
extra background components ``b``/``f`` (off by default, own random streams); bleaching
scales ``C`` and ``f``.  So ``truth.clean()`` stays exactly the noise-free movie.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.special import ndtri

from ..algorithms.mcorr.registration import cubic_weights
from . import scene
from .truth import GroundTruth, field_modes

__all__ = [
    "SimulatedMovie",
    "simulate_1p",
    "simulate_2p",
    "simulate_realistic_1p",
    "simulate_realistic_2p",
]

Motion = Literal["rigid", "piecewise"] | None
_DTYPES = {"float32": np.float32, "uint16": np.uint16, "uint8": np.uint8}


# Inverse-CDF table: 16-bit uniforms -> standard normal values (3-4x faster than
# Generator.standard_normal; tails truncated at 4.3 sigma, variance renormalised to 1).
_NORMAL_LUT = ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float32)
_NORMAL_LUT /= _NORMAL_LUT.std()


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Fast float32 (quantised, 65536-level) standard normal samples."""
    u = rng.integers(0, 65536, int(np.prod(shape)), dtype=np.uint16)
    return np.take(_NORMAL_LUT, u).reshape(shape)


def _add_photon_noise(dst: np.ndarray, tr: GroundTruth, rng: np.random.Generator) -> None:
    """``dst`` (signal) replaced by ``gain`` x Poisson(signal / gain) plus read noise, in place.

    The same mean and variance as the Gaussian model, but with the skew of real photon-limited
    2p data (Allen's: a few photons per pixel and frame, each worth hundreds of counts), where
    a pixel sits at its floor most frames and jumps by whole photons in a few.
    """
    lam = np.maximum(dst, 0.0) / np.float32(tr.gain)
    dst[:] = np.float32(tr.gain) * rng.poisson(lam).astype(np.float32)
    dst += np.float32(tr.noise_sigma) * standard_normal(rng, dst.shape)


def _translate(canvas: np.ndarray, pad: int, shift: np.ndarray, dst: np.ndarray) -> None:
    """``dst(r) = canvas(r + pad + shift)`` by separable bicubic interpolation.

    A translation has the same weights at every pixel, so two 4-tap filters do the job:
    exact sub-pixel positions (no 1/32 px grid like cv2.warpAffine) and ~6x faster.
    """
    d1, d2 = dst.shape
    ny, nx = int(np.floor(shift[0])), int(np.floor(shift[1]))
    src = canvas[pad + ny - 1 : pad + ny + d1 + 2, pad + nx - 1 : pad + nx + d2 + 2]
    wy, wx = cubic_weights(float(shift[0]) - ny), cubic_weights(float(shift[1]) - nx)
    full = cv2.sepFilter2D(src, -1, wx, wy, anchor=(1, 1), borderType=cv2.BORDER_REFLECT)
    dst[:] = full[1 : 1 + d1, 1 : 1 + d2]


class _Renderer:
    """Renders any frame range of a simulation from its (small) generative state."""

    block = 32  # frames rendered at once: bounds temporaries to ~block * canvas pixels

    def __init__(
        self,
        truth: GroundTruth,
        A_canvas: sp.csr_matrix,
        b_canvas: np.ndarray,
        pad: int,
        seed: int,
        dtype: np.dtype,
        drift_canvas: sp.csr_matrix | None = None,
    ) -> None:
        self.truth = truth
        self.A_canvas = A_canvas
        self.bT = np.ascontiguousarray(b_canvas.T)  # (nb, H*W) dense background columns
        # per-neuron baseline drift: the last background columns of the truth, kept sparse
        # here (each is one neuron's resting glow) and driven by the last rows of truth.f
        self.drift_canvas = drift_canvas
        self.pad = pad
        self.seed = seed
        self.dtype = np.dtype(dtype)
        self.photon_counting = bool(truth.params.get("photon_counting", False))
        d1, d2 = truth.dims
        self.canvas_shape = (d1 + 2 * pad, d2 + 2 * pad)
        self._grid_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _maps(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Sampling maps on the canvas for a piecewise frame: exact inverse of the field.

        The field ``s`` is defined on registered coordinates q (``frame(q - s(q)) = ref(q)``),
        so frame pixel r samples ``ref(q)`` with ``q = r + s(q)``: solved by fixed-point
        iteration on a coarse grid for the small correction ``s(q) - s(r)``.
        """
        tr = self.truth
        d1, d2 = tr.dims
        coeffs = tr.field_coeffs[t].astype(np.float64)
        rigid = tr.shifts[t].astype(np.float64)

        def field(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            return rigid[:, None, None] + np.einsum(
                "m...,mc->c...", field_modes(rows, cols, tr.dims), coeffs
            )

        gh, gw = max(2, d1 // 8), max(2, d2 // 8)
        rc = ((np.arange(gh) + 0.5) * d1 / gh - 0.5)[:, None] + np.zeros((1, gw))
        cc = ((np.arange(gw) + 0.5) * d2 / gw - 0.5)[None, :] + np.zeros((gh, 1))
        s_r = field(rc, cc)
        s_q = s_r
        for _ in range(6):
            s_q = field(rc + s_q[0], cc + s_q[1])
        delta = (s_q - s_r).astype(np.float32)
        if self._grid_cache is None:
            yy, xx = np.mgrid[0:d1, 0:d2].astype(np.float32)
            modes = field_modes(yy, xx, tr.dims).astype(np.float32)
            self._grid_cache = (yy + self.pad, xx + self.pad, modes)
        gy, gx, modes = self._grid_cache
        maps = []
        for c, grid in ((1, gx), (0, gy)):  # x map first, as cv2.remap wants
            m = cv2.resize(delta[c], (d2, d1), interpolation=cv2.INTER_LINEAR)
            m += grid
            m += np.float32(rigid[c])
            for j in range(modes.shape[0]):
                m += np.float32(coeffs[j, c]) * modes[j]
            maps.append(m)
        map_x, map_y = maps
        return map_x, map_y

    def render(self, start: int, stop: int, noise: bool = True) -> np.ndarray:
        tr = self.truth
        d1, d2 = tr.dims
        H, W = self.canvas_shape
        out = np.empty((stop - start, d1, d2), dtype=np.float32)
        buf = np.empty((min(self.block, max(stop - start, 1)), H * W), dtype=np.float32)
        sd = np.empty((d1, d2), dtype=np.float32)
        for s0 in range(start, stop, self.block):
            s1 = min(stop, s0 + self.block)
            # background as broadcast outer products (matmul with a tiny inner dim is slow)
            Y = buf[: s1 - s0]
            np.multiply(tr.f[0, s0:s1, None], self.bT[0][None, :], out=Y)
            for j in range(1, self.bT.shape[0]):
                Y += tr.f[j, s0:s1, None] * self.bT[j][None, :]
            Cb = np.ascontiguousarray(tr.C[:, s0:s1].T)
            Db = None
            if self.drift_canvas is not None:
                Db = np.ascontiguousarray(tr.f[self.bT.shape[0] :, s0:s1].T)
            for i in range(s1 - s0):
                t, dst = s0 + i, out[s0 - start + i]
                Y[i] += self.A_canvas @ Cb[i]
                if Db is not None:
                    Y[i] += self.drift_canvas @ Db[i]
                canvas = Y[i].reshape(H, W)
                if tr.motion is None:
                    dst[:] = canvas
                elif tr.motion == "rigid":
                    _translate(canvas, self.pad, tr.shifts[t], dst)
                else:
                    mx, my = self._maps(t)
                    cv2.remap(
                        canvas, mx, my, cv2.INTER_CUBIC, dst=dst, borderMode=cv2.BORDER_REFLECT
                    )
                if noise and self.photon_counting:
                    _add_photon_noise(dst, tr, scene.rng_for(self.seed, scene.KEY_NOISE, t))
                elif noise:
                    z = standard_normal(scene.rng_for(self.seed, scene.KEY_NOISE, t), (d1, d2))
                    np.maximum(dst, 0.0, out=sd)
                    sd *= np.float32(tr.gain)
                    sd += np.float32(tr.noise_sigma**2)
                    np.sqrt(sd, out=sd)
                    z *= sd
                    dst += z
        out += np.float32(tr.baseline)
        if not noise or self.dtype == np.float32:
            return out
        info = np.iinfo(self.dtype)
        np.rint(out, out=out)
        np.clip(out, info.min, info.max, out=out)
        return out.astype(self.dtype)


class SimulatedMovie:
    """A simulated movie ``(T, d1, d2)`` plus its :class:`GroundTruth`.

    With ``lazy=True`` nothing is rendered up front: stream it with :meth:`frames` (e.g.
    to write a 512x512x10000 movie chunk by chunk) or render ranges with :meth:`render`.
    ``movie`` renders (and caches) everything on first access.
    """

    def __init__(
        self, truth: GroundTruth, renderer: _Renderer, movie: np.ndarray | None = None
    ) -> None:
        self.truth = truth
        self._renderer = renderer
        self._movie = movie

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.truth.n_frames, *self.truth.dims)

    @property
    def dtype(self) -> np.dtype:
        return self._renderer.dtype

    @property
    def is_rendered(self) -> bool:
        return self._movie is not None

    def __len__(self) -> int:
        return self.truth.n_frames

    @property
    def movie(self) -> np.ndarray:
        if self._movie is None:
            self._movie = self.render()
        return self._movie

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.movie if dtype is None else self.movie.astype(dtype)

    def render(self, start: int = 0, stop: int | None = None, noise: bool = True) -> np.ndarray:
        """Frames [start, stop); ``noise=False`` gives the noiseless (moving) float32 movie."""
        stop = self.truth.n_frames if stop is None else min(stop, self.truth.n_frames)
        if self._movie is not None and noise:
            return self._movie[start:stop]
        return self._renderer.render(start, stop, noise=noise)

    def frames(
        self, chunk: int = 256, start: int = 0, stop: int | None = None
    ) -> Iterator[np.ndarray]:
        """Yield consecutive chunks ``(<=chunk, d1, d2)``; concatenated they equal ``movie``."""
        stop = self.truth.n_frames if stop is None else min(stop, self.truth.n_frames)
        for s in range(start, stop, chunk):
            yield self.render(s, min(stop, s + chunk))


def _resolve_seed(seed: int | None) -> int:
    return int(np.random.SeedSequence().entropy) if seed is None else int(seed)


def _crop_fortran(img: np.ndarray, pad: int, dims: tuple[int, int]) -> np.ndarray:
    return img[pad : pad + dims[0], pad : pad + dims[1]].reshape(-1, order="F")


class _Neurons(NamedTuple):
    """Footprints and per-neuron levels, all drawn from the layout stream."""

    centers: np.ndarray  # (K, 2) [row, col]
    A_canvas: sp.csr_matrix  # footprints on the padded canvas
    A: sp.csc_matrix  # footprints cropped to the field, Fortran pixel order
    a_max: np.ndarray  # (K,) float64 peak of each footprint
    brightness: np.ndarray  # (K,) resting brightness at the footprint's peak
    peak_df: np.ndarray  # (K,) peak dF of one spike at the footprint's peak


class _Activity(NamedTuple):
    """Spikes and calcium of every neuron (before bleaching)."""

    g: tuple[float, ...]
    counts: np.ndarray
    appear: np.ndarray
    amplitudes: np.ndarray
    S: np.ndarray
    C: np.ndarray


def _neurons(kind: str, p: dict[str, Any], dims: tuple[int, int], K: int,
             gSig: tuple[float, ...], pad: int) -> _Neurons:
    """Place the neurons and draw their footprints and levels (layout stream, in this order)."""
    rng = scene.rng_for(p["seed"], scene.KEY_LAYOUT)
    min_distance = (
        2.0 * float(np.mean(gSig)) if p["min_distance"] is None else float(p["min_distance"])
    )
    border = 0.5 * float(np.mean(gSig)) if p["border"] is None else float(p["border"])
    centers = scene.place_centers(rng, K, dims, min_distance, border)
    size_range = (0.85, 1.15) if kind == "2p" else (1.0, 1.35)
    A_canvas, A = scene.make_footprints(
        rng,
        centers,
        gSig,
        size_range,
        float(p.get("nucleus", 0.0)),
        dims,
        pad,
        None if p.get("gSiz") is None else float(p["gSiz"]) / 2.0,
    )
    a_max = np.asarray(A.max(axis=0).todense()).ravel().astype(np.float64) if K else np.zeros(0)
    brightness = p["neuron_brightness"] * rng.lognormal(0.0, 0.3, K)
    peak_df = p["spike_amplitude"] * rng.lognormal(0.0, 0.25, K)
    return _Neurons(centers, A_canvas, A, a_max, brightness, peak_df)


def _activity(p: dict[str, Any], K: int, T: int, fr: float, nrn: _Neurons) -> _Activity:
    """Spike trains and their calcium, scaled so one spike peaks at ``peak_df``."""
    seed = p["seed"]
    g = scene.ar_coefficients(fr, float(p["decay_time"]), p["rise_time"])
    counts, appear = scene.spike_trains(
        scene.rng_for(seed, scene.KEY_SPIKES),
        scene.rng_for(seed, scene.KEY_LATE),
        K,
        T,
        fr,
        float(p["firing_rate"]),
        float(p["late_fraction"]),
    )
    amplitudes = (nrn.peak_df / nrn.a_max / scene.kernel_peak(g)).astype(np.float32)
    S = counts.astype(np.float32) * amplitudes[:, None]
    C = scene.calcium(S, g)
    return _Activity(g, counts, appear, amplitudes, S, C)


def _background(kind: str, p: dict[str, Any], nrn: _Neurons, dims: tuple[int, int], T: int,
                fr: float, gSig: tuple[float, ...], pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``nb`` background components on the canvas, their traces and the tissue's attenuation.

    Component 0 carries the static tissue (incl. resting neuron glow); 2p tissue is a smooth
    field, 1p tissue is vignetted and shadowed by vessels (the attenuation, which the
    nuisances share).
    """
    rng = scene.rng_for(p["seed"], scene.KEY_BACKGROUND)
    d1, d2 = dims
    H, W = d1 + 2 * pad, d2 + 2 * pad
    nb = int(p["nb"])
    if nb < 1:
        raise ValueError("nb must be >= 1")
    glow = np.asarray(nrn.A_canvas @ (nrn.brightness / nrn.a_max)).reshape(H, W).astype(np.float32)
    mean_sig = float(np.mean(gSig))
    bg_level = float(p["background"])
    t_axis = np.arange(T) / max(T - 1, 1)
    if kind == "2p":
        spatial0 = bg_level * np.exp(
            0.25 * scene.smooth_field(rng, H, W, pad, 12 * mean_sig) - 0.03
        )
        trace0 = 1.0 + 0.05 * scene.smooth_trace(rng, T, 5 * fr)
        extra_scale, extra_len, extra_fluct = 0.3, 20 * mean_sig, 0.5
        attenuation = np.ones((H, W), dtype=np.float32)
    else:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) - pad
        cy, cx = (d1 - 1) / 2 * rng.uniform(0.9, 1.1), (d2 - 1) / 2 * rng.uniform(0.9, 1.1)
        rho2 = 0.5 * (((yy - cy) / (d1 / 2)) ** 2 + ((xx - cx) / (d2 / 2)) ** 2)
        vignette = np.clip(1.0 - float(p["vignetting"]) * rho2, 0.05, None)
        attenuation = vignette * _vessels(rng, int(p["vessels"]), yy, xx, dims, mean_sig)
        spatial0 = (
            bg_level
            * attenuation
            * np.exp(0.15 * scene.smooth_field(rng, H, W, pad, max(dims) / 2))
        )
        trace0 = (1.0 + 0.03 * scene.smooth_trace(rng, T, 5 * fr)) * (1.0 - 0.05 * t_axis)
        extra_scale, extra_len, extra_fluct = 0.3, 8 * mean_sig, 0.6
    b_canvas = np.empty((H * W, nb), dtype=np.float32)
    f = np.empty((nb, T), dtype=np.float32)
    b_canvas[:, 0] = (spatial0 + glow).ravel()
    f[0] = trace0
    for j in range(1, nb):
        pattern = 0.5 + 0.5 * np.tanh(scene.smooth_field(rng, H, W, pad, extra_len))
        b_canvas[:, j] = (extra_scale * bg_level * attenuation * pattern).ravel()
        f[j] = np.clip(1.0 + extra_fluct * scene.smooth_trace(rng, T, 0.5 * fr), 0.0, None)
    return b_canvas, f, attenuation


def _motion(p: dict[str, Any], motion: Motion, T: int, fr: float,
            max_shift: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Registering shifts (T, 2) and, when piecewise, the non-rigid field's coefficients."""
    rng = scene.rng_for(p["seed"], scene.KEY_MOTION)
    shifts = np.zeros((T, 2), dtype=np.float32)
    coeffs = None
    if motion == "rigid":
        shifts = scene.rigid_trajectory(rng, T, fr, max_shift)
    elif motion == "piecewise":
        nonrigid = (
            0.4 * max_shift
            if p.get("nonrigid_amplitude") is None
            else float(p["nonrigid_amplitude"])
        )
        nonrigid = min(nonrigid, max_shift)
        shifts = scene.rigid_trajectory(rng, T, fr, max_shift - nonrigid)
        coeffs = scene.nonrigid_coefficients(rng, T, fr, nonrigid)
    return shifts, coeffs


def _simulate(kind: str, p: dict[str, Any]) -> SimulatedMovie:
    """Shared engine of :func:`simulate_2p` and :func:`simulate_1p` (``p``: their arguments)."""
    T, dims = int(p["n_frames"]), tuple(int(v) for v in p["dims"])
    K, fr = int(p["n_neurons"]), float(p["fr"])
    gSig = tuple(float(v) for v in p["gSig"])
    motion = p["motion"]
    if motion not in (None, "rigid", "piecewise"):
        raise ValueError(f"motion must be 'rigid', 'piecewise' or None, not {motion!r}")
    if p["dtype"] not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}")
    seed = _resolve_seed(p["seed"])
    p = {**p, "seed": seed, "kind": kind}
    max_shift = float(p["max_shift"]) if motion else 0.0
    pad = int(math.ceil(max_shift)) + 4 if motion else 0

    nrn = _neurons(kind, p, dims, K, gSig, pad)
    act = _activity(p, K, T, fr, nrn)
    C = act.C
    b_canvas, f, attenuation = _background(kind, p, nrn, dims, T, fr, gSig, pad)
    b_canvas, f, drift_canvas, b_drift, layers = _nuisances(
        p, b_canvas, f, C, nrn.A, nrn.A_canvas, nrn.brightness, nrn.a_max, attenuation, pad
    )
    b = _crop_background(b_canvas, b_drift, pad, dims)
    if layers:
        p["background_layers"] = layers
    _scale_fluorescence(p, C, f)
    shifts, coeffs = _motion(p, motion, T, fr, max_shift)

    truth = GroundTruth(
        A=nrn.A,
        C=C,
        S=act.S,
        spike_counts=act.counts,
        amplitudes=act.amplitudes,
        g=act.g,
        b=b,
        f=f,
        baseline=float(p["baseline"]),
        centers=nrn.centers.astype(np.float32),
        shifts=shifts,
        appear_frame=act.appear,
        dims=dims,
        fr=fr,
        noise_sigma=float(p["noise"]),
        gain=float(p["gain"]),
        motion=motion,
        field_coeffs=coeffs,
        params=p,
    )
    renderer = _Renderer(
        truth, nrn.A_canvas, b_canvas, pad, seed, _DTYPES[p["dtype"]], drift_canvas=drift_canvas
    )
    sim = SimulatedMovie(truth, renderer)
    if not p["lazy"]:
        sim.movie  # noqa: B018 - render now
    return sim


def _crop_background(b_canvas: np.ndarray, b_drift: np.ndarray | None, pad: int,
                     dims: tuple[int, int]) -> np.ndarray:
    """The truth's ``b``: the canvas columns cropped to the field, then the drift columns."""
    H, W = dims[0] + 2 * pad, dims[1] + 2 * pad
    b = np.stack(
        [_crop_fortran(b_canvas[:, j].reshape(H, W), pad, dims) for j in range(b_canvas.shape[1])],
        axis=1,
    )
    if b_drift is not None:
        b = np.concatenate([b, b_drift], axis=1)
    return b


# Fixed constants of the nuisance layers (see simulate_2p's docstring).
_NEUROPIL_WAVELENGTH = 3.0  # x gSig: wavelength of the neuropil's field (gSig-sized blobs)
_NEUROPIL_TAU = 1.0  # s: low-pass of the population activity that drives the neuropil
_NEUROPIL_COUPLING = 0.7  # share of the neuropil trace that follows the population
_DRIFT_TIME = 20.0  # s: smoothing of each neuron's baseline drift (tens of seconds)
_VESSEL_WIDTH = 2.0  # x gSig: scale of a bright vessel's cross-section std (0.7-1.5 x this)
_VASOMOTION_HZ = (0.07, 0.13)  # slow vessel-diameter oscillation (~0.1 Hz)


def _nuisances(
    p: dict[str, Any],
    b_canvas: np.ndarray,
    f: np.ndarray,
    C: np.ndarray,
    A: sp.csc_matrix,
    A_canvas: sp.csr_matrix,
    brightness: np.ndarray,
    a_max: np.ndarray,
    attenuation: np.ndarray,
    pad: int,
) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix | None, np.ndarray | None, dict[str, list[int]]]:
    """Append the optional real-data nuisances to the background as extra components.

    Returns the dense canvas columns and traces (original ``nb`` first, then neuropil and
    bright vessels), the sparse drift canvas with its cropped dense columns (appended last
    to ``truth.b``; its traces are the last rows of ``f``), and the column index of every
    layer.  Nothing is drawn or changed when all are off, so default movies stay identical.
    """
    T = C.shape[1]
    dims = (int(p["dims"][0]), int(p["dims"][1]))
    H, W = dims[0] + 2 * pad, dims[1] + 2 * pad
    fr, seed = float(p["fr"]), int(p["seed"])
    mean_sig = float(np.mean(p["gSig"]))
    neuropil = float(p.get("neuropil", 0.0))
    n_vessels = int(p.get("bright_vessels", 0))
    drift = float(p.get("baseline_drift", 0.0))
    if neuropil < 0 or n_vessels < 0 or not 0.0 <= drift < 1.0:
        raise ValueError("need neuropil >= 0, bright_vessels >= 0 and 0 <= baseline_drift < 1")
    cols: list[np.ndarray] = []
    traces: list[np.ndarray] = []
    layers: dict[str, list[int]] = {}

    def add(name: str, img: np.ndarray, trace: np.ndarray) -> None:
        layers.setdefault(name, []).append(b_canvas.shape[1] + len(cols))
        cols.append(img.astype(np.float32).ravel())
        traces.append(trace.astype(np.float32))

    if neuropil > 0:
        rng = scene.rng_for(seed, scene.KEY_NEUROPIL)
        blobs = scene.smooth_field(rng, H, W, pad, _NEUROPIL_WAVELENGTH * mean_sig, n_modes=256)
        pattern = 0.5 + 0.5 * np.tanh(1.5 * blobs)
        slow = 0.5 + 0.5 * scene.smooth_trace(rng, T, 2.0 * fr)
        # population activity: mean dF (at each footprint's peak) over neurons, low-passed
        pop = (C.astype(np.float64) * a_max[:, None]).mean(axis=0) if len(a_max) else None
        trace = slow
        if pop is not None and pop.max() > 0:
            pop = scene.lowpass(pop, _NEUROPIL_TAU * fr)
            trace = _NEUROPIL_COUPLING * pop / pop.max() + (1 - _NEUROPIL_COUPLING) * slow
        add("neuropil", neuropil * float(p["spike_amplitude"]) * attenuation * pattern, trace)
    if n_vessels:
        rng = scene.rng_for(seed, scene.KEY_VESSEL)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) - pad
        t_sec = np.arange(T) / fr
        level = float(p.get("vessel_brightness", 1.0)) * float(p["background"])
        for _ in range(n_vessels):
            band = scene.vessel_band(rng, yy, xx, dims, _VESSEL_WIDTH * mean_sig)
            hz, phase = rng.uniform(*_VASOMOTION_HZ), rng.uniform(0, 2 * np.pi)
            flow = scene.smooth_trace(rng, T, 0.5 * fr)  # faster flicker of the blood flow
            trace = 1.0 + 0.25 * np.sin(2 * np.pi * hz * t_sec + phase) + 0.1 * flow
            add("bright_vessels", level * band, trace)
    if cols:
        b_canvas = np.concatenate([b_canvas, np.stack(cols, axis=1)], axis=1)
        f = np.concatenate([f, np.stack(traces)], axis=0)
    drift_canvas = b_drift = None
    K = len(a_max)
    if drift > 0 and K:
        rng = scene.rng_for(seed, scene.KEY_DRIFT)
        rest = (brightness / a_max).astype(np.float32)  # resting glow of each footprint
        drift_canvas = sp.csr_matrix(A_canvas @ sp.diags(rest)).astype(np.float32)
        b_drift = np.asarray((A @ sp.diags(rest)).todense(), dtype=np.float32)
        D = np.stack([drift * scene.smooth_trace(rng, T, _DRIFT_TIME * fr) for _ in range(K)])
        layers["baseline_drift"] = list(range(b_canvas.shape[1], b_canvas.shape[1] + K))
        f = np.concatenate([f, D.astype(np.float32)], axis=0)
    return b_canvas, f, drift_canvas, b_drift, layers


def _vessels(
    rng: np.random.Generator,
    n: int,
    yy: np.ndarray,
    xx: np.ndarray,
    dims: tuple[int, int],
    gsig: float,
) -> np.ndarray:
    """Multiplicative shadow of ``n`` meandering blood vessels (dark bands in 1p data)."""
    out = np.ones(yy.shape, dtype=np.float32)
    for _ in range(n):
        band = scene.vessel_band(rng, yy, xx, dims, gsig)
        out *= 1.0 - rng.uniform(0.2, 0.4) * band
    return out


def _scale_fluorescence(p: dict[str, Any], C: np.ndarray, f: np.ndarray) -> None:
    """Bleaching and a field-wide brightening, in place: they scale all the fluorescence (cells
    and every background layer), not the detector's baseline."""
    T = f.shape[-1]
    for key, factor_of in (("bleaching", scene.bleach_factor), ("brightening", scene.brightening_factor)):
        if p.get(key):
            factor = factor_of(T, float(p[key]))
            C *= factor
            f *= factor


def simulate_2p(
    n_frames: int = 1000,
    dims: tuple[int, int] = (128, 128),
    n_neurons: int = 50,
    fr: float = 30.0,
    decay_time: float = 0.4,
    rise_time: float | None = 0.05,
    gSig: tuple[float, float] = (4.0, 4.0),
    firing_rate: float = 1.0,
    spike_amplitude: float = 40.0,
    neuron_brightness: float = 30.0,
    nucleus: float = 0.3,
    background: float = 50.0,
    nb: int = 1,
    noise: float = 4.0,
    gain: float = 1.0,
    photon_counting: bool = False,
    baseline: float = 100.0,
    motion: Motion = "rigid",
    max_shift: float = 3.0,
    nonrigid_amplitude: float | None = None,
    late_fraction: float = 0.0,
    min_distance: float | None = None,
    border: float | None = None,
    neuropil: float = 0.0,
    baseline_drift: float = 0.0,
    bleaching: float = 0.0,
    brightening: float = 0.0,
    bright_vessels: int = 0,
    vessel_brightness: float = 1.0,
    seed: int | None = 0,
    dtype: str = "float32",
    lazy: bool = False,
) -> SimulatedMovie:
    """Simulate a two-photon movie (GCaMP-like somata over neuropil) with its ground truth.

    Units are photon-like counts.  ``gSig``: footprint Gaussian std (CaImAn's neuron
    half-size), jittered +-15% per axis with random orientation; ``nucleus`` in [0, 0.9]
    dims the centre (ring-shaped somata).  ``firing_rate`` (Hz) is the mean of per-neuron
    log-normal rates, modulated slowly (bursty).  ``spike_amplitude``: peak dF of one spike
    at the footprint's brightest pixel; ``neuron_brightness``: resting brightness there
    (part of background component 0).  ``background``: mean neuropil level.  Noise is
    Poisson-Gaussian: variance ``noise**2 + gain * signal``, Gaussian-shaped unless
    ``photon_counting`` (then ``gain`` x Poisson(signal / gain) + N(0, noise**2): whole photons
    of ``gain`` counts, the skewed noise of photon-limited data).  ``motion``: ``"rigid"``,
    ``"piecewise"`` (rigid + smooth low-order field of amplitude ``nonrigid_amplitude``,
    default 0.4 * max_shift) or None; all shifts stay within ``max_shift`` px.
    ``late_fraction`` of neurons stay silent until ``truth.appear_frame``.
    ``min_distance`` (default 2 * gSig) between centres controls overlap: below ~2 * gSig
    the footprints share pixels, below gSig the somata overlap (dense tissue; any value
    >= 0 works, 0 allows coincident centres); centres keep ``border`` px (default gSig / 2)
    from the edge.  ``dtype``: float32, uint16 or uint8.  ``lazy=True`` renders nothing up
    front (stream with ``.frames()``).

    Nuisances of real recordings, all off by default (so the default movies never change);
    each adds to the truth's background, so ``truth.C`` stays the spike-driven calcium and
    ``truth.clean()`` stays the exact noise-free movie.  ``truth.params["background_layers"]``
    names the columns of ``truth.b`` / rows of ``truth.f`` each layer occupies:

    * ``neuropil``: active neuropil, blobs ~1-1.5 x gSig across whose trace is 70% the population's
      mean dF low-passed at 1 s and 30% its own slow fluctuation; at its brightest blobs it
      swings by ``neuropil`` x ``spike_amplitude`` (a fraction of one spike's transient).
    * ``baseline_drift``: each neuron's resting brightness wanders by up to this fraction
      (smooth, ~20 s time scale); stored as one background column per neuron (its resting
      glow, dense ``(d1*d2, K)`` in the truth), never in ``C``.
    * ``bleaching``: fraction of all fluorescence (neurons, background, neuropil, vessels;
      not the detector ``baseline``) lost by the last frame, ``exp(-t / tau)``.  ``C`` and
      ``f`` are bleached too (the signal itself dims), so ``truth.C = bleach(t) * AR(S)``
      while ``S`` stays ``spike_counts * amplitudes``; the factor is
      ``scene.bleach_factor(n_frames, bleaching)``.
    * ``bright_vessels``: meandering bands (std ~1.4-3 x gSig, wider than a soma) of peak
      brightness ``vessel_brightness`` x ``background`` whose brightness oscillates by
      +-25% at ~0.1 Hz (vasomotion) plus 10% faster flicker: a classic false positive.
    * ``brightening``: the whole field's fluorescence rises by this fraction over a tenth of
      the movie, about 80 % of the way through (a change of laser power or focus, or a
      field-wide event; Neurofinder 01.01's first 101 frames brighten by three quarters so,
      as much around the cells as in them). ``C`` and ``f`` rise with it, like bleaching.
    * residual motion: ``motion="rigid"`` with a sub-pixel ``max_shift`` (e.g. 0.5).
    """
    return _simulate("2p", dict(locals()))


def simulate_1p(
    n_frames: int = 1000,
    dims: tuple[int, int] = (128, 128),
    n_neurons: int = 60,
    fr: float = 20.0,
    decay_time: float = 0.5,
    rise_time: float | None = 0.08,
    gSig: tuple[float, float] = (3.0, 3.0),
    gSiz: float | None = None,
    firing_rate: float = 0.7,
    spike_amplitude: float = 8.0,
    neuron_brightness: float = 4.0,
    background: float = 100.0,
    vignetting: float = 0.5,
    vessels: int = 2,
    nb: int = 2,
    noise: float = 1.5,
    gain: float = 0.2,
    baseline: float = 10.0,
    motion: Motion = None,
    max_shift: float = 2.0,
    nonrigid_amplitude: float | None = None,
    late_fraction: float = 0.0,
    min_distance: float | None = None,
    border: float | None = None,
    neuropil: float = 0.0,
    baseline_drift: float = 0.0,
    bleaching: float = 0.0,
    brightening: float = 0.0,
    seed: int | None = 0,
    dtype: str = "float32",
    lazy: bool = False,
) -> SimulatedMovie:
    """Simulate a one-photon (miniscope) movie with its ground truth.

    Compared to :func:`simulate_2p`: larger, blurrier neurons (std ``gSig`` x 1.0-1.35,
    no nucleus, optional ``gSiz`` cap on the footprint extent), and a strong background
    (``background`` ~12x a single-spike transient) that is spatially smooth, vignetted
    (``vignetting``: fractional fall-off at the corners), shadowed by ``vessels`` and slowly
    varying (bleaching + a second fluctuating component when ``nb >= 2``).  The default
    values mostly fit an 8-bit camera range (rare burst peaks may exceed 255).  Motion is
    off by default (``"rigid"`` or ``"piecewise"`` to enable).  ``neuropil``,
    ``baseline_drift``, ``bleaching`` and ``brightening`` (off by default) work as in :func:`simulate_2p`
    (the neuropil is shadowed by the vignetting and vessels like the rest of the tissue);
    the built-in background already has a 5% linear decay, independent of ``bleaching``.
    """
    return _simulate("1p", dict(locals()))


def _with_nuisances(
    simulate: Callable[..., SimulatedMovie],
    default_gsig: tuple[float, float],
    nuisances: dict[str, Any],
    seed: int | None,
    n_frames: int,
    dims: tuple[int, int],
    n_neurons: int,
    overrides: dict[str, Any],
) -> SimulatedMovie:
    """The presets' shared part: cells 1.5 gSig apart, 10% baseline drift, 0.5 px residual
    motion, then the preset's own ``nuisances``; the caller's ``overrides`` win."""
    kw: dict[str, Any] = dict(
        min_distance=1.5 * float(np.mean(overrides.get("gSig", default_gsig))),
        baseline_drift=0.1,
        motion="rigid",
        max_shift=0.5,
        **nuisances,
    )
    kw.update(overrides)
    return simulate(n_frames=n_frames, dims=dims, n_neurons=n_neurons, seed=seed, **kw)


def simulate_realistic_2p(
    seed: int | None = 0,
    n_frames: int = 400,
    dims: tuple[int, int] = (96, 96),
    n_neurons: int = 40,
    **overrides: Any,
) -> SimulatedMovie:
    """A 2p movie with every nuisance of real data on, at realistic levels (CI-sized).

    So that what passes on the simulator also holds on recordings.  Values (any can be
    overridden by keyword):

    * ``neuropil=0.4``: neuropil swings of ~40% of a single-spike transient, correlated
      with the population (Suite2p/CaImAn-style data need neuropil handling at this level);
    * ``min_distance=1.5 * gSig`` (6 px) and ~1.7x the default density: somata touch and
      some overlap, as in dense L2/3 fields of view;
    * ``baseline_drift=0.1``: resting levels wander by up to 10% over tens of seconds;
    * ``bleaching=0.15``: 15% loss over the movie (typical of a few minutes of 2p GCaMP);
    * ``motion="rigid", max_shift=0.5``: the sub-pixel residual left after registration;
    * ``bright_vessels=1`` at ``vessel_brightness=1.5``: one labelled/autofluorescent
      vessel that about doubles the tissue's fluorescence along its path (+75 counts at its
      centre), vasomotion at ~0.1 Hz.

    96x96 x 400 frames renders in a fraction of a second.
    """
    nuisances = dict(neuropil=0.4, bleaching=0.15, bright_vessels=1, vessel_brightness=1.5)
    return _with_nuisances(simulate_2p, (4.0, 4.0), nuisances, seed, n_frames, dims, n_neurons, overrides)


def simulate_realistic_1p(
    seed: int | None = 0,
    n_frames: int = 400,
    dims: tuple[int, int] = (96, 96),
    n_neurons: int = 45,
    **overrides: Any,
) -> SimulatedMovie:
    """A 1p (miniscope) movie with the nuisances of real data on, at realistic levels.

    On top of :func:`simulate_1p`'s strong vignetted background and dark vessels:

    * ``neuropil=0.3``: activity-correlated out-of-focus signal, ~30% of a spike's transient;
    * ``min_distance=1.5 * gSig`` (4.5 px) and ~1.3x the default density: overlapping cells
      (1p neurons blur into each other);
    * ``baseline_drift=0.1``: resting levels wander by up to 10%;
    * ``bleaching=0.2``: one-photon excitation bleaches faster than 2p;
    * ``motion="rigid", max_shift=0.5``: sub-pixel residual motion.

    96x96 x 400 frames renders in a fraction of a second.
    """
    nuisances = dict(neuropil=0.3, bleaching=0.2)
    return _with_nuisances(simulate_1p, (3.0, 3.0), nuisances, seed, n_frames, dims, n_neurons, overrides)
