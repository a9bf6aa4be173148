"""A running onacid item's live snapshot as a viewer polls it: where it is now, and one line
saying how far the item got (model side: no widgets, no fastplotlib).

Finding the snapshot needs the store's statuses and the runner's temporary folder, so it lives
here and not beside the format (:mod:`mesmerize_widgets.algorithms.onacid.live`), which the
run function writes without knowing who runs it. While an item runs, its snapshot is in
``{batch}/.{uuid}.tmp-{run_id}`` (renamed to ``{batch}/{uuid}`` on success); one that does not
exist yet, or vanishes because the item just finished, is ``None``, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..algorithms.onacid.live import LIVE_SUFFIX, contours_of, read_live, try_read_live
from ..runner.job import run_tmp_dir
from ..store import ACTIVE, BatchStore

__all__ = ["ACTIVE", "LiveState", "contours_of", "live_label", "live_snapshot_path", "live_state", "read_live",
           "try_read_live"]


def live_snapshot_path(store: BatchStore, rec: dict[str, Any]) -> Path | None:
    """Where the item's live snapshot is now: the run's temp folder while active, else the output folder."""
    uuid = rec["uuid"]
    if rec.get("status") in ACTIVE:
        run_id = rec.get("run_id")
        return None if not run_id else run_tmp_dir(store.path, uuid, run_id) / f"{uuid}{LIVE_SUFFIX}"
    rel = (rec.get("outputs") or {}).get("live-path")
    if rel:
        p = Path(rel)
        return p if p.is_absolute() else Path(store.path) / p
    return Path(store.item_dir(uuid)) / f"{uuid}{LIVE_SUFFIX}"


@dataclass
class LiveState:
    """One poll of an item: its record's status and progress, and the snapshot (None: none yet)."""

    status: str
    progress: float | None
    snapshot: dict[str, Any] | None = None
    path: Path | None = None
    error: str | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def key(self) -> tuple[int, int, int] | None:
        """Changes whenever the snapshot does (frame, epoch, number of components)."""
        s = self.snapshot
        return None if s is None else (s["epoch"], s["frame"], s["n_components"])


def live_state(store: BatchStore, uuid: str) -> LiveState:
    """Read the item's record and, while it is active, its live snapshot."""
    rec = store.get(uuid)
    status = rec["status"]
    state = LiveState(status=status, progress=rec.get("progress"), error=rec.get("error"))
    if status in ACTIVE:
        state.path = live_snapshot_path(store, rec)
        state.snapshot = try_read_live(state.path)
    return state


def live_label(state: LiveState) -> str:
    """One line for the user: ``running: frame 640/2000, 37 components`` (or that it is waiting)."""
    s = state.snapshot
    if state.status == "queued":
        return "queued: waiting for a worker"
    if s is None:
        return f"{state.status}: waiting for first components"
    epoch = f" (epoch {s['epoch'] + 1})" if s["epoch"] > 0 else ""
    return f"{state.status}: frame {s['frame']}/{s['n_frames']}{epoch}, {s['n_components']} components"
