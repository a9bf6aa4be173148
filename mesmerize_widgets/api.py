"""``create_batch`` and ``load_batch``: a batch directory in, a DataFrame out.

For mesmerize-core notebooks, a path ending in ``.pickle`` names the batch directory it sits in:
``create_batch(".../mesmerize-batch/batch.pickle")`` creates the batch in ``mesmerize-batch/``,
and ``load_batch`` of an existing mesmerize-core pickle converts it there once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from . import accessors  # noqa: F401  (registers the .caiman accessors)
from .errors import NotABatchError
from .runner import reap_stale
from .store import BatchStore
from .store.batch_store import DB_NAME, records_to_dataframe


def _batch_dir(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if p.suffix in (".pickle", ".pkl"):
        return p.parent
    if p.name == DB_NAME:
        return p.parent
    return p


def create_batch(path: str | os.PathLike, remove_existing: bool = False) -> pd.DataFrame:
    """Create an empty batch directory and return its (empty) DataFrame."""
    batch_dir = _batch_dir(path)
    if (batch_dir / DB_NAME).exists():
        if not remove_existing:
            raise FileExistsError(
                f"a batch already exists at {batch_dir}; load it with load_batch, or pass "
                "remove_existing=True to start over"
            )
        for suffix in ("", "-wal", "-shm"):
            (batch_dir / f"{DB_NAME}{suffix}").unlink(missing_ok=True)
    store = BatchStore.create(batch_dir)
    return records_to_dataframe([], store.path)


def load_batch(path: str | os.PathLike) -> pd.DataFrame:
    """Open a batch directory; a mesmerize-core ``.pickle`` is converted beside it first."""
    p = Path(path).expanduser()
    batch_dir = _batch_dir(p)
    if not (batch_dir / DB_NAME).exists():
        if p.suffix in (".pickle", ".pkl") and p.is_file():
            from .store.legacy import import_legacy_batch

            import_legacy_batch(p)
        elif p.is_file() and p.suffix not in (".pickle", ".pkl"):
            raise NotABatchError(f"{p} is not a batch: pass a batch directory or a mesmerize-core .pickle")
        elif not batch_dir.exists():
            raise FileNotFoundError(f"no batch at {batch_dir}: the path does not exist")
    store = BatchStore(batch_dir)
    reap_stale(store)
    return store.dataframe()
