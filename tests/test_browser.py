"""Real browser: Voila serving the app and JupyterLab running a notebook, driven by Playwright.

Debian's Chromium (``/usr/bin/chromium``, installed by ``make test``; never a browser download)
opens pages served on 127.0.0.1 at free ports. The batch holds real items built from simulated
ground truth (tests/test_viewers.py). Every server is started in its own process group and
stopped by a finalizer, also when a test fails. Screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mesmerize_widgets as mw
from mesmerize_widgets.cli import app_env, free_port, voila_command
from mesmerize_widgets.store import paths as store_paths

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOAD_S = 120  # a cold kernel + fastplotlib + the first frame, on 2 CPU cores


# -- servers ---------------------------------------------------------------------------------------------
def _env(tmp: Path, batch: Path | None = None, raw: Path | None = None) -> dict[str, str]:
    """The servers' (and so the kernels') environment: on-screen canvas, not the tests' offscreen one."""
    env = app_env(batch, raw) if batch is not None else dict(os.environ)
    for k in ("RENDERCANVAS_FORCE_OFFSCREEN", "WGPU_FORCE_OFFSCREEN"):
        env.pop(k, None)
    env["XDG_RUNTIME_DIR"] = str(tmp)
    env["JUPYTER_CONFIG_DIR"] = str(tmp / "jupyter-config")  # no user settings leak in
    env["JUPYTER_RUNTIME_DIR"] = str(tmp / "jupyter-runtime")
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _serve(request: pytest.FixtureRequest, cmd: list[str], env: dict[str, str], cwd: Path, url: str,
           log: Path) -> subprocess.Popen:
    """Start a server in its own process group (stopped at teardown); wait until ``url`` answers."""
    out = log.open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    request.addfinalizer(out.close)
    request.addfinalizer(lambda: _stop(proc))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[2]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within 60 s: {log.read_text()[-2000:]}")


def _wait_until_served(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Until Voila at ``url`` serves its static files (the command ``proc`` logs to ``log``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}voila/static/voila.js", timeout=5):
                return
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)


# -- data ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared_batch(tmp_path_factory) -> Iterator[tuple[Path, Path]]:
    """A batch with a done mcorr item (row 0) and a done cnmf item (row 1), and its raw folder."""
    from test_viewers import add_cnmf_item, add_mcorr_item

    root = tmp_path_factory.mktemp("browser")
    raw = root / "raw"
    raw.mkdir()
    mw.set_parent_raw_data_path(raw)
    try:
        df = mw.create_batch(root / "batch")
        df, *_ = add_mcorr_item(df, raw, name="motion corrected")
        df, *_ = add_cnmf_item(df, raw, name="cells")
    finally:
        store_paths._parent_raw_data_path = None
    yield root / "batch", raw


# -- the browser -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (`make test` installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 1500},
        )
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def page(browser_context, request):
    pg = browser_context.new_page()
    pg.set_default_timeout(LOAD_S * 1000)
    logs: list[str] = []
    pg.on("console", lambda m: logs.append(f"{m.type}: {m.text[:500]}"))
    pg.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"\W+", "_", request.node.name)
    try:
        pg.screenshot(path=str(ARTIFACTS / f"{name}-end.png"), full_page=True)
    except Exception:  # the page may be gone after a failure; keep the console log all the same
        pass
    (ARTIFACTS / f"{name}-console.log").write_text("\n".join(logs))
    pg.close()


# -- pixels ----------------------------------------------------------------------------------------------
def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def shot(locator, name: str) -> np.ndarray:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = locator.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    return pixels(png)


def wait_for_pixels(locator, name: str, ok, timeout: float = 60.0) -> np.ndarray:
    """Screenshots of ``locator`` until ``ok(pixels)``; the last one is saved as ``name``."""
    deadline = time.monotonic() + timeout
    while True:
        img = shot(locator, name)
        if ok(img):
            return img
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: the canvas did not show what was expected in {timeout:.0f} s")
        time.sleep(0.5)


def settle(locator, name: str, timeout: float = 30.0) -> np.ndarray:
    """The canvas once two screenshots 0.7 s apart are identical (no frame or layout in flight)."""
    prev = shot(locator, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.7)
        img = shot(locator, name)
        if img.shape == prev.shape and np.array_equal(img, prev):
            return img
        prev = img
    raise AssertionError(f"{name}: the canvas kept changing for {timeout:.0f} s")


def not_blank(img: np.ndarray) -> bool:
    return img.std() > 8 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50


def diff_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).sum(2) > 30


def changed(before: np.ndarray, min_pixels: int = 200):
    return lambda img: img.shape == before.shape and int(diff_mask(img, before).sum()) >= min_pixels


