"""Parameter grids without ipywidgets: parse the form's mini-syntax, expand, name, add to a batch.

Part of the model (no ipywidgets): scripts call it directly, and ParamGrid is a form over it.

Mini-syntax of one parameter's text (what ``parse_values`` accepts)
-------------------------------------------------------------------
- empty text: the default (one value);
- one Python literal, read with ``ast.literal_eval`` (never ``eval``): ``24``, ``1.5``, ``None``,
  ``True``, ``'mov'``, ``(24, 24)``. For a ``str`` param, text that is not a literal is the
  string itself (``mov`` == ``'mov'``);
- a list literal gives SEVERAL values to grid over: ``[4, 5, 6]``, ``[(4, 4), (6, 6)]``.
  Exceptions, where a list is naturally one value: for a ``tuple`` param a list of numbers
  (``[4, 4]``) is one tuple; for a ``list`` param (and ``any``) a list is one value, and several
  lists are given as a list of lists (``[[1, 2], [3]]``) or with ``|``;
- alternatives separated by ``|`` at the top level, each one value: ``4 | 6 | 8``,
  ``(4, 4) | (6, 6)``, ``[1, 2] | [3]`` (works for every kind);
- ranges of numbers: ``3..9`` and ``3..9 step 2`` include the stop (3, 5, 7, 9);
  ``3:9:2`` and ``3:9`` follow Python's ``range`` and exclude it (3, 5, 7). Floats work too
  (``0.1..0.3 step 0.1``). A range may be one alternative of ``|`` (``1..3 | 10``).

Scripts skip the text: ``expand_grid(algo, {"K": [4, 6], "gSig": [(4, 4), (6, 6)]})`` takes a
list as several values and anything else (a tuple included) as one value; for a ``list`` param
give a list of lists.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..algorithms import Param, get_algorithm
from ..algorithms import suggest as _suggest
from ..errors import ParamError

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_DOTS = re.compile(rf"^\s*({_NUM})\s*\.\.\s*({_NUM})\s*(?:step\s+({_NUM})\s*)?$")
_COLON = re.compile(rf"^\s*({_NUM})\s*:\s*({_NUM})\s*(?::\s*({_NUM})\s*)?$")


def _number(text: str) -> int | float:
    value = ast.literal_eval(text.strip().lstrip("+"))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(text)
    return value


def _range(name: str, start_s: str, stop_s: str, step_s: str | None, inclusive: bool) -> list[int | float]:
    """Expand a numeric range; ints stay ints, float steps are rounded to kill 0.1+0.2 noise."""
    start, stop = _number(start_s), _number(stop_s)
    step = _number(step_s) if step_s else 1
    if step == 0:
        raise ParamError(f"{name}: a range step cannot be 0")
    if (stop - start) * step < 0:
        raise ParamError(f"{name}: the range {start}..{stop} is empty with step {step}")
    span = (stop - start) / step
    n = math.floor(span + 1e-9) + 1
    if not inclusive and abs(span - round(span)) < 1e-9:
        n -= 1  # Python's range: the stop itself is excluded
    if n > 10_000:
        raise ParamError(f"{name}: the range gives {n} values; at most 10000")
    if all(isinstance(v, int) for v in (start, stop, step)):
        return [start + i * step for i in range(n)]
    return [round(start + i * step, 12) for i in range(n)]


def _split_alternatives(text: str) -> list[str]:
    """Split at ``|`` outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def _literal(text: str, param: Param) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if param.kind == "str" or (param.choices and text in param.choices):
            return text
        raise ParamError(
            f"{param.name}: cannot read {text!r}; write a Python value like 24, (24, 24), "
            "[4, 5, 6], 3..9 step 2 or 4 | 6"
        ) from None


def _one_part(text: str, param: Param) -> list[Any]:
    """One alternative: a range (several numbers) or one literal (one value)."""
    for pattern, inclusive in ((_DOTS, True), (_COLON, False)):
        m = pattern.match(text)
        if m:
            if param.kind in ("tuple", "list", "str", "bool"):
                raise ParamError(f"{param.name}: a range gives numbers, but this param is a {param.kind}")
            return _range(param.name, m.group(1), m.group(2), m.group(3), inclusive)
    return [_literal(text, param)]


def _is_several(value: Any, param: Param) -> bool:
    """Does a literal list mean several values of ``param`` (see the module doc)?"""
    if not isinstance(value, list):
        return False
    if param.kind in ("list", "any"):
        return bool(value) and all(isinstance(v, list) for v in value)
    if param.kind == "tuple":
        return bool(value) and all(isinstance(v, (tuple, list)) or v is None for v in value)
    return True


