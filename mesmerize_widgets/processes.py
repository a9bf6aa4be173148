"""Worker processes that never re-run the user's script.

Python's "spawn" start method runs the parent's ``__main__`` again in every child: a plain
script without an ``if __name__ == "__main__":`` guard would start its whole analysis anew in
each worker and die there ("An attempt has been made to start a new process before the current
process has finished its bootstrapping phase"). Notebooks have no main file, which is why they
never saw it. Our workers need nothing from ``__main__`` (they run our own functions), so the
pools here hide it from multiprocessing while their workers start, and the default Dask cluster
starts its workers with ``dask spec`` subprocesses (see ``runner.dask_runner``). A fit's
workers are forked from Python's "forkserver", which imports what they run once for all of
them (:class:`Workers`). Every pool worker ends with the process that started it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

_lock = threading.RLock()
_MISSING = object()

#: the thread pools of BLAS, OpenMP, numexpr and OpenCV, each sized by its own variable, which
#: a process reads when it starts
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "OPENCV_FOR_THREADS_NUM")


#: the BLAS pools among them (OpenMP's for an OpenMP build of OpenBLAS): OpenBLAS reserves a
#: buffer per thread when it loads, in each copy loaded (numpy's, SciPy's and OpenCV's wheels
#: each bundle their own)
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_budget(n_items: int, env: dict[str, str], cores: int | None = None,
                  memory_limited: bool = False) -> dict[str, str]:
    """Thread-pool sizes for items running ``n_items`` at a time on ``cores`` (this machine's).

    Each library sizes its pool to every core by default, so two items on two cores run four
    or more busy threads and, spinning on each other, finish later than one after the other
    (measured with bench_runner.py: 8 rigid mcorr items, 0.86x with 2 workers; 1.64x with this
    budget). Variables the user set are kept.

    ``memory_limited``: the BLAS pools get one thread, as Dask gives its workers. A memory
    limit (RLIMIT_DATA) counts what a process reserves, and each further BLAS thread reserved
    216 MB before any work (the three OpenBLAS copies an item loads): a CNMF item alone on
    2 cores held 367 MB at its start, against 151 MB with one thread, so what it could run
    under a limit depended on how many items shared the machine.
    """
    per_item = str(max(1, (cores or os.cpu_count() or 1) // max(1, n_items)))
    budget = {k: per_item for k in THREAD_VARS if k not in env}
    if memory_limited:
        budget.update({k: "1" for k in BLAS_VARS if k in budget})
    return budget


def private_memory() -> int:
    """Bytes of private memory this process has reserved (VmData: what RLIMIT_DATA counts);
    0 where /proc is not there."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def node_cores() -> int:
    """The cores this process may use: its SLURM job's share, else its CPU affinity."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set while inside, for the processes started there (they
    copy it when they start); each variable is put back as it was on exit."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """While inside, children started with "spawn" or "forkserver" do not import ``__main__``.

    multiprocessing re-imports the main module by ``__spec__.name`` (``python -m``) or by
    ``__file__`` (``python script.py``); both are set aside here and put back on exit.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _lock:
        spec = getattr(main, "__spec__", None)
        path = main.__dict__.get("__file__", _MISSING)
        if spec is None and path is _MISSING:  # an interactive session or a notebook
            yield
            return
        main.__spec__ = None
        if path is not _MISSING:
            del main.__dict__["__file__"]
        try:
            yield
        finally:
            main.__spec__ = spec
            if path is not _MISSING:
                main.__dict__["__file__"] = path


def spawn_pool(max_workers: int, initializer: Callable[..., Any] | None = None,
               initargs: tuple = (), threads_per_worker: int | None = None,
               ready: bool = True) -> ProcessPoolExecutor:
    """A "spawn" ProcessPoolExecutor whose ``max_workers`` processes are all started on return.

    The executor starts a worker per submission until it has ``max_workers`` (never later
    unless one dies, which breaks the pool anyway), so starting them all here, with the main
    module hidden, means no worker of it ever re-runs the caller's script. With
    ``threads_per_worker`` the workers' thread pools (``THREAD_VARS``) start that size. With
    ``ready=False`` it returns while the workers are still importing, so the caller's own work
    overlaps their start (a second or two each).
    """
    ex = ProcessPoolExecutor(max_workers=max_workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init, initargs=(initializer, initargs))
    started = _start_processes(ex, max_workers, threads_per_worker)
    if ready:
        wait(started)
    return ex


def _start_processes(ex: ProcessPoolExecutor, n: int, threads_per_worker: int | None) -> list[Future]:
    """Start the ``n`` processes of ``ex`` now, with the main module hidden and, with
    ``threads_per_worker``, their thread pools (``THREAD_VARS``) that size (for a forkserver:
    the server's, which its forks keep)."""
    threads = {} if threads_per_worker is None else dict.fromkeys(THREAD_VARS, str(threads_per_worker))
    with main_module_hidden(), environment(threads):
        # each submission finds no idle worker (a process takes a while to start) and adds one;
        # the process itself is started within submit
        return [ex.submit(time.sleep, 0.01) for _ in range(n)]


def _worker_init(initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    """Every pool worker's start: it ends when the process that started it ends, then the
    caller's ``initializer``. A pool's workers wait for tasks on a queue that they, too, hold
    open, so a job killed outright (the kernel's OOM killer, ``kill -9``, a lost node) left
    them waiting for ever, each holding its memory."""
    parent = mp.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True, name="parent-watch").start()
    if initializer is not None:
        initializer(*initargs)


def _exit_with(sentinel: int) -> None:
    from multiprocessing.connection import wait as wait_ready

    wait_ready([sentinel])  # readable once the parent's end of it is closed: the parent is gone
    os._exit(1)


def _import_all(modules: tuple[str, ...]) -> None:
    for m in modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(m)


@dataclass
class Workers:
    """A job's pool of single-threaded worker processes and its size, shared by the steps of the
    job that can spread their work (a pool per step would start its processes again each time).

    Where the platform has it, the workers are forked from a "forkserver" process that imports
    the modules they need once, as the job's first steps run, so no worker imports anything:
    with "spawn" each worker imported them again (our modules, then OASIS's scipy.signal), about
    a second of CPU time each that a 2-core machine took from the job. The server is Python's,
    one per process, so a later job's workers start at once."""

    pool: ProcessPoolExecutor
    n: int
    _starting: threading.Thread | None = None
    _failed: list[BaseException] = field(default_factory=list)

    @classmethod
    def start(cls, n: int, preload: str | tuple[str, ...] = ()) -> Workers:
        """``n`` workers, started without waiting for them, that have imported the modules
        ``preload`` (those that cannot be imported are left out)."""
        modules = (preload,) if isinstance(preload, str) else tuple(preload)
        if "forkserver" not in mp.get_all_start_methods():
            return cls(spawn_pool(n, _import_all, (modules,), threads_per_worker=1, ready=False), n)
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(modules))  # taken by the server when it starts
        workers = cls(ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init,
                                          initargs=(_import_all, (modules,))), n)
        # each process start waits for the server's imports: done by a thread, the caller goes on
        workers._starting = threading.Thread(target=workers._launch, daemon=True, name="workers-start")
        workers._starting.start()
        return workers

    def _launch(self) -> None:
        try:
            _start_processes(self.pool, self.n, threads_per_worker=1)
        except BaseException as e:  # noqa: BLE001 - given to the caller's next call
            self._failed.append(e)

    def _ready(self) -> None:
        """Wait until every process is started (a submission before would start one more, with
        the caller's main module visible to it)."""
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        if self._failed:
            raise RuntimeError("the worker processes could not be started") from self._failed[0]

    def map(self, fn: Callable[..., Any], *iterables: Any) -> Iterator[Any]:
        self._ready()
        return self.pool.map(fn, *iterables)

    def close(self) -> None:
        if self._starting is not None:
            self._starting.join()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def signal_on_parent_death(sig: int) -> None:
    """Linux: this process receives ``sig`` when its parent dies (elsewhere: nothing).

    For processes whose parent does not pass signals on: an item process under its monitor,
    or the app under ``make demo`` (make exits on SIGTERM and leaves its children running).
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call: too late for the kernel to tell us
        os.kill(os.getpid(), sig)
