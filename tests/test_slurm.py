"""The runner on a real SLURM: dask-jobqueue submits the Dask workers as jobs of the private
single-node cluster that ``slurm_local`` starts (fixtures ``slurm`` and ``slurm_client``).

The sbatch test comes first on purpose: ``slurm_client``'s jobs hold every core while this
module runs, so a job submitted after it is set up would wait for them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import SLURM_JOBS
from dask.distributed import get_task_stream
from helpers import wait_for

import mesmerize_widgets as mw

pytestmark = pytest.mark.slurm


def test_sbatch_runs_a_job_and_writes_its_output(slurm, tmp_path):
    p = subprocess.run(["sbatch", "--parsable", "-t", "1", "-o", str(tmp_path / "job-%j.txt"),
                        "--wrap", "echo job $SLURM_JOB_ID on $SLURMD_NODENAME"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"{p.stderr}\n{slurm.log_tails()}"
    job_id = p.stdout.strip().split(";")[0]
    # (not `sbatch --wait`: it polls every 2 s and more, the job takes a fraction of one)
    wait_for(lambda: job_id not in slurm.job_ids(), timeout=30, what=f"job {job_id} to finish")
    written = tmp_path / f"job-{job_id}.txt"
    assert written.read_text().strip() == f"job {job_id} on {slurm.node}"


def test_dask_workers_are_running_slurm_jobs(slurm, slurm_client):
    # os.getenv travels by reference, so the workers need nothing from this test module
    job_of = slurm_client.run(os.getenv, "SLURM_JOB_ID")
    assert len(job_of) == SLURM_JOBS and None not in job_of.values()
    # one worker per job, and every dask-worker job in the queue is running one of them
    queue = {job["id"]: job for job in slurm.squeue() if job["name"] == "dask-worker"}
    assert sorted(queue) == sorted(job_of.values())
    assert {job["state"] for job in queue.values()} == {"RUNNING"}
    assert slurm_client.cluster.worker_start_s < 60


def test_a_batch_runs_on_the_slurm_workers(slurm_client, batch, raw_dir):
    movies = {}
    for i in range(3):
        movie = np.random.default_rng(i).normal(10 * i, 1, (30, 16, 20)).astype(np.float32)
        tifffile.imwrite(raw_dir / f"m{i}.tif", movie)
        movies[f"m{i}.tif"] = movie
    # two rounds on two workers: pre and "summary 1", then child (once pre is done) and "summary 2"
    pre = batch.caiman.add_item("preprocess", "pre", "m0.tif", {"main": {"ds_factor": 2}})
    batch.caiman.add_item("summary", "child", pre, {"main": {}})
    for i in (1, 2):
        batch.caiman.add_item("summary", f"summary {i}", f"m{i}.tif", {"main": {}})

    with get_task_stream(client=slurm_client) as tasks:
        handle = batch.caiman.run(client=slurm_client, progress=False)
    assert set(handle.statuses().values()) == {"done"}, batch[["item_name", "status", "error"]]
    # every item's Dask task ran in one of the SLURM jobs' workers
    slurm_workers = set(slurm_client.run(os.getenv, "SLURM_JOB_ID"))
    ran_on = {t["worker"] for t in tasks.data if t["key"].startswith("mesmerize-item-")}
    assert ran_on and ran_on <= slurm_workers

    disk = mw.load_batch(batch.attrs["batch_path"])
    assert list(disk["status"]) == ["done"] * 4
    for _, row in disk.iloc[2:].iterrows():
        out = Path(batch.attrs["batch_path"]) / row["uuid"]
        assert (out / f"{row['uuid']}_cn.npy").is_file()
        expected = movies[row["input_movie_path"]].mean(0)
        np.testing.assert_allclose(row.caiman.get_projection("mean"), expected, rtol=1e-5, atol=1e-4)
    child = disk.iloc[1]
    assert child["input_movie_path"].startswith(pre["uuid"] + "/")
    expected = movies["m0.tif"].reshape(30, 8, 2, 10, 2).mean((2, 4)).mean(0)
    np.testing.assert_allclose(child.caiman.get_projection("mean"), expected, rtol=1e-4, atol=1e-4)
