"""``df.caiman`` and ``row.caiman``: mesmerize-core's accessor names over the store and runner.

Thin by design: each method finds the item, calls the store, the runner or the arrays, and
keeps the user's DataFrame in step. The logic lives in ``operations`` and below.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import runner
from ..arrays import LazyArray, open_movie
from ..errors import ItemNotFoundError
from ..store import ACTIVE, BatchStore
from ..store.batch_store import record_to_series
from . import operations
from .frame import (
    ItemAccessor,
    append_record,
    drop_row,
    position_of,
    refresh_all,
    set_row,
    store_of,
)

log = logging.getLogger(__name__)

# mesmerize-core's run(backend=...) named where to execute; here everything runs on the runner
_LEGACY_EXEC_BACKENDS = ("subprocess", "local", "local_async", "slurm")


def _split_backend(backend: str | None) -> str | None:
    if backend in _LEGACY_EXEC_BACKENDS:
        if backend == "slurm":
            warnings.warn(
                "backend='slurm' is mesmerize-core's; here pass a dask-jobqueue SLURMCluster's "
                "Client: df.caiman.run(client=Client(SLURMCluster(...)))",
                stacklevel=3,
            )
        return None
    return backend


@pd.api.extensions.register_dataframe_accessor("caiman")
class CaimanDataFrameAccessor:
    """Batch-level operations: add, remove, find, compare, run and cancel items."""

    def __init__(self, df: pd.DataFrame):
        self._df = df

    @property
    def store(self) -> BatchStore:
        return store_of(self._df)

    @property
    def path(self) -> Path:
        return self.store.path

    def _positions(self, items: Any) -> list[int]:
        """One item (int position, uuid) or several -> their positions in the DataFrame."""
        if isinstance(items, (int, str)) or not hasattr(items, "__iter__"):
            items = [items]
        return [position_of(self._df, i) for i in items]

    # -- items -------------------------------------------------------------------------------
    def add_item(
        self,
        algo: str,
        item_name: str,
        input_movie_path: Any,
        params: dict,
        *,
        backend: str | None = None,
        comments: str | None = None,
    ) -> pd.Series:
        """Add an item; ``input_movie_path`` is a movie path, or another item (row or uuid)."""
        rec = operations.add_item(
            self.store, algo, item_name, input_movie_path, params, backend=backend, comments=comments
        )
        append_record(self._df, rec)
        return self._df.iloc[-1]

    def remove_item(self, index: Any, remove_data: bool = True, safe_removal: bool = True) -> None:
        pos = position_of(self._df, index)
        operations.remove_item(
            self.store, self._df.iloc[pos]["uuid"], remove_data=remove_data, safe_removal=safe_removal
        )
        drop_row(self._df, pos)

    def remove_items(self, items: Any, *, remove_dependents: bool = False, remove_data: bool = True) -> list[str]:
        """Remove several items at once, children first; their dependents too with ``remove_dependents``.

        Checked before anything is removed: an item others take as input (without
        ``remove_dependents``) or one queued or running refuses the whole removal. Returns the
        uuids removed.
        """
        uuids = [self._df.iloc[pos]["uuid"] for pos in self._positions(items)]
        removed = operations.remove_items(self.store, uuids, remove_dependents=remove_dependents,
                                          remove_data=remove_data)
        gone = set(removed)
        for pos in reversed(range(len(self._df))):
            if self._df.iloc[pos]["uuid"] in gone:
                drop_row(self._df, pos)
        return removed

    def duplicate_item(self, index: Any, params: dict[str, Any] | None = None,
                       item_name: str | None = None) -> pd.Series:
        """Add a copy of an item with the same input and edited params; returns its row.

        ``params``: ``{"main": {...}}`` replaces the params, any other dict updates
        ``params["main"]`` (keys left out keep their value).
        """
        uuid = self._df.iloc[position_of(self._df, index)]["uuid"]
        rec = operations.duplicate_item(self.store, uuid, params, item_name)
        append_record(self._df, rec)
        return self._df.iloc[-1]

    def update_item(self, index: Any, updates: dict[str, Any]) -> None:
        """Set editable fields (item_name, comments, params) of one item, in df and store."""
        uuid = self._df.iloc[position_of(self._df, index)]["uuid"]
        bad = set(updates) - set(operations.EDITABLE)
        if bad:
            raise ValueError(f"only {operations.EDITABLE} can be updated, not {sorted(bad)}")
        store = self.store
        if "params" in updates:
            rec = store.get(uuid)
            from ..algorithms import get_algorithm

            updates = {**updates, "params": get_algorithm(rec["algo"]).schema.validate(updates["params"])}
        store.update(uuid, **updates)
        set_row(self._df, uuid, store.get(uuid))

    def uloc(self, uuid: Any) -> pd.Series:
        hits = self._df.index[self._df["uuid"] == str(uuid)]
        if not len(hits):
            raise ItemNotFoundError(f"no item with uuid {str(uuid)!r} in this batch")
        return self._df.loc[hits[0]]

    def get_params_diffs(self, algo: str, item_name: str) -> pd.DataFrame:
        return operations.params_diffs(self._df, algo, item_name)

    def get_children(self, index: Any) -> list[str]:
        return self.store.children(self._df.iloc[position_of(self._df, index)]["uuid"])

    def get_parent(self, index: Any) -> str | None:
        return self._df.iloc[position_of(self._df, index)]["parent_uuid"]

    # -- export ----------------------------------------------------------------------------------
    def export_nwb(self, folder: str | os.PathLike, items: Any = None, **kwargs: Any) -> list[Path]:
        """Each item (default: every done cnmf / cnmfe / onacid item) to ``<folder>/<uuid>.nwb``.

        Keywords as ``row.cnmf.export_nwb``; every item is checked before the first is written.
        """
        from .nwb_export import CNMF_ALGOS, export_items

        if items is None:
            recs = {r["uuid"]: r for r in self.store.items()}
            positions = [i for i, u in enumerate(self._df["uuid"])
                         if recs[u]["algo"] in CNMF_ALGOS and recs[u]["status"] == "done"]
        else:
            positions = self._positions(items)
        return export_items(folder, [self._df.iloc[p] for p in positions], **kwargs)

    # -- persistence ---------------------------------------------------------------------------
    def reload_from_disk(self) -> pd.DataFrame:
        """A fresh DataFrame of the batch as it is on disk now (other notebooks' changes too)."""
        store = self.store
        runner.reap_stale(store)
        return store.dataframe()

    def save_to_disk(self, max_index_diff: int = 0) -> None:
        """Every change is already on disk; this writes cells edited directly in ``df``."""
        operations.save_edits(self.store, self._df)

    # -- running -------------------------------------------------------------------------------
    def run(
        self,
        items: Any = None,
        client: Any = None,
        max_workers: int | None = None,
        *,
        backend: str | None = None,
        wait: bool = True,
        progress: bool = True,
        memory_limit: int | None = None,
    ) -> runner.RunHandle:
        """Run many items at once on Dask; default: every item without a result yet."""
        store = self.store
        if items is None:
            live = {r["uuid"]: r["status"] for r in store.items()}
            uuids = [u for u in self._df["uuid"] if live.get(u) not in ("done", *ACTIVE)]
        else:
            uuids = [self._df.iloc[pos]["uuid"] for pos in self._positions(items)]
        handle = runner.submit(store, uuids, backend=_split_backend(backend), client=client,
                               max_workers=max_workers, memory_limit=memory_limit)
        refresh_all(self._df, store)
        if wait:
            handle.wait(progress=progress)
            refresh_all(self._df, store)
        return handle

    def cancel(self, items: Any = None) -> dict[str, str]:
        """Cancel queued or running items (default: all of this batch's)."""
        store = self.store
        if items is None:
            uuids = list(self._df["uuid"])
        else:
            uuids = [self._df.iloc[pos]["uuid"] for pos in self._positions(items)]
        out = runner.cancel(store, uuids)
        refresh_all(self._df, store)
        return out


@pd.api.extensions.register_series_accessor("caiman")
class CaimanSeriesAccessor(ItemAccessor):
    """Item-level operations on one row: run it, cancel it, read its input and summary images."""

    def record(self) -> dict[str, Any]:
        """The item as the store has it now (status and progress are live)."""
        return self.store.get(self.uuid)

    def refresh(self) -> pd.Series:
        store = self.store
        return record_to_series(store.get(self.uuid), store.path, name=self._row.name)

    # -- running -------------------------------------------------------------------------------
    def run(self, backend: str | None = None, wait: bool = True, **kwargs: Any) -> runner.RunHandle:
        """Run this item in a worker process; ``backend`` 'builtin', 'caiman' or 'auto'."""
        store = self.store
        handle = runner.submit(store, [self.uuid], backend=_split_backend(backend),
                               client=kwargs.pop("client", None), max_workers=kwargs.pop("max_workers", None),
                               memory_limit=kwargs.pop("memory_limit", None))
        progress = kwargs.pop("progress", True)
        if kwargs:
            log.info("ignoring mesmerize-core run options %s", sorted(kwargs))
        if wait:
            handle.wait(progress=progress)
            self._update_row(store)
        return handle

    def cancel(self) -> str:
        return runner.cancel(self.store, [self.uuid])[self.uuid]

    def _update_row(self, store: BatchStore) -> None:
        rec = store.get(self.uuid)
        with warnings.catch_warnings():  # the row the user holds is meant to change (pandas 2 warns)
            warnings.filterwarnings("ignore", message="A value is trying to be set on a copy")
            for key in self._row.index:
                if key in rec:
                    self._row[key] = rec[key]

    # -- inputs and outputs --------------------------------------------------------------------
    def get_input_movie_path(self) -> Path:
        return runner.input_movie_path(self.store, self.record())

    def get_input_movie(self, reader: Any = None, **kwargs: Any) -> LazyArray | Any:
        """The input movie as a lazy [t, y, x] array (or through ``reader(path, **kwargs)``)."""
        path = self.get_input_movie_path()
        if reader is not None:
            return reader(str(path), **kwargs)
        var = kwargs.pop("var_name_hdf5", None) or self.record()["params"]["main"].get("var_name_hdf5")
        return open_movie(path, var_name_hdf5=var)

    def suggest_params(self, algo: str, params: dict | None = None, **kwargs: Any) -> Any:
        """Params for a new ``algo`` item on this row's input movie, estimated from the movie.

        Returns a :class:`~mesmerize_widgets.algorithms.suggest.Suggestion`: ``.params`` is
        ready for ``add_item`` and ``.reasons`` says why each value; ``params`` are kept where
        nothing is estimated (default: this row's params when ``algo`` is its own algo).
        """
        from ..algorithms.suggest import suggest_params

        rec = self.record()
        if params is None and rec["algo"] == algo:
            params = rec["params"]
        var = (params or {}).get("main", {}).get("var_name_hdf5") or rec["params"]["main"].get("var_name_hdf5")
        return suggest_params(self.get_input_movie_path(), algo, params, var_name_hdf5=var, **kwargs)

    def get_output_dir(self) -> Path:
        return self.store.item_dir(self.uuid)

    def _output_path(self, key: str, what: str) -> Path:
        rec = self.record()
        outputs = rec.get("outputs") or {}
        if rec["status"] != "done":
            raise ValueError(f"item {rec['item_name']!r} has no {what}: it is {rec['status']}")
        if not outputs.get(key):
            raise KeyError(f"item {rec['item_name']!r} ({rec['algo']}) has no {what} in its outputs")
        path = self.store.path / outputs[key]
        if not path.exists():
            raise FileNotFoundError(f"the {what} of item {rec['item_name']!r} is missing: {path}")
        return path

    def get_projection(self, proj_type: str) -> np.ndarray:
        if proj_type not in ("mean", "std", "max"):
            raise ValueError(f"proj_type must be 'mean', 'std' or 'max', got {proj_type!r}")
        return np.load(self._output_path(f"{proj_type}-projection-path", f"{proj_type} projection"))

    def get_corr_image(self) -> np.ndarray:
        return np.load(self._output_path("corr-img-path", "correlation image"))

    def get_pnr_image(self) -> np.ndarray:
        return np.load(self._output_path("pnr-image-path", "PNR image"))

    def remove_outputs(self) -> None:
        """Delete this item's output directory and mark it pending again."""
        rec = self.record()
        if rec["status"] in ACTIVE:
            raise RuntimeError(f"item {rec['item_name']!r} is {rec['status']}: cancel it first")
        shutil.rmtree(self.get_output_dir(), ignore_errors=True)
        self.store.update(self.uuid, status="pending", outputs=None, progress=0.0, error=None)
