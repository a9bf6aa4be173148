"""Parameters from the data: what a user would otherwise guess, measured on the movie itself.

:func:`suggest_params` estimates CaImAn's ``fr``, ``gSig``/``gSiz``, ``K``, ``rf``/``stride``,
``decay_time``, ``p``, CNMF-E's ``min_corr``/``min_pnr`` and motion correction's ``max_shifts`` and
``gSig_filt``, each with a one-line reason; :func:`check_params` names params that look wrong for
the movie (``add_item`` turns them into warnings). Both read a bounded sample (at most a few
hundred frames) and cache what they measured per file (path, size and mtime), so a grid of items
on one movie measures it once.

How each value is measured (all on a frame sample, rigidly registered first):

- cells: the *activity image* ``sqrt(var - noise^2)`` of the (spatially high-passed) movie is
  proportional to a cell's footprint, so a scale-normalised Laplacian-of-Gaussian has its
  scale-space maximum at the footprint's Gaussian std, CaImAn's ``gSig``. The median scale of
  the strongest blobs is ``gSig``; the number of blobs gives the density of (active) cells.
- two-photon somata also show in the mean image (silent ones too): there the same scale search
  gives a steadier size, used when it finds at least 5 cells; the cells are then those of
  either image, once (each image misses cells the other shows).
- ``decay_time``: exponential fits to the falls after the brightest cells' transients (neuropil
  annulus subtracted), from the peak until the next rise; median of the clearest falls. When no
  fall drops below 40 % of its peak, two-photon movies get the least decay the transients allow
  (how long they stayed high), where it is slower than the default; else it is not measured (the
  reason says so, the given value is kept).
- motion: integer phase correlation of frame bins spread over the whole movie against their
  median (the registration primitives of ``mcorr``).
- ``p``: 1 below 15 Hz, where a frame lasts as long as a GCaMP transient's rise (a jump then a
  decay); otherwise the given or default order.
- ``fr``: the file's metadata (ImageJ ``finterval``/``fps``, ScanImage ``scanFrameRate``, OME
  ``TimeIncrement``, a JSON description, HDF5 attributes, the video's fps), never a guess.
- a warning, not a value: the tissue between the cells (the dimmer half of the mean image)
  brightening by more than ``FIELD_RISE_WARN`` of its level, as a change of laser power or focus
  does (cells firing together hardly lift it). Every cell bright at rest then rises with the
  field, and a cell that fires only then cannot be told from it.
"""

from __future__ import annotations

import html
import json
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.ndimage as ndi

from ..arrays import LazyArray, open_movie
from .cnmf.core import Options, corr_pnr_images, noise_psd
from .registry import get_algorithm

__all__ = ["MovieStats", "Suggestion", "check_params", "measure_movie", "suggest_params"]

MAX_FRAMES = 300  # frames of the contiguous sample
_ELEMENT_BUDGET = 40_000_000  # frames x pixels of the sample (160 MB as float32)
_MOTION_BINS = 24
_MOTION_BIN_FRAMES = 5
_K_MARGIN = 1.25  # cells silent in the sample still need a component


# -- what the movie says -----------------------------------------------------------------------
@dataclass(frozen=True)
class MovieStats:
    """What was measured on one movie; None where it could not be measured."""

    shape: tuple[int, int, int]
    frames_read: int
    fr: float | None
    fr_source: str
    one_photon: bool
    gsig: float | None  # neuron Gaussian std in px
    size_from: str  # the image gsig was measured on
    n_cells: int  # blobs found in the field (active in the sample)
    decay_frames: float | None  # indicator decay time constant in frames
    motion: tuple[float, float]  # largest rigid displacement seen (rows, cols), px
    #: where no fall could be fitted: the least decay constant (frames) the transients allow
    decay_least_frames: float | None = None
    #: the largest brightening of the tissue between the cells over its median in the frames
    #: read, and the (first, last) frame of the movie where it stays above half that
    #: (:func:`_field_rise`)
    field_rise: float = 0.0
    field_rise_frames: tuple[int, int] = (0, 0)
    corr_at_cells: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    pnr_at_cells: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    corr_background: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    pnr_background: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def density(self) -> float:
        """Cells per pixel."""
        return self.n_cells / float(self.shape[1] * self.shape[2])


_cache: dict[tuple, MovieStats] = {}
_cache_lock = threading.Lock()


def _file_key(path: Path, var_name_hdf5: str | None) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), var_name_hdf5, st.st_mtime_ns, st.st_size)


def _as_movie(movie: Any, var_name_hdf5: str | None) -> tuple[Any, tuple | None]:
    """(array, cache key): a path is opened lazily and keyed by its stat; arrays are not cached."""
    if isinstance(movie, (str, os.PathLike)):
        path = Path(movie)
        return open_movie(path, var_name_hdf5=var_name_hdf5), _file_key(path, var_name_hdf5)
    if isinstance(movie, LazyArray):
        path = getattr(movie, "path", None)
        key = _file_key(Path(path), getattr(movie, "dataset", None)) if path else None
        return movie, key
    arr = np.asarray(movie)
    if arr.ndim != 3:
        raise ValueError(f"expected a (t, y, x) movie, got shape {arr.shape}")
    return arr, None


def cached_stats(movie: Any, var_name_hdf5: str | None = None) -> MovieStats | None:
    """The stats already measured for this file, or None (never reads the movie)."""
    if not isinstance(movie, (str, os.PathLike)):
        return None
    key = _file_key(Path(movie), var_name_hdf5)
    return _cache.get(key) if key else None


