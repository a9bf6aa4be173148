"""JSON for params and outputs in which tuples survive the round trip.

CaImAn checks ``isinstance(max_shifts, tuple)`` in places, so a batch must give back
``(24, 24)`` and not ``[24, 24]``. Plain JSON keeps the text readable in any SQLite browser:
tuples are written as lists and their places listed under a top-level ``"__tuples__"`` key
(``{"main": {"max_shifts": [24, 24]}, "__tuples__": [["main", "max_shifts"]]}``), so decoding a
big batch restores them by direct lookups instead of walking every value. numpy arrays and
non-finite floats, rare in params, are tagged in place (``{"__ndarray__": ..., "dtype": ...}``).
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any

import numpy as np

try:  # a C decoder several times faster than json's; opening a big batch is dominated by decoding
    import orjson as _fast_json
except ImportError:  # pragma: no cover - orjson is a dependency, but plain json works too
    _fast_json = None

_TUPLES = "__tuples__"
_TUPLE = "__tuple__"  # in-place tuple tag: used where a tuple has no dict path (top level)
_NDARRAY = "__ndarray__"
_FLOAT = "__float__"


def _encode(value: Any, path: list, tuples: list) -> Any:
    if isinstance(value, tuple):
        if tuples is None:
            return {_TUPLE: [_encode(v, [], None) for v in value]}
        out = [_encode(v, [*path, i], tuples) for i, v in enumerate(value)]
        tuples.append(path)
        return out
    if isinstance(value, list):
        return [_encode(v, [*path, i], tuples) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"only string keys can be stored, got key {k!r} ({type(k).__name__})")
            if k == _TUPLES:
                raise TypeError(f"{_TUPLES!r} is reserved and cannot be a key")
            out[k] = _encode(v, [*path, k], tuples)
        return out
    if isinstance(value, np.ndarray):
        return {_NDARRAY: value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return _encode(value.item(), path, tuples)
    if isinstance(value, PurePath):
        return value.as_posix()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {_FLOAT: repr(value)}
    raise TypeError(f"cannot store a value of type {type(value).__name__}: {value!r}")


def dumps(value: Any) -> str:
    """Encode params/outputs; raises TypeError naming a value JSON cannot hold."""
    if isinstance(value, dict):
        tuples: list = []
        doc = _encode(value, [], tuples)
        if tuples:
            doc[_TUPLES] = tuples
    else:
        doc = _encode(value, [], None)
    return json.dumps(doc, allow_nan=False, separators=(",", ":"))


def _untag(obj: dict) -> Any:
    if len(obj) == 1 and _TUPLE in obj:
        return tuple(obj[_TUPLE])
    if len(obj) == 2 and _NDARRAY in obj:
        return np.asarray(obj[_NDARRAY], dtype=obj["dtype"])
    if len(obj) == 1 and _FLOAT in obj:
        return float(obj[_FLOAT])
    return obj


def _untag_tree(obj: Any) -> Any:
    """Restore in-place tags everywhere below ``obj`` (what json's object_hook does)."""
    if type(obj) is dict:
        for key, value in obj.items():
            if type(value) is dict or type(value) is list:
                obj[key] = _untag_tree(value)
        return _untag(obj)
    if type(obj) is list:
        for i, value in enumerate(obj):
            if type(value) is dict or type(value) is list:
                obj[i] = _untag_tree(value)
    return obj


def _restore_tuples(doc: Any) -> Any:
    paths = doc.pop(_TUPLES, None) if type(doc) is dict else None
    if paths:
        for path in sorted(paths, key=len, reverse=True):  # inner tuples before outer ones
            parent = doc
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = tuple(parent[path[-1]])
    return doc


def _finish(doc: Any, text: str) -> Any:
    if '"__' not in text:
        return doc
    if f'"{_NDARRAY}"' in text or f'"{_FLOAT}"' in text or f'"{_TUPLE}"' in text:
        doc = _untag_tree(doc)
    return _restore_tuples(doc)


def _parse(text: str) -> Any:
    return _fast_json.loads(text) if _fast_json is not None else json.loads(text)


def loads(text: str | None) -> Any:
    if text is None:
        return None
    return _finish(_parse(text), text)


def loads_many(texts: list[str | None]) -> list[Any]:
    """Decode many documents with one parser call (opening a big batch is dominated by this)."""
    if not texts:
        return []
    docs = _parse("[" + ",".join("null" if t is None else t for t in texts) + "]")
    for i, text in enumerate(texts):
        if text is not None and '"__' in text:
            docs[i] = _finish(docs[i], text)
    return docs
