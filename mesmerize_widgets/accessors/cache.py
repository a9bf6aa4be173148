"""A bounded cache of results derived from output files, keyed on the file's version.

Keys start with (path, mtime_ns, size, inode): an output replaced atomically gets a new key, so
a stale result is never served.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import numpy as np


# --------------------------------------------------------------------------------------------
class BoundedCache:
    """A small thread-safe LRU keyed on (file version, what, args)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = compute()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value

    def drop_path(self, path: str) -> None:
        """Forget every entry of one file (all its versions)."""
        with self._lock:
            for k in [k for k in self._data if k[0][0] == path]:
                del self._data[k]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_outputs = BoundedCache(maxsize=8)  # loaded files (CNMFResult or CaImAn CNMF)
_derived = BoundedCache(maxsize=64)  # masks, contours, traces, lazy arrays


def clear_cache() -> None:
    """Drop every cached CNMF result (e.g. to free memory)."""
    _outputs.clear()
    _derived.clear()


def file_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino)


def copy_result(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (tuple, list)):
        return type(value)(copy_result(v) for v in value)
    return value
