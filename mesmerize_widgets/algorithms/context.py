"""What an algorithm's run function receives: the input, its params, and where to write.

Backends see only this, never the store or the runner, so they can be called from a script,
a test or a worker alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ProgressFn = Callable[[float, str], None]


def _no_progress(fraction: float, message: str = "") -> None:
    return None


@dataclass
class RunContext:
    """One run of one item.

    ``output_dir`` is a fresh directory the runner renames to ``final_dir`` only if the run
    returns; files are named ``{prefix}{suffix}`` like mesmerize-core names them (prefix = the
    uuid). The run function returns the outputs dict: :class:`~pathlib.Path` values must lie
    inside ``output_dir`` and are stored relative to the batch. A path written *inside* a file
    (CaImAn's ``mmap_file``) must be where the file will be read later: under
    :attr:`final_output_dir`.
    """

    input_path: Path | None
    params: dict[str, Any]
    output_dir: Path
    prefix: str
    progress: ProgressFn = field(default=_no_progress)
    n_processes: int = 1
    #: bytes of private memory each process of the run may hold (the runner's memory_limit), or
    #: None; algorithms that work in pieces size them from it
    memory_limit: int | None = None
    #: where the runner moves ``output_dir`` once the run returns (``<batch>/<uuid>``); None when
    #: the caller (a script, a test) keeps ``output_dir`` where it is
    final_dir: Path | None = None
    #: a folder that outlives an interrupted run (a killed process, a lost node) and is the same
    #: for every attempt of this item with these params and this input, so an algorithm can save
    #: finished work there and skip it when run again (see ``algorithms/checkpoint.py``); the
    #: runner removes it once the run succeeds. None: nothing is kept (a script, a test)
    checkpoint_dir: Path | None = None

    @property
    def final_output_dir(self) -> Path:
        """The output folder as it will be when the run has succeeded."""
        return self.output_dir if self.final_dir is None else self.final_dir

    @property
    def main(self) -> dict[str, Any]:
        return self.params.get("main", {})

    def output(self, suffix: str) -> Path:
        return self.output_dir / f"{self.prefix}{suffix}"
