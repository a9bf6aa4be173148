"""How far a running item is and how long it has left, in words: the table, the notebook bar
and the log lines of a script all say it the same way."""

from __future__ import annotations

import time
from typing import Any

#: below this fraction or this many seconds the pace says nothing yet
MIN_FRACTION = 0.01
MIN_SECONDS = 3.0


def time_left(progress: float | None, started: float | None, now: float | None = None) -> float | None:
    """Seconds left at the pace so far (``started``: epoch seconds), or None while too early."""
    if progress is None or started is None:
        return None
    elapsed = (time.time() if now is None else now) - float(started)
    if progress < MIN_FRACTION or elapsed < MIN_SECONDS or progress >= 1.0:
        return None
    return elapsed * (1.0 - progress) / progress


def format_seconds(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"1.5 h"``: the precision a wait deserves."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def running_text(rec: dict[str, Any], now: float | None = None) -> str:
    """``"42% · patch 11/25 · ~3 min left"`` for a running item's record."""
    parts = [f"{100 * float(rec.get('progress') or 0):.0f}%"]
    if rec.get("progress_message"):
        parts.append(str(rec["progress_message"]))
    left = time_left(rec.get("progress"), rec.get("started"), now)
    if left is not None:
        parts.append(f"~{format_seconds(left)} left")
    return " · ".join(parts)
