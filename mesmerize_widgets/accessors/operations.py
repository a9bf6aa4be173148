"""Batch operations that check everything before they write, so a refusal changes nothing."""

from __future__ import annotations

import os
import shutil
import uuid as uuid_mod
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..algorithms import get_algorithm
from ..arrays import open_movie
from ..errors import DependencyError, ItemBusyError, ItemNotFoundError
from ..runner.job import remove_checkpoints
from ..store import ACTIVE, BatchStore
from ..store.json_column import JSONColumn
from ..store.paths import require_parent_raw_data_path, to_stored


def _parent_uuid(store: BatchStore, movie: Any) -> str | None:
    """An item given as the input (its row, UUID or uuid string) -> its uuid, else None."""
    if isinstance(movie, pd.Series):
        if "uuid" not in movie.index:
            raise TypeError("input_movie_path is a Series but not a batch item row")
        return str(movie["uuid"])
    if isinstance(movie, uuid_mod.UUID):
        return str(movie)
    if isinstance(movie, str) and store.exists(movie):
        return movie
    return None


def add_item(
    store: BatchStore,
    algo: str,
    item_name: str,
    input_movie_path: Any,
    params: dict,
    *,
    backend: str | None = None,
    comments: str | None = None,
) -> dict[str, Any]:
    """Validate and add one item; returns the stored record."""
    require_parent_raw_data_path()
    algorithm = get_algorithm(algo)
    params = algorithm.schema.validate(params)
    if not isinstance(item_name, str):
        raise TypeError(f"item_name must be a string, got {type(item_name).__name__}")
    parent = _parent_uuid(store, input_movie_path)
    if parent is not None:
        if not store.exists(parent):
            raise ItemNotFoundError(f"the input item {parent} is not in this batch")
        prec = store.get(parent)
        pkey = get_algorithm(prec["algo"]).output_movie_key
        if pkey is None:
            raise DependencyError(
                f"items of algo {prec['algo']!r} produce no movie, so {prec['item_name']!r} cannot "
                f"be the input of a {algo!r} item"
            )
        done_path = (prec.get("outputs") or {}).get(pkey) if prec["status"] == "done" else None
        if done_path:
            warn_params(store.path / done_path, algo, params)
        return store.add(
            algo=algo, item_name=item_name, params=params, input_root="batch" if done_path else None,
            input_movie_path=done_path, parent_uuid=parent, comments=comments, backend=backend,
        )
    if not isinstance(input_movie_path, (str, os.PathLike)):
        raise TypeError(
            "input_movie_path must be a path, or an item of this batch (its row or uuid), got "
            f"{type(input_movie_path).__name__}"
        )
    path = Path(input_movie_path).expanduser()
    if not path.is_absolute():
        # relative to the parent raw data path, as in mesmerize-core; else to the working dir
        under_raw = require_parent_raw_data_path() / path
        path = under_raw if under_raw.exists() or not path.exists() else path.resolve()
    check_movie(path, params["main"].get("var_name_hdf5"))  # raises MovieReadError
    warn_params(path, algo, params)
    root, rel = to_stored(path, store.path)
    return store.add(
        algo=algo, item_name=item_name, params=params, input_root=root, input_movie_path=rel,
        comments=comments, backend=backend,
    )


_checked_movies: dict[tuple[str, str | None], tuple[int, int]] = {}


def check_movie(path: Path, var_name_hdf5: str | None) -> None:
    """Open the movie once to prove it readable; unchanged files are not re-opened.

    A parameter grid adds hundreds of items on one movie: indexing a long TIFF for each would
    make adding items cost as much as the pickle rewrite this store replaces.
    """
    key = (str(path), var_name_hdf5)
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:  # globs and missing files: let open_movie give the error or expand the glob
        stamp = None
    if stamp is not None and _checked_movies.get(key) == stamp:
        return
    open_movie(path, var_name_hdf5=var_name_hdf5)
    if stamp is not None:
        if len(_checked_movies) > 4096:
            _checked_movies.clear()
        _checked_movies[key] = stamp


def warn_params(path: Path, algo: str, params: dict) -> None:
    """Warn (never fail) about params that look wrong for the movie; measured once per file."""
    from ..algorithms.suggest import check_params

    try:
        problems = check_params(path, algo, params, var_name_hdf5=params["main"].get("var_name_hdf5"))
    except Exception:  # a movie we cannot measure is no reason to refuse the item
        return
    for message in problems:
        warnings.warn(message, UserWarning, stacklevel=4)


def remove_item(store: BatchStore, uuid: str, *, remove_data: bool = True, safe_removal: bool = True) -> None:
    rec = store.get(uuid)
    if rec["status"] in ACTIVE:
        raise ItemBusyError(f"item {rec['item_name']!r} ({uuid}) is {rec['status']}: cancel it before removing it")
    children = store.children(uuid)
    if children and safe_removal:
        raise DependencyError(
            f"item {rec['item_name']!r} ({uuid}) is the input of {len(children)} other item(s) "
            f"{children}; remove those first or pass safe_removal=False"
        )
    store.remove(uuid)
    remove_checkpoints(store.path, uuid)  # unfinished work nobody can resume any more
    if remove_data:
        shutil.rmtree(store.item_dir(uuid), ignore_errors=True)
        (store.path / "logs" / f"{uuid}.log").unlink(missing_ok=True)


