"""Evaluating a CNMF item's components from a script: thresholds, manual overrides, one save.

``row.cnmf.evaluation()`` returns an :class:`EvaluationSession`::

    ev = row.cnmf.evaluation()
    ev.set_thresholds(min_SNR=3.0, rval_thr=0.85)   # re-classify in memory
    ev.reject(7)                                     # by hand, whatever the thresholds say
    ev.save()                                        # one atomic write of the HDF5 + the store

A session classifies with :func:`classify`, the function ``row.cnmf.run_eval`` writes with,
and saves through ``run_eval`` itself, so what a session shows is what gets written and there
is one writer of evaluation results. ``CNMFViewer`` draws a session and forwards the user's
slider moves and accept/reject clicks to it; a script can do the same without the viewer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..algorithms.cnmf.evaluation import QUALITY_KEYS, select_components

if TYPE_CHECKING:
    from ..formats.cnmf_hdf5 import CNMFResult, Estimates

__all__ = ["THRESHOLD_KEYS", "EvaluationSession", "classify", "eval_quality", "has_metrics", "manual_record"]

#: the thresholds a session starts from (the viewer's sliders); any of QUALITY_KEYS may be set
THRESHOLD_KEYS = ("min_SNR", "rval_thr", "SNR_lowest", "rval_lowest")

Manual = Mapping[int, bool]


def eval_quality(stored: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The full quality group an evaluation uses: CaImAn's defaults, then the file's, then ``params``."""
    bad = [k for k in params if k not in QUALITY_KEYS]
    if bad:
        raise KeyError(
            f"{bad[0]!r} is not a component evaluation parameter; valid keys (CaImAn's quality "
            f"group): {list(QUALITY_KEYS)}"
        )
    from ..formats.cnmf_hdf5 import default_params

    return {**default_params()["quality"], **stored, **params}


def has_metrics(estimates: Estimates) -> bool:
    """Whether thresholds can classify this result (it stores SNR_comp and r_values)."""
    return estimates.SNR_comp is not None and estimates.r_values is not None


def stored_accepted(estimates: Estimates) -> np.ndarray:
    """The classification the file holds (every component when it was never evaluated)."""
    K = estimates.n_components
    ok = np.zeros(K, bool)
    idx = estimates.idx_components
    ok[np.arange(K) if idx is None else np.asarray(idx, dtype=np.int64)] = True
    return ok


def _apply_manual(accepted: np.ndarray, manual: Manual | None) -> np.ndarray:
    ok = accepted.copy()
    for k, v in (manual or {}).items():
        if not 0 <= int(k) < len(ok):
            raise IndexError(f"component {k} out of range: this result has {len(ok)}")
        ok[int(k)] = bool(v)
    return ok


def classify(estimates: Estimates, quality: Mapping[str, Any], manual: Manual | None = None) -> np.ndarray:
    """Accepted mask: CaImAn's rule on the stored metrics (``quality`` complete), then ``manual``.

    Without metrics the stored classification is the base (only ``manual`` changes it).
    """
    e = estimates
    if not has_metrics(e):
        return _apply_manual(stored_accepted(e), manual)
    cnn = e.cnn_preds if e.cnn_preds is not None and np.size(e.cnn_preds) else None
    snr_min = e.extra.get("rv_only_snr_min")
    good, _ = select_components(e.SNR_comp, e.r_values, dict(quality), cnn, e.ecc, e.extra.get("fast_fraction"),
                                None if snr_min is None else float(np.asarray(snr_min)))
    ok = np.zeros(len(np.ravel(e.SNR_comp)), bool)
    ok[good] = True
    return _apply_manual(ok, manual)


def _plain(value: Any) -> Any:
    """A Python number for a numpy one (the file's values): what the store records is plain JSON."""
    return value.item() if isinstance(value, np.generic) else value


def manual_record(manual: Manual) -> dict[str, list[int]]:
    """How manual choices are recorded in ``params["eval"]["manual"]``."""
    return {"accepted": sorted(int(k) for k, v in manual.items() if v),
            "rejected": sorted(int(k) for k, v in manual.items() if not v)}


