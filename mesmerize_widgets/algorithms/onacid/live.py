"""A running onacid item's live snapshot: its format, writing and reading.

The builtin backend replaces ``{uuid}_live.npz`` in its output directory with
:func:`write_live` every ``live_every`` frames (see :mod:`mesmerize_widgets.algorithms.onacid.builtin`); the CNMF viewer polls it
through :mod:`mesmerize_widgets.accessors.live`, which knows where a running item's output
directory is (the runner's temporary folder). Nothing here knows about the store or the runner.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..cnmf.contours import footprint_contours

__all__ = ["LIVE_SUFFIX", "contours_of", "read_live", "try_read_live", "write_live"]

LIVE_SUFFIX = "_live.npz"


def write_live(path: Path, A: sp.csc_matrix, dims: tuple[int, int], frame: int, epoch: int, n_frames: int) -> None:
    """Replace the snapshot atomically (temporary file + os.replace): a reader never sees half a file.

    It holds ``A_data``, ``A_indices``, ``A_indptr``, ``A_shape`` (CSC, Fortran pixel order,
    unit-norm columns), ``dims``, ``n_components``, ``frame`` (frames processed in this epoch),
    ``epoch`` and ``n_frames``.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, A_data=A.data.astype(np.float32), A_indices=A.indices, A_indptr=A.indptr,
                     A_shape=np.array(A.shape), dims=np.array(dims), n_components=A.shape[1],
                     frame=frame, epoch=epoch, n_frames=n_frames)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_live(path: str | os.PathLike) -> dict[str, Any]:
    """The live snapshot as ``{"A": csc, "dims", "n_components", "frame", "epoch", "n_frames"}``."""
    with np.load(path) as z:
        A = sp.csc_matrix((z["A_data"], z["A_indices"], z["A_indptr"]), shape=tuple(z["A_shape"]))
        return {"A": A, "dims": tuple(int(d) for d in z["dims"]), "n_components": int(z["n_components"]),
                "frame": int(z["frame"]), "epoch": int(z["epoch"]), "n_frames": int(z["n_frames"])}


def try_read_live(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """:func:`read_live`, or None when there is no snapshot (yet, or any more: the item finished)."""
    if path is None:
        return None
    try:
        return read_live(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def contours_of(A: sp.spmatrix, dims: tuple[int, int], thr: float = 0.9,
                scale: tuple[float, float] = (1.0, 1.0)) -> tuple[list[np.ndarray], np.ndarray]:
    """The snapshot's outlines by ``row.cnmf.get_contours``'s rule; ``scale`` undoes ``ds_factor``."""
    return footprint_contours(A, dims, thr, scale)
