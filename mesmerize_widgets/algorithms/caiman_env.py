"""Is CaImAn here, and will it work? Checked before a run, never discovered mid-run.

The PyPI package named ``caiman`` is an unrelated MicroPython tool, so finding a module called
``caiman`` is not enough: the real one has ``caiman.source_extraction``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

from packaging.version import Version


def _version(dist: str) -> Version | None:
    try:
        return Version(importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return None
    except Exception:
        return None


@cache
def caiman_installed() -> bool:
    """True when the real CaImAn can be imported, found without importing it (that takes 15 s:
    finding a submodule's spec would import the package)."""
    try:
        spec = importlib.util.find_spec("caiman")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(loc) / "source_extraction").is_dir() for loc in spec.submodule_search_locations)


def caiman_problems(needs_deconvolution: bool = False) -> list[str]:
    """Known ways CaImAn 1.x breaks in this environment, each as a sentence a user can act on."""
    if not caiman_installed():
        return [
            "CaImAn is not installed (it is not on PyPI: install it from conda-forge with "
            "`conda install -c conda-forge caiman`; the PyPI package named 'caiman' is unrelated)"
        ]
    problems = []
    numpy_v = _version("numpy")
    if numpy_v is not None and numpy_v >= Version("2"):
        problems.append(f"CaImAn 1.x needs numpy < 2, this environment has numpy {numpy_v}")
    scipy_v = _version("scipy")
    if needs_deconvolution and scipy_v is not None and scipy_v >= Version("1.17"):
        problems.append(
            f"CaImAn's deconvolution fails under scipy >= 1.17 (this environment has scipy "
            f"{scipy_v}: 'LinAlgError: 3-dimensional array given' in estimate_time_constant); "
            "install scipy<=1.16 or use backend='builtin'"
        )
    return problems


def set_caiman_temp(directory: os.PathLike | str) -> Callable[[], None]:
    """Point CAIMAN_TEMP at ``directory`` (CaImAn writes its memmaps and HDF5 there, not under
    ~/caiman_data) and return the function that puts the previous value back."""
    old = os.environ.get("CAIMAN_TEMP")
    os.environ["CAIMAN_TEMP"] = str(directory)

    def restore() -> None:
        if old is None:
            os.environ.pop("CAIMAN_TEMP", None)
        else:
            os.environ["CAIMAN_TEMP"] = old

    return restore
