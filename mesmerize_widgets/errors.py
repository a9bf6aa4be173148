"""The project's exceptions: each names the problem so a user knows what to fix.

They subclass the built-in exception a caller would already catch (ValueError, KeyError,
RuntimeError), so code written for mesmerize-core keeps working.
"""

from __future__ import annotations


class MesmerizeError(Exception):
    """Base class of every error raised on purpose by mesmerize_widgets."""


class NotABatchError(MesmerizeError, ValueError):
    """The path is not a batch (no batch.sqlite, or a file that is not one)."""


class SchemaTooNewError(MesmerizeError, RuntimeError):
    """The batch was written by a newer mesmerize_widgets; opening it could corrupt it."""


class ItemNotFoundError(MesmerizeError, KeyError):
    """No item with that uuid or index in the batch."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "item not found"


class UnknownAlgorithmError(MesmerizeError, ValueError):
    """The algo name is not in the registry."""


class ParamError(MesmerizeError, ValueError):
    """Params that are not a dict, or carry unknown or ill-typed keys."""


class DependencyError(MesmerizeError, ValueError):
    """An operation would break an item that depends on another (e.g. removing a parent)."""


class ItemBusyError(MesmerizeError, RuntimeError):
    """The item is queued or running: cancel it before changing or removing it."""


class BackendUnavailableError(MesmerizeError, RuntimeError):
    """The requested backend cannot run here (CaImAn missing or its environment broken)."""


class MemoryBudgetError(MesmerizeError, MemoryError):
    """A step would hold more of the movie than its memory budget allows: said before it starts."""


class DiskSpaceError(MesmerizeError, OSError):
    """An output would not fit on its disk: said before writing it (a full disk under a memmap
    kills the process mid-run)."""


class UnsafePickleError(MesmerizeError, ValueError):
    """A legacy batch pickle tried to build something a batch never holds."""


class MissingExtraError(MesmerizeError, ImportError):
    """An optional feature needs packages of an extra that is not installed; the message says
    which ``pip install`` brings them."""


class NWBExportError(MesmerizeError, ValueError):
    """An NWB export cannot be written as asked: missing session metadata, an item that is not
    done, names already in the file. Nothing was written."""


class FileBusyError(MesmerizeError, OSError):
    """The file is open elsewhere for writing (HDF5's lock says so): nothing was written."""
