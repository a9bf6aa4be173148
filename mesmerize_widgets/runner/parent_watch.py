"""Dask preload for the default cluster's ``dask spec`` processes: they end with their parent.

Started as subprocesses (see ``dask_runner._local_cluster``), the scheduler and the nannies
would outlive a notebook or script that was killed, holding ports and memory forever.
"""

from __future__ import annotations

import signal
from typing import Any

from ..processes import signal_on_parent_death


def dask_setup(obj: Any) -> None:
    """Called by Dask in the scheduler's and each nanny's process at start."""
    signal_on_parent_death(signal.SIGTERM)