def measure_movie(movie: Any, var_name_hdf5: str | None = None, *, one_photon: bool | None = None,
                  max_frames: int = MAX_FRAMES) -> MovieStats:
    """Measure cell size and count, decay, motion and frame rate on a bounded sample (cached)."""
    arr, key = _as_movie(movie, var_name_hdf5)
    key = key and (*key, one_photon, max_frames)
    if key is not None:
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None:
            return hit
    stats = _measure(arr, one_photon, max_frames)
    if key is not None:
        with _cache_lock:
            if len(_cache) > 256:
                _cache.clear()
            _cache[key] = stats
            _cache[key[:4]] = stats  # what cached_stats() looks up
    return stats


def frame_rate(arr: Any) -> tuple[float | None, str]:
    """(frames per second, where it was found) from the file's metadata; (None, why) if absent."""
    paths = getattr(arr, "paths", None) or [getattr(arr, "path", None)]
    if isinstance(getattr(arr, "fps", None), (int, float)) and arr.fps > 0:
        return float(arr.fps), "the video's frame rate"
    path = paths[0] if paths and paths[0] is not None else None
    if path is None:
        return None, "not in the data"
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff", ".btf"):
            return _tiff_rate(path)
        if path.suffix.lower() in (".h5", ".hdf5", ".hdf"):
            return _hdf5_rate(path, getattr(arr, "dataset", None))
    except Exception as e:  # metadata is a bonus: a broken tag must not break the suggestion
        return None, f"unreadable metadata ({type(e).__name__})"
    return None, "not in the file"


_RATE_KEYS = ("fr", "fps", "frame_rate", "framerate", "frameRate", "scanFrameRate", "sampling_rate",
              "imaging_rate", "rate")
_INTERVAL_KEYS = ("finterval", "frame_interval", "frame_period", "framePeriod")


def _rate_from_mapping(meta: Mapping, where: str) -> tuple[float | None, str]:
    for k, v in meta.items():
        name = str(k).split(".")[-1]
        try:
            value = float(np.asarray(v).ravel()[0]) if np.ndim(v) else float(v)
        except (TypeError, ValueError, IndexError):
            continue
        if not math.isfinite(value) or value <= 0:
            continue
        if name in _RATE_KEYS:
            return value, f"{where} {name}={value:g}"
        if name in _INTERVAL_KEYS:
            return 1.0 / value, f"{where} {name}={value:g} s"
    return None, "not in the file"


def _tiff_rate(path: Path) -> tuple[float | None, str]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_imagej and tif.imagej_metadata:
            fr, why = _rate_from_mapping(tif.imagej_metadata, "ImageJ")
            if fr:
                return fr, why
        if tif.is_scanimage:
            si = tif.scanimage_metadata or {}
            flat = {**(si.get("FrameData") or {})}
            fr, why = _rate_from_mapping(flat, "ScanImage")
            if fr:
                return fr, why
        if tif.is_ome and tif.ome_metadata:
            import re

            m = re.search(r'TimeIncrement="([0-9.eE+-]+)"', tif.ome_metadata)
            if m and float(m.group(1)) > 0:
                return 1.0 / float(m.group(1)), f"OME TimeIncrement={float(m.group(1)):g} s"
        desc = tif.pages.first.description if len(tif.pages) else ""
        if desc and desc.lstrip().startswith("{"):
            try:
                meta = json.loads(desc)
            except ValueError:
                meta = None
            if isinstance(meta, dict):
                fr, why = _rate_from_mapping(meta, "TIFF description")
                if fr:
                    return fr, why
    return None, "not in the file"


def _hdf5_rate(path: Path, dataset: str | None) -> tuple[float | None, str]:
    import h5py

    with h5py.File(path, "r") as f:
        places = [f[dataset]] if dataset and dataset in f else []
        places.append(f)
        for obj in places:
            fr, why = _rate_from_mapping(dict(obj.attrs), "HDF5 attribute")
            if fr:
                return fr, why
    return None, "not in the file"


# -- sampling and registration ---------------------------------------------------------------
def _read(arr: Any, start: int, stop: int) -> np.ndarray:
    return np.asarray(arr[start:stop], dtype=np.float32)


def _bandpass(image: np.ndarray) -> np.ndarray:
    """Cell-scale structure only: noise (1 px) and smooth background (10 px) removed."""
    im = np.asarray(image, np.float32)
    return cv2.GaussianBlur(im, (0, 0), 1.0) - cv2.GaussianBlur(im, (0, 0), 10.0)


