"""Shared fixtures: real files, a real batch directory, a real local Dask cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import mesmerize_widgets as mw
from mesmerize_widgets.store import paths as store_paths


@pytest.fixture(autouse=True)
def builtin_backend_unless_caiman(request):
    """Tests run the builtin backend, also where CaImAn is importable (then 'auto' would pick
    it); tests marked ``caiman`` choose their backend themselves."""
    if request.node.get_closest_marker("caiman") is None:
        mw.set_default_backend("builtin")
    yield
    mw.set_default_backend("auto")


@pytest.fixture
def raw_dir(tmp_path: Path):
    """A parent raw data directory, set for the test and unset after it."""
    d = tmp_path / "raw"
    d.mkdir()
    mw.set_parent_raw_data_path(d)
    yield d
    store_paths._parent_raw_data_path = None


def make_movie(n_frames: int = 60, shape: tuple[int, int] = (24, 32), seed: int = 0) -> np.ndarray:
    """A small movie with spatially correlated structure, so correlation images are non-trivial."""
    rng = np.random.default_rng(seed)
    base = rng.normal(100, 5, shape)
    blob = np.zeros(shape)
    blob[shape[0] // 3 : shape[0] // 3 + 5, shape[1] // 3 : shape[1] // 3 + 5] = 1
    trace = np.abs(rng.normal(0, 1, n_frames)).cumsum() % 7
    movie = base + 20 * trace[:, None, None] * blob + rng.normal(0, 2, (n_frames, *shape))
    return movie.astype(np.float32)


@pytest.fixture
def movie_file(raw_dir: Path):
    movie = make_movie()
    path = raw_dir / "movie.tif"
    tifffile.imwrite(path, movie)
    return path, movie


@pytest.fixture
def batch(tmp_path: Path, raw_dir: Path):
    return mw.create_batch(tmp_path / "batch")


@pytest.fixture(scope="module")
def slow_movie(tmp_path_factory) -> Path:
    """Long enough that summary with chunk_frames=1 runs for seconds (for cancel and kill)."""
    path = tmp_path_factory.mktemp("slow") / "slow.tif"
    rng = np.random.default_rng(1)
    tifffile.imwrite(path, rng.integers(0, 255, (12000, 32, 32), dtype=np.uint8))
    return path


@pytest.fixture(scope="session")
def client():
    """One LocalCluster (2 workers) for the whole session: starting one costs seconds."""
    from mesmerize_widgets.runner import default_client, shutdown_default_client

    c = default_client(max_workers=2)
    yield c
    shutdown_default_client()
