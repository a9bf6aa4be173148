"""Plain scripts, run as a user runs them (``python analysis.py``), with no ``__main__`` guard.

"spawn" children re-run the parent's main file; before the fix, the first script died with
"Nanny failed to start" and the second with a BrokenProcessPool.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import tifffile

from mesmerize_widgets.store import BatchStore

ROOT = Path(__file__).resolve().parents[1]


def _script_env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: the project importable, nothing of the test session's environment."""
    return {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}


def _run_script(tmp_path: Path, body: str, timeout: float = 300) -> subprocess.CompletedProcess:
    script = tmp_path / "analysis.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, script.name], cwd=tmp_path, env=_script_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def _problems(proc: subprocess.CompletedProcess) -> list[str]:
    out = proc.stdout + proc.stderr
    return [line for line in out.splitlines() if "Traceback" in line or "Warning" in line or "Error" in line]


def test_the_issue_script_runs_without_a_main_guard(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.random.default_rng(0).integers(0, 200, (40, 24, 24), np.uint16))
    proc = _run_script(tmp_path, """\
        import mesmerize_widgets as mw
        mw.set_parent_raw_data_path(".")
        df = mw.create_batch("b")
        df.caiman.add_item("summary", item_name="x", input_movie_path="m.tif", params={"main": {}})
        df.iloc[0].caiman.run()
        print("finished")
    """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("finished") == 1  # the script ran once, not again in a worker
    assert _problems(proc) == []
    recs = BatchStore(tmp_path / "b").items()
    assert [r["status"] for r in recs] == ["done"]
    # stderr is a pipe here, as in an sbatch log: plain progress lines, not a redrawn bar
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("items:")]
    assert "\r" not in proc.stderr and 1 <= len(lines) <= 5, proc.stderr
    assert "100% of 1 (1 finished" in lines[-1]