class EvaluationSession:
    """Thresholds, classification and manual overrides of one cnmf/cnmfe/onacid item.

    Nothing is written until :meth:`save`. Get one with ``row.cnmf.evaluation()``; it starts
    from the stored classification, the stored thresholds and no overrides.
    """

    def __init__(self, row: pd.Series, result: CNMFResult) -> None:
        e = result.estimates
        self.row = row
        self._estimates = e
        self.n_components = e.n_components
        self.has_metrics = has_metrics(e)
        nan = np.full(self.n_components, np.nan)
        self.snr = np.asarray(e.SNR_comp if e.SNR_comp is not None else nan, dtype=np.float64).ravel()
        self.rval = np.asarray(e.r_values if e.r_values is not None else nan, dtype=np.float64).ravel()
        self._stored_quality = dict(result.params.to_dict().get("quality", {}))
        quality = eval_quality(self._stored_quality, {})
        self.thresholds: dict[str, Any] = {k: _plain(quality[k]) for k in THRESHOLD_KEYS}
        self.overrides: dict[int, bool] = {}
        self._base = stored_accepted(e)
        self.accepted = self._base.copy()
        self._callbacks: list[Callable[[EvaluationSession], None]] = []

    # -- reading -------------------------------------------------------------------------------
    @property
    def good(self) -> np.ndarray:
        """Indices of the accepted components (what ``get_good_components`` gives after save)."""
        return np.flatnonzero(self.accepted).astype(np.int64)

    @property
    def bad(self) -> np.ndarray:
        return np.flatnonzero(~self.accepted).astype(np.int64)

    def classify(self, thresholds: Mapping[str, Any] | None = None) -> np.ndarray:
        """Accepted mask for these thresholds (over the session's) and the overrides; nothing changes."""
        quality = eval_quality(self._stored_quality, {**self.thresholds, **(thresholds or {})})
        return classify(self._estimates, quality, self.overrides)

    # -- changing ------------------------------------------------------------------------------
    def on_change(self, callback: Callable[[EvaluationSession], None], remove: bool = False) -> None:
        """Call ``callback(session)`` after every change (thresholds, overrides, save)."""
        if remove:
            self._callbacks.remove(callback)
        else:
            self._callbacks.append(callback)

    def _changed(self) -> None:
        for cb in list(self._callbacks):
            cb(self)

    def set_thresholds(self, **params: Any) -> np.ndarray:
        """Re-classify with new thresholds (CaImAn's quality keys); returns the accepted mask."""
        eval_quality(self._stored_quality, params)  # unknown keys raise before anything changes
        if not self.has_metrics:
            raise ValueError("this result has no SNR / r-values to evaluate with")
        thresholds = {**self.thresholds, **{k: _plain(v) for k, v in params.items()}}
        quality = eval_quality(self._stored_quality, thresholds)
        base = classify(self._estimates, quality)
        self.thresholds, self._base = thresholds, base
        self.accepted = _apply_manual(base, self.overrides)
        self._changed()
        return self.accepted

    def set_override(self, component: int, accept: bool | None) -> None:
        """Accept (True) or reject (False) a component by hand; None lets the thresholds decide."""
        k = int(component)
        if not 0 <= k < self.n_components:
            raise IndexError(f"component {k} out of range: this item has {self.n_components}")
        if accept is None:
            self.overrides.pop(k, None)
        else:
            self.overrides[k] = bool(accept)
        self.accepted = _apply_manual(self._base, self.overrides)
        self._changed()

    def accept(self, component: int) -> None:
        self.set_override(component, True)

    def reject(self, component: int) -> None:
        self.set_override(component, False)

    def clear_override(self, component: int) -> None:
        self.set_override(component, None)

    # -- saving ----------------------------------------------------------------------------------
    def save(self) -> dict[str, Any]:
        """Write the classification through ``row.cnmf.run_eval`` (thresholds and overrides at once).

        A result without metrics has only its overrides to write (none: nothing is written).
        Returns the thresholds, the accepted indices and the overrides written.
        """
        manual = dict(self.overrides)
        if self.has_metrics:
            self.row.cnmf.run_eval(dict(self.thresholds), manual=manual)
        elif manual:
            self.row.cnmf.run_eval({}, manual=manual)
        self._changed()
        return {"params": dict(self.thresholds), "accepted": self.good, "overrides": manual}
