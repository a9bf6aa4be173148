"""Shared fixtures: real files, a real batch directory, a real local Dask cluster, a real SLURM."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from slurm_local import LocalSlurm, missing

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


@pytest.fixture(scope="session")
def slurm():
    """A private single-node SLURM (see ``slurm_local``) for the session; skips where it cannot run.

    Yields the ``LocalSlurm``: ``.conf`` (its slurm.conf, also in ``os.environ["SLURM_CONF"]``),
    ``.node``, ``.partition``, ``.cpus``, ``.memory_mib``, ``.squeue()`` (dicts with id, name,
    state, reason), ``.job_ids()``, ``.scancel(job_id, signal_name=None)``,
    ``.wait_for_empty_queue(timeout)`` and ``.log_tails()``.
    """
    reason = missing()
    if reason:
        pytest.skip(reason)
    with LocalSlurm() as cluster:
        yield cluster


#: jobs of ``slurm_client``: one core and 2 GB each
SLURM_JOBS = 2


@pytest.fixture(scope="module")
def slurm_client(slurm, tmp_path_factory):
    """A Dask client on a dask-jobqueue SLURMCluster of ``SLURM_JOBS`` single-core jobs on ``slurm``.

    One per module: a job's worker takes seconds to start. The workers run this interpreter with
    this process's environment (sbatch exports it) and this checkout first on PYTHONPATH, as the
    runner's item processes need. ``client.cluster.worker_start_s`` is how long the jobs took to
    be queued, started and connected; ``client.cluster.job_folder`` holds the jobs' output.
    The jobs' processes cannot open a batch database: ``client.audit_log`` lists any that tried.
    At the end the cluster is closed and the queue is waited on until empty, so the next module
    gets all cores.

    A test that scancels a worker's job leaves the cluster a worker short: dask-jobqueue does not
    replace it (it drops the job from ``cluster.workers`` some 15 s later, measured). Such a test
    should run last in its module, or wait for that and ``cluster.scale(jobs=SLURM_JOBS)`` again.
    """
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (the 'cluster' extra)")
    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    if slurm.cpus < SLURM_JOBS or slurm.memory_mib < SLURM_JOBS * 2048:
        pytest.skip(f"slurm_client needs {SLURM_JOBS} cores and {SLURM_JOBS * 2} GiB for its jobs; "
                    f"the node has {slurm.cpus} cores and {slurm.memory_mib} MiB")
    folder = tmp_path_factory.mktemp("slurm-jobs")
    checkout = str(Path(mw.__file__).resolve().parents[1])
    # the jobs' processes (workers, item processes) may not open a batch database: any try is
    # refused and logged in client.audit_log (see no_batch_db/sitecustomize.py)
    audit = str(Path(__file__).parent / "no_batch_db")
    pythonpath = os.pathsep.join(p for p in (checkout, audit, os.environ.get("PYTHONPATH")) if p)
    audit_log = folder / "audit.log"
    cluster = SLURMCluster(
        cores=1, processes=1, memory="2GB", walltime="00:10:00", queue=slurm.partition,
        python=sys.executable, local_directory=str(folder), log_directory=str(folder),
        job_script_prologue=[f"export PYTHONPATH={shlex.quote(pythonpath)}",
                             f"export BATCH_DB_AUDIT_LOG={shlex.quote(str(audit_log))}"],
        scheduler_options={"dashboard_address": ":0"},  # never 8787: a notebook may hold it
    )
    cluster.job_folder = folder
    client = Client(cluster)
    client.audit_log = audit_log
    try:
        start = time.monotonic()
        cluster.scale(jobs=SLURM_JOBS)
        try:
            client.wait_for_workers(SLURM_JOBS, timeout=120)
        except TimeoutError as e:
            logs = "\n".join(f"{p.name}:\n{p.read_text(errors='replace')[-2000:]}"
                             for p in sorted(folder.glob("*.err")))
            raise RuntimeError(f"SLURMCluster workers did not connect: squeue {slurm.squeue()}\n"
                               f"{logs}\n{slurm.log_tails()}") from e
        cluster.worker_start_s = time.monotonic() - start
        yield client
    finally:
        client.close()
        cluster.close()
        slurm.wait_for_empty_queue(timeout=30)
