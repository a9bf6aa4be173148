"""``mesmerize-widgets``: ``demo`` builds and runs a demo batch and serves the app; ``app`` serves it.

The app is the notebook ``notebooks/app.ipynb`` served by Voila on 127.0.0.1; the batch it
opens is passed in the ``MESMERIZE_BATCH`` environment variable. Serving needs the ``app``
extra (``pip install "mesmerize-widgets[app]"``: voila, ipykernel).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from .processes import signal_on_parent_death

BATCH_ENV = "MESMERIZE_BATCH"
RAW_ENV = "MESMERIZE_RAW_DATA"
DEFAULT_BATCH = "demo_batch"

#: The code cells of the app notebook (``notebooks/app.ipynb`` holds the same cells; a test checks).
APP_CELLS = [
    '"""The mesmerize app: the batch table, the parameter grid and the viewer of the selected item.\n'
    "\n"
    "Served by `mesmerize-widgets app BATCH_DIR` (Voila). The batch is $MESMERIZE_BATCH (default:\n"
    "../demo_batch, the batch `make demo` builds); input movies are looked up under\n"
    '$MESMERIZE_RAW_DATA (default: the demo\'s BATCH_data folder, when it exists)."""\n'
    "import os\n"
    "\n"
    "from IPython.utils.capture import capture_output\n"
    "\n"
    "with capture_output():  # not fastplotlib's import banner (logo, GPU table) in the app\n"
    "    from mesmerize_widgets.widgets.app import app_for_path\n"
    "\n"
    'batch_path = os.environ.get("MESMERIZE_BATCH", "../demo_batch")\n'
    'raw_data = os.environ.get("MESMERIZE_RAW_DATA") or f"{batch_path.rstrip(\'/\')}_data"\n'
    "app = app_for_path(batch_path, raw_data_path=raw_data if os.path.isdir(raw_data) else None)\n"
    "app",
]


# -- the demo batch ------------------------------------------------------------------------------------
def build_demo(batch_dir: Path, max_workers: int = 2, fresh: bool = True) -> int:
    """Create the demo batch from the sample movies, run it and print its outputs; 0 when all done.

    2p: summary, mcorr, cnmf on the mcorr output. 1p: preprocess (2x downsampled), summary,
    cnmfe on the preprocessed movie.
    """
    import mesmerize_widgets as mw
    from mesmerize_widgets.runner import shutdown_default_client
    from mesmerize_widgets.sim import sample_movie

    data_dir = batch_dir.parent / f"{batch_dir.name}_data"  # the app finds it there
    data_dir.mkdir(parents=True, exist_ok=True)
    print("generating the sample movies (cached after the first run) ...", flush=True)
    movie_2p = sample_movie("2p", dest_dir=data_dir)
    movie_1p = sample_movie("1p", dest_dir=data_dir)
    mw.set_parent_raw_data_path(data_dir)
    if not fresh and (batch_dir / "batch.sqlite").exists():
        df = mw.load_batch(batch_dir)
    else:
        df = mw.create_batch(batch_dir, remove_existing=fresh)
    if not len(df):
        df.caiman.add_item("summary", "2p sample", movie_2p.name, {"main": {}})
        mc = df.caiman.add_item("mcorr", "2p sample", movie_2p.name,
                                {"main": {"max_shifts": (6, 6), "pw_rigid": False}})
        df.caiman.add_item("cnmf", "2p sample", mc, {"main": {"K": 60, "gSig": (4, 4), "p": 1, "fr": 30.0}})
        pre = df.caiman.add_item("preprocess", "1p sample, 2x downsampled", movie_1p.name,
                                 {"main": {"ds_factor": 2}})
        df.caiman.add_item("summary", "1p sample, 2x downsampled", pre, {"main": {}})
        df.caiman.add_item("cnmfe", "1p sample, 2x downsampled", pre,
                           {"main": {"gSig": (2, 2), "fr": 20.0, "decay_time": 0.5, "min_corr": 0.8,
                                     "min_pnr": 10.0}})
    print(f"batch {batch_dir}: {len(df)} items; running them on a local Dask cluster ...", flush=True)
    df.caiman.run(max_workers=max_workers)
    df = df.caiman.reload_from_disk()
    print()
    ok = True
    for _, row in df.iterrows():
        print(f"{row['item_name']:<32} {row['algo']:<11} {row['status']:<8} {row['algo_duration'] or ''}")
        if row["status"] != "done":
            ok = False
            print(f"    error: {(row['error'] or '').strip().splitlines()[-1:]}")
            continue
        for key, value in (row["outputs"] or {}).items():
            if isinstance(value, str) and "/" in value:
                print(f"    {key:<24} {batch_dir / value}")
    print(f"\nopen it in Python: mesmerize_widgets.load_batch({str(batch_dir)!r})")
    shutdown_default_client()
    return 0 if ok else 1


