"""Resuming interrupted runs: real item processes killed with SIGKILL mid-run, then run again.

Each test kills the item process once its checkpoint folder shows some finished work (CNMF
patches, motion-correction chunks), reruns the item and checks that it finishes, that the
finished work was reused (the item's log names what was reused and what was computed) and that
the outputs equal an uninterrupted run's.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import wait_for

from mesmerize_widgets.formats.cnmf_hdf5 import load_cnmf
from mesmerize_widgets.formats.memmap import load_memmap
from mesmerize_widgets.sim import simulate_2p
from mesmerize_widgets.store import BatchStore

pytestmark = pytest.mark.usefixtures("client")

CNMF_MAIN = {"K": 4, "gSig": (3, 3), "p": 1, "rf": 12, "stride": 6}
N_PATCHES = 16  # the 4 x 4 grid of rf=12, stride=6 on 64 x 64 pixels
MCORR_MAIN = {"pw_rigid": True, "strides": (24, 24), "overlaps": (8, 8), "max_shifts": (5, 5), "chunk_frames": 200}
N_CHUNKS = 15  # 3,000 frames in chunks of 200


@pytest.fixture(scope="module")
def sim_movie(tmp_path_factory) -> Path:
    """3,000 frames of 64 x 64 pixels: CNMF's patches take ~0.2 s each, time to kill it between."""
    path = tmp_path_factory.mktemp("resume") / "sim.tif"
    sim = simulate_2p(n_frames=3000, dims=(64, 64), n_neurons=16, motion=None, seed=3)
    tifffile.imwrite(path, np.asarray(sim.movie, np.float32))
    return path


@pytest.fixture(scope="module")
def moving_movie(tmp_path_factory) -> Path:
    """3,000 frames with piecewise motion: a 200-frame chunk takes a few tenths of a second."""
    path = tmp_path_factory.mktemp("resume") / "moving.tif"
    sim = simulate_2p(n_frames=3000, dims=(64, 64), n_neurons=16, motion="piecewise", max_shift=3, seed=5)
    tifffile.imwrite(path, np.asarray(sim.movie, np.float32))
    return path


def _checkpoints(batch_dir: Path, uuid: str) -> list[Path]:
    return sorted(batch_dir.glob(f".{uuid}.ckpt-*"))


def _saved(batch_dir: Path, uuid: str, pattern: str) -> list[Path]:
    return [p for d in _checkpoints(batch_dir, uuid) for p in d.glob(pattern)]


def _kill_after(row, store: BatchStore, saved: callable, n: int) -> None:
    """Run the item, SIGKILL its process once ``saved()`` lists ``n`` finished pieces, and wait."""
    handle = row.caiman.run(wait=False)
    rec = wait_for(lambda: (r := store.get(row["uuid"]))["pid"] and r["status"] == "running" and r,
                   what="the item to run")
    wait_for(lambda: len(saved()) >= n, timeout=120, what=f"{n} checkpoints")
    os.kill(rec["pid"], signal.SIGKILL)
    assert handle.wait(timeout=60, progress=False)[row["uuid"]] == "interrupted"


def _last_run_log(batch_dir: Path, uuid: str) -> str:
    """The item's log lines of its latest run (each run starts with a ``--- ... run`` line)."""
    text = (batch_dir / "logs" / f"{uuid}.log").read_text()
    return text[text.rindex("\n--- ") if "\n--- " in text else 0:]


def _reused(log: str, what: str) -> list[int]:
    found = re.findall(rf"reusing {what} \[([0-9, ]*)\]", log)
    return [int(x) for x in found[-1].split(",") if x.strip()] if found else []


def _cnmf_outputs(batch_dir: Path, rec: dict):
    return load_cnmf(batch_dir / rec["outputs"]["cnmf-hdf5-path"]).estimates


def _reference_and_killed(batch, algo: str, movie: Path, main: dict, pattern: str, n: int, total: int):
    """An uninterrupted item, and a second one killed after ``n`` pieces were saved; returns the
    batch folder, its store, both rows and the indices of the saved pieces."""
    batch_dir = Path(batch.attrs["batch_path"])
    store = BatchStore(batch_dir)
    ref = batch.caiman.add_item(algo, "uninterrupted", str(movie), {"main": main})
    assert ref.caiman.run(progress=False).statuses()[ref["uuid"]] == "done"
    row = batch.caiman.add_item(algo, "killed", str(movie), {"main": main})
    _kill_after(row, store, lambda: _saved(batch_dir, row["uuid"], pattern), n)
    done = sorted(int(p.stem.rsplit("-", 1)[1]) for p in _saved(batch_dir, row["uuid"], pattern))
    assert n <= len(done) < total, "the kill came too late to leave work to resume"
    return batch_dir, store, ref, row, done


