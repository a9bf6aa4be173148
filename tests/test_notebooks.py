"""The tutorial notebooks run top to bottom in a real kernel (nbclient), as a user would run them.

Kernels get the environment of a user's notebook: no ``RENDERCANVAS_FORCE_OFFSCREEN`` (other
test modules set it in this process), so the viewers build rendercanvas's anywidget canvas as in
JupyterLab. Outputs go to a temporary folder (``MESMERIZE_NOTEBOOK_DIR``); the executed
notebooks are saved under ``test-artifacts/notebooks/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the test extras; absent e.g. in a CaImAn env
nbclient = pytest.importorskip("nbclient")
NotebookClient = nbclient.NotebookClient
CellExecutionError = nbclient.exceptions.CellExecutionError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "test-artifacts" / "notebooks"
TUTORIALS = ["mcorr_cnmf.ipynb", "cnmfe.ipynb", "param_search.ipynb", "app.ipynb"]


def kernel_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's environment: outputs under ``tmp_path``, the on-screen (anywidget) canvas."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RENDERCANVAS_FORCE_OFFSCREEN", "WGPU_FORCE_OFFSCREEN", "MESMERIZE_BATCH",
                        "MESMERIZE_MOVIE", "MESMERIZE_RAW_DATA")}
    env["MESMERIZE_NOTEBOOK_DIR"] = str(tmp_path)
    env.setdefault("XDG_RUNTIME_DIR", str(tmp_path))
    env.update(extra)
    return env


def execute(name: str, tmp_path: Path, timeout: int = 400, **env: str) -> nbformat.NotebookNode:
    """Run a notebook from ``notebooks/`` (its own folder as cwd); save the result as an artefact."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute(env=kernel_env(tmp_path, **env))
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, ARTIFACTS / name)
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    """Text outputs and the string values of every widget's saved state."""
    parts = []
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    for model in state.get("state", {}).values():
        parts.extend(str(v) for v in model.get("state", {}).values() if isinstance(v, str))
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(TUTORIALS)


def test_app_notebook_matches_the_cli_copy():
    """``mesmerize-widgets app`` serves the same cells when the package is installed without the repo."""
    from mesmerize_widgets.cli import APP_CELLS

    nb = nbformat.read(NOTEBOOKS / "app.ipynb", as_version=4)
    assert [c.source for c in nb.cells if c.cell_type == "code"] == APP_CELLS


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in TUTORIALS if n != "app.ipynb"])
def test_tutorial_runs_top_to_bottom(name, tmp_path):
    nb = execute(name, tmp_path)
    assert (tmp_path / name.removesuffix(".ipynb") / "batch" / "batch.sqlite").exists()
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    # the viewers were displayed as widgets (with their fastplotlib canvas, an anywidget)
    widget_views = [o for c in nb.cells for o in c.get("outputs", [])
                    if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widget_views, "no widget was displayed"
    assert "Traceback" not in outputs_text(nb)


@pytest.mark.slow
def test_app_notebook_on_a_missing_batch_shows_a_message(tmp_path):
    nb = execute("app.ipynb", tmp_path, MESMERIZE_BATCH=str(tmp_path / "no-such-batch"))
    text = outputs_text(nb)
    assert "cannot open the batch" in text and "does not exist" in text
    assert "Available devices" not in text  # no fastplotlib banner in the app


@pytest.mark.slow
def test_notebook_on_a_missing_movie_fails_with_a_clear_error(tmp_path):
    missing = tmp_path / "data" / "mouse1.tif"
    with pytest.raises(CellExecutionError) as info:
        execute("mcorr_cnmf.ipynb", tmp_path, MESMERIZE_MOVIE=str(missing))
    msg = str(info.value)
    assert "MovieReadError" in msg and f"{missing}: no such file or directory" in msg
