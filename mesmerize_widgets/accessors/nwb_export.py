"""NWB export of CNMF items: the arrays gathered through ``row.cnmf`` / ``row.caiman`` /
``row.mcorr``, written by ``formats.nwb``.

Gathering through the accessors means the file holds exactly what a notebook reads from the
item: the read-back tests compare the two.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import NWBExportError
from ..formats.nwb import OphysExport, require_pynwb, write_nwb
from ..store.batch_store import record_to_series
from .frame import store_of

__all__ = ["export_item", "export_items", "ophys_export"]

CNMF_ALGOS = ("cnmf", "cnmfe", "onacid")
QUALITY_COLUMNS = ("SNR_comp", "r_values", "cnn_preds")


def _checked_record(row: pd.Series) -> dict[str, Any]:
    rec = store_of(row).get(str(row["uuid"]))
    if rec["algo"] not in CNMF_ALGOS:
        raise NWBExportError(f"item {rec['item_name']!r} is a {rec['algo']!r} item: only "
                             f"{', '.join(CNMF_ALGOS)} items export to NWB")
    if rec["status"] != "done":
        raise NWBExportError(f"item {rec['item_name']!r} is {rec['status']!r}, not done: run it "
                             "before exporting it")
    return rec


def _mcorr_ancestor(row: pd.Series) -> pd.Series | None:
    """The nearest motion-correction item up the item's chain of inputs, as a row."""
    store = store_of(row)
    rec = store.get(str(row["uuid"]))
    while rec.get("parent_uuid"):
        rec = store.get(rec["parent_uuid"])
        if rec["algo"] == "mcorr":
            return record_to_series(rec, store.path)
    return None


def _images(row: pd.Series, algo: str) -> dict[str, np.ndarray]:
    getters = {"mean": lambda: row.caiman.get_projection("mean"), "correlation": row.caiman.get_corr_image}
    if algo == "cnmfe":
        getters["pnr"] = row.caiman.get_pnr_image
    images = {}
    for name, get in getters.items():
        try:
            images[name] = get()
        except (KeyError, FileNotFoundError):  # an item without that image exports the others
            pass
    return images


def _per_component(e: Any, K: int, T: int) -> dict[str, Any]:
    quality = {k: np.asarray(getattr(e, k)) for k in QUALITY_COLUMNS
               if getattr(e, k, None) is not None and np.size(getattr(e, k)) == K}
    S = getattr(e, "S", None)
    return {"quality": quality, "deconvolved": S if S is not None and np.shape(S) == (K, T) else None}


def ophys_export(row: pd.Series, *, add_residuals: bool = False, include_movie: bool = False,
                 chunk_frames: int = 100) -> OphysExport:
    """Everything of a done cnmf / cnmfe / onacid item that goes into its NWB file."""
    rec = _checked_record(row)
    e = row.cnmf.get_output(return_copy=False).estimates
    traces = row.cnmf.get_temporal("all", add_residuals=add_residuals)
    K, T = traces.shape
    images = _images(row, rec["algo"])
    dims = tuple(e.dims) if getattr(e, "dims", None) is not None else images["mean"].shape
    try:
        dff = row.cnmf.get_detrend_dfof()
    except AttributeError:
        dff = None
    accepted = np.zeros(K, bool)
    accepted[row.cnmf.get_good_components()] = True
    what = "C + YrA (denoised traces plus residuals)" if add_residuals else "C (denoised traces)"
    mc = _mcorr_ancestor(row)
    if include_movie and mc is None:
        raise NWBExportError(f"item {rec['item_name']!r} has no motion-correction item among its "
                             "inputs: include_movie exports that item's corrected movie")
    return OphysExport(
        footprints=e.A, dims=(int(dims[0]), int(dims[1])), accepted=accepted, fluorescence=traces,
        fluorescence_description=f"{what} of every component", dff=dff, images=images,
        rate=float((rec["params"].get("main") or {}).get("fr") or 30.0),
        description=f"{rec['algo']} components of item {rec['item_name']!r} ({rec['uuid']})",
        shifts=None if mc is None else np.stack(mc.mcorr.get_shifts(), axis=-1),
        movie=mc.mcorr.get_output() if include_movie else None, one_photon=rec["algo"] == "cnmfe",
        chunk_frames=chunk_frames, **_per_component(e, K, T),
    )


def export_item(row: pd.Series, path: str | os.PathLike, *, session: dict[str, Any] | None = None,
                imaging_plane: dict[str, Any] | str | None = None, add_residuals: bool = False,
                include_movie: bool = False, mask_type: str = "auto", overwrite: bool = False,
                chunk_frames: int = 100) -> Path:
    """``row.cnmf.export_nwb``: gather the item's arrays, then write them (see ``formats.nwb``)."""
    require_pynwb()  # before any work: the error names the extra
    data = ophys_export(row, add_residuals=add_residuals, include_movie=include_movie,
                        chunk_frames=chunk_frames)
    return write_nwb(path, data, session=session, imaging_plane=imaging_plane, mask_type=mask_type,
                     overwrite=overwrite)


def export_items(folder: str | os.PathLike, rows: list[pd.Series], **kwargs: Any) -> list[Path]:
    """One file per item, ``<folder>/<uuid>.nwb``; every item is checked before any is written."""
    for row in rows:
        _checked_record(row)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [export_item(row, folder / f"{row['uuid']}.nwb", **kwargs) for row in rows]
