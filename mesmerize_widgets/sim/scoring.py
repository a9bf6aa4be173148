"""How well found components match the simulator's ground truth (tests and benchmarks).

One definition for every accuracy figure the project reports: Hungarian matching of
footprints on their correlation, a match counting only at ``min_corr`` or above.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .truth import GroundTruth


def _unit_columns(M: np.ndarray) -> np.ndarray:
    M = M - M.mean(0)
    return M / np.maximum(np.linalg.norm(M, axis=0), 1e-12)


def match_to_truth(A_est: np.ndarray, C_est: np.ndarray, truth: GroundTruth, min_corr: float = 0.7) -> dict[str, Any]:
    """Recall, precision, F1 and the median trace correlation of matched components.

    ``A_est`` is dense (pixels, K) in the truth's pixel order, ``C_est`` is (K, T).
    """
    At = truth.A.toarray()
    corr = _unit_columns(At).T @ _unit_columns(A_est) if A_est.shape[1] else np.zeros((At.shape[1], 0))
    r, c = linear_sum_assignment(-corr)
    ok = corr[r, c] >= min_corr
    r, c = r[ok], c[ok]
    tc = [np.corrcoef(truth.C[i], C_est[j])[0, 1] for i, j in zip(r, c, strict=True)]
    recall = len(r) / At.shape[1]
    precision = len(r) / max(A_est.shape[1], 1)
    return {
        "recall": recall,
        "precision": precision,
        "f1": 2 * recall * precision / max(recall + precision, 1e-12),
        "trace_corr": float(np.median(tc)) if tc else 0.0,
        "K": A_est.shape[1],
    }