def parse_values(text: str | None, param: Param) -> list[Any]:
    """The values a form field's text stands for, each checked against ``param``.

    Raises ParamError with a message fit to show next to the field.
    """
    text = (text or "").strip()
    if not text:
        return [param.check(param.default, param.name)]
    parts = _split_alternatives(text)
    raw: list[Any] = []
    if len(parts) > 1:
        for part in parts:
            if not part.strip():
                raise ParamError(f"{param.name}: empty alternative in {text!r}")
            raw.extend(_one_part(part.strip(), param))
    else:
        values = _one_part(text, param)
        if len(values) == 1 and _is_several(values[0], param):
            values = list(values[0])
            if not values:
                raise ParamError(f"{param.name}: the list of values is empty")
        raw = values
    out = []
    for i, value in enumerate(raw):
        where = param.name if len(raw) == 1 else f"{param.name} value {i + 1}"
        out.append(param.check(value, where))
    return _unique(out)


def _unique(values: list[Any]) -> list[Any]:
    seen, out = set(), []
    for v in values:
        key = repr(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def format_value(value: Any) -> str:
    """A value as the text that parses back to it (tuples as ``(4, 4)``)."""
    return repr(value)


def _grid_values(param: Param, value: Any) -> list[Any]:
    if isinstance(value, list):
        if param.kind == "list" and not all(isinstance(v, list) for v in value):
            raise ParamError(f"{param.name} is a list param: give its values as a list of lists, "
                             f"e.g. [{value!r}] for one value")
        values = value
    else:
        values = [value]
    if not values:
        raise ParamError(f"{param.name}: the list of values is empty")
    return _unique([param.check(v, param.name if len(values) == 1 else f"{param.name} value {i + 1}")
                    for i, v in enumerate(values)])


def grid_values(algo: str, grid: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Check a script-style grid (list = several values) -> {param: [checked values]}."""
    schema = get_algorithm(algo).schema
    out = {}
    for name, value in grid.items():
        try:
            param = schema[name]
        except KeyError:
            raise ParamError(f"unknown param {name!r} for algo {algo!r}; known: {schema.names}") from None
        out[name] = _grid_values(param, value)
    return out


def combinations(values: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the values, the first param varying slowest."""
    names = list(values)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values.values())]


