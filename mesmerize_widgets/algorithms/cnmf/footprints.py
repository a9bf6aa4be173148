"""Spatial footprints as sparse (pixels x K) CSC matrices, pixel rows in Fortran order.

A footprint covers a few hundred of the field's pixels. Held dense, every copy, cast and scan
of the (P, K) array costs P·K (65,536 x 190 float64 is 100 MB at 256 x 256) between the fit's
passes over the movie; held sparse, the same steps cost what the footprints hold. Every matrix
these functions return is canonical: sorted pixel rows, no stored zeros.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse as sp

from .model import clean_footprint


def as_csc(A: np.ndarray | sp.spmatrix, dtype: np.dtype | type | None = None) -> sp.csc_matrix:
    """``A`` (dense or sparse) as a canonical CSC of ``dtype`` (its own when None); a copy."""
    dtype = A.dtype if dtype is None else dtype
    out = sp.csc_matrix(A, dtype=dtype, copy=True) if sp.issparse(A) else sp.csc_matrix(np.asarray(A, dtype))
    out.eliminate_zeros()
    out.sort_indices()
    return out


def from_columns(cols: list[np.ndarray], data: np.ndarray, P: int) -> sp.csc_matrix:
    """(P, len(cols)) CSC whose column k holds ``data``'s next ``len(cols[k])`` values at rows ``cols[k]``."""
    ptr = np.concatenate([[0], np.cumsum([len(c) for c in cols], dtype=np.int64)])
    rows = np.concatenate(cols) if cols else np.zeros(0, np.intp)
    return sp.csc_matrix((data, rows, ptr), shape=(P, len(cols)))


def indicator(idx: list[np.ndarray], P: int) -> sp.csc_matrix:
    """Sparse (P, K) float32 indicator of the pixel sets ``idx``."""
    return from_columns(idx, np.ones(sum(len(i) for i in idx), np.float32), P)


def pixels(A: sp.csc_matrix, k: int) -> np.ndarray:
    """The pixels where footprint ``k`` is stored (nonzero), sorted."""
    return A.indices[A.indptr[k] : A.indptr[k + 1]]


def values(A: sp.csc_matrix, k: int) -> np.ndarray:
    return A.data[A.indptr[k] : A.indptr[k + 1]]


def column_of_entries(A: sp.csc_matrix) -> np.ndarray:
    """For each stored value, the footprint (column) it belongs to."""
    return np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))


def positive_pixels(A: sp.csc_matrix) -> np.ndarray:
    """(K,) how many pixels of each footprint are above 0."""
    return np.bincount(column_of_entries(A)[A.data > 0], minlength=A.shape[1])


def norms(A: sp.csc_matrix) -> np.ndarray:
    """(K,) l2 norm of each footprint, float64."""
    sq = np.asarray(A.data, np.float64) ** 2
    return np.sqrt(np.bincount(column_of_entries(A), sq, minlength=A.shape[1]))


def scale_columns(A: sp.csc_matrix, s: np.ndarray) -> sp.csc_matrix:
    """``A · diag(s)`` (same dtype as ``A``)."""
    out = A.copy()
    out.data = (out.data * np.repeat(s, np.diff(out.indptr))).astype(A.dtype)
    out.eliminate_zeros()
    return out


def cosine(A: sp.csc_matrix) -> np.ndarray:
    """(K, K) cosine similarity of the footprints: only overlapping ones meet."""
    nA = norms(A)
    return (A.T @ A).toarray() / np.maximum(np.outer(nA, nA), 1e-12)


def dense_column(A: sp.csc_matrix, k: int) -> np.ndarray:
    out = np.zeros(A.shape[0], A.dtype)
    out[pixels(A, k)] = values(A, k)
    return out


def _diamond(radius: int) -> np.ndarray:
    """The pixels within ``radius`` steps of the centre (4-connected): ``radius`` dilations by a
    cross in one, as a uint8 kernel for OpenCV (4x faster than SciPy's on a footprint's box)."""
    i, j = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return (np.abs(i) + np.abs(j) <= radius).astype(np.uint8)


