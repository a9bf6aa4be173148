"""CaImAn's rule for accepting components, on stored metrics (no movie needed).

Shared by the builtin CNMF (at the end of a fit), ``row.cnmf.run_eval`` and the viewer's live
evaluation sliders, so all three always agree.

One addition where the result has it (the builtin backend stores ``fast_fraction``, see
:func:`..core.fast_fraction`): a component that only its r-value accepts (SNR at most
``min_SNR``) must also change at a calcium transient's pace (``RV_ONLY_FAST_MIN``). Neuropil,
vessels and background blobs are as coherent in space as a cell, so their r-value is high; what
sets them apart is that they change slowly and their events are weak. Results without the
metric (CaImAn's) follow CaImAn's rule exactly. Such a component also needs an SNR that at most
one white-noise trace in a thousand reaches (``rv_only_snr_min``, stored with the result): a
footprint fitted to noise matches the frames it was fitted on, so its r-value alone proves little
(0.8 on a photon-limited movie without cells).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...formats.cnmf_params import default_params

#: the keys of CaImAn's ``quality`` params group: the only ones run_eval accepts
QUALITY_KEYS = (
    "min_SNR", "rval_thr", "SNR_lowest", "rval_lowest", "use_cnn", "min_cnn_thr",
    "cnn_lowest", "gSig_range", "use_ecc", "max_ecc",
)  # fmt: skip

#: least share of variance at the transient time scale for an r-value-only acceptance; the
#: simulator's somata keep 0.1-0.5 (0.3 for the weak ones), neuropil and vessels 0.04-0.11
RV_ONLY_FAST_MIN = 0.15

#: the thresholds a builtin fit applies when it ends (the CNN ones are CaImAn-only)
THRESHOLD_KEYS = ("min_SNR", "rval_thr", "SNR_lowest", "rval_lowest")


def accept_thresholds(params: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`select_components` applies at the end of a builtin fit (cnmf, onacid): the
    thresholds the flat ``params`` name, CaImAn's defaults for the others. One builder, so
    that both fits accept by the same rule."""
    defaults = default_params()["quality"]
    return {k: params.get(k, defaults[k]) for k in THRESHOLD_KEYS}


def select_components(
    SNR_comp: np.ndarray,
    r_values: np.ndarray,
    quality: dict[str, Any],
    cnn_preds: np.ndarray | None = None,
    ecc: np.ndarray | None = None,
    fast_fraction: np.ndarray | None = None,
    rv_only_snr_min: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """CaImAn's accept rule: above *one* upper threshold and above *every* lower one.

    Upper: r >= rval_thr, SNR > min_SNR, (CNN >= min_cnn_thr). Lower (reject if any):
    r <= rval_lowest, SNR <= SNR_lowest, (CNN <= cnn_lowest). With use_ecc, components with
    eccentricity >= max_ecc move to the rejected set. With ``fast_fraction``, r-value-only
    acceptances also need ``RV_ONLY_FAST_MIN``, and with ``rv_only_snr_min`` that SNR
    (module docstring).
    """
    snr = np.asarray(SNR_comp, dtype=float).ravel()
    r = np.asarray(r_values, dtype=float).ravel()
    by_snr = snr > quality["min_SNR"]
    by_r = r >= quality["rval_thr"]
    if fast_fraction is not None and np.size(fast_fraction) == snr.size:
        by_r &= np.asarray(fast_fraction, dtype=float).ravel() >= RV_ONLY_FAST_MIN
    if rv_only_snr_min is not None:
        by_r &= snr >= float(rv_only_snr_min)
    accept = by_r | by_snr
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