def green_mask(img: np.ndarray) -> np.ndarray:
    """Pixels of the accepted-contour colour (bright green, not in the gnuplot2 movie colour map)."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return (g > 180) & (r < 140) & (b < 160)


def green(img: np.ndarray) -> int:
    return int(green_mask(img).sum())


def dilate(mask: np.ndarray, r: int = 2) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def slider_handle(page, label: str):
    """The keyboard handle of the ipywidgets slider whose description is ``label``."""
    box = page.locator(".widget-slider").filter(has=page.locator("label.widget-label", has_text=re.compile(f"^{label}$")))
    return box.first.locator(".noUi-handle").first


def slider_readout(page, label: str) -> str:
    box = page.locator(".widget-slider").filter(has=page.locator("label.widget-label", has_text=re.compile(f"^{label}$")))
    return box.first.locator(".widget-readout").first.inner_text().strip()


def check_viewer(page, prefix: str) -> None:
    """On a shown CNMFViewer: a non-blank frame, a time step that changes it, recoloured contours."""
    canvas = page.locator("div.renderview-wrapper > img.renderview-view").first
    canvas.wait_for(state="visible")
    page.wait_for_function("() => { const i = document.querySelector('div.renderview-wrapper > img.renderview-view');"
                           " return i && i.src.startsWith('blob:') && i.naturalWidth > 0; }")
    wait_for_pixels(canvas, f"{prefix}-1-first-frame", not_blank)
    first = settle(canvas, f"{prefix}-1-first-frame")
    assert not_blank(first)

    handle = slider_handle(page, "frame")
    handle.focus()
    for _ in range(7):
        handle.press("ArrowRight")
    assert slider_readout(page, "frame") == "7"
    wait_for_pixels(canvas, f"{prefix}-2-frame-7", changed(first))
    step = settle(canvas, f"{prefix}-2-frame-7")
    assert changed(first)(step), "moving the time slider did not change the frame"

    counts = page.locator(".widget-html", has_text=re.compile(r"\d+ accepted, \d+ rejected")).first
    counts_before = counts.inner_text()
    n_green = green(step)
    assert n_green > 50, "no accepted (green) contours on the input panel"
    snr = slider_handle(page, "min_SNR")
    snr.focus()
    snr.press("End")  # min_SNR 20: only components passing on r-value stay accepted
    wait_for_pixels(canvas, f"{prefix}-3-after-eval", lambda img: green(img) < 0.8 * n_green)
    after = settle(canvas, f"{prefix}-3-after-eval")
    assert green(after) < 0.8 * n_green
    # what changed is the contours' colour, not the frame: changed pixels lie near the old green
    # lines (within one 8x8 JPEG block: frames arrive as JPEG while the canvas is live)
    diff = diff_mask(after, step)
    assert diff.sum() > 50 and (diff & ~dilate(green_mask(step), 8)).sum() <= 0.02 * diff.sum()
    assert counts.inner_text() != counts_before


# -- Voila: the app -----------------------------------------------------------------------------------------
@pytest.fixture
def voila_app(request, prepared_batch, tmp_path):
    batch, raw = prepared_batch
    port = free_port()
    from mesmerize_widgets.cli import app_notebook

    nb = app_notebook()
    _serve(request, voila_command(nb, port), _env(tmp_path, batch, raw), nb.parent,
           f"http://127.0.0.1:{port}/voila/static/voila.js", tmp_path / "voila.log")
    return f"http://127.0.0.1:{port}/"


def test_voila_app_row_click_time_slider_and_evaluation(voila_app, page):
    page.goto(voila_app)
    grid = page.locator(".lm-DataGrid, .p-DataGrid").first
    grid.wait_for(state="visible")
    page.wait_for_timeout(1000)  # the grid paints its canvas after the data arrives
    shot(grid, "voila-0-table")
    box = grid.bounding_box()
    # row 1 (the cnmf item): header 20 px, rows 20 px (ipydatagrid's defaults)
    page.mouse.click(box["x"] + 200, box["y"] + 20 + 20 * 1 + 10)
    page.locator(".widget-html", has_text=re.compile(r"cells · cnmf · \d+ components")).first.wait_for()
    check_viewer(page, "voila")
    assert page.locator("text=Traceback").count() == 0


def test_voila_app_on_a_corrupt_batch_shows_a_message(request, tmp_path, page):
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "batch.sqlite").write_bytes(b"this is not a database" * 50)
    port = free_port()
    from mesmerize_widgets.cli import app_notebook

    nb = app_notebook()
    _serve(request, voila_command(nb, port), _env(tmp_path, bad), nb.parent,
           f"http://127.0.0.1:{port}/voila/static/voila.js", tmp_path / "voila.log")
    page.goto(f"http://127.0.0.1:{port}/")
    msg = page.locator(".mesmerize-app-error").first
    msg.wait_for()
    text = msg.inner_text()
    assert "cannot open the batch" in text and "not a batch database" in text
    assert page.locator("text=Traceback").count() == 0 and page.locator("text=There was an error").count() == 0
    shot(page.locator("body"), "voila-corrupt-batch")


# -- JupyterLab: a notebook with the viewer -------------------------------------------------------------
VIEWER_NOTEBOOK = """import os
import mesmerize_widgets as mw
from mesmerize_widgets.widgets import CNMFViewer

