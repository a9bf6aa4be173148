"""Readable messages for the viewers: what went wrong with an item, never a traceback."""

from __future__ import annotations

import html
from typing import Any

_ERR = "color:#b00020"
_OK = "color:#1b5e20"
_INFO = "color:#555"


def html_message(text: str, kind: str = "info") -> str:
    """``kind``: 'error', 'ok' or 'info'."""
    style = {"error": _ERR, "ok": _OK}.get(kind, _INFO)
    return f"<span style='{style}'>{html.escape(text)}</span>"


def describe_error(e: BaseException) -> str:
    """One line for the user: the error's own message, with its kind when that helps."""
    text = str(e).strip().strip("'\"") or type(e).__name__
    if isinstance(e, FileNotFoundError):
        return f"missing file: {text}"
    if isinstance(e, KeyError | ValueError | OSError | TypeError | IndexError):
        return text
    return f"{type(e).__name__}: {text}"


def item_problem(row: Any, algos: tuple[str, ...]) -> str | None:
    """Why ``row`` cannot be shown by a viewer of ``algos`` (None when it can, as far as the record says)."""
    try:
        rec = row.caiman.record()
    except Exception as e:  # the row is not (or no longer) in a batch
        return f"cannot read this item from its batch: {describe_error(e)}"
    name = rec.get("item_name")
    if rec["algo"] not in algos:
        return f"item {name!r} is a {rec['algo']!r} item; this viewer shows {' / '.join(algos)} items"
    status = rec["status"]
    if status == "done":
        return None
    if status == "failed":
        err = (rec.get("error") or "").strip().splitlines()
        last = err[-1] if err else "no error text was recorded"
        return f"item {name!r} failed: {last}"
    if status in ("pending", "queued", "running"):
        return f"item {name!r} has no output yet: it is {status}. Run it, then open it again."
    return f"item {name!r} has no output: it is {status}."
