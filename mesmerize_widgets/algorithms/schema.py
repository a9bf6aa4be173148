"""Param schemas: names, defaults, types and one-line docs, checked before anything is stored.

Names and defaults follow CaImAn so one batch runs on either backend. Validation normalises
what a user naturally types (a list where CaImAn wants a tuple, a numpy scalar, an int where a
float is expected) and rejects the rest with a message naming the key.
"""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParamError

_KINDS = ("int", "float", "bool", "str", "tuple", "list", "any")


@dataclass(frozen=True)
class Param:
    """One parameter of an algorithm.

    ``kind`` is one of int, float, bool, str, tuple, list, any; for tuple/list ``item``
    is the kind of the elements and ``length`` their number (None: any).
    """

    name: str
    default: Any
    kind: str
    doc: str
    nullable: bool = False
    choices: tuple | None = None
    item: str = "float"
    length: int | None = None
    minimum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown param kind {self.kind!r}")

    def check(self, value: Any, where: str) -> Any:
        """Return the normalised value or raise ParamError naming ``where``."""
        if value is None:
            if self.nullable:
                return None
            raise ParamError(f"{where} cannot be None ({self.doc})")
        if self.choices is not None and value in self.choices:
            return value.item() if isinstance(value, np.generic) else value
        if self.kind == "any":
            if self.choices is not None:
                raise ParamError(f"{where} must be one of {list(self.choices)}, got {value!r}")
            return value
        if self.kind in ("tuple", "list"):
            if isinstance(value, np.ndarray):
                value = value.tolist()
            if not isinstance(value, (tuple, list)):
                raise ParamError(f"{where} must be a {self.kind} of {self.item}, got {value!r}")
            if self.length is not None and len(value) != self.length:
                raise ParamError(f"{where} must have {self.length} elements, got {len(value)}: {value!r}")
            elems = [_scalar(v, self.item, f"{where}[{i}]", self.minimum) for i, v in enumerate(value)]
            return tuple(elems) if self.kind == "tuple" else elems
        value = _scalar(value, self.kind, where, self.minimum)
        if self.choices is not None and value not in self.choices:
            raise ParamError(f"{where} must be one of {list(self.choices)}, got {value!r}")
        return value


def _scalar(value: Any, kind: str, where: str, minimum: float | None) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ParamError(f"{where} must be True or False, got {value!r}")
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ParamError(f"{where} must be a string, got {value!r}")
    if kind == "any":
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParamError(f"{where} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    if kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise ParamError(f"{where} must be an integer, got {value!r}")
            value = int(value)
    else:
        value = float(value)
        if value != value:
            raise ParamError(f"{where} must be a number, got NaN")
    if minimum is not None and value < minimum:
        raise ParamError(f"{where} must be >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class ParamSchema:
    """The ``{"main": {...}}`` params of one algorithm plus its allowed top-level extras."""

    algo: str
    params: tuple[Param, ...]
    extras: dict[str, Param] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict[str, Any]:
        return {"main": {p.name: p.default for p in self.params}}

    def validate(self, params: Any, *, fill_defaults: bool = False) -> dict[str, Any]:
        """Check params against the schema; returns a normalised copy, never mutates the input."""
        if not isinstance(params, dict):
            raise ParamError(
                f"params for {self.algo!r} must be a dict like {{'main': {{...}}}}, "
                f"got {type(params).__name__}"
            )
        unknown_top = [k for k in params if k != "main" and k not in self.extras]
        if unknown_top:
            known = set(self.names)
            hint = (
                " (put algorithm params inside params['main'])"
                if any(k in known for k in unknown_top)
                else ""
            )
            allowed = ["main", *self.extras]
            raise ParamError(f"unknown top-level params key(s) {unknown_top} for {self.algo!r}; allowed: {allowed}{hint}")
        main = params.get("main", {})
        if not isinstance(main, dict):
            raise ParamError(f"params['main'] for {self.algo!r} must be a dict, got {type(main).__name__}")
        out_main: dict[str, Any] = {}
        by_name = {p.name: p for p in self.params}
        for key, value in main.items():
            p = by_name.get(key)
            if p is None:
                close = difflib.get_close_matches(str(key), by_name, n=3)
                hint = f"; did you mean {close}?" if close else ""
                raise ParamError(f"unknown param {key!r} for algo {self.algo!r}{hint}")
            out_main[key] = p.check(value, f"params['main'][{key!r}]")
        if fill_defaults:
            for p in self.params:
                out_main.setdefault(p.name, p.default)
        out: dict[str, Any] = {"main": out_main}
        for key, p in self.extras.items():
            if key in params:
                out[key] = p.check(params[key], f"params[{key!r}]")
        return out
