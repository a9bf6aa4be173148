"""Running items: Dask submission, the per-item monitor and process, liveness checks.

Lazy (see ``.._lazy``): an item process imports ``runner.item_process`` without the
submission side (the store, Dask).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .dask_runner import RunHandle, cancel, default_client, shutdown_default_client, submit
    from .inputs import input_movie_path
    from .liveness import reap_stale

__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(("RunHandle", "cancel", "default_client", "shutdown_default_client", "submit"),
                    ".dask_runner"),
    "input_movie_path": ".inputs",
    "reap_stale": ".liveness",
})

__all__ = [
    "RunHandle",
    "cancel",
    "default_client",
    "input_movie_path",
    "reap_stale",
    "shutdown_default_client",
    "submit",
]
