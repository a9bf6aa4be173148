"""Work an interrupted run can reuse: small files saved atomically in the run's checkpoint folder.

The runner gives a run a ``checkpoint_dir`` that outlives a killed process and is the same for
every attempt of one item with the same params and the same input (see ``RunContext``). An
algorithm saves each finished piece of work there (a motion-correction chunk, a CNMF patch)
with :func:`save_arrays`: written to a temporary name, fsync'ed, then renamed, so a file that
exists is complete. A piece whose file is missing or unreadable is simply done again.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a node that loses power keeps it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file others wrote into (a worker's frames) to the disk before recording it done."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_arrays(folder: Path, name: str, **arrays: np.ndarray) -> Path:
    """Save ``arrays`` as ``folder/name.npz`` so that the file is whole or absent."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.npz"
    tmp = folder / f".{name}.{os.getpid()}.partial"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(folder)
    return path


def load_arrays(folder: Path | None, name: str) -> dict[str, np.ndarray] | None:
    """The arrays saved as ``name``, or None when there is no such (readable) checkpoint."""
    if folder is None:
        return None
    path = folder / f"{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # damaged: the work is done again
        log.warning("ignoring the unreadable checkpoint %s: %s", path, e)
        return None


def report_resume(what: str, done: list[int], total: int) -> str | None:
    """Log which pieces a resumed run reuses; returns the progress message, or None if none."""
    if not done:
        return None
    log.info("resumed from checkpoint: reusing %s %s; computing the other %d of %d",
             what, done, total - len(done), total)
    return f"resumed: {len(done)} of {total} {what} done"
