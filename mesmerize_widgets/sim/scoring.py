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


def masks_from_coordinates(regions: list[dict[str, Any]], dims: tuple[int, int]) -> np.ndarray:
    """Boolean (n_rois, d1, d2) masks from Neurofinder-style regions (``coordinates``: [row, col])."""
    masks = np.zeros((len(regions), *dims), bool)
    for i, reg in enumerate(regions):
        rc = np.asarray(reg["coordinates"], int).reshape(-1, 2)
        ok = (rc[:, 0] >= 0) & (rc[:, 0] < dims[0]) & (rc[:, 1] >= 0) & (rc[:, 1] < dims[1])
        masks[i, rc[ok, 0], rc[ok, 1]] = True
    return masks


def binarize_footprints(A: np.ndarray, dims: tuple[int, int], thr: float = 0.2) -> np.ndarray:
    """Boolean (K, d1, d2) masks: each footprint (a column of ``A``, Fortran pixel order) above
    ``thr`` x its peak, the rule used to compare footprints with hand-drawn ROIs."""
    A = np.asarray(A)
    if A.ndim != 2 or A.shape[0] != dims[0] * dims[1]:
        raise ValueError(f"A must be (pixels, K) with {dims[0] * dims[1]} pixels, got {A.shape}")
    peak = A.max(0)
    keep = A >= thr * np.where(peak > 0, peak, np.inf)
    return keep.T.reshape(A.shape[1], dims[1], dims[0]).transpose(0, 2, 1)


def iou_matrix(masks_a: np.ndarray, masks_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair of boolean masks (n_a, ...) x (n_b, ...)."""
    a = masks_a.reshape(len(masks_a), -1).astype(np.float32)
    b = masks_b.reshape(len(masks_b), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def score_masks(found: np.ndarray, reference: np.ndarray, min_iou: float = 0.3) -> dict[str, Any]:
    """Precision, recall and F1 of ``found`` masks against ``reference`` masks (both boolean,
    (n, d1, d2)): one-to-one Hungarian assignment on IoU, a pair counting at ``min_iou`` or above.

    The scoring rule of ``../shared/data/real``: manual ROIs miss cells and include cells that do
    not fire in a short excerpt, so compare methods on the same data rather than read F1 as absolute.
    """
    n_f, n_r = len(found), len(reference)
    if n_f and n_r:
        iou = iou_matrix(reference, found)
        r, c = linear_sum_assignment(-iou)
        ok = iou[r, c] >= min_iou
        r, c = r[ok], c[ok]
    else:
        r = c = np.zeros(0, int)
    n = len(r)
    precision = n / n_f if n_f else 0.0
    recall = n / n_r if n_r else 0.0
    return {
        "matched": n,
        "found": n_f,
        "reference": n_r,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if n else 0.0,
        "pairs": list(zip(r.tolist(), c.tolist(), strict=True)),
    }
