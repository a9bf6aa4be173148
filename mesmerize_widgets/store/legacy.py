"""Import a mesmerize-core ``batch.pickle`` into a ``batch.sqlite`` beside it, once.

A pickle can run any callable it names, so the pickle is read with an unpickler that admits only
the globals a mesmerize-core batch DataFrame really contains (found by pickling such DataFrames
with pandas 1.5, 2.2 and 3.1, with and without pyarrow). Any other global is refused with
:class:`UnsafePickleError` when the unpickler meets it, before the call that would use it.

The new database is built under a temporary name and linked into place in one step, so an
import that fails leaves no half batch; the ``<uuid>/`` output directories are left as they are.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import pickle
import shutil
import sqlite3
import tempfile
import uuid as uuid_mod
import warnings
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

import pandas as pd

from ..errors import NotABatchError, UnsafePickleError
from . import codec
from .batch_store import DB_NAME, BatchStore, now_iso
from .paths import ABS, BATCH, RAW

# -- the restricted unpickler ----------------------------------------------------------------

#: (module, name) as written in a pickle -> "module:attribute" to give the unpickler.
#: Several spellings map to one target: pandas 3 pickles name public classes under ``pandas``,
#: older ones under ``pandas.core...``; numpy 2 writes ``numpy._core``, numpy 1 ``numpy.core``.
_PANDAS_CLASSES = {  # name: (module in pandas < 3 pickles, where pandas 3.1 has it)
    "DataFrame": ("pandas.core.frame", "pandas:DataFrame"),
    "Series": ("pandas.core.series", "pandas:Series"),
    "Index": ("pandas.core.indexes.base", "pandas:Index"),
    "RangeIndex": ("pandas.core.indexes.range", "pandas:RangeIndex"),
    "StringDtype": ("pandas.core.arrays.string_", "pandas:StringDtype"),
    "StringArray": ("pandas.core.arrays.string_", "pandas:arrays.StringArray"),
    "ArrowStringArray": ("pandas.core.arrays.string_arrow", "pandas:arrays.ArrowStringArray"),
}

ALLOWED_GLOBALS: dict[tuple[str, str], str] = {
    # the frame, its index and its string labels (pandas 3 keeps labels in a StringArray)
    **{(m, n): t for n, (m, t) in _PANDAS_CLASSES.items()},
    **{("pandas", n): t for n, (_, t) in _PANDAS_CLASSES.items() if "." not in t},
    **{("pandas.arrays", n): t for n, (_, t) in _PANDAS_CLASSES.items() if "arrays." in t},
    ("pandas.core.indexes.base", "_new_Index"): "pandas.core.indexes.base:_new_Index",
    ("pandas.core.internals.managers", "BlockManager"): "pandas.core.internals.managers:BlockManager",
    ("pandas._libs.internals", "_unpickle_block"): "pandas._libs.internals:_unpickle_block",
    # pandas <= 1.3 unpickled blocks through new_block, which pandas' own compat maps likewise
    ("pandas.core.internals.blocks", "new_block"): "pandas._libs.internals:_unpickle_block",
    ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"): "pandas._libs.arrays:__pyx_unpickle_NDArrayBacked",
    # pandas 1.x integer/float indexes, removed in pandas 2 (an Index of that dtype now)
    **{("pandas.core.indexes.numeric", n): "pandas:Index" for n in ("Int64Index", "UInt64Index", "Float64Index")},
    # numpy arrays and scalars (block values, numpy numbers users put in params)
    ("numpy", "ndarray"): "numpy:ndarray",
    ("numpy", "dtype"): "numpy:dtype",
    **{(m, n): f"numpy._core.multiarray:{n}" for m in ("numpy.core.multiarray", "numpy._core.multiarray")
       for n in ("_reconstruct", "scalar")},
    **{(m, "_frombuffer"): "numpy._core.numeric:_frombuffer" for m in ("numpy.core.numeric", "numpy._core.numeric")},
    # BlockPlacement is pickled as a slice; sets and complex numbers have no opcode before protocol 4
    ("builtins", "slice"): "builtins:slice",
    ("builtins", "set"): "builtins:set",
    ("builtins", "frozenset"): "builtins:frozenset",
    ("builtins", "complex"): "builtins:complex",
    # mesmerize-core before June 2024 kept output paths as Path objects; read them as pure paths
    # (a WindowsPath cannot be built on Linux, and nothing here touches the file system)
    **{(m, n): f"pathlib:Pure{n.removeprefix('Pure')}" for m in ("pathlib", "pathlib._local")
       for n in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")},
    # pandas 3 with pyarrow stores the column labels as an Arrow string array
    ("pyarrow.lib", "type_for_alias"): "pyarrow.lib:type_for_alias",
    ("pyarrow.lib", "py_buffer"): "pyarrow.lib:py_buffer",
    ("pyarrow.lib", "_restore_array"): "mesmerize_widgets.store.legacy:_restore_arrow_array",
}


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ModuleNotFoundError:
        if not module.startswith("numpy._core"):
            raise
        obj = importlib.import_module(module.replace("numpy._core", "numpy.core", 1))  # numpy < 2
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _restore_arrow_array(data: Any) -> Any:
    """pyarrow's own restore, then a full validation so crafted buffers cannot be read out of bounds."""
    from pyarrow.lib import _restore_array

    arr = _restore_array(data)
    arr.validate(full=True)
    return arr


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a mesmerize-core batch DataFrame and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        target = ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise UnsafePickleError(
                f"refused to load the global {module}.{name}: a mesmerize-core batch pickle never "
                "holds it, so this file is not one (or was tampered with); nothing was executed"
            )
        try:
            return _resolve(target)
        except ImportError as e:
            raise ImportError(
                f"this pickle needs {module}.{name} ({e}); install it (e.g. pyarrow for a batch "
                "saved by pandas 3 with pyarrow) to import the batch"
            ) from e

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused a persistent id {pid!r}: batch pickles have none")