def expand_grid(algo: str, grid: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> list[dict]:
    """One ``{"main": {...}}`` params dict per combination, validated against the schema."""
    schema = get_algorithm(algo).schema
    values = grid_values(algo, grid)
    out = []
    for combo in combinations(values):
        params = {"main": {**(base or {}), **combo}}
        out.append(schema.validate(params))
    return out


def varying(values: Mapping[str, Sequence[Any]]) -> list[str]:
    """The params given more than one value (they go into item names and previews)."""
    return [k for k, v in values.items() if len(v) > 1]


def item_name(base: str, combo: Mapping[str, Any], keys: Iterable[str], template: str | None = None) -> str:
    """``"<base> K=4,gSig=(4, 4)"``; a ``template`` like ``"{name} k{K}"`` overrides it."""
    keys = list(keys)
    if template:
        try:
            return template.format_map({**combo, "name": base})
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            raise ParamError(
                f"item name template {template!r} failed ({e!s}); use {{name}} and param names "
                f"like {{{keys[0] if keys else 'K'}}}"
            ) from None
    if not keys:
        return base
    return f"{base} " + ",".join(f"{k}={combo[k]!r}" for k in keys)


_name = item_name  # plan_grid's keyword argument shadows the function


def input_label(df: pd.DataFrame, source: Any) -> str:
    """A short name for an input: the item's name for a batch item, the file stem for a movie."""
    uuid = input_uuid(df, source)
    if uuid is not None:
        return str(df.caiman.uloc(uuid)["item_name"])
    return Path(str(source)).stem


def input_uuid(df: pd.DataFrame, source: Any) -> str | None:
    """The uuid when ``source`` is an item of the batch (its row or uuid), else None."""
    if isinstance(source, pd.Series):
        return str(source["uuid"]) if "uuid" in source.index else None
    s = str(source)
    return s if (df["uuid"] == s).any() else None


def plan_grid(
    df: pd.DataFrame,
    algo: str,
    inputs: Sequence[Any],
    values: Mapping[str, Sequence[Any]],
    *,
    item_name: str | None = None,
    template: str | None = None,
    base: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """What ``add_grid`` would add, validated, as ``{input, item_name, params, combo}`` dicts."""
    if not inputs:
        raise ParamError("choose at least one input (a movie path or an item of the batch)")
    schema = get_algorithm(algo).schema
    keys = varying(values)
    combos = combinations(values)
    plan = []
    for source in inputs:
        name = item_name or input_label(df, source)
        for combo in combos:
            params = schema.validate({"main": {**(base or {}), **combo}})
            plan.append({"input": source, "item_name": _name(name, combo, keys, template),
                         "params": params, "combo": combo})
    return plan



def add_grid(
    df: pd.DataFrame,
    algo: str,
    inputs: Sequence[Any] | Any,
    grid: Mapping[str, Any],
    *,
    item_name: str | None = None,
    template: str | None = None,
    base: Mapping[str, Any] | None = None,
) -> list[pd.Series]:
    """Add one item per combination for each input; all or nothing (added items are rolled back).

    ``inputs``: movie paths, or items of the batch (rows or uuids), e.g. every selected
    preprocess item. ``item_name`` is the base name (default: the input's name).
    """
    if isinstance(inputs, (str, Path, pd.Series)) or not isinstance(inputs, Iterable):
        inputs = [inputs]
    plan = plan_grid(df, algo, list(inputs), grid_values(algo, grid), item_name=item_name,
                     template=template, base=base)
    return add_plan(df, algo, plan)


def add_plan(df: pd.DataFrame, algo: str, plan: Sequence[Mapping[str, Any]]) -> list[pd.Series]:
    """Add planned items; on any failure remove the ones this call added, then re-raise."""
    added: list[str] = []
    try:
        for entry in plan:
            source = entry["input"]
            uuid = input_uuid(df, source)
            row = df.caiman.add_item(algo, entry["item_name"], uuid if uuid else source, entry["params"])
            added.append(row["uuid"])
    except BaseException:
        for u in reversed(added):
            try:
                df.caiman.remove_item(u)
            except Exception:  # best effort: the original error is what the user needs
                pass
        raise
    return [df.caiman.uloc(u) for u in added]


# -- params from the data ----------------------------------------------------------------------
def input_movie(df: pd.DataFrame, source: Any) -> Path | None:
    """The movie file an item on ``source`` would read: a path as add_item resolves it, or a
    batch item's output movie (when done) or its own input; None when there is none yet."""
    from .. import runner
    from ..store.paths import get_parent_raw_data_path

    uuid = input_uuid(df, source)
    if uuid is None:
        path = Path(str(source)).expanduser()
        raw = get_parent_raw_data_path()
        if not path.is_absolute() and raw is not None and (raw / path).exists():
            path = raw / path
        return path if path.exists() else None
    store = df.caiman.store
    rec = store.get(uuid)
    key = get_algorithm(rec["algo"]).output_movie_key
    out = (rec.get("outputs") or {}).get(key) if key and rec["status"] == "done" else None
    if out:
        return store.path / out
    try:
        return runner.input_movie_path(store, rec)
    except Exception:  # a parent not done yet: no movie to measure
        return None


def suggest_for_input(df: pd.DataFrame, algo: str, source: Any,
                      params: Mapping[str, Any] | None = None) -> _suggest.Suggestion:
    """:func:`~mesmerize_widgets.algorithms.suggest.suggest_params` on one grid input's movie."""
    path = input_movie(df, source)
    if path is None:
        raise ParamError(f"{input_label(df, source)!r} has no movie to measure yet")
    return _suggest.suggest_params(path, algo, params)


def plan_warnings(df: pd.DataFrame, algo: str, plan: Sequence[Mapping[str, Any]], *,
                  measure: bool = True) -> list[str]:
    """The params warnings ``add_item`` would give for a planned grid, each message once.

    ``measure=False`` only uses movies already measured (cheap enough for every keystroke).
    """
    out: list[str] = []
    movies: dict[str, Path | None] = {}
    for entry in plan:
        key = repr(entry["input"]) if not isinstance(entry["input"], pd.Series) else str(entry["input"].get("uuid"))
        if key not in movies:
            movies[key] = input_movie(df, entry["input"])
        path = movies[key]
        if path is None or (not measure and _suggest.cached_stats(path) is None):
            continue
        try:
            msgs = _suggest.check_params(path, algo, entry["params"],
                                         _stats=None if measure else _suggest.cached_stats(path))
        except Exception:
            continue
        label = input_label(df, entry["input"])
        out.extend(f"{label}: {m}" for m in msgs if f"{label}: {m}" not in out)
    return out
