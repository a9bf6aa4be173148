"""Algorithms and their backends, behind one registry keyed by the item's ``algo``."""

from .context import RunContext
from .registry import (
    AUTO,
    BUILTIN,
    CAIMAN,
    Algorithm,
    algorithms,
    choose_backend,
    get_algorithm,
    get_default_backend,
    register,
    set_default_backend,
)
from .schema import Param, ParamSchema

__all__ = [
    "AUTO",
    "BUILTIN",
    "CAIMAN",
    "Algorithm",
    "Param",
    "ParamSchema",
    "RunContext",
    "algorithms",
    "choose_backend",
    "get_algorithm",
    "get_default_backend",
    "register",
    "set_default_backend",
]