def _bin_displacements(means: np.ndarray, search: int) -> np.ndarray:
    """Integer displacements (n, 2) of each image to the images' median (twice, re-templated).

    Cross-correlation of band-passed, edge-tapered images; the peak is searched within
    ``search`` px. ``image(q + d)`` matches the template at q.
    """
    h, w = means.shape[1:]
    taper = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    filtered = np.stack([_bandpass(m) * taper for m in means])
    norms = np.sqrt((filtered.astype(np.float64) ** 2).sum((1, 2)))
    specs = np.fft.rfft2(filtered)
    template = np.median(means, axis=0)
    lags_r = np.r_[0 : search + 1, -search:0]
    lags_c = np.r_[0 : search + 1, -search:0]
    d = np.zeros((len(means), 2))
    for _ in range(2):
        ref_img = _bandpass(template) * taper
        ref = np.conj(np.fft.rfft2(ref_img))
        cross = specs * ref
        cc = np.fft.irfft2(cross, s=(h, w))[:, lags_r % h][:, :, lags_c % w].reshape(len(means), -1)
        best = cc.argmax(1)
        d = np.stack([lags_r[best // len(lags_c)], lags_c[best % len(lags_c)]], 1).astype(float)
        ref_norm = float(np.sqrt((ref_img.astype(np.float64) ** 2).sum()))
        d[~_clear_peak(cc, best, norms, ref_norm, h * w)] = 0.0
        template = np.median([_shift(im, dd) for im, dd in zip(means, d, strict=True)], axis=0)
    return d


#: least correlation between a bin's image and the template (band-passed, at the best lag),
#: in units of the largest correlation two independent noise images reach over the search:
#: 1.0-1.6 on a shot-noise movie, 3.3 on the dimmest real one (Allen), 8-15 on the others
PEAK_MIN_RATIO = 2.5


def _clear_peak(cc: np.ndarray, best: np.ndarray, norms: np.ndarray, ref_norm: float,
                n_px: int) -> np.ndarray:
    """Per row of ``cc`` (lags flattened): is its peak a match rather than noise?

    On a movie without stable structure (pure shot noise, or bins too dim to register) the
    largest of a few thousand correlations of noise still sits somewhere, often far from 0:
    taken at face value it suggested ``max_shifts`` of 20 px on a 100 px noise movie. Two
    independent noise images of ``n`` independent values correlate by about ``1/sqrt(n)`` at a
    lag, and the largest of ``m`` lags reaches ``sqrt(2 ln m)`` times that; the band-pass's
    1 px blur leaves about one independent value per ``4 pi`` pixels.
    """
    ncc = cc[np.arange(len(cc)), best] / np.maximum(norms * ref_norm, 1e-30)
    n_independent = max(n_px / (4 * math.pi), 1.0)
    noise_max = math.sqrt(2 * math.log(cc.shape[1]) / n_independent)
    return ncc > PEAK_MIN_RATIO * noise_max


def _shift(image: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``image`` moved by integer ``-d`` (registered: out(q) = image(q + d)), edges replicated."""
    M = np.float32([[1, 0, -d[1]], [0, 1, -d[0]]])
    h, w = image.shape
    return cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


def _search(dims: tuple[int, int]) -> int:
    return int(max(2, min(40, min(dims) // 5)))


def _motion(arr: Any, T: int, dims: tuple[int, int], block: np.ndarray | None) -> np.ndarray:
    """Rigid displacements of frame bins spread over the whole movie (rows, cols) in px."""
    n_bins = min(_MOTION_BINS, max(2, T // _MOTION_BIN_FRAMES))
    if n_bins < 2:
        return np.zeros((1, 2))
    if block is not None and len(block) >= T:
        edges = np.linspace(0, T, n_bins + 1).astype(int)
        means = np.stack([block[a:b].mean(0) for a, b in zip(edges[:-1], edges[1:], strict=True)])
    else:
        starts = np.linspace(0, T - _MOTION_BIN_FRAMES, n_bins).astype(int)
        means = np.stack([_read(arr, s, s + _MOTION_BIN_FRAMES).mean(0) for s in starts])
    return _bin_displacements(means.astype(np.float32), _search(dims))


def _register_block(block: np.ndarray, dims: tuple[int, int]) -> np.ndarray:
    """The block with each 5-frame bin moved by its integer displacement (in place)."""
    n = len(block)
    if n < 2 * _MOTION_BIN_FRAMES:
        return block
    edges = np.arange(0, n + _MOTION_BIN_FRAMES, _MOTION_BIN_FRAMES).clip(max=n)
    edges = np.unique(edges)
    means = np.stack([block[a:b].mean(0) for a, b in zip(edges[:-1], edges[1:], strict=True)])
    d = _bin_displacements(means, _search(dims))
    d -= np.round(np.median(d, axis=0))
    for (a, b), dd in zip(zip(edges[:-1], edges[1:], strict=True), d, strict=True):
        if np.any(dd):
            for t in range(a, b):
                block[t] = _shift(block[t], dd)
    return block


# -- cells -----------------------------------------------------------------------------------
def _activity_image(Y: np.ndarray, bg_sigma: float) -> np.ndarray:
    """Signed ``sqrt(var - noise^2)`` of the movie with its smooth background removed, per pixel.

    For an isolated cell this is proportional to its footprint, whatever its brightness; where
    nothing is active it scatters around 0 (so its negative half measures its own noise).
    """
    X = Y - Y.mean(0, keepdims=True)
    for t in range(len(X)):
        X[t] -= cv2.GaussianBlur(X[t], (0, 0), bg_sigma, borderType=cv2.BORDER_REFLECT)
    v = (X * X).mean(0) - noise_psd(np.moveaxis(X, 0, -1)).astype(np.float64) ** 2
    return (np.sign(v) * np.sqrt(np.abs(v))).astype(np.float32)


def _scales(dims: tuple[int, int]) -> np.ndarray:
    top = max(2.0, min(20.0, min(dims) / 6))
    return np.exp(np.arange(np.log(1.6), np.log(top) + 1e-9, np.log(1.08)))


_gains: dict[int, np.ndarray] = {}


def _log_noise_gain(sig: np.ndarray) -> np.ndarray:
    """Standard deviation of ``-sigma^2 LoG`` of unit white noise, per scale."""
    key = hash(sig.tobytes())
    if key not in _gains:
        noise = np.random.default_rng(0).standard_normal((160, 160))
        _gains[key] = np.array([float((s * s * ndi.gaussian_laplace(noise, s))[40:-40, 40:-40].std())
                                for s in sig])
    return _gains[key]


def find_blobs(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale-space maxima of the normalised LoG: (centres (n, 2), scales (n,), strengths (n,)).

    A Gaussian blob of std s has its strongest ``-sigma^2 LoG`` response at sigma = s. Blobs
    are sorted strongest first and kept above a noise floor of the response.
    """
    sig = _scales(image.shape)
    img = image.astype(np.float64)
    stack = np.stack([-(s * s) * ndi.gaussian_laplace(img, s, mode="reflect") for s in sig])
    peaks = (stack == ndi.maximum_filter(stack, size=(3, 5, 5), mode="nearest")) & (stack > 0)
    peaks[0] = peaks[-1] = False  # a maximum at the scale range's end is not a measured scale
    k, r, c = np.nonzero(peaks)
    strength = stack[k, r, c]
    # noise floor: the image's own noise (its negative half) through the same filters, 5 sd
    neg = img[img < 0]
    noise = math.sqrt(float(np.mean(neg**2))) if len(neg) > 10 else 0.0
    keep = strength > 5 * noise * _log_noise_gain(sig)[k]
    # scale-space maxima at one place (nested scales) count once: the strongest
    order = np.argsort(-strength[keep])
    cen = np.stack([r[keep], c[keep]], 1)[order].astype(float)
    sc, st = sig[k[keep]][order], strength[keep][order]
    taken: list[int] = []
    for i in range(len(cen)):
        if all(np.hypot(*(cen[i] - cen[j])) > max(sc[i], sc[j]) for j in taken):
            taken.append(i)
    idx = np.array(taken, int)
    return cen[idx], sc[idx], st[idx]


def _cell_size(image: np.ndarray) -> tuple[float | None, int, np.ndarray, np.ndarray]:
    """(gSig in px, number of cells, centres, strengths) from the activity image's blobs."""
    cen, sc, st = find_blobs(image)
    if len(cen) == 0:
        return None, 0, cen, st
    # cells: blobs at least a twentieth as strong as the typical strong one (the rest is texture)
    top = st[: max(3, min(30, len(st) // 3))]
    typical = float(np.median(top))
    strong = st >= 0.05 * typical
    # the size from the clearly strong ones only (weak blobs are often pieces of cells)
    ranked = sc[st >= 0.2 * typical][:50]
    return float(np.median(ranked)), int(strong.sum()), cen[strong], st[strong]


def _union(a: np.ndarray, b: np.ndarray, gsig: float) -> np.ndarray:
    """Centres of ``a`` plus those of ``b`` farther than ``gsig`` from every one of ``a``.

    The activity image shows the cells that fired, the mean image the ones bright at rest: each
    misses cells the other has (a dim cell beside a bright one is no blob of its own), so the
    cells are those seen in either, once. Taking the larger of the two counts dropped the rest.
    """
    if not len(a) or not len(b):
        return a if len(a) else b
    d = np.hypot(*(b[:, None, :] - a[None, :, :]).transpose(2, 0, 1))
    return np.vstack([a, b[d.min(1) > gsig]])


def _decay(Y: np.ndarray, centres: np.ndarray, gsig: float) -> tuple[float | None, float | None]:
    """Decay time constant in frames: exponential fits to the falls after the cells' transients;
    and, where no fall can be fitted, the least constant the transients allow (None: nothing
    measurable).

    Each fall is followed from a transient's peak until the next rise, over 90% to 20% of the
    peak above the trace's resting level; a fall riding on an earlier one still decays with the
    same constant, so bursts do not bias it (the autocovariance is biased by them). Traces are
    the cell's disk minus its surrounding annulus (neuropil); the median over the clearest falls.
    A fall counts only once it drops below 40 % of its peak (about one decay seen), and not
    while the annulus brightens: a slow indicator in a short movie gave falls 4x too fast from
    a misplaced resting level or a neighbour rising in the annulus.

    The least constant: a transient that stays above 40 % of its peak for ``h`` frames (to the
    end of the sample, or until it falls) has not decayed by ``h / ln 2.5`` frames unless the cell
    fired again. Cells do fire again, so the bound is the median over the cells of their longest
    hold: on short simulated movies where no fall could be fitted it gave 0.2-0.9 of the true
    constant (the second-longest hold, up to 2.9x).
    """
    T = len(Y)
    if T < 20 or not len(centres):
        return None, None
    yy, xx = np.mgrid[: Y.shape[1], : Y.shape[2]]
    taus: list[float] = []
    snrs: list[float] = []
    holds: list[int] = []
    for r, c in centres[:30]:
        d2 = (yy - r) ** 2 + (xx - c) ** 2
        ring = (d2 >= (2 * gsig) ** 2) & (d2 <= (3.5 * gsig) ** 2)
        tr = Y[:, d2 <= max(1.0, gsig) ** 2].mean(1).astype(np.float64)
        around = Y[:, ring].mean(1).astype(np.float64) if ring.any() else np.zeros(T)
        rest = _above_rest(tr - around)
        if rest is None:
            continue
        for tau, snr, (a, b, amp) in zip(*_falls(*rest), strict=True):
            # a neighbour brightening inside the annulus makes the difference fall by itself
            if np.ptp(ndi.gaussian_filter1d(around, 1.0)[a:b]) < 0.25 * amp:
                taus.append(tau)
                snrs.append(snr)
        holds.append(_longest_hold(*rest))
    least = None
    held = [h for h in holds if h > 0]
    if len(held) >= 3 and np.median(held) >= MIN_HOLD_FRAMES:
        least = float(np.median(held)) / math.log(1 / FALL_FRACTION)
    if len(taus) < 3:
        return None, least
    order = np.argsort(snrs)[::-1]
    best = np.asarray(taus)[order[: max(3, len(order) // 2)]]
    return float(np.median(best)), least


#: a fall is measured once it drops below this share of its peak (about one decay seen)
FALL_FRACTION = 0.4
#: a hold shorter than this (frames) says nothing about a decay: frame noise gives as much
MIN_HOLD_FRAMES = 4
#: clear transients only: peak above this many noise SDs of the frame-to-frame difference
_PEAK_SNR = 8


def _above_rest(tr: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(the trace's smoothed height above its resting level, the frame noise SD), or None for a
    flat trace. The resting level is the low tail of the smoothed trace lifted by its noise."""
    y = ndi.gaussian_filter1d(tr, 1.0)
    diff = np.diff(tr)
    sn = 1.4826 * float(np.median(np.abs(diff - np.median(diff)))) / math.sqrt(2)
    if sn <= 0:
        return None
    return y - (np.percentile(y, 5) + 1.645 * 0.53 * sn), sn


def _peaks(y: np.ndarray, sn: float) -> np.ndarray:
    return np.nonzero((y[1:-1] >= y[:-2]) & (y[1:-1] > y[2:]) & (y[1:-1] > _PEAK_SNR * sn))[0] + 1


def _longest_hold(y: np.ndarray, sn: float) -> int:
    """Frames after its clearest transients that the trace stays above ``FALL_FRACTION`` of the
    peak: the longest such run over the trace's peaks (0 without a clear peak)."""
    best = 0
    for t0 in _peaks(y, sn):
        below = np.nonzero(y[t0 + 1:] < FALL_FRACTION * y[t0])[0]
        best = max(best, int(below[0]) if len(below) else len(y) - t0 - 1)
    return best


def _falls(y: np.ndarray, sn: float) -> tuple[list[float], list[float], list[tuple[int, int, float]]]:
    """(decay constants in frames, peak SNRs, (start, stop, amplitude)) of one trace's clear falls
    (``y``, ``sn``: :func:`_above_rest`)."""
    T = len(y)
    taus, snrs, spans = [], [], []
    for t0 in _peaks(y, sn):
        amp = y[t0]
        low, t = amp, t0 + 1
        while t < T and y[t] < low + 2 * sn:  # until the next rise
            low = min(low, y[t])
            t += 1
        v = y[t0:t]
        bad = np.nonzero((v <= 0.2 * amp) | (v > amp))[0]
        n = int(bad[0]) if len(bad) else len(v)
        if n >= 4 and v[n - 1] < FALL_FRACTION * amp:
            slope = np.polyfit(np.arange(n), np.log(v[:n]), 1)[0]
            if slope < 0:
                taus.append(float(-1.0 / slope))
                snrs.append(float(amp / sn))
                spans.append((int(t0), int(t0 + n), float(amp)))
    return taus, snrs, spans


def _looks_one_photon(Y: np.ndarray) -> bool:
    """One-photon movies: most of the fluctuation is a spatially smooth, shared background."""
    X = Y - Y.mean(0, keepdims=True)
    total = float((X * X).mean())
    if total <= 0:
        return False
    hp = 0.0
    for x in X:
        d = x - cv2.GaussianBlur(x, (0, 0), 8.0, borderType=cv2.BORDER_REFLECT)
        hp += float((d * d).mean())
    return 1.0 - hp / len(X) / total > 0.8


def _measure(arr: Any, one_photon: bool | None, max_frames: int) -> MovieStats:
    T, d1, d2 = (int(s) for s in arr.shape)
    dims = (d1, d2)
    n = int(min(T, max_frames, max(60, _ELEMENT_BUDGET // (d1 * d2))))
    start = (T - n) // 2
    Y = _read(arr, start, start + n)
    rise, (r0, r1) = _field_rise(Y)
    fr, fr_source = frame_rate(arr)
    motion = _motion(arr, T, dims, Y if n >= T else None)
    motion = np.abs(motion - np.median(motion, axis=0)).max(0)
    Y = _register_block(Y, dims)
    if one_photon is None:
        one_photon = _looks_one_photon(Y)
    bg = max(8.0, min(dims) / 8)
    act = _activity_image(Y, bg)
    gsig, ncells, cen, _ = _cell_size(act)
    if gsig is not None:
        # second pass with a background scale well above the cell size, so cells are untouched
        act = _activity_image(Y, max(bg, 8 * gsig))
        gsig, ncells, cen, _ = _cell_size(act)
    size_from = "activity image"
    if not one_photon:
        # two-photon somata show in the mean image too, silent ones included: a steadier size
        mean = Y.mean(0)
        g_mean, n_mean, cen_mean, _ = _cell_size(mean - np.median(mean))
        if g_mean is not None and n_mean >= 5:
            gsig, size_from = g_mean, "mean image"
            ncells = len(_union(cen, cen_mean, gsig))
    decay, decay_least = _decay(Y, cen, gsig) if gsig else (None, None)
    if one_photon:  # its background outlasts the annulus: holds of 30 frames beside 2-frame falls
        decay_least = None
    extra: dict[str, np.ndarray] = {}
    if one_photon and gsig:
        extra = _corr_pnr_stats(Y, cen, gsig)
    return MovieStats(shape=(T, d1, d2), frames_read=n, fr=fr, fr_source=fr_source,
                      one_photon=bool(one_photon), gsig=gsig, size_from=size_from, n_cells=ncells,
                      decay_frames=decay, decay_least_frames=decay_least, motion=(float(motion[0]), float(motion[1])),
                      field_rise=rise, field_rise_frames=(start + r0, start + r1), **extra)


def _field_rise(Y: np.ndarray, smooth: int = 5) -> tuple[float, tuple[int, int]]:
    """How far the tissue between the cells (the dimmer half of the mean image) rises over its
    median, smoothed over ``smooth`` frames, and the first and last frame (of ``Y``) where it
    stays above half that. Cells firing together hardly lift it; a change of laser power or
    focus lifts it as much as the cells. Raw values: an offset of the detector only makes the
    rise look smaller."""
    flat = Y.reshape(len(Y), -1)
    mean = flat.mean(0)
    tissue = flat[:, mean <= np.median(mean)].mean(1).astype(np.float64)
    g = ndi.uniform_filter1d(tissue, smooth, mode="nearest")
    med = float(np.median(g))
    if med <= 0:
        return 0.0, (0, 0)
    rel = g / med - 1
    top = float(rel.max())
    if top <= 0:
        return 0.0, (0, 0)
    above = np.flatnonzero(rel > top / 2)
    return top, (int(above[0]), int(above[-1]))


def _corr_pnr_stats(Y: np.ndarray, cen: np.ndarray, gsig: float) -> dict[str, np.ndarray]:
    """CNMF-E's correlation and PNR images at the cells' centres and away from every cell."""
    g = max(1, int(round(gsig)))
    opts = Options.from_main({"gSig": (g, g), "gSiz": None, "center_psf": True, "method_init": "corr_pnr"},
                             cnmfe=True)
    cn, pnr, _, _ = corr_pnr_images(np.ascontiguousarray(np.moveaxis(Y, 0, -1)), opts)
    ci = np.clip(np.round(cen).astype(int), 0, np.array(cn.shape) - 1)
    # a cell's value: the best pixel within 1 px of its blob centre (the seed CNMF-E would take)
    cmax = ndi.maximum_filter(cn, size=3)
    pmax = ndi.maximum_filter(pnr, size=3)
    away = np.ones(cn.shape, bool)
    away[ci[:, 0], ci[:, 1]] = False
    away = ndi.distance_transform_edt(away) > 3 * gsig
    return {"corr_at_cells": cmax[ci[:, 0], ci[:, 1]], "pnr_at_cells": pmax[ci[:, 0], ci[:, 1]],
            "corr_background": cn[away], "pnr_background": pnr[away]}


# -- suggestions -----------------------------------------------------------------------------
@dataclass
class Suggestion:
    """Suggested params (``{"main": {...}}``, ready for ``add_item``) with a reason per value."""

    algo: str
    params: dict[str, Any]
    reasons: dict[str, str]
    stats: MovieStats | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def main(self) -> dict[str, Any]:
        return self.params["main"]

    def __repr__(self) -> str:
        width = max((len(k) for k in self.reasons), default=0)
        lines = [f"Suggestion for {self.algo!r}:"]
        lines += [f"  {k:<{width}} = {self.main.get(k)!r:<12}  # {why}" for k, why in self.reasons.items()]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(k)}</code></td><td><code>{html.escape(repr(self.main.get(k)))}</code>"
            f"</td><td style='text-align:left'>{html.escape(why)}</td></tr>"
            for k, why in self.reasons.items()
        )
        warn = "".join(f"<div style='color:#b00020'>{html.escape(w)}</div>" for w in self.warnings)
        return (f"<div><b>suggested params for {html.escape(self.algo)}</b><table>"
                f"<tr><th>param</th><th>value</th><th style='text-align:left'>why</th></tr>{rows}</table>"
                f"{warn}</div>")


def _given_or_default(names: set[str], main: Mapping[str, Any], schema_defaults: Mapping[str, Any],
                      key: str) -> Any:
    return main[key] if key in main else schema_defaults.get(key) if key in names else None


def _quantile(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q)) if len(x) else float("nan")


def suggest_params(movie: Any, algo: str, params: Mapping[str, Any] | None = None, *,
                   var_name_hdf5: str | None = None, one_photon: bool | None = None) -> Suggestion:
    """Params for ``algo`` estimated from ``movie`` (a path or a (t, y, x) array).

    ``params`` (``{"main": {...}}``) are kept where nothing is estimated; estimated values
    replace them. ``one_photon`` forces the 1p/2p choice (default: cnmfe means 1p, otherwise
    detected from the background's spatial correlation).
    """
    schema = get_algorithm(algo).schema
    given = schema.validate(dict(params or {"main": {}}))
    main = dict(given["main"])
    names = set(schema.names)
    defaults = schema.defaults()["main"]
    if one_photon is None and algo == "cnmfe":
        one_photon = True
    var = var_name_hdf5 or main.get("var_name_hdf5")
    stats = measure_movie(movie, var if var != "mov" or _is_hdf5(movie) else None, one_photon=one_photon)
    reasons: dict[str, str] = {}
    new: dict[str, Any] = {}

    def put(name: str, value: Any, why: str) -> None:
        if name in names:
            new[name] = value
            reasons[name] = why

    fr = _suggest_frame_rate(stats, main, names, defaults, put)
    # indicator decay
    if stats.decay_frames:
        put("decay_time", round(stats.decay_frames / fr, 3),
            f"exponential fits to the falls after transients of the brightest cells: "
            f"{stats.decay_frames:.1f} frames / {fr:g} Hz")
    elif "decay_time" in names:
        _suggest_least_decay(stats, fr, main, names, defaults, put)
    _suggest_ar_order(fr, main, names, defaults, put)
    g = _suggest_cell_size(stats, algo, put)
    if g is None and "gSig" in names:
        kept = "your value" if "gSig" in main else "the default"
        put("gSig", _given_or_default(names, main, defaults, "gSig"),
            f"no cells found: neither the activity image nor the mean image shows cell-sized "
            f"structure above its noise (kept {kept}; expect few or no components)")
    # patches and components per patch
    if g is not None and ("rf" in names or "K" in names):
        _patches(stats, g, algo, main, names, put)
    # CNMF-E seeds
    if algo == "cnmfe" and len(stats.corr_at_cells):
        _cnmfe_thresholds(stats, put)
    _suggest_motion(stats, g, names, put)
    out = schema.validate({**given, "main": {**main, **new}})
    sug = Suggestion(algo=algo, params=out, reasons=reasons, stats=stats)
    sug.warnings = check_params(movie, algo, given, var_name_hdf5=var, _stats=stats)
    if algo in ("cnmf", "cnmfe", "onacid") and stats.field_rise > FIELD_RISE_WARN:
        a, b = stats.field_rise_frames
        sug.warnings.append(
            f"the whole field brightens by {stats.field_rise:.0%} over frames {a}-{b} (laser power, focus "
            "or a field-wide event): every cell bright at rest rises with it, so a cell that fires only "
            "then cannot be told from it; expect fewer cells from these frames")
    return sug


#: a brightening of the tissue above this share of its median is worth a warning: the
#: Neurofinder 01.01 crop's (+78 %, frames 86-100) is what lifts nearly all its manual ROIs
FIELD_RISE_WARN = 0.3


def _suggest_frame_rate(stats: MovieStats, main: Mapping[str, Any], names: set[str],
                        defaults: Mapping[str, Any], put: Callable[[str, Any, str], None]) -> float:
    """The file's frame rate, else the given or default one (said so: decay_time depends on it)."""
    fr_now = _given_or_default(names, main, defaults, "fr")
    if stats.fr:
        put("fr", round(stats.fr, 4), f"from the file ({stats.fr_source})")
        return stats.fr
    fr = float(fr_now) if fr_now else 30.0
    kept = "your value" if "fr" in main else "the default"
    put("fr", fr, f"{stats.fr_source}; kept {kept} {fr:g} Hz (set it: decay_time depends on it)")
    return fr


#: below this frame rate a frame lasts 67 ms or more, as long as a GCaMP transient's rise
#: (GCaMP6f about 50 ms to half its peak, GCaMP6s about 180 ms): the rise falls within a frame
#: or two, and the trace is a jump and a decay, AR(1)
AR1_BELOW_HZ = 15.0


#: slower than any common calcium indicator's decay (GCaMP6s: about 1.5 s): a bound above it is
#: a cell that kept firing, not its indicator
SLOWEST_DECAY_S = 2.0


def _suggest_least_decay(stats: MovieStats, fr: float, main: Mapping[str, Any], names: set[str],
                         defaults: Mapping[str, Any], put: Callable[[str, Any, str], None]) -> None:
    """No fall could be fitted: the given or default ``decay_time``, or the least decay the
    transients allow where that is slower (up to ``SLOWEST_DECAY_S``). A decay set too fast
    makes CNMF judge a slow indicator's cells by too short a window: their transients look like
    slow background and are rejected."""
    given = float(_given_or_default(names, main, defaults, "decay_time"))
    kept = "your value" if "decay_time" in main else "the default"
    least = stats.decay_least_frames
    if least and least / fr > given:
        held = (f"no transient fell below {FALL_FRACTION:.0%} of its peak in the "
                f"{stats.frames_read} frames read, so the indicator decays over at least "
                f"{least:.1f} frames / {fr:g} Hz")
        if "decay_time" in main:  # a bound, not a measurement: the user may know the indicator
            put("decay_time", given, f"kept your value, though {held}")
            return
        value = round(min(least / fr, SLOWEST_DECAY_S), 3)
        put("decay_time", value, f"{held} (a slow indicator, e.g. GCaMP6s; the default is {given:g} s)"
            + (f", capped at {SLOWEST_DECAY_S:g} s" if least / fr > SLOWEST_DECAY_S else ""))
        return
    put("decay_time", given,
        f"not measured: no transient fell clearly in the {stats.frames_read} frames read "
        f"(kept {kept}; set your indicator's: about 0.4 s for GCaMP6f, 1 s or more for GCaMP6s)")


def _suggest_ar_order(fr: float, main: Mapping[str, Any], names: set[str], defaults: Mapping[str, Any],
                      put: Callable[[str, Any, str], None]) -> None:
    """p: 1 when frames are too slow to resolve the indicator's rise, else the given or default
    order."""
    if "p" not in names:
        return
    if fr < AR1_BELOW_HZ:
        put("p", 1, f"at {fr:g} Hz a frame lasts {1000 / fr:.0f} ms, as long as a GCaMP transient's rise: "
            "a jump then a decay, AR(1)")
        return
    kept = "your value" if "p" in main else "the default"
    p = _given_or_default(names, main, defaults, "p")
    put("p", p, f"kept {kept}; at {fr:g} Hz a transient's rise spans frames (AR(2) models it, AR(1) "
        "is faster and often enough)")


def _suggest_cell_size(stats: MovieStats, algo: str, put: Callable[[str, Any, str], None]) -> int | None:
    """gSig (and gSiz from it) from the measured cell size; the integer gSig, None if unmeasured."""
    if not stats.gsig:
        return None
    g = max(1, int(round(stats.gsig)))
    put("gSig", (g, g), f"median Gaussian std of the strongest cells in the {stats.size_from} "
        f"(LoG scale search): {stats.gsig:.1f} px")
    wide = 4 if algo == "cnmfe" else 2
    put("gSiz", (wide * g + 1, wide * g + 1), f"{wide}*gSig+1: the neuron's bounding box")
    return g


def _suggest_motion(stats: MovieStats, g: int | None, names: set[str],
                    put: Callable[[str, Any, str], None]) -> None:
    """max_shifts (offline and online) from the largest rigid motion; gSig_filt for 1p movies."""
    if "max_shifts" in names:
        ms = tuple(int(math.ceil(m)) + max(2, int(math.ceil(0.5 * m))) for m in stats.motion)
        put("max_shifts", ms, f"largest rigid motion in {_MOTION_BINS} frame bins across the movie "
            f"({stats.motion[0]:.0f}, {stats.motion[1]:.0f}) px, plus a margin")
        if stats.one_photon and g is not None:
            put("gSig_filt", (g, g), "one-photon movie (strong shared background): high-pass at the "
                "cell size before registering")
        elif stats.one_photon:
            put("gSig_filt", (3, 3), "one-photon movie (strong shared background): high-pass filter "
                "before registering; cell size not measured, CaImAn's usual 3 px")
    if "max_shifts_online" in names:
        m = int(math.ceil(max(stats.motion)))
        put("max_shifts_online", m + max(2, int(math.ceil(0.5 * m))),
            f"largest rigid motion across the movie {max(stats.motion):.0f} px, plus a margin")


def _is_hdf5(movie: Any) -> bool:
    return isinstance(movie, (str, os.PathLike)) and Path(movie).suffix.lower() in (".h5", ".hdf5", ".hdf")


def _patches(stats: MovieStats, g: int, algo: str, main: Mapping[str, Any], names: set[str], put) -> None:
    _, d1, d2 = stats.shape
    rf = 4 * g if algo != "cnmfe" else 6 * g
    if min(d1, d2) < 3 * (2 * rf + 1) // 2:
        area = d1 * d2
        put("rf", None, f"the field ({d1}x{d2}) is under ~1.5 patches of {2 * rf + 1} px: fit it whole")
        put("stride", None, "no patches")
        where = "the field"
    else:
        area = (2 * rf + 1) ** 2
        put("rf", rf, f"{4 if algo != 'cnmfe' else 6}*gSig: patches of {2 * rf + 1} px hold a few cells each")
        put("stride", 2 * g, "2*gSig of overlap: a cell on a patch border is whole in one patch")
        where = f"a {2 * rf + 1}x{2 * rf + 1} patch"
    if algo == "cnmfe":
        return  # CNMF-E: K=None (seeds limited by min_corr/min_pnr)
    k = max(1, int(math.ceil(stats.density * area * _K_MARGIN)))
    put("K", k, f"{stats.n_cells} cells in {d1}x{d2} px -> {stats.density * area:.1f} per "
        f"{where}, +{int(round((_K_MARGIN - 1) * 100))}% for cells silent in the sample")


def _cnmfe_thresholds(stats: MovieStats, put) -> None:
    """Thresholds between the background's upper tail and the weaker cells' values."""
    for name, cells, back, lo, hi, nd in (
        ("min_corr", stats.corr_at_cells, stats.corr_background, 0.5, 0.95, 2),
        ("min_pnr", stats.pnr_at_cells, stats.pnr_background, 3.0, 60.0, 1),
    ):
        weak = _quantile(cells, 0.2)
        tail = _quantile(back, 0.99) if len(back) else weak * 0.8
        value = min(max(0.5 * (weak + tail) if tail < weak else weak, lo), hi)
        how = "between" if tail < weak else "overlap! at the cells' level, check it: of"
        put(name, round(value, nd), f"{how} the background's 99th percentile ({tail:.2f}) and the "
            f"weakest fifth of {len(cells)} cells ({weak:.2f})")


# -- checks ----------------------------------------------------------------------------------
_CHECKED = ("gSig", "max_shifts", "max_shifts_online", "fr")


def check_params(movie: Any, algo: str, params: Mapping[str, Any] | None, *,
                 var_name_hdf5: str | None = None, _stats: MovieStats | None = None) -> list[str]:
    """Messages for the params the user set that look wrong for this movie (empty: none).

    Only ``gSig``, ``max_shifts``/``max_shifts_online`` and ``fr`` given explicitly are checked;
    the movie is measured only then (once per file, cached).
    """
    main = dict((params or {}).get("main") or {})
    if not any(k in main for k in _CHECKED) or algo not in ("cnmf", "cnmfe", "onacid", "mcorr"):
        return []
    stats = _stats or measure_movie(movie, var_name_hdf5 if _is_hdf5(movie) else None,
                                    one_photon=True if algo == "cnmfe" else None)
    out = []
    if "gSig" in main and stats.gsig and main["gSig"] is not None:
        gs = np.atleast_1d(np.asarray(main["gSig"], float))
        ratio = float(np.mean(gs)) / stats.gsig
        if ratio > 2 or ratio < 0.5:
            g = max(1, int(round(stats.gsig)))
            out.append(f"gSig={tuple(main['gSig'])!r} is {ratio:.1f}x the cell size measured in the "
                       f"movie (about {stats.gsig:.1f} px): try gSig=({g}, {g})")
    for key in ("max_shifts", "max_shifts_online"):
        if key in main and main[key] is not None:
            ms = np.broadcast_to(np.asarray(main[key], float), (2,))
            seen = np.asarray(stats.motion)
            if np.any(seen > ms + 0.5):
                out.append(f"{key}={main[key]!r} is smaller than the rigid motion seen in the movie "
                           f"({seen[0]:.0f}, {seen[1]:.0f}) px: frames moving further are not corrected")
    if "fr" in main and stats.fr and abs(float(main["fr"]) - stats.fr) > 0.05 * stats.fr:
        out.append(f"fr={main['fr']!r} but the file says {stats.fr:g} Hz ({stats.fr_source})")
    return out
