"""JSON for params and outputs in which tuples survive the round trip.

CaImAn checks ``isinstance(max_shifts, tuple)`` in places, so a batch must give back
``(24, 24)`` and not ``[24, 24]``. Plain JSON keeps the text readable in any SQLite
browser; tuples and numpy values are tagged with single-key objects.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any

import numpy as np

_TUPLE = "__tuple__"
_NDARRAY = "__ndarray__"


def _tag(value: Any) -> Any:
    if isinstance(value, tuple):
        return {_TUPLE: [_tag(v) for v in value]}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"only string keys can be stored, got key {k!r} ({type(k).__name__})")
            out[k] = _tag(v)
        return out
    if isinstance(value, np.ndarray):
        return {_NDARRAY: _tag(value.tolist()), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PurePath):
        return value.as_posix()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    raise TypeError(f"cannot store a value of type {type(value).__name__}: {value!r}")


def _untag(obj: dict) -> Any:
    if len(obj) == 1 and _TUPLE in obj:
        return tuple(obj[_TUPLE])
    if len(obj) == 2 and _NDARRAY in obj:
        return np.asarray(obj[_NDARRAY], dtype=obj["dtype"])
    if len(obj) == 1 and "__float__" in obj:
        return float(obj["__float__"])
    return obj


def dumps(value: Any) -> str:
    """Encode params/outputs; raises TypeError naming a value JSON cannot hold."""
    return json.dumps(_tag(value), allow_nan=False, separators=(",", ":"))


def loads(text: str | None) -> Any:
    if text is None:
        return None
    return json.loads(text, object_hook=_untag)


def loads_many(texts: list[str | None]) -> list[Any]:
    """Decode many documents with one parser call (opening a big batch is dominated by this)."""
    if not texts:
        return []
    joined = "[" + ",".join("null" if t is None else t for t in texts) + "]"
    return json.loads(joined, object_hook=_untag)