def test_a_builtin_algorithm_with_two_processes_from_a_script(tmp_path):
    proc = _run_script(tmp_path, """\
        import numpy as np, tifffile
        from pathlib import Path
        from mesmerize_widgets.algorithms import RunContext, get_algorithm
        from mesmerize_widgets.sim import simulate_2p

        sim = simulate_2p(n_frames=120, dims=(64, 64), n_neurons=8, max_shift=2, seed=1)
        tifffile.imwrite("m.tif", np.asarray(sim.movie, np.float32))
        outputs = {}
        for algo, main in (("mcorr", {"max_shifts": (4, 4), "pw_rigid": True, "strides": (32, 32),
                                      "overlaps": (16, 16)}),
                           ("cnmf", {"rf": 12, "stride": 6, "K": 4, "gSig": (3, 3), "p": 1})):
            a = get_algorithm(algo)
            out = Path(algo); out.mkdir()
            ctx = RunContext(input_path=Path("m.tif").resolve(), params=a.schema.validate({"main": main}),
                             output_dir=out.resolve(), prefix="item", n_processes=2)
            outputs[algo] = a.run_function("builtin")(ctx)
        print("finished", sorted(outputs["cnmf"]))
    """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("finished") == 1
    assert "cnmf-hdf5-path" in proc.stdout
    assert [p for p in _problems(proc) if "Warning" not in p] == []


def test_log_progress_is_a_line_per_finish_or_interval():
    import io

    from mesmerize_widgets.runner.dask_runner import _Lines

    out = io.StringIO()
    p = _Lines(total=4, every=3600, stream=out)
    for i in range(200):  # a wait loop polls every 0.2 s: 200 polls, one item finishing
        p.show(0.5 + i / 400, 1 if i >= 100 else 0, "x")
    assert len(out.getvalue().splitlines()) == 2
    p.every = 0
    p.show(4, 4, "4 finished")
    assert out.getvalue().splitlines()[-1].startswith("items: 100% of 4 (4 finished)")


def _kill_holding_script(tmp_path: Path, body: str, expect: dict[str, int]) -> None:
    """Run ``body`` (which prints "ready" and sleeps), check its process tree holds at least
    ``expect[word]`` processes whose command line has ``word``, kill it with SIGKILL and check
    that the whole tree ends."""
    import signal

    import psutil

    script = tmp_path / "hold.py"
    script.write_text(textwrap.dedent(body) + "print('ready', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, script.name], cwd=tmp_path, env=_script_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        tree = psutil.Process(proc.pid).children(recursive=True)
        for word, n in expect.items():
            assert sum(word in " ".join(p.cmdline()) for p in tree) >= n, (word, [p.cmdline()[:4] for p in tree])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, [p.cmdline()[:4] for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_default_cluster_does_not_outlive_a_killed_script(tmp_path):
    """Its scheduler and workers are subprocesses: a script killed with SIGKILL (the OOM killer,
    a scheduler's time limit) must not leave them running."""
    _kill_holding_script(tmp_path, """\
        import time
        from mesmerize_widgets.runner import default_client
        default_client(2)
    """, {"dask": 3})  # the scheduler and 2 nannies


def test_a_killed_job_leaves_no_worker_processes(tmp_path):
    """A fit's pool (forked from Python's forkserver) and mcorr's (spawned) wait for tasks on
    a queue they hold open themselves: a job killed with SIGKILL (the OOM killer, a cancelled
    item) left them, and the forkserver, waiting for ever, each with its memory."""
    _kill_holding_script(tmp_path, """\
        import time
        from mesmerize_widgets.processes import Workers, spawn_pool
        fit = Workers.start(2, preload=("mesmerize_widgets.algorithms.cnmf.core",))
        assert list(fit.map(abs, [-1, -2])) == [1, 2]
        mcorr = spawn_pool(1)
    """, {"forkserver": 3, "spawn_main": 1})  # the server and its 2 forks; mcorr's worker


def test_items_share_the_cores_instead_of_each_taking_all(monkeypatch):
    """Two items at a time on 2 cores: one BLAS/OpenMP/OpenCV thread each (each library would
    start one per core, and four spinning threads on two cores ran slower than one item at a
    time); a variable the user set is kept."""
    import os

    from mesmerize_widgets.processes import THREAD_VARS, thread_budget

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert thread_budget(2, {}) == dict.fromkeys(THREAD_VARS, "1")
    assert thread_budget(1, {}) == dict.fromkeys(THREAD_VARS, "2")
    assert "OMP_NUM_THREADS" not in thread_budget(2, {"OMP_NUM_THREADS": "8"})
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert thread_budget(3, {})["OPENBLAS_NUM_THREADS"] == "5"
    # under a memory limit the BLAS pools get one thread (their per-thread buffers count), the
    # others their share; the user's own setting is still kept
    limited = thread_budget(3, {"MKL_NUM_THREADS": "4"}, memory_limited=True)
    assert limited["OPENBLAS_NUM_THREADS"] == limited["OMP_NUM_THREADS"] == "1"
    assert limited["OPENCV_FOR_THREADS_NUM"] == "5" and "MKL_NUM_THREADS" not in limited


def test_an_item_process_imports_only_what_it_runs(tmp_path):
    """Every item starts a Python process: importing pandas, Dask and the accessors there cost
    most of a second per item (bench_runner.py), for nothing an item process uses."""
    code = ("import sys, mesmerize_widgets.runner.item_process\n"
            "from mesmerize_widgets.algorithms import get_algorithm\n"
            "get_algorithm('summary').run_function('builtin')\n"
            "print([m for m in ('pandas', 'distributed', 'mesmerize_widgets.accessors', 'scipy') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], env=_script_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_star_import_as_mesmerize_core_notebooks_do(tmp_path):
    """``from mesmerize_widgets import *`` gives every public name, and a batch has its accessors."""
    proc = _run_script(tmp_path, """
        from mesmerize_widgets import *
        set_parent_raw_data_path(".")
        df = create_batch("b")
        print(type(df).__name__, hasattr(df, "caiman"), callable(load_batch), get_default_backend())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["DataFrame", "True", "True", "auto"]
