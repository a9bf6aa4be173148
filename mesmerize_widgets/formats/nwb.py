"""Writing an NWB file: a new one or the lab's acquisition file of the session, all or nothing.

Every write goes to a temporary file in the target's folder, moved over the target with
``os.replace`` only once pynwb has closed it; appending copies the existing file first. So an
error, a crash or a full disk leaves the target as it was. pynwb and hdmf are the ``nwb``
extra, imported on first use.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py

from ..errors import FileBusyError, MissingExtraError, NWBExportError
from .nwb_ophys import OphysExport, add_ophys, fill_datasets

__all__ = ["OphysExport", "check_not_busy", "require_pynwb", "write_nwb"]

NWB_EXTRA = 'pip install "mesmerize-widgets[nwb]"'


def require_pynwb() -> Any:
    """pynwb, or an error naming the extra that installs it."""
    try:
        import hdmf  # noqa: F401
        import pynwb
    except ImportError as e:
        raise MissingExtraError(f"NWB export needs pynwb and hdmf ({e}): {NWB_EXTRA}") from e
    return pynwb


def check_not_busy(path: Path) -> None:
    """Raise FileBusyError when another process holds ``path`` open for writing.

    HDF5 locks a file it opens for writing; opening it to read then fails. (Where HDF5 file
    locking is off, HDF5_USE_FILE_LOCKING=FALSE, nobody can tell, and this passes.)
    """
    try:
        with h5py.File(path, "r"):
            pass
    except OSError as e:
        if "lock" in str(e).lower() or "already open" in str(e).lower():
            raise FileBusyError(f"{path} is open elsewhere for writing; close it there first ({e})") from e
        raise NWBExportError(f"{path} exists but is not an HDF5/NWB file ({e})") from e


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path``, moved onto it when the block ends without error."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.nwb", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _subject(subject: Any) -> Any:
    from pynwb.file import Subject

    if subject is None:
        raise NWBExportError(
            "a new NWB file needs subject=dict(subject_id=..., species=..., sex=..., age=...) "
            "(or a pynwb Subject); or append to the session's existing NWB file")
    if isinstance(subject, Subject):
        return subject
    if not isinstance(subject, dict) or not subject.get("subject_id"):
        raise NWBExportError(f"subject must be a dict with at least 'subject_id' (or a pynwb Subject), got {subject!r}")
    return Subject(**subject)


def new_nwbfile(session: dict[str, Any]) -> Any:
    """An NWBFile from the user's session metadata: ``session_start_time`` and ``subject`` required."""
    pynwb = require_pynwb()
    session = dict(session)
    start = session.pop("session_start_time", None)
    if not isinstance(start, dt.datetime):
        raise NWBExportError(
            "a new NWB file needs session_start_time (a datetime, best with its time zone): when the "
            f"recording started; got {start!r}. Or append to the session's existing NWB file")
    if start.tzinfo is None:
        start = start.astimezone()  # local time, said explicitly
    subject = _subject(session.pop("subject", None))
    return pynwb.NWBFile(
        session_start_time=start, subject=subject,
        identifier=session.pop("identifier", None) or str(uuid.uuid4()),
        session_description=session.pop("session_description", None) or "calcium imaging analysis (mesmerize-widgets)",
        **session,
    )


def _check_same_session(nwbfile: Any, session: dict[str, Any]) -> None:
    for key in ("session_start_time", "identifier"):
        given, have = session.get(key), getattr(nwbfile, key)
        if given is not None and given != have:
            raise NWBExportError(f"{key}={given!r} differs from the existing file's {have!r}: "
                                 "append only to the file of the same session")


def write_nwb(
    path: str | os.PathLike, data: OphysExport, *, session: dict[str, Any] | None = None,
    imaging_plane: dict[str, Any] | str | None = None, mask_type: str = "auto", overwrite: bool = False,
) -> Path:
    """Write ``data`` into ``path``: appended when it exists (unless ``overwrite``), else a new file.

    Appending keeps the file's session metadata; a new file takes ``session``
    (``session_start_time`` and ``subject`` required, ``identifier`` a new uuid4 by default).
    """
    pynwb = require_pynwb()
    path = Path(path)
    session = dict(session or {})
    if path.exists():
        check_not_busy(path)
    if path.exists() and not overwrite:
        with _replacing(path) as tmp:
            shutil.copyfile(path, tmp)
            with pynwb.NWBHDF5IO(tmp, "a") as io:
                nwbfile = io.read()
                _check_same_session(nwbfile, session)
                fills = add_ophys(nwbfile, data, plane_spec=imaging_plane, mask_type=mask_type)
                io.write(nwbfile)
            _fill(tmp, fills)
        return path
    nwbfile = new_nwbfile(session)
    fills = add_ophys(nwbfile, data, plane_spec=imaging_plane, mask_type=mask_type)
    with _replacing(path) as tmp:
        with pynwb.NWBHDF5IO(tmp, "w") as io:
            io.write(nwbfile)
        _fill(tmp, fills)
    return path


def _fill(tmp: Path, fills: list) -> None:
    if fills:
        with h5py.File(tmp, "r+") as f:
            fill_datasets(f, fills)
