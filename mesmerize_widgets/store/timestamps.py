"""The timestamps a batch records (``added_time``, ``ran_time``), in one format everywhere."""

from __future__ import annotations

from datetime import datetime


def now_iso() -> str:
    return datetime.now().isoformat(timespec="seconds")
