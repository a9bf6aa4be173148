"""Where an item's input movie is: a stored path, or the output movie of its parent item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..algorithms import get_algorithm
from ..errors import DependencyError
from ..store import BatchStore
from ..store.paths import resolve


def parent_output_movie(batch_dir: Path, parent: dict[str, Any]) -> Path:
    """The movie a finished parent item produced (``parent``: its record, or the end record of
    its run with its uuid, item_name and algo); a clear error when there is none yet."""
    algo = get_algorithm(parent["algo"])
    key = algo.output_movie_key
    if key is None:
        raise DependencyError(f"items of algo {parent['algo']!r} produce no movie to use as an input")
    outputs = parent.get("outputs") or {}
    if parent["status"] != "done" or not outputs.get(key):
        reason = parent.get("error") or ""
        reason = f": {reason.strip().splitlines()[-1]}" if reason.strip() else ""
        raise DependencyError(
            f"parent item {parent['item_name']!r} ({parent['uuid']}) is {parent['status']}, "
            f"so it has no output movie yet{reason}"
        )
    return Path(batch_dir) / outputs[key]


def input_movie_path(store: BatchStore, rec: dict[str, Any]) -> Path:
    """The absolute path of an item's input movie on this machine."""
    if rec.get("parent_uuid"):
        return parent_output_movie(store.path, store.get(rec["parent_uuid"]))
    return resolve(rec["input_root"], rec["input_movie_path"], store.path)
