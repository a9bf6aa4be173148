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
import psutil
import pytest
import tifffile
from conftest import SLURM_JOBS
from dask.distributed import get_task_stream
from helpers import wait_for

import mesmerize_widgets as mw
from mesmerize_widgets.runner.job import read_record
from mesmerize_widgets.store import BatchStore

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
    # and not one process in the SLURM jobs opened the batch database to record any of it
    assert not slurm_client.audit_log.exists(), slurm_client.audit_log.read_text()


def test_an_mcorr_to_cnmf_chain_runs_on_the_slurm_workers(slurm_client, batch, raw_dir):
    from mesmerize_widgets.sim import simulate_2p

    sim = simulate_2p(n_frames=300, dims=(64, 64), n_neurons=12, motion="rigid", max_shift=2.0, seed=3)
    tifffile.imwrite(raw_dir / "cells.tif", sim.movie)
    mc = batch.caiman.add_item("mcorr", "mc", "cells.tif", {"main": {"max_shifts": (4, 4), "pw_rigid": False}})
    batch.caiman.add_item("cnmf", "cnmf", mc, {"main": {"gSig": (4, 4), "K": 20, "p": 1, "fr": 30.0}})
    handle = batch.caiman.run(client=slurm_client, progress=False)
    assert list(handle.statuses().values()) == ["done", "done"], batch[["item_name", "status", "error"]]
    disk = mw.load_batch(batch.attrs["batch_path"])
    assert disk.iloc[1]["input_movie_path"].startswith(mc["uuid"] + "/")
    assert disk.iloc[0].mcorr.get_output().shape == sim.movie.shape
    assert disk.iloc[1].cnmf.get_temporal().shape[1] == sim.movie.shape[0]
    assert not slurm_client.audit_log.exists(), slurm_client.audit_log.read_text()


def _running(store: BatchStore, uuid: str) -> dict:
    return wait_for(lambda: (r := store.get(uuid))["status"] == "running" and r["progress"] > 0 and r,
                    timeout=60, what="the item to run and report progress")


def test_progress_is_live_and_cancel_stops_the_item_on_the_node(slurm, slurm_client, batch, slow_movie):
    row = batch.caiman.add_item("summary", "slow", slow_movie, {"main": {"chunk_frames": 1}})
    store = BatchStore(batch.attrs["batch_path"])
    handle = row.caiman.run(client=slurm_client, wait=False)
    rec = _running(store, row["uuid"])
    assert 0 < rec["progress"] < 1 and rec["host"] == slurm.node  # as the notebook (and the table) see it
    later = wait_for(lambda: (p := store.get(row["uuid"])["progress"]) > rec["progress"] and p,
                     timeout=30, what="progress to move on")
    assert later < 1
    row.caiman.cancel()
    assert handle.wait(timeout=60, progress=False)[row["uuid"]] == "cancelled"
    assert not psutil.pid_exists(rec["pid"]) or psutil.Process(rec["pid"]).status() == psutil.STATUS_ZOMBIE
    assert read_record(store.item_dir(row["uuid"]))["status"] == "cancelled"
    assert not slurm_client.audit_log.exists(), slurm_client.audit_log.read_text()


def _job_running(slurm_client, uuid: str) -> str:
    """The SLURM job whose Dask worker runs the item's task."""
    jobs = slurm_client.run(os.getenv, "SLURM_JOB_ID")
    for worker, keys in slurm_client.processing().items():
        if any(str(k).startswith(f"mesmerize-item-{uuid}") for k in keys):
            return jobs[worker]
    raise AssertionError(f"no worker is processing item {uuid}")


def _back_to_full_strength(slurm_client) -> None:
    """dask-jobqueue does not replace a job SLURM ended: ask for the jobs again."""
    cluster = slurm_client.cluster
    wait_for(lambda: len(cluster.workers) < SLURM_JOBS, timeout=60, what="the cluster to drop the ended job")
    cluster.scale(jobs=SLURM_JOBS)
    slurm_client.wait_for_workers(SLURM_JOBS, timeout=120)


def _kill_mid_item_then_rerun(slurm, slurm_client, batch, slow_movie, end_job) -> dict:
    row = batch.caiman.add_item("summary", "slow", slow_movie, {"main": {"chunk_frames": 1}})
    store = BatchStore(batch.attrs["batch_path"])
    handle = row.caiman.run(client=slurm_client, wait=False)
    _running(store, row["uuid"])
    end_job(_job_running(slurm_client, row["uuid"]))
    assert handle.wait(timeout=180, progress=False)[row["uuid"]] == "interrupted"
    rec = store.get(row["uuid"])
    batch_dir = Path(batch.attrs["batch_path"])
    assert [p.name for p in batch_dir.iterdir() if ".tmp-" in p.name] == []  # no partial output left
    assert read_record(batch_dir / row["uuid"])["status"] == "interrupted"
    _back_to_full_strength(slurm_client)
    store.update(row["uuid"], params={"main": {"chunk_frames": 1000}})
    assert row.caiman.run(client=slurm_client, progress=False).statuses()[row["uuid"]] == "done"
    assert not slurm_client.audit_log.exists(), slurm_client.audit_log.read_text()
    return rec


def test_scancel_of_a_workers_job_mid_item_leaves_it_interrupted(slurm, slurm_client, batch, slow_movie):
    rec = _kill_mid_item_then_rerun(slurm, slurm_client, batch, slow_movie, slurm.scancel)
    assert "gone" in rec["error"] and "run it again" in rec["error"]


@pytest.mark.slow
def test_a_job_over_its_time_limit_leaves_its_item_interrupted(slurm, slurm_client, batch, tmp_path):
    """The scheduler ends the job at its time limit (cut to one minute while the item runs; SLURM
    checks limits every 30 s or so, so the item must outlast that)."""
    longer = tmp_path / "longer.tif"
    tifffile.imwrite(longer, np.random.default_rng(2).integers(0, 255, (800_000, 8, 8), dtype=np.uint8))  # ~2 min

    def time_limit_of_one_minute(job_id: str) -> None:
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=1"], check=True, timeout=30)

    rec = _kill_mid_item_then_rerun(slurm, slurm_client, batch, longer, time_limit_of_one_minute)
    assert "gone" in rec["error"]
    assert "Time limit exhausted" in slurm.log_tails(200)