def removal_plan(store: BatchStore, uuids: Sequence[str], *, remove_dependents: bool = False) -> list[str]:
    """The items removing ``uuids`` removes, children before parents; raises saying why it must refuse.

    An item that is the input of an item outside ``uuids`` is refused unless
    ``remove_dependents`` (then its dependents, and theirs, are in the plan); so is any item
    queued or running.
    """
    records = {r["uuid"]: r for r in store.items()}
    kids: dict[str, list[str]] = {}
    for r in records.values():
        if r["parent_uuid"]:
            kids.setdefault(r["parent_uuid"], []).append(r["uuid"])
    order: list[str] = []

    def visit(u: str) -> None:
        for c in kids.get(u, []):
            visit(c)
        if u not in order:
            order.append(u)

    chosen = set(uuids)
    for u in uuids:
        if u not in records:
            raise ItemNotFoundError(f"item {u} is no longer in the batch")
        outside = [c for c in kids.get(u, []) if c not in chosen]
        if outside and not remove_dependents:
            names = ", ".join(repr(records[c]["item_name"]) for c in outside)
            raise DependencyError(
                f"{records[u]['item_name']!r} is the input of {names}: remove it together with its "
                "dependents, or remove them first")
        visit(u)
    busy = [records[u]["item_name"] for u in order if records[u]["status"] in ACTIVE]
    if busy:
        raise ItemBusyError(f"cancel these items before removing them: {busy}")
    return order


def remove_items(
    store: BatchStore, uuids: Sequence[str], *, remove_dependents: bool = False, remove_data: bool = True
) -> list[str]:
    """Remove items (and their dependents with ``remove_dependents``); a refusal removes nothing.

    Returns the uuids removed, in the order removed (children first).
    """
    plan = removal_plan(store, uuids, remove_dependents=remove_dependents)
    for u in plan:
        remove_item(store, u, remove_data=remove_data, safe_removal=True)
    return plan


def edited_params(original: Mapping[str, Any] | None, edit: Mapping[str, Any] | None) -> dict[str, Any]:
    """The params of a copy: ``{"main": {...}}`` replaces them; any other dict updates params['main']."""
    edit = dict(edit or {})
    if "main" in edit:
        return edit
    base = dict(original or {})
    return {**base, "main": {**base.get("main", {}), **edit}}


def duplicate_item(
    store: BatchStore, uuid: str, params: Mapping[str, Any] | None = None, item_name: str | None = None
) -> dict[str, Any]:
    """Add a copy of an item with edited params (see :func:`edited_params`) and the same input.

    A chained item keeps its parent item as input. The same item name (the default) makes the
    copy a sibling, whose differing params the table highlights. Returns the stored record.
    """
    from ..runner import input_movie_path

    rec = store.get(uuid)
    new_params = edited_params(rec["params"], params)
    source = rec["parent_uuid"] or input_movie_path(store, rec)
    return add_item(store, rec["algo"], item_name or str(rec["item_name"]), source, new_params)


def params_diffs(df: pd.DataFrame, algo: str, item_name: str) -> pd.DataFrame:
    """Only the params that differ among the items of one algo and name (one row per item)."""
    sub = df[(df["algo"] == algo) & (df["item_name"] == item_name)]
    flat = [_flatten(p) for p in sub["params"]]
    keys = sorted({k for f in flat for k in f})
    missing = object()
    differing = [k for k in keys if len({repr(f.get(k, missing)) for f in flat}) > 1]
    return pd.DataFrame([{k: f.get(k) for k in differing} for f in flat], index=sub.index, columns=differing)


def _flatten(params: dict) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        if key == "main" and isinstance(value, dict):
            out.update(value)
        elif isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


EDITABLE = ("item_name", "comments", "params")


def save_edits(store: BatchStore, df: pd.DataFrame) -> list[str]:
    """Write cells a user edited in ``df`` (name, comments, params) back; returns changed uuids."""
    changed = []
    stored = store.plain_fields("item_name", "comments")
    params = df["params"].array
    # only cells that were read or set can hold an edit; the rest are still the stored text
    touched = set(params.touched().tolist()) if isinstance(params, JSONColumn) else set(range(len(df)))
    for pos, (uuid, name, comments) in enumerate(zip(df["uuid"], df["item_name"], df["comments"], strict=True)):
        if uuid not in stored:
            raise ItemNotFoundError(f"item {uuid} of this DataFrame is no longer in the batch; reload it")
        updates = {k: v for k, v in (("item_name", name), ("comments", comments)) if v != stored[uuid][k]}
        if pos in touched:
            rec = store.get(uuid)
            if params[pos] != rec["params"]:
                if rec["status"] in ACTIVE:
                    raise RuntimeError(f"cannot change the params of {rec['item_name']!r} while it is {rec['status']}")
                updates["params"] = get_algorithm(rec["algo"]).schema.validate(params[pos])
        if updates:
            store.update(uuid, **updates)
            changed.append(uuid)
    return changed