def support_index(A: np.ndarray | sp.spmatrix, dims: tuple[int, int], radius: int,
                  max_radius: float | None = None) -> list[np.ndarray]:
    """Per footprint, the sorted pixels (Fortran order) of its support (values above 0) dilated
    by ``radius`` pixels and kept within ``max_radius`` of its brightest pixel (so a footprint
    cannot creep over its neighbours). Worked out on each footprint's bounding box: a few
    hundred pixels, where a whole-field image per footprint cost more than HALS' products."""
    A = A if sp.isspmatrix_csc(A) and A.has_canonical_format else as_csc(A)
    d1, d2 = dims
    kernel = _diamond(radius)
    out = []
    for k in range(A.shape[1]):
        v = values(A, k)
        nz, vals = pixels(A, k)[v > 0], v[v > 0]
        if not nz.size:
            out.append(np.zeros(0, np.intp))
            continue
        r, c = nz % d1, nz // d1
        r0, r1 = max(int(r.min()) - radius, 0), min(int(r.max()) + radius + 1, d1)
        c0, c1 = max(int(c.min()) - radius, 0), min(int(c.max()) + radius + 1, d2)
        sub = np.zeros((r1 - r0, c1 - c0), bool)
        sub[r - r0, c - c0] = True
        sub = cv2.dilate(sub.view(np.uint8), kernel).view(bool)
        if max_radius is not None:
            top = vals == vals.max()  # ties: the first in row-major order, as np.argmax of the image
            pi, pj = min(zip(r[top].tolist(), c[top].tolist(), strict=True))
            yy, xx = np.ogrid[r0:r1, c0:c1]
            sub &= (yy - pi) ** 2 + (xx - pj) ** 2 <= max_radius**2
        cc, rr = np.nonzero(sub.T)  # column-major: sorted Fortran pixel indices
        out.append((rr + r0) + (cc + c0) * d1)
    return out


def clean_on_pixels(v: np.ndarray, px: np.ndarray, dims: tuple[int, int], maxthr: float,
                    extract_cc: bool) -> np.ndarray:
    """:func:`model.clean_footprint` of a footprint whose values ``v`` lie on the pixels ``px``
    (zero elsewhere), worked out on their bounding box: the same result as on the whole field,
    without a whole-field image per footprint. Returns the cleaned values on ``px``."""
    r, c = px % dims[0], px // dims[0]
    r0, c0 = int(r.min()), int(c.min())
    h, w = int(r.max()) - r0 + 1, int(c.max()) - c0 + 1
    img = np.zeros((h, w), v.dtype)
    img[r - r0, c - c0] = v
    out = clean_footprint(img.ravel(order="F"), (h, w), maxthr, extract_cc).reshape((h, w), order="F")
    return out[r - r0, c - c0]


def embed(A_local: sp.spmatrix, rows: slice, cols: slice, dims: tuple[int, int]) -> sp.csc_matrix:
    """Footprints fitted on the patch ``rows`` x ``cols`` as footprints over the whole field."""
    A_local = as_csc(A_local, np.float32)
    h = rows.stop - rows.start
    loc = A_local.indices
    glob = (rows.start + loc % h) + (cols.start + loc // h) * dims[0]
    return sp.csc_matrix((A_local.data, glob, A_local.indptr), shape=(dims[0] * dims[1], A_local.shape[1]))


def hstack(parts: list[sp.spmatrix], P: int, dtype: np.dtype | type = np.float32) -> sp.csc_matrix:
    """Footprints side by side (a (P, 0) matrix when there are none)."""
    parts = [p for p in parts if p.shape[1]]
    if not parts:
        return sp.csc_matrix((P, 0), dtype=dtype)
    return as_csc(sp.hstack(parts, format="csc"), dtype)
