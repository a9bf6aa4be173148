"""CNMF's patches across attempts: each finished patch is kept, so a rerun fits only the rest.

A patch's result depends only on the movie, the options and its rectangle (its random start
is seeded by ``opts.seed``), so a patch saved by a killed attempt is what this attempt would
compute; the runner's checkpoint key changes with the params and the input.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..checkpoint import load_arrays, save_arrays

log = logging.getLogger(__name__)

PatchResult = tuple[tuple[slice, slice], sp.csc_matrix, np.ndarray]


def _name(i: int) -> str:
    return f"cnmf-patch-{i:05d}"


def _bounds(rows: slice, cols: slice) -> np.ndarray:
    return np.array([rows.start, rows.stop, cols.start, cols.stop], dtype=np.int64)


def load_patches(folder: Path | None, grid: list[tuple[slice, slice]]) -> dict[int, PatchResult]:
    """The patches of ``grid`` an earlier attempt finished, by index."""
    done: dict[int, PatchResult] = {}
    if folder is None:
        return done
    for i, (rows, cols) in enumerate(grid):
        saved = load_arrays(folder, _name(i))
        if saved is not None and np.array_equal(saved.get("bounds"), _bounds(rows, cols)):
            done[i] = ((rows, cols), sp.csc_matrix(saved["A"]), saved["C"])
    return done


def save_patch(folder: Path | None, i: int, result: PatchResult) -> None:
    """Keep patch ``i``'s footprints and traces (a dense A: a patch is small)."""
    if folder is None:
        return
    (rows, cols), A, C = result
    save_arrays(folder, _name(i), bounds=_bounds(rows, cols), A=A.toarray(), C=np.asarray(C))
    log.info("patch %d fitted and saved", i)
