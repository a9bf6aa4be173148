"""A DataFrame column of params/outputs dicts that decodes each cell on first use.

Opening a 10,000-item batch used to spend most of its time turning every params and outputs
JSON document into dicts, although a notebook then looks at a handful of rows. This column keeps
the stored text and decodes a cell when it is read; the decoded value is cached in place, so
``df.iloc[i]["params"]["main"]["K"] = 5`` edits the cell exactly as with an object column, and
``df.caiman.save_to_disk()`` only has to compare the cells that were ever decoded or set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.extensions import ExtensionArray, ExtensionDtype, register_extension_dtype

from . import codec


@register_extension_dtype
class JSONDtype(ExtensionDtype):
    """Cells are the dicts (or None) a batch keeps as params and outputs."""

    name = "batch-json"
    type = dict
    na_value = None
    _is_numeric = False

    @classmethod
    def construct_array_type(cls) -> type[JSONColumn]:
        return JSONColumn


class JSONColumn(ExtensionArray):
    """Values are either JSON text still to decode (``_text[i]`` True) or decoded objects."""

    def __init__(self, values: np.ndarray, text: np.ndarray):
        self._values = values
        self._text = text

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_json(cls, texts: Sequence[str | None]) -> JSONColumn:
        """Cells from stored documents, decoded later (None stays None)."""
        values = np.empty(len(texts), dtype=object)
        values[:] = texts
        return cls(values, np.fromiter((t is not None for t in texts), dtype=bool, count=len(texts)))

    @classmethod
    def _from_sequence(cls, scalars: Any, *, dtype: Any = None, copy: bool = False) -> JSONColumn:
        if isinstance(scalars, JSONColumn):
            return scalars.copy() if copy else scalars
        items = list(scalars)
        values = np.empty(len(items), dtype=object)
        values[:] = items if items else []
        return cls(values, np.zeros(len(items), dtype=bool))

    @classmethod
    def _from_scalars(cls, scalars: Any, *, dtype: Any) -> JSONColumn:
        # pandas keeps the result of ``.map``/``.apply`` in this dtype only if every value fits
        items = list(scalars)
        if not all(v is None or isinstance(v, dict) for v in items):
            raise TypeError("not params/outputs documents")
        return cls._from_sequence(items)

    @classmethod
    def _from_factorized(cls, values: np.ndarray, original: JSONColumn) -> JSONColumn:
        return cls._from_sequence(values)

    @classmethod
    def _concat_same_type(cls, to_concat: Sequence[JSONColumn]) -> JSONColumn:
        return cls(np.concatenate([c._values for c in to_concat]), np.concatenate([c._text for c in to_concat]))

    # -- decoding -------------------------------------------------------------------------------
    def _decode(self, i: int) -> Any:
        if self._text[i]:
            self._values[i] = codec.loads(self._values[i])
            self._text[i] = False
        return self._values[i]

    def _decode_all(self) -> np.ndarray:
        pending = np.flatnonzero(self._text)
        if pending.size:
            docs = codec.loads_many(list(self._values[pending]))
            for i, doc in zip(pending.tolist(), docs, strict=True):
                self._values[i] = doc
            self._text[pending] = False
        return self._values

    def touched(self) -> np.ndarray:
        """Positions whose value was ever decoded or set: the only ones an edit can have reached."""
        return np.flatnonzero(~self._text)

    # -- the ExtensionArray interface -----------------------------------------------------------
    @property
    def dtype(self) -> JSONDtype:
        return JSONDtype()

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            return self._decode(int(key))
        key = pd.api.indexers.check_array_indexer(self, key)
        return type(self)(self._values[key], self._text[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, (int, np.integer)):
            self._values[key] = value
            self._text[key] = False
            return
        key = pd.api.indexers.check_array_indexer(self, key)
        if isinstance(value, JSONColumn):
            value = value._decode_all()
        elif isinstance(value, dict) or value is None:
            positions = np.arange(len(self))[key]
            for i in positions:
                self._values[i] = value
            self._text[key] = False
            return
        self._values[key] = value
        self._text[key] = False

    def __iter__(self):
        for i in range(len(self)):
            yield self._decode(i)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        values = self._decode_all()
        return values.copy() if copy else values

    def __eq__(self, other: Any) -> np.ndarray:  # type: ignore[override]
        mine = self._decode_all()
        if isinstance(other, (JSONColumn, np.ndarray, list)) and len(other) == len(self):
            theirs = other._decode_all() if isinstance(other, JSONColumn) else other
            return np.array([a == b for a, b in zip(mine, theirs, strict=True)], dtype=bool)
        return np.array([a == other for a in mine], dtype=bool)

    @property
    def nbytes(self) -> int:
        return self._values.nbytes + self._text.nbytes

    def isna(self) -> np.ndarray:
        return np.array([v is None for v in self._values], dtype=bool)

    def take(self, indices: Any, *, allow_fill: bool = False, fill_value: Any = None) -> JSONColumn:
        indices = np.asarray(indices, dtype=np.intp)
        if allow_fill:
            missing = indices == -1
            if (indices < -1).any():
                raise ValueError("only -1 marks a missing value in take with allow_fill")
            safe = np.where(missing, 0, indices)
            values = self._values[safe] if len(self) else np.empty(len(indices), dtype=object)
            text = self._text[safe] if len(self) else np.zeros(len(indices), dtype=bool)
            values[missing] = fill_value
            text[missing] = False
            return type(self)(values, text)
        return type(self)(self._values[indices], self._text[indices])

    def copy(self) -> JSONColumn:
        return type(self)(self._values.copy(), self._text.copy())

    def astype(self, dtype: Any, copy: bool = True) -> Any:
        if isinstance(dtype, JSONDtype):
            return self.copy() if copy else self
        return np.array(self._decode_all(), dtype=dtype, copy=True)

    def _values_for_factorize(self) -> tuple[np.ndarray, Any]:
        return np.array([repr(v) for v in self._decode_all()], dtype=object), None

    def _formatter(self, boxed: bool = False) -> Callable[[Any], str | None]:
        return repr
