"""Small helpers shared by the test modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy and return it; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def run_caiman_backend(algo: str, movie: np.ndarray, params: dict, tmp_path: Path) -> dict:
    """Run ``algo``'s caiman backend in this process on ``movie`` (written to ``tmp_path/m.tif``,
    outputs in ``tmp_path/out``); skips the test where CaImAn is absent or its environment cannot
    run the algorithm (e.g. deconvolution under scipy >= 1.17)."""
    pytest.importorskip("caiman.source_extraction")
    from mesmerize_widgets.algorithms import RunContext, get_algorithm
    from mesmerize_widgets.algorithms.caiman_env import caiman_problems

    algorithm = get_algorithm(algo)
    problems = caiman_problems(needs_deconvolution=algorithm.needs_deconvolution)
    if problems:
        pytest.skip("; ".join(problems))
    src = tmp_path / "m.tif"
    tifffile.imwrite(src, movie)
    out = tmp_path / "out"
    out.mkdir()
    ctx = RunContext(input_path=src, params=algorithm.schema.validate(params), output_dir=out, prefix="u")
    return algorithm.run_function("caiman")(ctx)


def cells_found(truth_A: np.ndarray, A: np.ndarray, min_corr: float = 0.7) -> set[int]:
    """The simulated cells (columns of ``truth_A``) that some footprint of ``A`` matches with a
    spatial correlation above ``min_corr``."""
    if not A.shape[1]:
        return set()
    corr = (truth_A / np.linalg.norm(truth_A, axis=0)).T @ (A / np.linalg.norm(A, axis=0))
    return {int(i) for i in np.flatnonzero(corr.max(1) > min_corr)}


def assert_pieces_find_the_whole_fields_cells(truth_A: np.ndarray, whole: np.ndarray, pieces: np.ndarray,
                                              min_found: int, max_overlap: float) -> None:
    """Seeds found piece by piece (tiles, bands) hold the cells the whole-field pass finds (all
    but one), and no cell twice (two pieces' seeds overlapping above ``max_overlap``)."""
    found = cells_found(truth_A, whole)
    assert len(found) >= min_found
    assert len(cells_found(truth_A, pieces) & found) >= len(found) - 1
    assert_each_cell_once(pieces, max_overlap)


def assert_each_cell_once(A: np.ndarray, max_overlap: float) -> None:
    """No two footprints (columns of ``A``) alike above ``max_overlap`` (cosine): no cell twice."""
    unit = A / np.linalg.norm(A, axis=0)
    overlap = unit.T @ unit
    np.fill_diagonal(overlap, 0)
    assert overlap.max() < max_overlap
