"""Peak anonymous memory of a child process and its descendants, per stage the child announces.

Shared by bench_scale and bench_paths. Anonymous memory (what the processes allocated, not the
pages of the files they map, each page counted once: :class:`TreeAnon`) is what grows when a
path holds a movie in memory; reading a memmap does not count. The child prints ``STAGE <name>``
lines to say what it is doing and one ``RESULT <json>`` line with its figures.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil

STAGE = "STAGE "
RESULT = "RESULT "


def _status_anon(pid: int) -> int:
    """RssAnon of process ``pid`` (0 once it is gone): a counter, cheap to read."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"^RssAnon:\s+(\d+)", text, re.M)
    return int(m.group(1)) * 1024 if m else 0


def _shared_anon(pid: int) -> int | None:
    """Anonymous bytes that process ``pid`` shares with others beyond its share of them
    (Anonymous - Pss_Anon of smaps_rollup); None where the kernel does not say."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    anon = re.search(r"^Anonymous:\s+(\d+)", text, re.M)
    pss = re.search(r"^Pss_Anon:\s+(\d+)", text, re.M)
    return max(0, int(anon.group(1)) - int(pss.group(1))) * 1024 if anon and pss else None


class TreeAnon:
    """Anonymous bytes held by a process and its descendants, each page counted once.

    A forked worker shares its parent's pages until either writes one (copy on write); RssAnon
    counts such a page in every process holding it, Pss_Anon divides it among them, so the
    tree's Pss_Anon is what it holds (CaImAn's pool and our fit's are forked). But Pss_Anon
    walks every page table of the process (20 ms for one mapping a 5 GB movie), so all of them
    are read at most ``overhead`` of the time, and a process the first time it is seen; each
    sample is every process's RssAnon less its shared part at its last reading."""

    def __init__(self, proc: psutil.Process, overhead: float = 0.05):
        self.proc = proc
        self.overhead = overhead
        self.shared: dict[int, int] = {}
        self.next_rollup = 0.0

    def sample(self) -> int:
        try:
            pids = [self.proc.pid] + [c.pid for c in self.proc.children(recursive=True)]
        except psutil.Error:
            return 0
        now = time.monotonic()
        # every process when the time has come; a new one (a fork shares all it holds) at once
        due = pids if now >= self.next_rollup else [p for p in pids if p not in self.shared]
        t0 = time.perf_counter()
        for pid in due:
            shared = _shared_anon(pid)
            self.shared[pid] = 0 if shared is None else shared
        if len(due) == len(pids):
            self.next_rollup = now + (time.perf_counter() - t0) / self.overhead
        return sum(max(0, _status_anon(pid) - self.shared.get(pid, 0)) for pid in pids)


def run_sampled(argv: list[str], timeout: float, interval: float = 0.05) -> dict[str, Any]:
    """Run ``argv``, sampling its tree every ``interval`` s; its RESULT plus ``peaks`` (stage -> bytes).

    On a non-zero exit, a missing RESULT or the timeout the answer is ``{"error": ...}``.
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    stage = ["start"]
    result: dict[str, Any] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(STAGE):
                stage[0] = line[len(STAGE):].strip()
            elif line.startswith(RESULT):
                result.update(json.loads(line[len(RESULT):]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    tree = TreeAnon(psutil.Process(proc.pid))
    peaks: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return {"error": f"killed after {timeout:.0f} s"}
        peaks[stage[0]] = max(peaks.get(stage[0], 0), tree.sample())
        time.sleep(interval)
    reader.join(5)
    if proc.returncode or not result:
        return {"error": f"exit code {proc.returncode}"}
    result["peaks"] = peaks
    return result
