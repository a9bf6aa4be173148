"""CaImAn's rule for accepting components, on stored metrics (no movie needed).

Shared by the builtin CNMF (at the end of a fit), ``row.cnmf.run_eval`` and the viewer's live
evaluation sliders, so all three always agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: the keys of CaImAn's ``quality`` params group: the only ones run_eval accepts
QUALITY_KEYS = (
    "min_SNR", "rval_thr", "SNR_lowest", "rval_lowest", "use_cnn", "min_cnn_thr",
    "cnn_lowest", "gSig_range", "use_ecc", "max_ecc",
)  # fmt: skip


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
