"""The package's layers, checked on its source: an import-linter "layers" contract without the
dependency, so a shortcut across layers fails here instead of surfacing as an import cycle or a
worker that suddenly needs pandas.

From the top down; a module may import its own top-level package and any layer below it, never
one above, and never a sibling on its own line (``|``: independent of each other)::

    cli                          the console script: builds the demo batch, serves the app
    widgets                      ipywidgets / fastplotlib views of a batch
    mesmerize_widgets            the package facade (``__init__``: create_batch, load_batch, errors)
    api                          create_batch / load_batch, which register the accessors
    accessors                    df.caiman, row.cnmf, ...: pandas over the store and the runner
    runner | sim                 running items | the movie simulator (scripts and tests use it)
    algorithms                   run functions: a RunContext in, output files out
    arrays                       lazy movies
    formats                      file layouts: CaImAn memmaps, the CNMF HDF5, CaImAn's params
    store                        batch.sqlite, stored paths, the JSON codec
    errors | processes | _lazy   foundation: exceptions, worker pools, lazy package attributes

Besides: ``algorithms`` never imports ``runner``, ``store`` or ``widgets`` (a run function
sees only its RunContext, so a script, a test or a worker can call it), and nothing outside
``widgets`` imports ipywidgets, fastplotlib, pygfx, ipydatagrid or voila.

Imports counted: ``import`` and ``from ... import`` at any depth (inside functions, under
``TYPE_CHECKING``), relative ones resolved; the targets of ``lazy_exports`` (PEP 562 package
attributes); string constants that name a module of the package (``"pkg.mod"`` or
``"pkg.mod:func"``, as the registry's backends and ``python -m`` commands do).
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

PKG = "mesmerize_widgets"
SRC = Path(__file__).resolve().parents[1] / PKG

#: top to bottom; each entry one layer, its packages independent of each other
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("widgets",),
    (PKG,),
    ("api",),
    ("accessors",),
    ("runner", "sim"),
    ("algorithms",),
    ("arrays",),
    ("formats",),
    ("store",),
    ("errors", "processes", "_lazy"),
)
#: imports forbidden beyond what the order forbids (stated for the clearer message)
FORBIDDEN = {"algorithms": ("runner", "store", "widgets")}
GUI_LIBS = ("ipywidgets", "fastplotlib", "pygfx", "ipydatagrid", "voila")

_LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}
_MODULE_STRING = re.compile(rf"{PKG}(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?")


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int


@functools.cache
def module_names(src: Path = SRC) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its ``__init__``)."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def packages() -> dict[str, bool]:
    """Every module of the package -> whether it is a package."""
    return {name: path.name == "__init__.py" for name, path in module_names().items()}


def _package(module: str, is_package: bool) -> str:
    return module if is_package else module.rsplit(".", 1)[0]


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    if not level:
        return module or ""
    base = importer.split(".")
    base = base[: len(base) - (level - 1)] if is_package else base[: len(base) - level]
    return ".".join(base + ([module] if module else []))


def imports_of(source: str, importer: str, is_package: bool, known: dict[str, bool]) -> list[Import]:
    """Every import of ``importer`` (by the rules in the module docstring), as module names."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(importer, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(importer, is_package, node.level, node.module)
            for a in node.names:  # ``from pkg import mod`` imports pkg.mod; ``from pkg import name``, pkg
                sub = f"{base}.{a.name}"
                found.append(Import(importer, sub if sub in known else base, node.lineno))
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports"
              and len(node.args) == 2 and isinstance(node.args[1], ast.Dict)):
            pkg = _package(importer, is_package)
            for v in ast.walk(node.args[1]):
                if isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value.startswith("."):
                    level = len(v.value) - len(v.value.lstrip("."))
                    found.append(Import(importer, _resolve(pkg, True, level, v.value.lstrip(".") or None),
                                        node.lineno))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.fullmatch(node.value):
            found.append(Import(importer, node.value.split(":")[0], node.lineno))
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PKG


def violation(imp: Import) -> str | None:
    """Why ``imp`` breaks the contract, or None."""
    src = _layer(imp.importer)
    top = imp.target.split(".")[0]
    where = f"{imp.importer}:{imp.line} imports {imp.target}"
    if top != PKG:
        if top in GUI_LIBS and src != "widgets":
            return f"{where}: only widgets may import {top}"
        return None
    dst = _layer(imp.target)
    for name in (src, dst):
        if name not in _LEVEL:
            return f"{where}: {PKG}.{name} is in no layer (add it to LAYERS in tests/test_layering.py)"
    if dst == src:
        return None
    if dst in FORBIDDEN.get(src, ()):
        return f"{where}: {src} never imports {dst}"
    if _LEVEL[dst] < _LEVEL[src]:
        return f"{where}: {src} may not import {dst}, a layer above it"
    if _LEVEL[dst] == _LEVEL[src]:
        return f"{where}: {src} and {dst} are independent (same layer)"
    return None


def check_source(source: str, importer: str, is_package: bool = False) -> list[str]:
    """The contract's complaints about one module's source."""
    known = packages()
    return [v for imp in imports_of(source, importer, is_package, known) if (v := violation(imp))]


