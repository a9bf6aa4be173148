"""What a compute node needs to run one item, and the record it leaves of how the run ended.

A :class:`Job` carries everything an item process needs (params, input path, output folder,
backend), so nothing on a compute node opens ``batch.sqlite``: SQLite's locking is unreliable
across hosts and on network filesystems. The node writes only into the item's folder; the end
record is written there atomically (a temporary file renamed over the old one), so a batch
whose notebook died mid-run still shows how each run ended the next time it is loaded.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..store import codec

RECORD_NAME = "run_record.json"


@dataclass
class Job:
    """One run of one item, as the submitting process resolved it."""

    batch_dir: str
    uuid: str
    run_id: str
    algo: str
    params: dict[str, Any]
    backend: str
    #: the input movie; None when it is the output of a parent item running in the same submission
    input_path: str | None
    #: ``{"uuid", "item_name", "algo"}`` of that parent
    parent: dict[str, str] | None = None
    parent_raw_data_path: str | None = None
    n_processes: int = 1
    memory_limit: int | None = None
    python: str | None = None
    env: dict[str, str] | None = field(default=None, repr=False)

    @property
    def item_dir(self) -> Path:
        return Path(self.batch_dir) / self.uuid

    @property
    def tmp_dir(self) -> Path:
        return run_tmp_dir(self.batch_dir, self.uuid, self.run_id)

    def to_json(self) -> str:
        return codec.dumps({k: v for k, v in asdict(self).items() if k != "env"})

    @classmethod
    def from_json(cls, text: str) -> Job:
        return cls(**codec.loads(text))


def run_tmp_dir(batch_dir: str | os.PathLike, uuid: str, run_id: str) -> Path:
    """Where a run writes until it succeeds; its existence marks the run as started."""
    return Path(batch_dir) / f".{uuid}.tmp-{run_id}"


def _input_fingerprint(input_path: str | None) -> list[Any]:
    """Path, size and modification time of each input file: a movie rewritten since is new input."""
    if not input_path:
        return []
    paths = sorted(glob.glob(input_path)) if any(c in input_path for c in "*?[") else [input_path]
    out: list[Any] = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([os.path.abspath(path), None, None])
    return out


def _version() -> str:
    """The installed package's version: work saved by another version is not trusted."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mesmerize-widgets")
    except PackageNotFoundError:  # a source checkout on PYTHONPATH
        return "source"


def checkpoint_key(job: Job, params: dict[str, Any]) -> str:
    """A hash of what a run's results depend on: algorithm, backend, params, input files, version."""
    what = [job.algo, job.backend, params, _input_fingerprint(job.input_path), _version()]
    text = json.dumps(what, sort_keys=True, default=repr)  # key order never changes the key
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_dir(batch_dir: str | os.PathLike, uuid: str, key: str) -> Path:
    """Where attempts of one item with one :func:`checkpoint_key` keep their finished work."""
    return Path(batch_dir) / f".{uuid}.ckpt-{key}"


def remove_checkpoints(batch_dir: str | os.PathLike, uuid: str, keep: str | None = None) -> None:
    """Remove the item's checkpoints (but the one of key ``keep``): their params or input changed,
    the item finished or was removed."""
    for path in Path(batch_dir).glob(f".{uuid}.ckpt-*"):
        if keep is None or path.name != f".{uuid}.ckpt-{keep}":
            shutil.rmtree(path, ignore_errors=True)


def write_record(folder: Path, record: dict[str, Any]) -> None:
    """Write the end record into ``folder`` so that a reader sees the old one or the new one."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RECORD_NAME}.{os.getpid()}-{time.time_ns()}"
    tmp.write_text(codec.dumps(record))
    os.replace(tmp, folder / RECORD_NAME)


def read_record(folder: Path, run_id: str | None = None) -> dict[str, Any] | None:
    """The end record in ``folder`` (of run ``run_id`` when given), or None."""
    try:
        record = codec.loads((folder / RECORD_NAME).read_text())
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or (run_id is not None and record.get("run_id") != run_id):
        return None
    return record


def remove_stale_partials(batch_dir: Path, uuid: str, keep_run: str | None = None) -> None:
    """Remove temporary folders killed runs of this item left behind (never its real output)."""
    for pattern in (f".{uuid}.tmp-*", f".{uuid}.old-*"):
        for path in batch_dir.glob(pattern):
            if keep_run is None or not path.name.endswith(f".tmp-{keep_run}"):
                shutil.rmtree(path, ignore_errors=True)


def install_output_dir(tmp: Path, final: Path) -> None:
    """Swap the finished temporary directory in; an old output is removed only afterwards."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
