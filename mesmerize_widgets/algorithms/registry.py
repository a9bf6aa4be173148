"""The algorithm registry: one entry per algo, with its param schema and its backends.

Backends are named by import path (``"package.module:function"``) and imported only when an
item runs, so listing algorithms or validating params never imports CaImAn (seconds) and a
worker process finds the same function from the name alone.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import BackendUnavailableError, UnknownAlgorithmError
from .caiman_env import caiman_installed, caiman_problems
from .context import RunContext
from .schema import ParamSchema

BUILTIN, CAIMAN, AUTO = "builtin", "caiman", "auto"
BACKENDS = (BUILTIN, CAIMAN)

RunFunction = Callable[[RunContext], dict[str, Any]]


@dataclass(frozen=True)
class Algorithm:
    """An algorithm a batch item can name in its ``algo`` column.

    ``output_movie_key`` names the outputs entry holding the movie this algorithm produces, so
    another item can take this one as its input (cnmf after mcorr); None when it makes no movie.
    """

    name: str
    doc: str
    schema: ParamSchema
    backends: dict[str, str]
    output_movie_key: str | None = None
    needs_deconvolution: bool = False
    input_kinds: tuple[str, ...] = field(default=("movie",))

    def run_function(self, backend: str) -> RunFunction:
        target = self.backends.get(backend)
        if target is None:
            raise BackendUnavailableError(
                f"algo {self.name!r} has no {backend!r} backend (it has {sorted(self.backends)})"
            )
        module, _, func = target.partition(":")
        return getattr(importlib.import_module(module), func)


_REGISTRY: dict[str, Algorithm] = {}
_default_backend: str = AUTO


def register(algo: Algorithm) -> Algorithm:
    _REGISTRY[algo.name] = algo
    return algo


def _ensure_builtin_algorithms() -> None:
    # importing the package modules registers them
    from . import cnmf, mcorr, onacid, preprocess, summary  # noqa: F401


def get_algorithm(name: str) -> Algorithm:
    _ensure_builtin_algorithms()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownAlgorithmError(
            f"unknown algo {name!r}; available: {sorted(_REGISTRY)}"
        ) from None


def algorithms() -> dict[str, Algorithm]:
    _ensure_builtin_algorithms()
    return dict(_REGISTRY)


def set_default_backend(backend: str) -> None:
    """Choose the backend for items that do not name one: 'auto', 'builtin' or 'caiman'."""
    global _default_backend
    if backend not in (AUTO, *BACKENDS):
        raise ValueError(f"backend must be one of {[AUTO, *BACKENDS]}, got {backend!r}")
    _default_backend = backend


def get_default_backend() -> str:
    return _default_backend


def choose_backend(algo: Algorithm, requested: str | None = None) -> str:
    """Resolve 'auto' and check the choice can run here, before any work starts.

    Auto prefers CaImAn when it is importable and its environment is sound; when it is
    importable but broken, auto falls back to builtin with a warning, while an explicit
    ``'caiman'`` raises BackendUnavailableError saying what is wrong.
    """
    backend = requested or _default_backend
    if backend not in (AUTO, *BACKENDS):
        raise ValueError(f"backend must be one of {[AUTO, *BACKENDS]}, got {backend!r}")
    if backend == AUTO:
        if CAIMAN in algo.backends and caiman_installed():
            problems = caiman_problems(algo.needs_deconvolution)
            if not problems:
                return CAIMAN
            warnings.warn(
                f"CaImAn is installed but cannot run {algo.name!r} here ({'; '.join(problems)}); "
                "using the builtin backend",
                stacklevel=2,
            )
        return BUILTIN
    if backend not in algo.backends:
        raise BackendUnavailableError(
            f"algo {algo.name!r} has no {backend!r} backend (it has {sorted(algo.backends)})"
        )
    if backend == CAIMAN:
        problems = caiman_problems(algo.needs_deconvolution)
        if problems:
            raise BackendUnavailableError(
                f"the caiman backend cannot run {algo.name!r} here: {'; '.join(problems)}"
            )
    return backend
