"""Package attributes that import their module on first use (PEP 562).

An item process runs ``python -m mesmerize_widgets.runner.item_process``: Python runs every
enclosing package's ``__init__`` first, and eager ones imported pandas, scipy and the
accessors, about 0.9 s of the ~1 s each item cost on top of its algorithm (bench_runner.py).
With lazy packages a process pays only for what it uses; ``mw.load_batch`` still brings the
accessors with it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose ``exports`` map each public name
    to the submodule (relative, e.g. ``".api"``) that defines it."""

    def __getattr__(name: str) -> Any:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
