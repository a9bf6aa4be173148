"""``row.cnmf``: mesmerize-core's CNMF accessor names and return shapes, over our own files.

Reads the item's CNMF HDF5 (``formats.cnmf_hdf5``), so everything works without CaImAn;
``get_output()`` returns CaImAn's ``CNMF`` object when CaImAn is importable. Results are cached
per file version (path, mtime, size, inode): ``run_eval`` and ``run_detrend_dfof`` replace the
file atomically, which changes the key, so stale results are never served.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import scipy.fft
import scipy.ndimage
import scipy.optimize
import scipy.sparse

from ..algorithms.caiman_env import caiman_installed
from ..arrays import LazyArray, LazyMemmap
from ..arrays.reconstruction import LazyArrayRCB, LazyArrayRCM, LazyArrayResiduals
from ..formats.cnmf_hdf5 import CNMFResult, load_cnmf, save_cnmf
from ..store import BatchStore
from .frame import store_of

__all__ = ["CNMFSeriesAccessor", "QUALITY_KEYS", "detrend_df_f", "select_components"]

CNMF_ALGOS = ("cnmf", "cnmfe")
#: the keys of CaImAn's ``quality`` params group: the only ones run_eval accepts
QUALITY_KEYS = (
    "min_SNR", "rval_thr", "SNR_lowest", "rval_lowest", "use_cnn", "min_cnn_thr",
    "cnn_lowest", "gSig_range", "use_ecc", "max_ecc",
)  # fmt: skip
ComponentSpec = None | str | Sequence[int] | np.ndarray


# --------------------------------------------------------------------------------------------
# caching
# --------------------------------------------------------------------------------------------
class _BoundedCache:
    """A small thread-safe LRU keyed on (file version, what, args)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = compute()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value

    def drop_path(self, path: str) -> None:
        """Forget every entry of one file (all its versions)."""
        with self._lock:
            for k in [k for k in self._data if k[0][0] == path]:
                del self._data[k]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_outputs = _BoundedCache(maxsize=8)  # loaded files (CNMFResult or CaImAn CNMF)
_derived = _BoundedCache(maxsize=64)  # masks, contours, traces, lazy arrays


def clear_cache() -> None:
    """Drop every cached CNMF result (e.g. to free memory)."""
    _outputs.clear()
    _derived.clear()


def _file_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino)


def _copy(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (tuple, list)):
        return type(value)(_copy(v) for v in value)
    return value


