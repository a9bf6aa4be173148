"""Loaded by every Python process started with this folder on PYTHONPATH (Dask workers, item
processes): any attempt to open a batch database is written to $BATCH_DB_AUDIT_LOG and refused.
The runner tests use it to show that nothing but the submitting process touches batch.sqlite.
"""

import os
import sys

_LOG = os.environ.get("BATCH_DB_AUDIT_LOG")


def _refuse_batch_db(event, args):
    if event not in ("open", "sqlite3.connect") or not args:
        return
    path = args[0]
    if isinstance(path, bytes):
        path = path.decode(errors="replace")
    if not isinstance(path, str | os.PathLike) or not os.path.basename(os.fspath(path)).startswith("batch.sqlite"):
        return
    with open(_LOG, "a") as log:
        log.write(f"{os.getpid()} {event} {os.fspath(path)} argv={sys.argv[:3]}\n")
    raise PermissionError(f"this process may not open the batch database {path}")


if _LOG:
    sys.addaudithook(_refuse_batch_db)
