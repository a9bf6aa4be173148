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