# --------------------------------------------------------------------------------------------
# algorithms on stored results (CaImAn's definitions, our code)
# --------------------------------------------------------------------------------------------
def select_components(
    SNR_comp: np.ndarray,
    r_values: np.ndarray,
    quality: dict[str, Any],
    cnn_preds: np.ndarray | None = None,
    ecc: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """CaImAn's accept rule: above *one* upper threshold and above *every* lower one.

    Upper: r >= rval_thr, SNR > min_SNR, (CNN >= min_cnn_thr). Lower (reject if any):
    r <= rval_lowest, SNR <= SNR_lowest, (CNN <= cnn_lowest). With use_ecc, components with
    eccentricity >= max_ecc move to the rejected set.
    """
    snr = np.asarray(SNR_comp, dtype=float).ravel()
    r = np.asarray(r_values, dtype=float).ravel()
    accept = (r >= quality["rval_thr"]) | (snr > quality["min_SNR"])
    reject = (r <= quality["rval_lowest"]) | (snr <= quality["SNR_lowest"])
    if quality.get("use_cnn"):
        if quality.get("gSig_range") is not None:
            raise ValueError(
                "gSig_range re-runs CaImAn's CNN classifier, which is CaImAn-only: "
                "set gSig_range=None (or run the item with the caiman backend)"
            )
        preds = None if cnn_preds is None else np.asarray(cnn_preds, dtype=float).ravel()
        if preds is None or preds.size != snr.size:
            raise ValueError(
                "use_cnn=True needs the CNN classifier's predictions, which this result does not "
                "have: the CNN classifier is CaImAn-only. Pass use_cnn=False."
            )
        accept |= preds >= quality["min_cnn_thr"]
        reject |= preds <= quality["cnn_lowest"]
    good = np.flatnonzero(accept & ~reject)
    if quality.get("use_ecc"):
        if ecc is None:
            raise ValueError("use_ecc=True needs the components' eccentricities (estimates.ecc), absent here")
        good = np.intersect1d(good, np.flatnonzero(np.asarray(ecc).ravel() < quality["max_ecc"]))
    bad = np.setdiff1d(np.arange(snr.size), good)
    return good.astype(np.int64), bad.astype(np.int64)


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
    density = density / np.trapezoid(density, mesh)
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


# --------------------------------------------------------------------------------------------
# the accessor
# --------------------------------------------------------------------------------------------
@pd.api.extensions.register_series_accessor("cnmf")
class CNMFSeriesAccessor:
    """CNMF/CNMF-E results of one row: footprints, traces, reconstructions, evaluation."""

    def __init__(self, row: pd.Series):
        self._row = row

    # -- item and files ------------------------------------------------------------------------
    @property
    def store(self) -> BatchStore:
        return store_of(self._row)

    @property
    def uuid(self) -> str:
        return str(self._row["uuid"])

    def _record(self) -> dict[str, Any]:
        rec = self.store.get(self.uuid)
        name = rec.get("item_name")
        if rec["algo"] not in CNMF_ALGOS:
            raise ValueError(
                f"item {name!r} ({self.uuid}) is a {rec['algo']!r} item, not cnmf/cnmfe: "
                "use the accessor of its algorithm"
            )
        if rec["status"] != "done":
            raise ValueError(
                f"item {name!r} ({self.uuid}) has no CNMF output: its status is {rec['status']!r}"
            )
        return rec

    def _output_file(self, key: str, what: str) -> Path:
        rec = self._record()
        rel = (rec.get("outputs") or {}).get(key)
        if not rel:
            raise KeyError(f"item {rec['item_name']!r} ({rec['algo']}) has no {what} ({key!r}) in its outputs")
        path = self.store.path / rel
        if not path.exists():
            raise FileNotFoundError(f"the {what} of item {rec['item_name']!r} is missing: {path}")
        return path

    def get_output_path(self) -> Path:
        """Absolute path of the item's CNMF HDF5 file."""
        return self._output_file("cnmf-hdf5-path", "CNMF HDF5 file")

    def _key(self) -> tuple[str, int, int, int]:
        return _file_key(self.get_output_path())

    def _result(self) -> CNMFResult:
        key = self._key()
        return _outputs.get((key, "result"), lambda: load_cnmf(key[0]))

    def _cached(self, what: str, args: tuple, compute: Callable[[CNMFResult], Any]) -> Any:
        key = self._key()
        res = _outputs.get((key, "result"), lambda: load_cnmf(key[0]))
        return _derived.get((key, what, args), lambda: compute(res))

    def get_output(self, return_copy: bool = True) -> Any:
        """CaImAn's ``CNMF`` (via load_CNMF) when CaImAn is importable, else our CNMFResult."""
        key = self._key()
        if caiman_installed():
            def load() -> Any:
                from caiman.source_extraction.cnmf.cnmf import load_CNMF

                return load_CNMF(key[0])

            obj = _outputs.get((key, "caiman"), load)
        else:
            obj = self._result()
        return copy.deepcopy(obj) if return_copy else obj

    def get_cnmf_memmap(self, mode: str = "r") -> LazyArray:
        """The C-order memmap CNMF ran on, as a lazy [t, y, x] array."""
        if mode != "r":
            raise ValueError("the CNMF memmap is opened read-only here (mode='r')")
        return LazyMemmap(self._output_file("cnmf-memmap-path", "CNMF memmap"))

    # -- components ------------------------------------------------------------------------------
    def _indices(self, res: CNMFResult, component_indices: ComponentSpec) -> np.ndarray:
        K = res.estimates.n_components
        if component_indices is None or (isinstance(component_indices, str) and component_indices == "all"):
            return np.arange(K)
        if isinstance(component_indices, str):
            if component_indices == "good":
                idx = res.estimates.idx_components
                return np.arange(K) if idx is None else np.asarray(idx, dtype=np.int64)
            if component_indices == "bad":
                idx = res.estimates.idx_components_bad
                return np.array([], dtype=np.int64) if idx is None else np.asarray(idx, dtype=np.int64)
            raise ValueError(f"component_indices must be None, 'all', 'good', 'bad' or int indices, got {component_indices!r}")
        idx = np.asarray(component_indices)
        if idx.dtype == bool or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"component_indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64).ravel()
        if idx.size and (idx.min() < -K or idx.max() >= K):
            raise IndexError(f"component index out of range for {K} components")
        return np.where(idx < 0, idx + K, idx)

    def _spec_key(self, component_indices: ComponentSpec) -> Hashable:
        if component_indices is None or isinstance(component_indices, str):
            return component_indices or "all"
        return tuple(int(i) for i in np.asarray(component_indices).ravel())

    def get_n_components(self) -> int:
        return self._result().estimates.n_components

    def get_good_components(self) -> np.ndarray:
        """``idx_components`` (all components when the result was never evaluated)."""
        return self._indices(self._result(), "good").copy()

    def get_bad_components(self) -> np.ndarray:
        """``idx_components_bad`` (none when the result was never evaluated)."""
        return self._indices(self._result(), "bad").copy()

    @staticmethod
    def _dims(res: CNMFResult) -> tuple[int, int]:
        dims = res.estimates.dims or res.dims
        return int(dims[0]), int(dims[1])

    def get_masks(self, component_indices: ComponentSpec = "all", threshold: float = 0.01) -> np.ndarray:
        """Boolean masks [y, x, K]: footprint values >= ``threshold``."""

        def compute(res: CNMFResult) -> np.ndarray:
            d1, d2 = self._dims(res)
            idx = self._indices(res, component_indices)
            A = res.estimates.A[:, idx].tocsc()
            masks = np.full((d1, d2, len(idx)), 0 >= threshold, dtype=bool)
            cols = np.repeat(np.arange(len(idx)), np.diff(A.indptr))
            rows = A.indices
            masks[rows % d1, rows // d1, cols] = A.data >= threshold
            return masks

        return _copy(self._cached("masks", (self._spec_key(component_indices), float(threshold)), compute))

    def get_contours(
        self, component_indices: ComponentSpec = "all", swap_dim: bool = True, thr: float = 0.9
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per component, the outline of the pixels holding ``thr`` of its energy, and its centre.

        Like mesmerize-core (which calls CaImAn's get_contours with nrg thresholding): each
        outline is an (n, 2) array of closed pieces separated by NaN rows, the centre is the
        NaN-mean of the outline. Column order as in mesmerize-core: ``swap_dim=True`` (its
        default) gives (row, col) points, ``swap_dim=False`` gives (col, row), i.e. (x, y) of
        the image as numpy indexes it. Pixel-centre outlines (OpenCV), not marching squares.
        """

        def compute(res: CNMFResult) -> tuple[list[np.ndarray], list[np.ndarray]]:
            d1, d2 = self._dims(res)
            idx = self._indices(res, component_indices)
            A = res.estimates.A[:, idx].tocsc()
            coords, coms = [], []
            for k in range(A.shape[1]):
                data = A.data[A.indptr[k] : A.indptr[k + 1]]
                pix = A.indices[A.indptr[k] : A.indptr[k + 1]]
                if data.size == 0:
                    coords.append(np.empty((0, 2)))
                    coms.append(np.array([np.nan, np.nan]))
                    continue
                order = np.argsort(data)[::-1]
                energy = np.cumsum(data[order] ** 2)
                energy /= energy[-1]
                # CaImAn's level set: the brightest pixels whose cumulative energy is below thr
                n_keep = max(1, int(np.searchsorted(energy, thr, side="left")))
                keep = pix[order[:n_keep]]
                mask = np.zeros((d1, d2), dtype=np.uint8)
                mask[keep % d1, keep // d1] = 1
                found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                pieces = [np.array([[np.nan, np.nan]])]
                for c in found:
                    xy = c.reshape(-1, 2).astype(np.float64)  # (col, row)
                    xy = np.vstack([xy, xy[:1]])  # closed
                    pieces += [xy[:, ::-1] if swap_dim else xy, np.array([[np.nan, np.nan]])]
                pts = np.vstack(pieces)
                coords.append(pts)
                coms.append(np.nanmean(pts, axis=0))
            return coords, coms

        args = (self._spec_key(component_indices), bool(swap_dim), float(thr))
        return _copy(self._cached("contours", args, compute))

    def get_temporal(
        self, component_indices: ComponentSpec = "all", add_background: bool = False, add_residuals: bool = False
    ) -> np.ndarray:
        """Traces [K, T]: C, plus Aᵀ b f (background under each footprint), plus YrA."""

        def compute(res: CNMFResult) -> np.ndarray:
            e = res.estimates
            idx = self._indices(res, component_indices)
            out = np.array(np.asarray(e.C)[idx], dtype=np.float64 if np.asarray(e.C).dtype == np.float64 else None)
            if add_background:
                if e.b is None or e.f is None:
                    raise ValueError("this CNMF result has no background (b, f) to add")
                out = out + np.asarray(e.A[:, idx].T @ np.asarray(e.b)) @ np.asarray(e.f)
            if add_residuals:
                if e.YrA is None:
                    raise ValueError("this CNMF result has no residuals (YrA) to add")
                out = out + np.asarray(e.YrA)[idx]
            return out

        args = (self._spec_key(component_indices), bool(add_background), bool(add_residuals))
        return _copy(self._cached("temporal", args, compute))

    # -- reconstructions -------------------------------------------------------------------------
    def get_rcm(
        self, component_indices: ComponentSpec = "all", temporal_components: np.ndarray | None = None
    ) -> LazyArrayRCM:
        """Lazy A ⊗ C [t, y, x]; ``temporal_components`` (K x T, K of all components) replaces C."""

        def compute(res: CNMFResult) -> LazyArrayRCM:
            e = res.estimates
            temporal = e.C if temporal_components is None else np.asarray(temporal_components)
            if temporal.ndim != 2 or temporal.shape[0] != e.A.shape[1]:
                raise ValueError(
                    f"temporal_components has shape {np.shape(temporal)}: it must have one row per "
                    f"spatial component ({e.A.shape[1]})"
                )
            idx = self._indices(res, component_indices)
            sub = None if len(idx) == e.A.shape[1] and np.array_equal(idx, np.arange(len(idx))) else idx
            return LazyArrayRCM(e.A, temporal, self._dims(res), component_indices=sub)

        if temporal_components is not None:
            return compute(self._result())
        return self._cached("rcm", (self._spec_key(component_indices),), compute)

    def get_rcb(self) -> LazyArrayRCB:
        """Lazy b ⊗ f [t, y, x]."""
        return self._cached(
            "rcb", (), lambda res: LazyArrayRCB(res.estimates.b, res.estimates.f, self._dims(res))
        )

    def _residual_movie(self) -> Any:
        try:
            return self._row.caiman.get_input_movie()
        except (FileNotFoundError, ValueError, OSError):
            return self.get_cnmf_memmap()

    def get_residuals(self) -> LazyArrayResiduals:
        """Lazy Y - A ⊗ C - b ⊗ f, with Y the item's input movie (as mesmerize-core)."""
        res = self._result()
        rcb = None if res.estimates.b is None or res.estimates.f is None else self.get_rcb()
        return self._cached(
            "residuals", (), lambda _res: LazyArrayResiduals(self._residual_movie(), self.get_rcm(), rcb)
        )

    # -- dF/F ---------------------------------------------------------------------------------------
    def _rewrite(self, res: CNMFResult, estimates: Any, params: dict[str, dict[str, Any]]) -> Path:
        path = self.get_output_path()
        old = str(path.resolve())
        save_cnmf(
            path, estimates, params, dims=res.dims, mmap_file=res.mmap_file or "",
            remove_very_bad_comps=res.remove_very_bad_comps, skip_refinement=res.skip_refinement,
        )
        _outputs.drop_path(old)
        _derived.drop_path(old)
        return path

    def run_detrend_dfof(
        self,
        quantileMin: float = 8,
        frames_window: int = 500,
        flag_auto: bool = True,
        use_fast: bool = False,
        use_residuals: bool = True,
        detrend_only: bool = False,
    ) -> None:
        """Compute detrended dF/F (``estimates.F_dff``) and store it in a new HDF5 version."""
        res = self._result()
        e = res.estimates
        if e.C is None or np.shape(e.C)[0] == 0:
            raise ValueError("this CNMF result has no components to compute dF/F for")
        R = (e.R if e.R is not None else e.YrA) if use_residuals else None
        F_dff = detrend_df_f(
            e.A, e.b, e.C, e.f, R, quantileMin=quantileMin, frames_window=frames_window,
            flag_auto=flag_auto, use_fast=use_fast, detrend_only=detrend_only,
        )
        new = copy.copy(e)
        new.F_dff = F_dff
        self._rewrite(res, new, res.params.to_dict())

    def get_detrend_dfof(self, component_indices: ComponentSpec = "all") -> np.ndarray:
        """``F_dff`` [K, T]; AttributeError before ``run_detrend_dfof()``."""

        def compute(res: CNMFResult) -> np.ndarray:
            if res.estimates.F_dff is None:
                raise AttributeError(
                    f"item {self._row.get('item_name')!r} has no dF/F yet: call row.cnmf.run_detrend_dfof() first"
                )
            return np.asarray(res.estimates.F_dff)[self._indices(res, component_indices)]

        return _copy(self._cached("dfof", (self._spec_key(component_indices),), compute))

    # -- evaluation ---------------------------------------------------------------------------------
    def run_eval(self, params: dict[str, Any]) -> None:
        """Re-classify components with new quality thresholds (CaImAn's ``quality`` keys only).

        Uses the stored SNR_comp / r_values (and cnn_preds); writes a new HDF5 version moved
        into place atomically and records ``params["eval"]`` on the item.
        """
        bad = [k for k in params if k not in QUALITY_KEYS]
        if bad:
            raise KeyError(
                f"{bad[0]!r} is not a component evaluation parameter; valid keys (CaImAn's quality "
                f"group): {list(QUALITY_KEYS)}"
            )
        rec = self._record()
        res = self._result()
        e = res.estimates
        if e.SNR_comp is None or e.r_values is None:
            raise ValueError(
                f"item {rec['item_name']!r}: the result has no quality metrics (SNR_comp, r_values) to re-evaluate"
            )
        all_params = res.params.to_dict()
        quality = {**all_params.get("quality", {}), **params}
        from ..formats.cnmf_hdf5 import default_params

        quality = {**default_params()["quality"], **quality}
        cnn = e.cnn_preds if e.cnn_preds is not None and np.size(e.cnn_preds) else None
        good, badc = select_components(e.SNR_comp, e.r_values, quality, cnn, e.ecc)
        new = copy.copy(e)
        new.idx_components, new.idx_components_bad = good, badc
        all_params["quality"] = quality
        self._rewrite(res, new, all_params)
        item_params = copy.deepcopy(rec.get("params") or {})
        item_params["eval"] = copy.deepcopy(dict(params))
        self.store.update(self.uuid, params=item_params)
        if "params" in self._row.index:
            cur = self._row["params"]
            if isinstance(cur, dict):
                cur["eval"] = copy.deepcopy(dict(params))
