"""Running items: Dask submission, the per-item monitor and process, liveness checks."""

from .dask_runner import RunHandle, cancel, default_client, shutdown_default_client, submit
from .inputs import input_movie_path
from .liveness import reap_stale

__all__ = [
    "RunHandle",
    "cancel",
    "default_client",
    "input_movie_path",
    "reap_stale",
    "shutdown_default_client",
    "submit",
]
