"""Outlines of spatial footprints, shared by ``row.cnmf.get_contours`` and the live onacid view.

CaImAn's rule (as mesmerize-core used it): a footprint's outline encloses its brightest pixels
holding ``thr`` of its energy. Outlines are traced on the pixel grid by OpenCV and returned as
closed pieces separated by NaN rows, so one line graphic can draw them all.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse as sp

_BREAK = np.array([[np.nan, np.nan]])


def footprint_contours(
    A: sp.spmatrix, dims: tuple[int, int], thr: float = 0.9, scale: tuple[float, float] = (1.0, 1.0)
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per column of ``A`` (Fortran pixel order): its (row, col) outline and its centre (K, 2).

    ``scale`` (rows, cols) maps footprints of a downsampled movie onto the full movie's pixel
    centres. An empty footprint has an empty outline and a NaN centre.
    """
    d1, d2 = int(dims[0]), int(dims[1])
    A = sp.csc_matrix(A)
    sy, sx = float(scale[0]), float(scale[1])
    coords: list[np.ndarray] = []
    centers = np.full((A.shape[1], 2), np.nan)
    for k in range(A.shape[1]):
        data = A.data[A.indptr[k] : A.indptr[k + 1]]
        pix = A.indices[A.indptr[k] : A.indptr[k + 1]]
        if data.size == 0 or not np.any(data > 0):
            coords.append(np.empty((0, 2)))
            continue
        order = np.argsort(data)[::-1]
        energy = np.cumsum(data[order].astype(np.float64) ** 2)
        energy /= energy[-1]
        n_keep = max(1, int(np.searchsorted(energy, thr, side="left")))
        keep = pix[order[:n_keep]]
        mask = np.zeros((d1, d2), dtype=np.uint8)
        mask[keep % d1, keep // d1] = 1
        found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        pieces = [_BREAK]
        for c in found:
            xy = c.reshape(-1, 2).astype(np.float64)  # OpenCV gives (col, row)
            xy = np.vstack([xy, xy[:1]])  # closed
            pieces += [xy[:, ::-1] * (sy, sx) + ((sy - 1) / 2, (sx - 1) / 2), _BREAK]
        pts = np.vstack(pieces)
        coords.append(pts)
        centers[k] = np.nanmean(pts, axis=0)
    return coords, centers
