"""The runner: real worker processes on a real local Dask cluster, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import wait_for

import mesmerize_widgets as mw
from mesmerize_widgets.algorithms.images import SummaryAccumulator
from mesmerize_widgets.runner.job import read_record
from mesmerize_widgets.store import BatchStore

pytestmark = pytest.mark.usefixtures("client")


def _leftovers(batch_dir: Path) -> list[str]:
    return [p.name for p in batch_dir.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def _only_the_end_record(batch_dir: Path, uuid: str, status: str) -> None:
    """A run that did not finish leaves no outputs, only the record of how it ended."""
    assert [p.name for p in (batch_dir / uuid).iterdir()] == ["run_record.json"]
    record = read_record(batch_dir / uuid)
    assert record["status"] == status and record["run_id"] == BatchStore(batch_dir).get(uuid)["run_id"]


def test_run_one_item_in_another_process(batch, movie_file):
    path, movie = movie_file
    row = batch.caiman.add_item("summary", "s", path, {"main": {"chunk_frames": 7}})
    handle = row.caiman.run(progress=False)
    assert handle.statuses() == {row["uuid"]: "done"}
    rec = BatchStore(batch.attrs["batch_path"]).get(row["uuid"])
    assert rec["status"] == "done" and rec["progress"] == 1.0 and rec["backend"] == "builtin"
    assert rec["pid"] != os.getpid()
    assert rec["outputs"]["success"] is True and rec["ran_time"] and rec["algo_duration"].endswith(" sec")
    # the row the user holds is refreshed, and the outputs match a direct computation
    assert row["status"] == "done"
    np.testing.assert_allclose(row.caiman.get_projection("mean"), movie.mean(0), rtol=1e-5)
    np.testing.assert_allclose(row.caiman.get_projection("std"), movie.std(0), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(row.caiman.get_projection("max"), movie.max(0))
    acc = SummaryAccumulator(movie.shape[1:])
    acc.add(movie)
    np.testing.assert_allclose(row.caiman.get_corr_image(), acc.correlation_image(), atol=1e-5)
    out_dir = Path(batch.attrs["batch_path"]) / row["uuid"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [f"{row['uuid']}{s}" for s in ("_mean_projection.npy", "_std_projection.npy", "_max_projection.npy", "_cn.npy")]
        + ["run_record.json"]
    )
    # the item's folder says how its run ended, as the database does
    record = read_record(out_dir)
    assert record["status"] == "done" and record["run_id"] == rec["run_id"]
    assert record["outputs"] == rec["outputs"]
    # the item process used this interpreter
    log = (Path(batch.attrs["batch_path"]) / "logs" / f"{row['uuid']}.log").read_text()
    assert sys.executable in log


def test_eight_items_on_two_workers_all_recorded(batch, raw_dir):
    movies = {}
    for i in range(8):
        m = np.random.default_rng(i).normal(10 * i, 1, (40, 16, 16)).astype(np.float32)
        tifffile.imwrite(raw_dir / f"m{i}.tif", m)
        movies[f"m{i}.tif"] = m
        batch.caiman.add_item("summary", f"item {i}", f"m{i}.tif", {"main": {}})
    handle = batch.caiman.run(max_workers=2, progress=False)
    assert set(handle.statuses().values()) == {"done"}
    disk = mw.load_batch(batch.attrs["batch_path"])
    assert list(disk["status"]) == ["done"] * 8
    for _, row in disk.iterrows():
        np.testing.assert_allclose(row.caiman.get_projection("mean"), movies[row["input_movie_path"]].mean(0), rtol=1e-5, atol=1e-4)
    assert len({r for r in disk["uuid"]}) == 8


def test_chained_item_waits_for_its_parent(batch, movie_file):
    path, movie = movie_file
    pre = batch.caiman.add_item("preprocess", "pre", path, {"main": {"ds_factor": 2, "temporal_ds": 3}})
    child = batch.caiman.add_item("summary", "child", pre, {"main": {}})
    batch.caiman.run(progress=False)
    assert list(batch["status"]) == ["done", "done"]
    child = batch.iloc[1]
    assert child["input_movie_path"].startswith(pre["uuid"] + "/")
    assert child["input_movie_path"].endswith(f"_order_F_frames_{len(movie) // 3}.mmap")
    assert child.caiman.get_projection("mean").shape == (movie.shape[1] // 2, movie.shape[2] // 2)
    expected = movie[: len(movie) // 3 * 3].reshape(-1, 3, *movie.shape[1:]).mean(1)
    got = np.asarray(child.caiman.get_input_movie())
    ref = expected.reshape(len(expected), movie.shape[1] // 2, 2, movie.shape[2] // 2, 2).mean((2, 4))
    np.testing.assert_allclose(got, ref, rtol=1e-4)


def test_failed_parent_fails_its_children_with_the_reason(batch, raw_dir):
    m = np.zeros((10, 8, 8), np.float32)
    m[3] = np.nan
    tifffile.imwrite(raw_dir / "nan.tif", m)
    pre = batch.caiman.add_item("preprocess", "pre", "nan.tif", {"main": {"crop": (0, 4, 0, 20)}})
    batch.caiman.add_item("summary", "child", pre, {"main": {}})
    batch.caiman.run(progress=False)
    assert list(batch["status"]) == ["failed", "failed"]
    assert "crop (0, 4, 0, 20) does not fit" in batch.iloc[0]["error"]
    assert "parent item 'pre'" in batch.iloc[1]["error"] and "does not fit" in batch.iloc[1]["error"]
    assert batch.iloc[0]["outputs"]["success"] is False
    _only_the_end_record(Path(batch.attrs["batch_path"]), pre["uuid"], "failed")
    assert _leftovers(Path(batch.attrs["batch_path"])) == []


def test_nan_frames_fail_with_a_clear_error(batch, raw_dir):
    m = np.ones((10, 8, 8), np.float32)
    m[4, 2, 2] = np.nan
    tifffile.imwrite(raw_dir / "nan.tif", m)
    row = batch.caiman.add_item("summary", "nan", "nan.tif", {"main": {}})
    row.caiman.run(progress=False)
    assert row["status"] == "failed" and "frame 4" in row["error"] and "NaN" in row["error"]


def test_movie_removed_after_adding_fails_cleanly(batch, movie_file):
    path, _ = movie_file
    row = batch.caiman.add_item("summary", "gone", path, {"main": {}})
    path.unlink()
    row.caiman.run(progress=False)
    assert row["status"] == "failed" and "movie.tif" in row["error"]
    assert _leftovers(Path(batch.attrs["batch_path"])) == []


def test_kill_9_leaves_the_item_interrupted_and_rerunnable(batch, slow_movie):
    row = batch.caiman.add_item("summary", "slow", slow_movie, {"main": {"chunk_frames": 1}})
    store = BatchStore(batch.attrs["batch_path"])
    handle = row.caiman.run(wait=False)
    rec = wait_for(lambda: (r := store.get(row["uuid"]))["pid"] and r["status"] == "running" and r["progress"] > 0
                    and r, what="the item to run")
    os.kill(rec["pid"], signal.SIGKILL)
    statuses = handle.wait(timeout=60, progress=False)
    assert statuses[row["uuid"]] == "interrupted"
    rec = store.get(row["uuid"])
    assert "SIGKILL" in rec["error"]
    batch_dir = Path(batch.attrs["batch_path"])
    assert _leftovers(batch_dir) == []
    _only_the_end_record(batch_dir, row["uuid"], "interrupted")
    # a fresh load agrees, and the item can simply be run again
    assert mw.load_batch(batch_dir).iloc[0]["status"] == "interrupted"
    store.update(row["uuid"], params={"main": {"chunk_frames": 500}})
    assert row.caiman.run(progress=False).statuses()[row["uuid"]] == "done"


def test_a_running_item_says_its_step_and_time_left(batch, slow_movie):
    """The store holds the item's own step ("1234/12000 frames") and when it started, so the
    table and the notebook bar say how far it is and how long it has left."""
    from mesmerize_widgets.runner.eta import time_left
    from mesmerize_widgets.widgets.batch_table import BatchTable, status_text

    row = batch.caiman.add_item("summary", "slow", slow_movie, {"main": {"chunk_frames": 1}})
    store = BatchStore(batch.attrs["batch_path"])
    handle = row.caiman.run(wait=False)
    rec = wait_for(lambda: (r := store.get(row["uuid"]))["progress_message"] and 0.02 < r["progress"] < 0.5
                   and r, what="a step message", timeout=90)
    table = BatchTable(batch)  # at once: the item has most of its frames still to go
    try:
        table.refresh()
        cell = table.visible_rows()["status"].iloc[0]
        assert cell.startswith("running") and "/12000 frames" in cell, cell
    finally:
        table.close()
    assert rec["progress_message"].endswith("/12000 frames") and rec["started"] <= time.time()
    later = rec["started"] + 10.0  # ten seconds in (the pace is not judged in the first three)
    left = time_left(rec["progress"], rec["started"], now=later)
    assert left == pytest.approx(10.0 * (1 - rec["progress"]) / rec["progress"])
    text = status_text(rec, now=later)
    assert text.startswith("running ") and rec["progress_message"] in text and "left" in text
    row.caiman.cancel()
    handle.wait(timeout=60, progress=False)


def test_cancel_a_running_item(batch, slow_movie):
    row = batch.caiman.add_item("summary", "slow", slow_movie, {"main": {"chunk_frames": 1}})
    store = BatchStore(batch.attrs["batch_path"])
    handle = row.caiman.run(wait=False)
    wait_for(lambda: store.get(row["uuid"])["progress"] > 0, what="progress")
    assert 0 < store.get(row["uuid"])["progress"] < 1  # progress is live in the store
    row.caiman.cancel()
    assert handle.wait(timeout=60, progress=False)[row["uuid"]] == "cancelled"
    batch_dir = Path(batch.attrs["batch_path"])
    assert _leftovers(batch_dir) == []
    _only_the_end_record(batch_dir, row["uuid"], "cancelled")
    assert not _process_alive(store.get(row["uuid"])["pid"])


def _process_alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_many_queued_and_running(batch, slow_movie):
    for i in range(4):
        batch.caiman.add_item("summary", f"slow {i}", slow_movie, {"main": {"chunk_frames": 1}})
    handle = batch.caiman.run(wait=False)
    store = BatchStore(batch.attrs["batch_path"])
    wait_for(lambda: any(store.get(u)["status"] == "running" for u in batch["uuid"]), what="a running item")
    batch.caiman.cancel()
    assert set(handle.wait(timeout=60, progress=False).values()) == {"cancelled"}
    assert _leftovers(Path(batch.attrs["batch_path"])) == []


def test_rerun_replaces_outputs_only_on_success(batch, movie_file):
    path, movie = movie_file
    row = batch.caiman.add_item("summary", "s", path, {"main": {}})
    row.caiman.run(progress=False)
    first = row.caiman.get_projection("mean")
    # a rerun that fails keeps the previous outputs in place
    tifffile.imwrite(path, np.full((5, 3, 3), np.nan, np.float32), photometric="minisblack")
    row.caiman.run(progress=False)
    assert row["status"] == "failed"
    out_dir = Path(batch.attrs["batch_path"]) / row["uuid"]
    np.testing.assert_array_equal(np.load(out_dir / f"{row['uuid']}_mean_projection.npy"), first)


def test_memory_limit_fails_the_item_with_the_reason(batch, raw_dir):
    # one chunk of 2000 float32 frames (0.5 GB) plus its float64 copy (1 GB) cannot fit in
    # 1.2 GB of address space; zlib keeps the file itself tiny
    tifffile.imwrite(raw_dir / "big.tif", np.zeros((2000, 256, 256), np.float32), compression="zlib")
    row = batch.caiman.add_item("summary", "big", "big.tif", {"main": {"chunk_frames": 2000}})
    row.caiman.run(progress=False, memory_limit=1200 * 2**20)
    assert row["status"] == "failed"
    assert "MemoryError" in row["error"] or "Unable to allocate" in row["error"]


def test_running_twice_is_refused(batch, slow_movie):
    row = batch.caiman.add_item("summary", "slow", slow_movie, {"main": {"chunk_frames": 1}})
    handle = row.caiman.run(wait=False)
    with pytest.raises(RuntimeError, match="already queued or running"):
        row.caiman.run(wait=False)
    row.caiman.cancel()
    handle.wait(timeout=60, progress=False)


def test_a_dead_runner_leaves_items_interrupted_not_running(batch, movie_file):
    row = batch.caiman.add_item("summary", "s", movie_file[0], {"main": {}})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = BatchStore(batch.attrs["batch_path"])
    import socket

    # a process that is gone but beat recently may still be recording its outcome: left alone
    store.update(row["uuid"], status="running", run_id="x", pid=dead.pid, host=socket.gethostname(),
                 heartbeat=time.time())
    assert mw.load_batch(batch.attrs["batch_path"]).iloc[0]["status"] == "running"
    # its heartbeat stopped long ago: interrupted
    store.update(row["uuid"], heartbeat=time.time() - 120)
    df = mw.load_batch(batch.attrs["batch_path"])
    assert df.iloc[0]["status"] == "interrupted" and "gone" in df.iloc[0]["error"]


RUN_SCRIPT = """
import sys, mesmerize_widgets as mw
mw.set_parent_raw_data_path(sys.argv[2])
df = mw.load_batch(sys.argv[1])
items = [i for i, n in enumerate(df["item_name"]) if n.startswith(sys.argv[3])]
h = df.caiman.run(items, max_workers=1, progress=False, backend="builtin")
assert set(h.statuses().values()) == {"done"}, h.statuses()
"""


@pytest.mark.slow
def test_two_notebooks_running_items_of_one_batch(batch, raw_dir):
    tifffile.imwrite(raw_dir / "m.tif", np.random.default_rng(0).normal(size=(30, 16, 16)).astype(np.float32))
    for tag in "ab":
        for i in range(3):
            batch.caiman.add_item("summary", f"{tag}{i}", "m.tif", {"main": {}})
    procs = [subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, batch.attrs["batch_path"], str(raw_dir), tag])
             for tag in "ab"]
    assert [p.wait(180) for p in procs] == [0, 0]
    assert list(mw.load_batch(batch.attrs["batch_path"])["status"]) == ["done"] * 6


def test_killed_dask_worker_leaves_its_item_interrupted(batch, slow_movie, client):
    """The monitor (a Dask worker) dies: its item process dies with it, and the item says so."""
    import psutil

    row = batch.caiman.add_item("summary", "slow", slow_movie, {"main": {"chunk_frames": 1}})
    store = BatchStore(batch.attrs["batch_path"])
    handle = row.caiman.run(wait=False)
    rec = wait_for(lambda: (r := store.get(row["uuid"]))["pid"] and r["progress"] > 0 and r, what="running")
    worker_pid = psutil.Process(rec["pid"]).ppid()
    os.kill(worker_pid, signal.SIGKILL)
    status = handle.wait(timeout=120, progress=False)[row["uuid"]]
    assert status == "interrupted"
    assert not _process_alive(rec["pid"]) or psutil.Process(rec["pid"]).status() == psutil.STATUS_ZOMBIE
    _only_the_end_record(Path(batch.attrs["batch_path"]), row["uuid"], "interrupted")
    client.wait_for_workers(2, timeout=120)
    store.update(row["uuid"], params={"main": {"chunk_frames": 1000}})
    assert row.caiman.run(progress=False).statuses()[row["uuid"]] == "done"
    assert _leftovers(Path(batch.attrs["batch_path"])) == []


def test_any_dask_client_can_run_items(batch, movie_file):
    from dask.distributed import Client, LocalCluster

    row = batch.caiman.add_item("summary", "s", movie_file[0], {"main": {}})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        with Client(cluster, set_as_default=False) as other:
            handle = batch.caiman.run(client=other, progress=False)
            assert set(handle.futures[row["uuid"]].client.scheduler_info()["workers"]) == set(
                other.scheduler_info()["workers"]
            )
    assert batch.iloc[0]["status"] == "done"


def test_an_input_the_worker_cannot_see_fails_naming_the_path(batch, movie_file):
    """A node without the raw data mount: the item fails with the path it looked for, nothing lost."""
    path, _ = movie_file
    row = batch.caiman.add_item("summary", "s", path, {"main": {}})
    hidden = path.with_name("elsewhere.tif")
    path.rename(hidden)  # as if the raw data folder were not mounted where the batch says
    row.caiman.run(progress=False)
    rec = BatchStore(batch.attrs["batch_path"]).get(row["uuid"])
    assert rec["status"] == "failed"
    assert f"input movie not found: {path}" in rec["error"] and "mounted" in rec["error"]
    hidden.rename(path)
    row.caiman.run(progress=False)  # and the item runs once the data is back
    assert BatchStore(batch.attrs["batch_path"]).get(row["uuid"])["status"] == "done"


def test_item_processes_get_their_share_of_the_cores(batch, slow_movie, client):
    """The session's cluster runs 2 items at a time: each item process sizes its thread pools to
    its share of the cores (unless the user set the variables)."""
    from mesmerize_widgets.processes import THREAD_VARS

    row = batch.caiman.add_item("summary", "slow", slow_movie, {"main": {"chunk_frames": 1}})
    store = BatchStore(batch.attrs["batch_path"])
    handle = row.caiman.run(wait=False)
    rec = wait_for(lambda: (r := store.get(row["uuid"]))["pid"] and r["status"] == "running" and r,
                   what="the item to run")
    raw = Path(f"/proc/{rec['pid']}/environ").read_bytes().split(b"\0")
    env = dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)
    n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
    for k in THREAD_VARS:
        expected = os.environ.get(k, str(max(1, (os.cpu_count() or 1) // n_workers)))
        assert env.get(k) == expected, (k, env.get(k))
    row.caiman.cancel()
    handle.wait(timeout=60, progress=False)


def _reserved_at_start(batch_dir: Path, uuid: str) -> tuple[float, str]:
    """The MB the item process had reserved before its run, and its BLAS threads (its log)."""
    text = (batch_dir / "logs" / f"{uuid}.log").read_text()
    line = [ln for ln in text.splitlines() if "reserved (VmData) before the run" in ln][-1]
    return float(line.split(" MB reserved")[0].split()[-1]), line.rsplit(" ", 1)[-1]


@pytest.mark.skipif("OPENBLAS_NUM_THREADS" in os.environ, reason="the user's BLAS threads are kept")
def test_an_item_under_a_memory_limit_reserves_as_much_alone_as_beside_others(batch, movie_file, client):
    """Each OpenBLAS thread reserves a buffer in each of the copies an item loads (numpy's,
    SciPy's, OpenCV's), and the limit counts it: an mcorr item alone on 2 cores held 338 MB
    before its run, 122 MB beside another. Under a memory limit the BLAS pools get one thread,
    so what fits under it does not depend on how many items share the machine."""
    from mesmerize_widgets.runner import default_client

    path, _ = movie_file
    params = {"main": {"pw_rigid": False, "max_shifts": (2, 2)}}
    runs = {}
    try:
        for name, workers, limit in (("alone", 1, 2**31), ("alone-unlimited", 1, None), ("shared", 2, 2**31)):
            row = batch.caiman.add_item("mcorr", name, path, params)
            row.caiman.run(progress=False, max_workers=workers, memory_limit=limit)
            rec = BatchStore(batch.attrs["batch_path"]).get(row["uuid"])
            assert rec["status"] == "done", rec["error"]
            runs[name] = _reserved_at_start(Path(batch.attrs["batch_path"]), row["uuid"])
    finally:
        default_client(max_workers=2)  # the session's cluster as the other tests expect it
    assert runs["alone"][1] == runs["shared"][1] == "1"
    assert abs(runs["alone"][0] - runs["shared"][0]) <= 8, runs
    assert runs["alone-unlimited"][1] == str(os.cpu_count() or 1)  # without a limit: all the cores
    if (os.cpu_count() or 1) > 1:
        assert runs["alone-unlimited"][0] > runs["alone"][0] + 60, runs  # what the limit was spared


def test_time_left_is_the_pace_so_far_and_says_nothing_too_early():
    from mesmerize_widgets.runner.eta import format_seconds, running_text, time_left

    assert time_left(0.25, started=1000.0, now=1060.0) == pytest.approx(180.0)  # 60 s for a quarter
    assert time_left(0.005, started=1000.0, now=1060.0) is None  # under 1 %
    assert time_left(0.5, started=1000.0, now=1001.0) is None  # under 3 s
    assert time_left(0.5, started=None) is None
    assert [format_seconds(s) for s in (0.2, 40, 600, 5400)] == ["1 s", "40 s", "10 min", "1.5 h"]
    rec = {"progress": 0.5, "progress_message": "patch 3/6", "started": 1000.0}
    assert running_text(rec, now=1120.0) == "50% · patch 3/6 · ~2 min left"
    assert running_text({"progress": 0.0}) == "0%"
