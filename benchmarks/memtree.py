"""Peak anonymous memory of a child process and its descendants, per stage the child announces.

Shared by bench_scale and bench_paths. Anonymous memory (what the processes allocated, not the
pages of the files they map; see :func:`anon_bytes`) is what grows when a path holds a movie in
memory; reading a memmap does not count. The child prints ``STAGE <name>`` lines to say what it is doing and one
``RESULT <json>`` line with its figures.
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


def anon_bytes(pid: int) -> int:
    """Resident anonymous bytes of process ``pid``, its share of those it shares (0 once it is
    gone). A forked worker shares its parent's pages until either writes them (copy on write);
    RssAnon counts such a page in every process holding it, Pss_Anon divides it among them, so
    a tree's sum is what it holds: CaImAn's pool and our fit's are forked. RssAnon where the
    kernel has no smaps_rollup."""
    for name, key in (("smaps_rollup", "Pss_Anon"), ("status", "RssAnon")):
        try:
            text = Path(f"/proc/{pid}/{name}").read_text()
        except OSError:
            continue
        m = re.search(rf"^{key}:\s+(\d+)", text, re.M)
        if m:
            return int(m.group(1)) * 1024
    return 0


def tree_anon(proc: psutil.Process) -> int:
    """Anonymous bytes of ``proc`` and all its descendants (worker pools included)."""
    try:
        kids = proc.children(recursive=True)
    except psutil.Error:
        return 0
    return anon_bytes(proc.pid) + sum(anon_bytes(c.pid) for c in kids)


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
    ps = psutil.Process(proc.pid)
    peaks: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return {"error": f"killed after {timeout:.0f} s"}
        peaks[stage[0]] = max(peaks.get(stage[0], 0), tree_anon(ps))
        time.sleep(interval)
    reader.join(5)
    if proc.returncode or not result:
        return {"error": f"exit code {proc.returncode}"}
    result["peaks"] = peaks
    return result