def test_killed_cnmf_resumes_its_finished_patches(batch, sim_movie):
    batch_dir, store, ref, row, done = _reference_and_killed(batch, "cnmf", sim_movie, CNMF_MAIN,
                                                             "cnmf-patch-*.npz", 3, N_PATCHES)

    assert row.caiman.run(progress=False).statuses()[row["uuid"]] == "done"
    log = _last_run_log(batch_dir, row["uuid"])
    assert _reused(log, "patches") == done
    fitted = sorted(int(i) for i in re.findall(r"patch (\d+) fitted and saved", log))
    assert fitted == sorted(set(range(N_PATCHES)) - set(done))  # each patch fitted once in all
    a, b = _cnmf_outputs(batch_dir, store.get(ref["uuid"])), _cnmf_outputs(batch_dir, store.get(row["uuid"]))
    np.testing.assert_allclose(b.A.toarray(), a.A.toarray(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.C, a.C, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(b.idx_components, a.idx_components)
    assert _checkpoints(batch_dir, row["uuid"]) == []  # removed once the item is done


def test_changed_params_discard_the_checkpoint(batch, sim_movie):
    batch_dir = Path(batch.attrs["batch_path"])
    store = BatchStore(batch_dir)
    row = batch.caiman.add_item("cnmf", "changed", str(sim_movie), {"main": CNMF_MAIN})
    _kill_after(row, store, lambda: _saved(batch_dir, row["uuid"], "cnmf-patch-*.npz"), 2)
    old = _checkpoints(batch_dir, row["uuid"])
    assert len(old) == 1

    store.update(row["uuid"], params={"main": {**CNMF_MAIN, "K": 3}})
    assert row.caiman.run(progress=False).statuses()[row["uuid"]] == "done"
    log = _last_run_log(batch_dir, row["uuid"])
    assert "reusing" not in log
    assert len(re.findall(r"patch \d+ fitted and saved", log)) == N_PATCHES
    assert not old[0].exists() and _checkpoints(batch_dir, row["uuid"]) == []


def _mcorr_outputs(batch_dir: Path, rec: dict) -> list[np.ndarray]:
    movie, _, _ = load_memmap(batch_dir / rec["outputs"]["mcorr-output-path"])
    return [np.asarray(movie), np.load(batch_dir / rec["outputs"]["shifts"]),
            np.load(batch_dir / rec["outputs"]["mean-projection-path"]),
            np.load(batch_dir / rec["outputs"]["corr-img-path"])]


def test_killed_mcorr_resumes_at_its_last_pass_and_chunk(batch, moving_movie):
    # killed in the piecewise pass (the second, after one rigid pass)
    batch_dir, store, ref, row, done = _reference_and_killed(batch, "mcorr", moving_movie, MCORR_MAIN,
                                                             "mcorr-pass-1-chunk-*.npz", 2, N_CHUNKS)
    assert _saved(batch_dir, row["uuid"], "mcorr-movie.partial")  # the frames written so far

    assert row.caiman.run(progress=False).statuses()[row["uuid"]] == "done"
    log = _last_run_log(batch_dir, row["uuid"])
    assert "resumed from checkpoint at pass 2 of 2" in log
    assert _reused(log, "chunks of pass 2/2") == done
    registered = re.findall(r"chunk at frame (\d+) of pass (\d+) registered", log)
    assert {p for _, p in registered} == {"2"}  # the rigid pass was not run again
    assert sorted(int(a) for a, _ in registered) == sorted(set(range(0, 3000, 200)) - set(done))
    for got, want in zip(_mcorr_outputs(batch_dir, store.get(row["uuid"])),
                         _mcorr_outputs(batch_dir, store.get(ref["uuid"])), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert _checkpoints(batch_dir, row["uuid"]) == []


def test_a_damaged_checkpoint_is_done_again_not_trusted(tmp_path):
    from mesmerize_widgets.algorithms.checkpoint import load_arrays, save_arrays

    save_arrays(tmp_path, "piece", x=np.arange(3))
    np.testing.assert_array_equal(load_arrays(tmp_path, "piece")["x"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["piece.npz"]  # no temporary file left
    (tmp_path / "piece.npz").write_bytes(b"PK\x03\x04 cut short")
    assert load_arrays(tmp_path, "piece") is None
    assert load_arrays(tmp_path, "absent") is None and load_arrays(None, "piece") is None


def test_summary_sums_survive_a_checkpoint():
    from mesmerize_widgets.algorithms.images import SummaryAccumulator

    frames = np.random.default_rng(0).normal(size=(20, 8, 9))
    acc = SummaryAccumulator((8, 9))
    acc.add(frames)
    back = SummaryAccumulator.from_state(acc.state())
    for name in ("mean", "std", "max", "correlation_image"):
        np.testing.assert_array_equal(getattr(back, name)(), getattr(acc, name)())


def test_the_key_follows_params_and_input(tmp_path):
    from mesmerize_widgets.runner.job import Job, checkpoint_key

    movie = tmp_path / "m.tif"
    movie.write_bytes(b"1234")
    job = Job(batch_dir=str(tmp_path), uuid="u", run_id="r1", algo="cnmf", params={}, backend="builtin",
              input_path=str(movie))
    key = checkpoint_key(job, {"main": {"K": 4}})
    assert checkpoint_key(Job(**{**job.__dict__, "run_id": "r2"}), {"main": {"K": 4}}) == key
    assert checkpoint_key(job, {"main": {"K": 5}}) != key
    os.utime(movie, ns=(0, 10**9))  # the input rewritten
    assert checkpoint_key(job, {"main": {"K": 4}}) != key