def read_legacy_pickle(pickle_path: str | os.PathLike) -> pd.DataFrame:
    """The DataFrame of a mesmerize-core batch pickle, read with :class:`RestrictedUnpickler`."""
    path = Path(pickle_path)
    with open(path, "rb") as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core.* in old pickles
                obj = RestrictedUnpickler(f).load()
        except (UnsafePickleError, ImportError):
            raise
        except Exception as e:  # truncated or corrupt: say what it is, not where pickle broke
            raise NotABatchError(f"{path} is not a readable mesmerize-core batch pickle: {e!r}") from e
    if not isinstance(obj, pd.DataFrame):
        raise NotABatchError(f"{path} holds a {type(obj).__name__}, not a mesmerize-core batch DataFrame")
    missing = {"algo", "params", "uuid"} - set(obj.columns)
    if missing or not ({"item_name", "name"} & set(obj.columns)):
        raise NotABatchError(
            f"{path} is a DataFrame but not a mesmerize-core batch: it lacks the columns "
            f"{sorted(missing or {'item_name'})}"
        )
    return obj


# -- rows -> records -------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def _parts(path: str | PurePath) -> tuple[PurePath, bool]:
    """A stored path as a pure path of the OS that wrote it, and whether it is absolute."""
    if isinstance(path, PurePath):
        p = path
    elif "\\" in path or PureWindowsPath(path).drive:
        p = PureWindowsPath(path)
    else:
        p = PurePosixPath(path)
    return p, p.is_absolute() or PureWindowsPath(str(p)).is_absolute()


def _input_path(value: Any, item_uuids: set[str], batch_dir: Path) -> tuple[str | None, str | None, str | None]:
    """``input_movie_path`` -> (root, relative path, parent uuid) for the store."""
    if _missing(value):
        return None, None, None
    p, absolute = _parts(value if isinstance(value, PurePath) else str(value))
    if absolute:
        return ABS, p.as_posix(), None
    rel = p.as_posix()
    first = p.parts[0] if p.parts else ""
    if first in item_uuids:  # an mcorr output used as the input of another item
        return BATCH, rel, first
    if _looks_like_uuid(first) and (batch_dir / rel).exists():  # its item was removed
        return BATCH, rel, None
    return RAW, rel, None


def _looks_like_uuid(text: str) -> bool:
    try:
        uuid_mod.UUID(text)
    except ValueError:
        return False
    return True


def _status(outputs: Any) -> tuple[str, str | None]:
    if not isinstance(outputs, dict):
        return "pending", None
    if outputs.get("success") is True:
        return "done", None
    return "failed", _text(outputs.get("traceback")) or "failed in mesmerize-core (no traceback kept)"


