"""A running onacid item's live snapshot: its format, writing and reading (model side: no
widgets, no fastplotlib).

While an item runs, its outputs are in the runner's temporary folder
``{batch}/.{uuid}.tmp-{run_id}`` (renamed to ``{batch}/{uuid}`` on success), and the builtin
backend replaces ``{uuid}_live.npz`` there with :func:`write_live` every ``live_every`` frames
(see :mod:`.builtin`). The CNMF viewer polls :func:`live_state` to draw the contours found so far;
a snapshot that does not exist yet, or vanishes because the item just finished, is ``None``,
never an error.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..cnmf.contours import footprint_contours

__all__ = ["ACTIVE", "LiveState", "contours_of", "live_label", "live_snapshot_path", "live_state", "read_live",
           "try_read_live", "write_live"]

#: statuses of an item whose live snapshot may still change
ACTIVE = ("queued", "running")
LIVE_SUFFIX = "_live.npz"


def write_live(path: Path, A: sp.csc_matrix, dims: tuple[int, int], frame: int, epoch: int, n_frames: int) -> None:
    """Replace the snapshot atomically (temporary file + os.replace): a reader never sees half a file.

    It holds ``A_data``, ``A_indices``, ``A_indptr``, ``A_shape`` (CSC, Fortran pixel order,
    unit-norm columns), ``dims``, ``n_components``, ``frame`` (frames processed in this epoch),
    ``epoch`` and ``n_frames``.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, A_data=A.data.astype(np.float32), A_indices=A.indices, A_indptr=A.indptr,
                     A_shape=np.array(A.shape), dims=np.array(dims), n_components=A.shape[1],
                     frame=frame, epoch=epoch, n_frames=n_frames)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_live(path: str | os.PathLike) -> dict[str, Any]:
    """The live snapshot as ``{"A": csc, "dims", "n_components", "frame", "epoch", "n_frames"}``."""
    with np.load(path) as z:
        A = sp.csc_matrix((z["A_data"], z["A_indices"], z["A_indptr"]), shape=tuple(z["A_shape"]))
        return {"A": A, "dims": tuple(int(d) for d in z["dims"]), "n_components": int(z["n_components"]),
                "frame": int(z["frame"]), "epoch": int(z["epoch"]), "n_frames": int(z["n_frames"])}


def try_read_live(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """:func:`read_live`, or None when there is no snapshot (yet, or any more: the item finished)."""
    if path is None:
        return None
    try:
        return read_live(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def live_snapshot_path(store: Any, rec: dict[str, Any]) -> Path | None:
    """Where the item's live snapshot is now: the run's temp folder while active, else the output folder."""
    from ...runner.job import run_tmp_dir

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


def live_state(store: Any, uuid: str) -> LiveState:
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


def contours_of(A: sp.spmatrix, dims: tuple[int, int], thr: float = 0.9,
                scale: tuple[float, float] = (1.0, 1.0)) -> tuple[list[np.ndarray], np.ndarray]:
    """The snapshot's outlines by ``row.cnmf.get_contours``'s rule; ``scale`` undoes ``ds_factor``."""
    return footprint_contours(A, dims, thr, scale)
