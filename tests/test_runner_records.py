"""Who writes the batch: the submitting process only; nodes report back and leave end records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import wait_for

import mesmerize_widgets as mw
from mesmerize_widgets.runner.job import read_record
from mesmerize_widgets.store import BatchStore

AUDIT_DIR = Path(__file__).parent / "no_batch_db"


def _audited_env(log: Path) -> dict[str, str]:
    """Processes started with this environment cannot open a batch database, and log any try."""
    path = os.pathsep.join(p for p in (str(AUDIT_DIR), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "BATCH_DB_AUDIT_LOG": str(log)}


def test_the_audit_refuses_and_logs_a_batch_open(batch, tmp_path):
    """The check below is live: a process under it that opens the batch fails and is logged."""
    log = tmp_path / "audit.log"
    code = "import sys; from mesmerize_widgets.store import BatchStore; BatchStore(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, batch.attrs["batch_path"]], capture_output=True,
                          text=True, env={**os.environ, **_audited_env(log)})
    assert proc.returncode != 0 and "may not open the batch database" in proc.stderr
    assert "batch.sqlite" in log.read_text()


@pytest.mark.slow
def test_workers_and_item_processes_never_open_the_batch(batch, raw_dir, tmp_path, monkeypatch):
    """A chain and independent items, cancel and a failure: every status and output is recorded
    by this process while nothing on the workers opens batch.sqlite."""
    from dask.distributed import Client, LocalCluster

    log = tmp_path / "audit.log"
    for key, value in _audited_env(log).items():
        monkeypatch.setenv(key, value)  # the workers and, through them, the item processes
    rng = np.random.default_rng(0)
    tifffile.imwrite(raw_dir / "m.tif", rng.normal(100, 5, (60, 24, 32)).astype(np.float32))
    bad = np.ones((10, 8, 8), np.float32)
    bad[4] = np.nan
    tifffile.imwrite(raw_dir / "bad.tif", bad)
    pre = batch.caiman.add_item("preprocess", "pre", "m.tif", {"main": {"ds_factor": 2}})
    batch.caiman.add_item("summary", "child", pre, {"main": {}})
    batch.caiman.add_item("summary", "alone", "m.tif", {"main": {}})
    batch.caiman.add_item("summary", "bad", "bad.tif", {"main": {}})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        with pytest.raises(PermissionError):  # the audit is live on the workers
            client.submit(BatchStore, batch.attrs["batch_path"], pure=False).result()
        log.unlink()
        handle = batch.caiman.run(client=client, progress=False)
    assert list(batch["status"]) == ["done", "done", "done", "failed"]
    assert "NaN" in batch.iloc[3]["error"]
    assert batch.iloc[1]["input_movie_path"].startswith(pre["uuid"] + "/")  # the child's input, recorded
    assert batch.iloc[1].caiman.get_projection("mean").shape == (12, 16)
    store = BatchStore(batch.attrs["batch_path"])
    for u in handle.uuids:
        rec = store.get(u)
        assert rec["runner_pid"] == os.getpid() and rec["pid"] not in (None, os.getpid())
        assert read_record(store.item_dir(u), rec["run_id"])["status"] == rec["status"]
    assert not log.exists(), log.read_text()


SUBMIT_AND_DIE = """
import sys, time
import mesmerize_widgets as mw
from dask.distributed import Client
mw.set_parent_raw_data_path(sys.argv[2])
df = mw.load_batch(sys.argv[1])
client = Client(sys.argv[3])
df.caiman.run(client=client, wait=False, backend="builtin")
while mw.load_batch(sys.argv[1]).iloc[0]["status"] != "running":
    time.sleep(0.05)
print("running", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_notebook_that_died_mid_run_shows_the_true_outcome(batch, raw_dir, tmp_path):
    """The submitting process is killed while its item runs on a cluster that outlives it: the
    item finishes there, and the next load reads how it ended from the item's folder."""
    from dask.distributed import LocalCluster

    rng = np.random.default_rng(0)
    tifffile.imwrite(raw_dir / "m.tif", rng.integers(0, 255, (3000, 32, 32), dtype=np.uint8))
    row = batch.caiman.add_item("summary", "s", "m.tif", {"main": {"chunk_frames": 5}})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        script = tmp_path / "notebook.py"
        script.write_text(textwrap.dedent(SUBMIT_AND_DIE))
        proc = subprocess.Popen([sys.executable, str(script), batch.attrs["batch_path"], str(raw_dir),
                                 cluster.scheduler_address], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "running"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert BatchStore(batch.attrs["batch_path"]).get(row["uuid"])["status"] == "running"
        item_dir = Path(batch.attrs["batch_path"]) / row["uuid"]
        wait_for(lambda: read_record(item_dir), timeout=120, what="the item to finish on the cluster")
    df = mw.load_batch(batch.attrs["batch_path"])
    assert df.iloc[0]["status"] == "done" and df.iloc[0]["outputs"]["success"] is True
    movie = tifffile.imread(raw_dir / "m.tif")
    np.testing.assert_allclose(df.iloc[0].caiman.get_projection("mean"), movie.mean(0), rtol=1e-5)


def test_a_dead_runner_without_an_end_record_leaves_the_item_interrupted(batch, movie_file):
    row = batch.caiman.add_item("summary", "s", movie_file[0], {"main": {}})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket
    import time

    store = BatchStore(batch.attrs["batch_path"])
    store.update(row["uuid"], status="running", run_id="r1", runner_pid=os.getpid(),
                 runner_host=socket.gethostname(), heartbeat=time.time())
    assert mw.load_batch(batch.attrs["batch_path"]).iloc[0]["status"] == "running"  # its runner lives
    store.update(row["uuid"], runner_pid=dead.pid)
    df = mw.load_batch(batch.attrs["batch_path"])
    assert df.iloc[0]["status"] == "interrupted" and "gone" in df.iloc[0]["error"]