def _records(df: pd.DataFrame, batch_dir: Path) -> list[dict[str, Any]]:
    """One store record per row, in the pickle's order; refuses duplicate uuids."""
    uuids = [str(u) for u in df["uuid"]]
    dupes = sorted({u for u in uuids if uuids.count(u) > 1}) if len(set(uuids)) != len(uuids) else []
    if dupes:
        raise NotABatchError(f"the pickle has several items with the uuid(s) {dupes}")
    item_uuids = set(uuids)
    name_col = "item_name" if "item_name" in df.columns else "name"
    cols = {c: df[c].tolist() if c in df.columns else [None] * len(df) for c in (
        "algo", name_col, "input_movie_path", "params", "outputs", "added_time", "ran_time",
        "algo_duration", "comments",
    )}
    records = []
    for i, u in enumerate(uuids):
        outputs = cols["outputs"][i]
        outputs = None if _missing(outputs) else outputs
        params = cols["params"][i]
        status, error = _status(outputs)
        root, rel, parent = _input_path(cols["input_movie_path"][i], item_uuids, batch_dir)
        records.append({
            "uuid": u,
            "algo": str(cols["algo"][i]),
            "item_name": _text(cols[name_col][i]) or "",
            "input_root": root,
            "input_movie_path": rel,
            "parent_uuid": parent,
            "params": {} if _missing(params) else params,
            "outputs": outputs,
            "added_time": _text(cols["added_time"][i]),
            "ran_time": _text(cols["ran_time"][i]),
            "algo_duration": _text(cols["algo_duration"][i]),
            "comments": _text(cols["comments"][i]),
            "status": status,
            "progress": 1.0 if status == "done" else 0.0,
            "error": error,
        })
        for key in ("params", "outputs"):
            try:
                codec.dumps(records[-1][key])
            except TypeError as e:
                raise NotABatchError(f"item {u} ({records[-1]['item_name']!r}): its {key} cannot be kept: {e}") from e
    return records


# -- the import ------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _existing(batch_dir: Path, pickle_path: Path, digest: str) -> BatchStore:
    """The store already imported from this pickle; anything else there is refused."""
    store = BatchStore(batch_dir)
    if store.get_meta("legacy_source") != pickle_path.name:
        store.close()
        raise FileExistsError(
            f"{batch_dir / DB_NAME} already exists and was not imported from {pickle_path.name}; "
            "open it with load_batch(batch_dir), or move it away to import the pickle"
        )
    if store.get_meta("legacy_sha256") != digest:
        warnings.warn(
            f"{pickle_path.name} changed after it was imported on {store.get_meta('imported')}; "
            f"the batch keeps the imported items (delete {DB_NAME} to import it again)",
            stacklevel=3,
        )
    return store


def import_legacy_batch(pickle_path: str | os.PathLike) -> BatchStore:
    """Convert a mesmerize-core batch pickle into ``batch.sqlite`` in the same directory.

    Importing the same pickle again returns the store made the first time. Raises
    :class:`UnsafePickleError` for a pickle that names anything a batch never holds.
    """
    pickle_path = Path(os.path.abspath(Path(pickle_path).expanduser()))
    batch_dir = pickle_path.parent
    digest = _sha256(pickle_path)
    if (batch_dir / DB_NAME).exists():
        return _existing(batch_dir, pickle_path, digest)
    df = read_legacy_pickle(pickle_path)  # before any file is written
    records = _records(df, batch_dir)

    tmp_dir = Path(tempfile.mkdtemp(prefix=".import-", dir=batch_dir))
    try:
        store = BatchStore.create(tmp_dir)
        try:
            store.add_many(records)
            store.set_meta("legacy_source", pickle_path.name)
            store.set_meta("legacy_sha256", digest)
            store.set_meta("imported", now_iso())
        finally:
            store.close()
        tmp_db = tmp_dir / DB_NAME
        conn = sqlite3.connect(tmp_db)  # fold the WAL in so one file holds everything
        try:
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
        try:
            os.link(tmp_db, batch_dir / DB_NAME)  # fails if another process imported meanwhile
        except FileExistsError:
            return _existing(batch_dir, pickle_path, digest)
        except OSError:  # a file system without hard links
            if (batch_dir / DB_NAME).exists():
                return _existing(batch_dir, pickle_path, digest)
            os.replace(tmp_db, batch_dir / DB_NAME)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return BatchStore(batch_dir)
