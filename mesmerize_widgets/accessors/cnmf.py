"""``row.cnmf``: mesmerize-core's CNMF accessor names and return shapes, over our own files.

Reads the item's CNMF HDF5 (``formats.cnmf_hdf5``), so everything works without CaImAn;
``get_output()`` returns CaImAn's ``CNMF`` object when CaImAn is importable. Results are cached
per file version (path, mtime, size, inode): ``run_eval`` and ``run_detrend_dfof`` replace the
file atomically, which changes the key, so stale results are never served.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse

from ..algorithms.caiman_env import caiman_installed
from ..algorithms.cnmf.contours import footprint_contours
from ..algorithms.cnmf.dfof import detrend_df_f
from ..algorithms.cnmf.evaluation import QUALITY_KEYS, select_components
from ..arrays import LazyArray, LazyMemmap
from ..arrays.reconstruction import (
    LazyArrayRCB,
    LazyArrayRCM,
    LazyArrayResiduals,
    LazyArrayRingBackground,
    ring_ssub,
)
from ..formats.cnmf_hdf5 import CNMFResult, load_cnmf, save_cnmf
from .cache import _derived, _outputs, clear_cache, copy_result, file_key
from .evaluation import EvaluationSession, classify, eval_quality, has_metrics, manual_record
from .frame import ItemAccessor

__all__ = ["CNMFSeriesAccessor", "QUALITY_KEYS", "clear_cache", "detrend_df_f", "select_components"]

CNMF_ALGOS = ("cnmf", "cnmfe", "onacid")
ComponentSpec = None | str | Sequence[int] | np.ndarray


# --------------------------------------------------------------------------------------------
# the accessor
# --------------------------------------------------------------------------------------------
@pd.api.extensions.register_series_accessor("cnmf")
class CNMFSeriesAccessor(ItemAccessor):
    """CNMF/CNMF-E results of one row: footprints, traces, reconstructions, evaluation."""

    # -- item and files ------------------------------------------------------------------------

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
        return file_key(self.get_output_path())

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

        return copy_result(self._cached("masks", (self._spec_key(component_indices), float(threshold)), compute))

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
            coords, centers = footprint_contours(res.estimates.A[:, idx], (d1, d2), thr)
            if not swap_dim:  # (x, y) = (col, row)
                return [c[:, ::-1] for c in coords], [c[::-1] for c in centers]
            return coords, list(centers)

        args = (self._spec_key(component_indices), bool(swap_dim), float(thr))
        return copy_result(self._cached("contours", args, compute))

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
        return copy_result(self._cached("temporal", args, compute))

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

    @staticmethod
    def _has_ring(res: CNMFResult, dims: tuple[int, int]) -> bool:
        """Whether the result holds CNMF-E's ring background (a non-empty sparse W and b0)."""
        e = res.estimates
        W, b0 = e.W, e.b0
        return (
            scipy.sparse.issparse(W) and W.shape[0] > 0 and W.shape[0] == W.shape[1]
            and b0 is not None and np.size(b0) == dims[0] * dims[1]
        )

    @staticmethod
    def _ring_ssub(res: CNMFResult, dims: tuple[int, int]) -> int:
        try:
            hint = int(res.params.get("init", "ssub_B"))
        except (KeyError, TypeError, ValueError):
            hint = None
        return ring_ssub(dims, res.estimates.W.shape[0], hint)

    def get_rcb(self) -> LazyArrayRCB | LazyArrayRingBackground:
        """Lazy background [t, y, x]: CNMF-E's ring model where the result has W and b0, else b ⊗ f.

        The ring model's frame t is ``b0 + up(W · ds(Y_t - A·C_t - b0))`` (CaImAn's
        ``compute_background``), with Y the item's input movie (the CNMF memmap if it is gone).
        """

        def compute(res: CNMFResult) -> LazyArrayRCB | LazyArrayRingBackground:
            dims = self._dims(res)
            e = res.estimates
            if self._has_ring(res, dims):
                return LazyArrayRingBackground(
                    e.W, e.b0, self._residual_movie(), self.get_rcm(), ssub=self._ring_ssub(res, dims)
                )
            return LazyArrayRCB(e.b, e.f, dims)

        return self._cached("rcb", (), compute)

    def _residual_movie(self) -> Any:
        try:
            return self._row.caiman.get_input_movie()
        except (FileNotFoundError, ValueError, OSError):
            return self.get_cnmf_memmap()

    def get_residuals(self) -> LazyArrayResiduals:
        """Lazy Y - A ⊗ C - background (``get_rcb()``), Y the item's input movie (as mesmerize-core)."""

        def compute(res: CNMFResult) -> LazyArrayResiduals:
            e = res.estimates
            if self._has_ring(res, self._dims(res)):
                rcb = self.get_rcb()  # shares its movie and A ⊗ C: each frame is read once
                assert isinstance(rcb, LazyArrayRingBackground)
                return LazyArrayResiduals(rcb.movie, rcb.rcm, rcb)
            rcb = None if e.b is None or e.f is None else self.get_rcb()
            return LazyArrayResiduals(self._residual_movie(), self.get_rcm(), rcb)

        return self._cached("residuals", (), compute)

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

        return copy_result(self._cached("dfof", (self._spec_key(component_indices),), compute))

    # -- NWB ----------------------------------------------------------------------------------------
    def export_nwb(self, path: str | os.PathLike, **kwargs: Any) -> Path:
        """Write this item to an NWB file: a new one, or appended to the session's existing file.

        An ``ophys`` module with the ImagingPlane, a PlaneSegmentation of every footprint
        (accepted and the evaluation values as columns), Fluorescence (C; C + YrA with
        ``add_residuals=True``) with the deconvolved S, DfOverF when dF/F was computed, the
        summary images, the motion-correction shifts of the item's mcorr input and, with
        ``include_movie=True``, its corrected movie. Keywords: ``session`` (a new file:
        ``session_start_time``, ``subject``, ...), ``imaging_plane`` (a dict of indicator,
        location, excitation_lambda, emission_lambda, imaging_rate, ... or the name of the
        file's plane), ``add_residuals``, ``include_movie``, ``mask_type`` ("auto", "image",
        "pixel"), ``overwrite``. Needs ``pip install "mesmerize-widgets[nwb]"``. See the user
        guide's "NWB" section.
        """
        from .nwb_export import export_item

        return export_item(self._row, path, **kwargs)

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluation(self) -> EvaluationSession:
        """Thresholds and manual accept/reject in memory, saved with ``.save()`` (see ``accessors.evaluation``)."""
        return EvaluationSession(self._row, self._result())

    def run_eval(self, params: dict[str, Any], *, manual: Mapping[int, bool] | None = None) -> None:
        """Re-classify components with new quality thresholds (CaImAn's ``quality`` keys only).

        Uses the stored SNR_comp / r_values (and cnn_preds); ``manual`` ({component: accept})
        then accepts or rejects components by hand. Writes a new HDF5 version moved into place
        atomically and records ``params["eval"]`` on the item (``manual`` under
        ``params["eval"]["manual"]``). A result without quality metrics takes ``manual`` only,
        over its stored classification.
        """
        quality = eval_quality({}, params)  # unknown keys raise here, before anything is read
        rec = self._record()
        res = self._result()
        e = res.estimates
        all_params = res.params.to_dict()
        if has_metrics(e):
            quality = eval_quality(all_params.get("quality", {}), params)
            all_params["quality"] = quality
        elif params or not manual:
            raise ValueError(
                f"item {rec['item_name']!r}: the result has no quality metrics (SNR_comp, r_values) to re-evaluate"
            )
        accepted = classify(e, quality, manual)
        new = copy.copy(e)
        new.idx_components = np.flatnonzero(accepted).astype(np.int64)
        new.idx_components_bad = np.flatnonzero(~accepted).astype(np.int64)
        self._rewrite(res, new, all_params)
        record = copy.deepcopy(dict(params))
        if manual:
            record["manual"] = manual_record(manual)
        item_params = copy.deepcopy(rec.get("params") or {})
        item_params["eval"] = record
        self.store.update(self.uuid, params=item_params)
        if "params" in self._row.index:
            cur = self._row["params"]
            if isinstance(cur, dict):
                cur["eval"] = copy.deepcopy(record)
