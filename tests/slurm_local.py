"""A private single-node SLURM for tests: real ``slurmctld`` and ``slurmd``, started and stopped here.

Tests of the runner on a cluster (dask-jobqueue's SLURMCluster submits each Dask worker as a job
with ``sbatch``) need a scheduler that behaves like a lab's: queueing, ``scancel``, time limits.
A mock would only repeat our assumptions, so this module starts the real daemons, as root, on this
machine alone::

    reason = missing()
    if reason:
        pytest.skip(reason)
    with LocalSlurm() as slurm:
        subprocess.run(["sbatch", "--wrap", "hostname"])  # finds the cluster through SLURM_CONF

Everything the daemons write (configuration, state, spool, logs, pid files) lives in one temporary
folder that is removed at the end, and they listen on free ports rather than SLURM's defaults, so
a system SLURM (or a second test session) is left alone. Authentication is the machine's munged:
started here (and stopped again) only where it is not running already.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the programs a run needs; the client commands are what dask-jobqueue and the tests call
DAEMONS = ("slurmctld", "slurmd", "munged")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "srun", "munge", "unmunge", "runuser")
SBIN = ("/usr/sbin", "/sbin")

MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_DIRS = (Path("/etc/munge"), Path("/var/lib/munge"), Path("/var/log/munge"), Path("/run/munge"))
MUNGE_PID = Path("/run/munge/munged.pid")


def _which(name: str) -> str | None:
    """``shutil.which`` that also looks in sbin folders (not on a plain user's PATH)."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def missing() -> str | None:
    """Why a private SLURM cannot start here (a sentence for ``pytest.skip``), or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"a private SLURM needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return f"a private SLURM needs root (slurmd starts jobs as their users); this is uid {os.geteuid()}"
    absent = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if absent:
        return (f"{', '.join(absent)} not installed (Debian: apt-get install slurm-wlm munge; "
                "`make system-deps` does it)")
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "there is no 'munge' user to run munged as (the munge package creates it)"
    return None


def _free_port() -> int:
    """A TCP port nothing listens on now (SLURM's 6817/6818 may belong to a system SLURM)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone: it has exited, its parent did not reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _stop(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM ``pid``, then SIGKILL if it has not exited within ``timeout`` seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)


def _read_pid(path: Path, timeout: float = 10.0) -> int:
    """The pid a daemon wrote to ``path`` (daemons write it a moment after they fork).

    The file can exist and still be empty: a daemon creates it, then writes the number.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(path.read_text().split()[0])
            if _alive(pid):
                return pid
        if time.monotonic() > deadline:
            raise RuntimeError(f"no live pid in {path} after {timeout:.0f} s")
        time.sleep(0.05)


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except OSError as e:
        return f"    ({e})"
    return "\n".join("    " + line for line in lines) or "    (empty)"


class LocalSlurm:
    """A one-node SLURM cluster for the life of a ``with`` block.

    Inside the block ``SLURM_CONF`` in ``os.environ`` names this cluster's ``slurm.conf``, so every
    ``sbatch``/``squeue``/``scancel`` this process starts (dask-jobqueue's included) and every job's
    process (which inherits the environment) talks to it. The previous value comes back after.

    ``conf``, ``node`` and ``partition`` say where it is, ``cpus`` and ``memory_mib`` what the node
    offers (all cores; the memory a little under the machine's); ``squeue()`` and ``scancel()``
    are the two commands tests call most; ``log_tails()`` is for failure messages.
    """

    partition = "test"

    def __init__(self, *, kill_wait: int = 5, min_job_age: int = 5, start_timeout: float = 60.0):
        self.kill_wait = kill_wait
        self.min_job_age = min_job_age
        self.start_timeout = start_timeout
        self.node = socket.gethostname().split(".")[0]  # `hostname -s`: what slurmd calls itself
        self.cpus = os.cpu_count() or 1
        total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        self.memory_mib = max(256, total_mib - max(512, total_mib // 20))  # a little under the total
        self.root: Path | None = None
        self.conf: Path | None = None
        self._pids: dict[str, int] = {}  # daemons this object started and must stop
        self._old_conf: str | None = None

    # -- start and stop ---------------------------------------------------------------------

    def __enter__(self) -> LocalSlurm:
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        self._old_conf = os.environ.get("SLURM_CONF")
        self.root = Path(tempfile.mkdtemp(prefix="mw-slurm-"))
        try:
            self._start()
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._teardown()

    def _start(self) -> None:
        assert self.root is not None
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir()
        self.conf = self.root / "slurm.conf"
        self.conf.write_text(self._conf_text())
        (self.root / "plugstack.conf").write_text("")  # not the system's (it includes its folder)
        os.environ["SLURM_CONF"] = str(self.conf)

        self._ensure_munged()
        # Both fork into the background once they have read the configuration; `-f` is explicit
        # where SLURM_CONF would do too, and the pid files are ours (see _conf_text).
        for daemon in ("slurmctld", "slurmd"):
            self._run([_which(daemon), "-f", str(self.conf)], f"starting {daemon}")
            try:
                self._pids[daemon] = _read_pid(self.root / f"{daemon}.pid")
            except RuntimeError as e:
                self._fail(f"{daemon}: {e}")
        self._wait_ready()

    def _conf_text(self) -> str:
        """The smallest slurm.conf that schedules jobs on this one machine.

        No cgroups (linuxproc tracks a job's processes by parentage, task/none binds nothing), so
        it runs in containers; memory is a consumable (CR_Core_Memory) so ``--mem`` requests are
        counted as on a lab cluster, but not enforced. ReturnToService=2 brings the node back
        after a restart without an operator. KillWait/MinJobAge are short so cancelled and
        finished jobs leave the queue within seconds, and batch_sched_delay=0 starts a batch job
        within a second of ``sbatch`` (it waited for the next 3 s scheduling pass). Ports and
        addresses are explicit: free ports, and 127.0.0.1 whatever the host name resolves to.
        """
        assert self.root is not None
        r = self.root
        return "\n".join([
            f"ClusterName=mwtest{os.getpid()}",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "ReturnToService=2",
            f"KillWait={self.kill_wait}",
            f"MinJobAge={self.min_job_age}",
            "SchedulerParameters=batch_sched_delay=0",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            f"PlugStackConfig={r / 'plugstack.conf'}",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mib} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    def _ensure_munged(self) -> None:
        """Use the machine's munged; start it (with a new key if there is none) if it is down."""
        if self._munge_works():
            return
        munge = pwd.getpwnam("munge")
        for d in MUNGE_DIRS:
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, munge.pw_uid, munge.pw_gid)
        Path("/run/munge").chmod(0o755)  # clients reach the socket through it
        if not MUNGE_KEY.exists():
            MUNGE_KEY.write_bytes(os.urandom(1024))
            os.chown(MUNGE_KEY, munge.pw_uid, munge.pw_gid)
            MUNGE_KEY.chmod(0o400)
        self._run([_which("runuser"), "-u", "munge", "--", _which("munged")], "starting munged")
        self._pids["munged"] = _read_pid(MUNGE_PID)
        if not self._munge_works():
            raise RuntimeError("munged started but `munge -n | unmunge` fails; see /var/log/munge")

    @staticmethod
    def _munge_works() -> bool:
        """Whether a credential made by munge decodes (munged up, key readable)."""
        try:
            cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=True).stdout
            subprocess.run(["unmunge"], input=cred, capture_output=True, timeout=10, check=True)
        except (subprocess.SubprocessError, OSError):
            return False
        return True

    def _wait_ready(self) -> None:
        """Until the node is idle, a one-task ``srun`` comes back and a batch job has run; else
        a RuntimeError with the logs."""
        deadline = time.monotonic() + self.start_timeout
        state = ""
        while time.monotonic() < deadline:
            for name, pid in self._pids.items():
                if not _alive(pid):
                    self._fail(f"{name} (pid {pid}) exited while starting")
            p = subprocess.run(["sinfo", "-h", "-N", "-n", self.node, "-o", "%T"],
                               capture_output=True, text=True)
            state = p.stdout.strip() or p.stderr.strip()
            if state == "idle":
                break
            time.sleep(0.2)
        else:
            self._fail(f"node {self.node} not idle after {self.start_timeout:.0f} s (sinfo: {state!r})")
        left = max(5.0, deadline - time.monotonic())
        try:
            p = subprocess.run(["srun", "-N1", "-n1", "-t", "1", "hostname"], capture_output=True,
                               text=True, timeout=left)
        except subprocess.TimeoutExpired:
            self._fail(f"`srun -N1 hostname` did not return within {left:.0f} s")
        if p.returncode != 0:
            self._fail(f"`srun -N1 hostname` failed with code {p.returncode}: {p.stderr.strip()}")
        # srun allocates at once, batch jobs wait for the scheduler's first pass (3 s after
        # slurmctld starts): one empty batch job here, so the tests' first sbatch does not wait
        p = subprocess.run(["sbatch", "--parsable", "-t", "1", "-o", "/dev/null", "--wrap", "true"],
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            self._fail(f"`sbatch --wrap true` failed with code {p.returncode}: {p.stderr.strip()}")
        if not self.wait_for_empty_queue(timeout=max(5.0, deadline - time.monotonic()), check=False):
            self._fail(f"the first batch job did not run: squeue {self.squeue()}")

    def _teardown(self) -> None:
        """Cancel what is left, stop the daemons we started (by pid), remove the folder."""
        if "slurmctld" in self._pids and _alive(self._pids["slurmctld"]):
            subprocess.run(["scancel", "--partition", self.partition],
                           capture_output=True, timeout=30)
            self.wait_for_empty_queue(timeout=self.kill_wait + 15, check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self._pids.pop(name, None)
            if pid is not None:
                _stop(pid)
        if self.conf is not None:
            self._stop_strays()
        if self._old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._old_conf
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _stop_strays(self) -> None:
        """Stop job steps that outlived slurmd: slurmstepd and the job processes it started.

        slurmstepd inherits slurmd's environment and a job's processes get SLURM_JOB_ID, so both
        carry this cluster's unique SLURM_CONF: that singles out our jobs and nothing else.
        """
        mark = f"SLURM_CONF={self.conf}".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                env = (proc / "environ").read_bytes().split(b"\0")
                is_step = os.readlink(proc / "exe").startswith(tuple(f"{d}/slurmstepd" for d in SBIN))
                if mark in env and (is_step or any(v.startswith(b"SLURM_JOB_ID=") for v in env)):
                    _stop(int(proc.name), timeout=5)

    def _run(self, cmd: list[str | None], what: str) -> None:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            self._fail(f"{what} failed with code {p.returncode}: {(p.stderr or p.stdout).strip()}")

    def _fail(self, message: str) -> None:
        raise RuntimeError(f"private SLURM did not start: {message}\n{self.log_tails()}")

    # -- for tests --------------------------------------------------------------------------

    def log_tails(self, n: int = 25) -> str:
        """The last ``n`` lines of slurmctld's and slurmd's logs, for error messages."""
        if self.root is None:
            return ""
        logs = [self.root / "log" / f"{name}.log" for name in ("slurmctld", "slurmd")]
        return "\n".join(f"{log.stem} log ({log}):\n{_tail(log, n)}" for log in logs)

    def squeue(self) -> list[dict[str, str]]:
        """The jobs in the queue now: dicts with ``id``, ``name``, ``state`` (e.g. RUNNING,
        PENDING, COMPLETING) and ``reason``."""
        p = subprocess.run(["squeue", "-h", "-o", "%i|%j|%T|%r"], capture_output=True, text=True,
                           timeout=30, check=True)
        keys = ("id", "name", "state", "reason")
        return [dict(zip(keys, line.split("|", 3), strict=True)) for line in p.stdout.splitlines()]

    def job_ids(self) -> set[str]:
        """The ids of the jobs in the queue now."""
        return {job["id"] for job in self.squeue()}

    def scancel(self, job_id: str | int, signal_name: str | None = None) -> None:
        """``scancel`` one job (or send it ``signal_name``, e.g. "TERM", with ``--full`` so the
        batch script's processes get it too)."""
        cmd = ["scancel", str(job_id)]
        if signal_name:
            cmd[1:1] = ["--full", "--signal", signal_name]
        subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)

    def wait_for_empty_queue(self, timeout: float = 30.0, check: bool = True) -> bool:
        """Wait until no job is queued, running or completing; raise (if ``check``) on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30)
            if p.returncode == 0 and not p.stdout.strip():
                return True
            time.sleep(0.2)
        if check:
            raise AssertionError(f"jobs still queued after {timeout:.0f} s: {self.squeue()}")
        return False