def private_uses(source: str, importer: str, is_package: bool, known: dict[str, bool]) -> list[str]:
    """Private names (``_x``) of a module in another package that ``importer`` reaches for:
    ``from pkg.mod import _x`` or ``mod._x`` after ``from pkg import mod``."""
    home = _package(importer, is_package)
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    out = []

    def foreign(module: str) -> bool:
        return module in known and _package(module, known[module]) != home

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _resolve(importer, is_package, node.level, node.module)
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in known:
                    aliases[a.asname or a.name] = sub
                elif a.name.startswith("_") and not a.name.startswith("__") and foreign(base):
                    out.append(f"{importer}:{node.lineno} imports {base}.{a.name}, private to {base}")
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in known})
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            module = aliases[node.value.id]
            if foreign(module):
                out.append(f"{importer}:{node.lineno} uses {module}.{node.attr}, private to {module}")
    return out


def _whole_package(check: Callable[[str, str, bool, dict[str, bool]], list[str]]) -> list[str]:
    known = packages()
    return [p for name, path in module_names().items()
            for p in check(path.read_text(), name, known[name], known)]


def test_the_package_keeps_its_layers():
    problems = _whole_package(lambda source, name, is_pkg, known: check_source(source, name, is_pkg))
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_no_module_uses_another_packages_private_names():
    """Shared pieces are public in one module (``algorithms.cnmf.model``), not borrowed."""
    problems = _whole_package(private_uses)
    assert not problems, "private names used across packages:\n" + "\n".join(problems)


def test_a_borrowed_private_name_is_reported():
    known = packages()
    source = "from ..cnmf import core\nfrom ..cnmf.core import _rank1\nmov = core._Movie(Y)\nx = core.fit\n"
    assert private_uses(source, "mesmerize_widgets.algorithms.onacid.online", False, known) == [
        "mesmerize_widgets.algorithms.onacid.online:2 imports mesmerize_widgets.algorithms.cnmf.core._rank1, "
        "private to mesmerize_widgets.algorithms.cnmf.core",
        "mesmerize_widgets.algorithms.onacid.online:3 uses mesmerize_widgets.algorithms.cnmf.core._Movie, "
        "private to mesmerize_widgets.algorithms.cnmf.core",
    ]
    # within its own package a private name is fine
    assert private_uses(source, "mesmerize_widgets.algorithms.cnmf.builtin", False, known) == []


def test_every_top_level_module_is_placed():
    tops = {_layer(m) for m in module_names()}
    assert tops <= set(_LEVEL), f"not in LAYERS: {sorted(tops - set(_LEVEL))}"
    assert len(module_names()) > 80  # the walk found the package, not an empty folder


BAD = [
    # (source, importer, is_package, the offending target, words of the reason)
    ("def f():\n    from ...runner.job import run_tmp_dir\n", "mesmerize_widgets.algorithms.onacid.live",
     False, "mesmerize_widgets.runner.job", "algorithms never imports runner"),
    ("from ..store import ACTIVE\n", "mesmerize_widgets.algorithms.registry", False,
     "mesmerize_widgets.store", "algorithms never imports store"),
    ("import fastplotlib as fpl\n", "mesmerize_widgets.accessors.cnmf", False, "fastplotlib",
     "only widgets may import fastplotlib"),
    ("if TYPE_CHECKING:\n    from ipywidgets import Widget\n", "mesmerize_widgets.api", False, "ipywidgets",
     "only widgets may import ipywidgets"),
    ("from .. import accessors\n", "mesmerize_widgets.runner.monitor", False, "mesmerize_widgets.accessors",
     "a layer above"),
    ("import mesmerize_widgets.widgets.frames\n", "mesmerize_widgets.arrays.base", False,
     "mesmerize_widgets.widgets.frames", "a layer above"),
    ("from ..sim import simulate_2p\n", "mesmerize_widgets.runner.job", False, "mesmerize_widgets.sim",
     "independent"),
    ("from .. import load_batch\n", "mesmerize_widgets.accessors.caiman", False, "mesmerize_widgets",
     "a layer above"),
    ("__getattr__, __dir__ = lazy_exports(__name__, {'x': '..accessors.frame'})\n",
     "mesmerize_widgets.store", True, "mesmerize_widgets.accessors.frame", "a layer above"),
    ("CMD = 'mesmerize_widgets.runner.item_process'\n", "mesmerize_widgets.formats.memmap", False,
     "mesmerize_widgets.runner.item_process", "a layer above"),
    ("from .newpart import x\n", "mesmerize_widgets.newpart_user", False, "mesmerize_widgets.newpart",
     "in no layer"),
]


@pytest.mark.parametrize(("source", "importer", "is_package", "target", "reason"), BAD)
def test_a_bad_import_is_reported_with_module_and_import(source, importer, is_package, target, reason):
    problems = check_source(source, importer, is_package)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{importer}:")
    assert f" imports {target}" in problems[0] and reason in problems[0]


def test_allowed_imports_pass():
    source = (
        "import numpy as np\n"
        "from ...arrays import open_movie\n"
        "from ...formats.cnmf_hdf5 import save_cnmf\n"
        "from ...errors import ParamError\n"
        "from . import core\n"
        "def f():\n    from ..context import RunContext\n"
        "B = 'mesmerize_widgets.algorithms.cnmf.builtin:run'\n"
    )
    assert check_source(source, "mesmerize_widgets.algorithms.cnmf.fake") == []