# -- serving the app -----------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def app_notebook() -> Path:
    """``notebooks/app.ipynb`` of a source checkout, else the same cells written to a temp folder."""
    repo_nb = Path(__file__).resolve().parents[1] / "notebooks" / "app.ipynb"
    if repo_nb.exists():
        return repo_nb
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"app-{i}", "metadata": {},
                   "outputs": [], "source": src} for i, src in enumerate(APP_CELLS)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path = Path(tempfile.mkdtemp(prefix="mesmerize-app-")) / "app.ipynb"
    path.write_text(json.dumps(nb, indent=1))
    return path


def voila_command(notebook: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """The command line that serves ``notebook`` with Voila (no browser opened)."""
    return [sys.executable, "-m", "voila", str(notebook), f"--port={port}", "--no-browser",
            f"--Voila.ip={host}", "--theme=light"]


def app_env(batch_dir: Path, raw_data: Path | None = None) -> dict[str, str]:
    """The environment of the Voila server (and so of its kernels)."""
    env = dict(os.environ)
    env[BATCH_ENV] = str(batch_dir)
    if raw_data is not None:
        env[RAW_ENV] = str(raw_data)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    return env


def serve_app(batch_dir: Path, port: int | None = None, host: str = "127.0.0.1",
              raw_data: Path | None = None) -> int:
    """Serve the Voila app over ``batch_dir`` until Ctrl-C; the address is printed first."""
    if shutil.which("voila") is None and _missing("voila"):
        print("serving the app needs Voila: pip install 'mesmerize-widgets[app]'", file=sys.stderr)
        return 2
    port = port or free_port(host)
    notebook = app_notebook()
    print(f"\nserving the app for batch {batch_dir}\n  open http://{host}:{port}/  (Ctrl-C stops it)",
          flush=True)
    proc = subprocess.Popen(voila_command(notebook, port, host), env=app_env(batch_dir, raw_data),
                            cwd=notebook.parent, start_new_session=True)
    # SIGTERM too stops Voila (its own session) and its kernels before this process ends; and
    # SIGTERM comes when the parent dies (make does not pass a SIGTERM on to its children)
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    signal_on_parent_death(signal.SIGTERM)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(proc)
        signal.signal(signal.SIGTERM, old_term)


def stop_server(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """End a server started in its own session and everything it started.

    Jupyter starts each kernel in a session of its own, so signalling Voila's process group
    leaves the kernels running (holding memory and the batch open); they are collected first
    and terminated with it.
    """
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # Voila shuts its kernels down when it can
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)


def _demo_data_dir(batch_dir: Path) -> Path | None:
    d = batch_dir.parent / f"{batch_dir.name}_data"
    return d if d.is_dir() else None


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mesmerize-widgets`` command."""
    ap = argparse.ArgumentParser(prog="mesmerize-widgets", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="build and run a demo batch from the sample movies, then serve the app")
    d.add_argument("batch_dir", nargs="?", default=DEFAULT_BATCH)
    d.add_argument("--max-workers", type=int, default=2)
    d.add_argument("--keep", action="store_true", help="keep an existing demo batch instead of recreating it")
    d.add_argument("--no-serve", action="store_true", help="stop after the batch (headless machines, CI)")
    d.add_argument("--port", type=int, default=None, help="port of the app (default: a free one)")
    a = sub.add_parser("app", help="serve the app (Voila) over a batch directory on 127.0.0.1")
    a.add_argument("batch_dir", nargs="?", default=os.environ.get(BATCH_ENV, DEFAULT_BATCH))
    a.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    a.add_argument("--raw-data", default=os.environ.get(RAW_ENV),
                   help="parent raw data path of the batch's input movies (default: BATCH_DIR_data if it exists)")
    args = ap.parse_args(argv)
    batch_dir = Path(args.batch_dir).resolve()
    if args.command == "demo":
        rc = build_demo(batch_dir, args.max_workers, fresh=not args.keep)
        if rc or args.no_serve:
            return rc
        return serve_app(batch_dir, args.port, raw_data=_demo_data_dir(batch_dir))
    if args.command == "app":
        raw = Path(args.raw_data).resolve() if args.raw_data else _demo_data_dir(batch_dir)
        return serve_app(batch_dir, args.port, raw_data=raw)
    return 2


if __name__ == "__main__":
    sys.exit(main())
