"""Keeping a user's DataFrame in step with the store, in place.

mesmerize-core notebooks hold one ``df`` and expect ``df.caiman.add_item(...)`` to change it;
these helpers apply a store change to that same object.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ItemNotFoundError
from ..store import COLUMNS, BatchStore
from ..store.batch_store import frame_from_columns
from ..store.json_column import JSONColumn


def store_of(obj: pd.DataFrame | pd.Series) -> BatchStore:
    path = obj.attrs.get("batch_path")
    if not path:
        raise ValueError(
            "this DataFrame is not a batch: create it with create_batch(path) or load_batch(path)"
        )
    return BatchStore.cached(path)


def append_record(df: pd.DataFrame, rec: dict[str, Any]) -> None:
    """Add ``rec`` as the last row of ``df`` itself.

    pandas' own enlargement (``df.loc[n] = row``) re-infers every column and costs ~10 ms at
    10,000 rows; building the grown columns directly and swapping them in costs a few copies of
    pointers. A frame a user reshaped (other columns, another index) takes pandas' path.
    """
    n = len(df.index)
    if list(df.columns) != COLUMNS or not isinstance(df.index, pd.RangeIndex) or not df.index.equals(pd.RangeIndex(n)):
        df.loc[n] = [rec[c] for c in COLUMNS]
        return
    data: dict[str, Any] = {}
    for c in COLUMNS:
        old = df[c].array  # the stored array (a view under copy-on-write), read only
        if isinstance(old, JSONColumn):
            data[c] = JSONColumn._concat_same_type([old, JSONColumn._from_sequence([rec[c]])])
        else:
            values = np.asarray(old)
            grown = np.empty(n + 1, dtype=values.dtype if c == "progress" else object)
            grown[:n] = values
            grown[n] = rec[c]
            data[c] = grown
    replace_contents(df, frame_from_columns(data, Path(df.attrs["batch_path"]), consolidate=False))


def replace_contents(df: pd.DataFrame, new: pd.DataFrame) -> None:
    """Make ``df`` itself hold ``new``'s rows and columns (its ``attrs`` stay); ``new`` shares
    them from then on, so it is a temporary.

    The one use of a private pandas method: pandas has no public way to give a frame new rows
    in place but ``df.loc[n] = row``, ~10 ms at 10,000 rows. ``DataFrame._update_inplace`` is
    what pandas' own ``inplace=True`` methods (``drop``, ``reset_index``, ...) end with;
    ``tests/test_accessors.py::test_pandas_replaces_a_frames_contents_in_place`` fails if a
    pandas release changes it.
    """
    df._update_inplace(new)


def drop_row(df: pd.DataFrame, position: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3.1 deprecates inplace; in-place is the contract here
        df.drop(index=df.index[position], inplace=True)
        df.reset_index(drop=True, inplace=True)


def set_row(df: pd.DataFrame, uuid: str, rec: dict[str, Any]) -> None:
    """Refresh the row of ``uuid`` from a store record (after a run, an edit)."""
    hits = df.index[df["uuid"] == uuid]
    for idx in hits:
        for c in COLUMNS:
            df.at[idx, c] = rec[c]


def refresh_all(df: pd.DataFrame, store: BatchStore) -> None:
    for rec in store.items():
        set_row(df, rec["uuid"], rec)


def position_of(df: pd.DataFrame, index: Any) -> int:
    """An int position, a uuid string or a UUID -> the row's position in ``df``."""
    if isinstance(index, (int,)) and not isinstance(index, bool):
        n = len(df.index)
        if not -n <= index < n:
            raise ItemNotFoundError(f"no item at index {index}: the batch has {n} items")
        return index % n
    hits = [i for i, u in enumerate(df["uuid"]) if u == str(index)]
    if not hits:
        raise ItemNotFoundError(f"no item with uuid {str(index)!r} in this batch")
    return hits[0]


class ItemAccessor:
    """What every row accessor starts from: the row, its store and its uuid."""

    def __init__(self, row: pd.Series):
        self._row = row

    @property
    def store(self) -> BatchStore:
        return store_of(self._row)

    @property
    def uuid(self) -> str:
        return str(self._row["uuid"])