mw.set_parent_raw_data_path(os.environ["MESMERIZE_RAW_DATA"])
df = mw.load_batch(os.environ["MESMERIZE_BATCH"])
viewer = CNMFViewer(df.iloc[1])
viewer"""


@pytest.fixture
def jupyterlab(request, prepared_batch, tmp_path):
    import nbformat

    batch, raw = prepared_batch
    root = tmp_path / "lab"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(VIEWER_NOTEBOOK)]
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, root / "viewer.ipynb")
    port = free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--ServerApp.disable_check_xsrf=True", "--allow-root", "--LabApp.extension_manager=readonly"]
    env = _env(tmp_path, batch, raw)
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "workspaces")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "lab-settings")
    _serve(request, cmd, env, root, f"http://127.0.0.1:{port}/api", tmp_path / "jupyterlab.log")
    return f"http://127.0.0.1:{port}/lab/tree/viewer.ipynb"


def test_jupyterlab_notebook_viewer(jupyterlab, page):
    page.goto(jupyterlab)
    cell = page.locator(".jp-Notebook .jp-CodeCell").first
    cell.wait_for()
    # run the cell only once the kernel is connected and idle (before that, the request is lost)
    page.locator(".jp-StatusBar-Item", has_text=re.compile(r"Python 3.*Idle")).first.wait_for()
    cell.locator(".cm-content").first.click()
    page.keyboard.press("Shift+Enter")
    page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt", has_text="[1]:").first.wait_for()
    check_viewer(page, "jupyterlab")
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                        has_text="Traceback").count() == 0


# -- the demo command: build the batch, then serve the app -------------------------------------------------
def test_cli_demo_builds_the_batch_and_serves_the_app(request, tmp_path, page):
    port = free_port()
    log = tmp_path / "demo.log"
    out = log.open("wb")
    request.addfinalizer(out.close)
    proc = subprocess.Popen([sys.executable, "-m", "mesmerize_widgets.cli", "demo", str(tmp_path / "demo_batch"),
                             f"--port={port}"], env=_env(tmp_path), cwd=tmp_path, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    request.addfinalizer(lambda: _stop(proc))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while f"open {url}" not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)
    text = log.read_text()
    for algo in ("mcorr", "cnmf", "cnmfe", "preprocess", "summary"):
        assert re.search(rf"\s{algo}\s+done\s", text), (algo, text[-3000:])
    df = mw.load_batch(tmp_path / "demo_batch")
    assert list(df["status"]) == ["done"] * 6
    _wait_until_served(url, proc, log)
    page.goto(url)
    page.locator(".lm-DataGrid, .p-DataGrid").first.wait_for(state="visible")
    assert page.locator(".mesmerize-app-error").count() == 0
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C stops the server and the command
    # stop_server's worst case: 10 s for Voila and its kernels to end, 10 s after a terminate,
    # then kill, then 10 s for the command itself (a loaded machine has taken more than 30 s)
    assert proc.wait(60) in (0, -signal.SIGINT, 130)
    with pytest.raises(OSError):  # Voila (in its own session) is gone too
        urllib.request.urlopen(f"{url}voila/static/voila.js", timeout=5)


def test_sigterm_to_make_demo_ends_the_app_voila_and_its_kernels(request, tmp_path, page, prepared_batch):
    """``kill`` (or a service manager) sends SIGTERM to the command it started alone: ``make``
    exits on it without passing it on, and Jupyter starts each kernel in a session of its own.
    The app, Voila and the kernels must not outlive it."""
    import psutil

    batch, raw = prepared_batch
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "app.log"
    out = log.open("wb")
    request.addfinalizer(out.close)
    # a parent that, like make, dies on SIGTERM and leaves its child to itself
    like_make = [sys.executable, "-c", "import subprocess, sys; subprocess.Popen(sys.argv[1:]).wait()"]
    proc = subprocess.Popen([*like_make, sys.executable, "-m", "mesmerize_widgets.cli", "app", str(batch),
                             f"--port={port}", "--raw-data", str(raw)], env=_env(tmp_path, batch, raw),
                            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    seen: list[psutil.Process] = []

    def cleanup() -> None:
        for p in seen:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
    request.addfinalizer(cleanup)
    _wait_until_served(url, proc, log)
    page.goto(url)
    page.locator(".lm-DataGrid, .p-DataGrid").first.wait_for(state="visible")
    seen.extend(psutil.Process(proc.pid).children(recursive=True))
    assert any("mesmerize_widgets.cli" in " ".join(p.cmdline()) for p in seen)
    kernels = [p for p in seen if "ipykernel" in " ".join(p.cmdline())]
    assert kernels, [p.cmdline() for p in seen]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM
    _, alive = psutil.wait_procs(seen, timeout=60)
    assert not alive, [p.cmdline()[:4] for p in alive]
