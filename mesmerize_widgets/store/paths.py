"""Where files live: the parent raw data path, and paths stored relative to it or to the batch.

A path is stored as ``(root, relative)`` with ``root`` one of ``"raw"`` (the parent raw data
path), ``"batch"`` (the batch directory) or ``"abs"`` (neither applies). Only ``abs`` ties a
batch to one machine; the other two let a batch directory move to another computer and still
open, once the user points ``set_parent_raw_data_path`` at the data there.
"""

from __future__ import annotations

import os
from pathlib import Path

_parent_raw_data_path: Path | None = None

RAW, BATCH, ABS = "raw", "batch", "abs"


def set_parent_raw_data_path(path: str | os.PathLike) -> Path:
    """Set the top directory of the raw data; input movies are stored relative to it."""
    global _parent_raw_data_path
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ValueError(f"parent raw data path is not an existing directory: {p}")
    _parent_raw_data_path = p.resolve()
    return _parent_raw_data_path


def get_parent_raw_data_path() -> Path | None:
    return _parent_raw_data_path


def require_parent_raw_data_path() -> Path:
    if _parent_raw_data_path is None:
        raise ValueError(
            "the parent raw data path is not set: call "
            "mesmerize_widgets.set_parent_raw_data_path('/path/to/raw/data') first"
        )
    return _parent_raw_data_path


def _relative_to(path: Path, base: Path | None) -> str | None:
    if base is None:
        return None
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return None


def to_stored(path: str | os.PathLike, batch_dir: Path) -> tuple[str, str]:
    """Split an absolute or relative path into the (root, relative) pair the store keeps.

    A relative path is taken relative to the parent raw data path when it is set, as
    mesmerize-core does.
    """
    p = Path(path).expanduser()
    if not p.is_absolute():
        base = _parent_raw_data_path if _parent_raw_data_path is not None else Path.cwd()
        p = base / p
    p = Path(os.path.abspath(p))
    rel = _relative_to(p, _parent_raw_data_path)
    if rel is not None:
        return RAW, rel
    rel = _relative_to(p, Path(os.path.abspath(batch_dir)))
    if rel is not None:
        return BATCH, rel
    return ABS, p.as_posix()


def resolve(root: str, rel: str, batch_dir: Path) -> Path:
    """Turn a stored (root, relative) pair back into an absolute path on this machine."""
    if root == RAW:
        return require_parent_raw_data_path() / rel
    if root == BATCH:
        return Path(batch_dir) / rel
    return Path(rel)
