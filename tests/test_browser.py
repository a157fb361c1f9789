"""JupyterLab in a real browser: what a learner sees, not only what nbval compares.

Starts JupyterLab on localhost with a token, drives Debian's Chromium headless through
Playwright, runs every cell of the playground and the schedule and context lessons from the Run
menu (on copies whose saved outputs were cleared, so everything checked was produced by this run),
then checks: no error output, the GIF animations render, dragging the t slider changes the noised
sprite, dragging a context slider changes the sampled sprites; in the playground, dragging a class
slider redraws, and painting cells of the Edit tab's grid and pressing inpaint fills them. On failure, screenshots and the page's
text go to build/browser/.

Skipped, with the reason, where Chromium or Playwright is missing (`.ci/run` installs both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts JupyterLab and a browser: not for the edit-test loop

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a closed network: no background fetches, no sync, no first-run pages.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

# CI sets REQUIRE_BROWSER=1: there a missing browser is a failure, not a skip.
REQUIRED = os.environ.get("REQUIRE_BROWSER") == "1"


def _missing(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason}, and REQUIRE_BROWSER=1")
    pytest.skip(reason)


def _playwright():
    if CHROMIUM is None:
        _missing("Chromium is not installed (apt-get install chromium chromium-driver)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed (pip install -r requirements-dev.txt)")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cleared_copy(src: Path, dst: Path) -> None:
    """The notebook without its saved outputs and widget state."""
    nb = json.loads(src.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb["metadata"].pop("widgets", None)
    dst.write_text(json.dumps(nb))


@pytest.fixture(scope="module")
def lab(tmp_path_factory, browser):  # noqa: ARG001 — no server is started where there is no browser
    """(base URL, token) of a JupyterLab serving cleared copies of the lessons beside the real weights."""
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    for nb in ("00_playground.ipynb", "01_noise_schedule.ipynb", "06_context.ipynb"):
        _cleared_copy(ROOT / "notebooks" / nb, root / "notebooks" / nb)
    (root / "weights").symlink_to(ROOT / "weights")  # the lessons load ../weights/...
    # Render every cell (Lab 4 otherwise skips off-screen ones), and no news pop-up over the page.
    settings = root / ".settings"
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), "course-test-token"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.news_url="],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield base, token
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    with _playwright()() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = request.node.name
        pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        (ARTIFACTS / f"{name}.txt").write_text(pg.inner_text("body") + "\n\npage errors:\n" + "\n".join(errors))
    context.close()


def _wait_for_kernel(page, timeout_s: float = 90) -> None:
    """Wait until the notebook's kernel is idle, answering the kernel picker as a person would if it shows."""
    deadline = time.monotonic() + timeout_s
    status = page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\|\s*Idle"))
    while not status.count():
        picker = page.locator(".jp-Dialog", has_text="Select Kernel")
        if picker.count():
            picker.get_by_role("button", name="Select").click()
        assert time.monotonic() < deadline, "the kernel did not start"
        time.sleep(0.5)


def _open_and_run_all(page, lab, notebook: str, timeout_s: float) -> None:
    base, token = lab
    # A workspace of its own, reset, so no tab from an earlier test is restored beside this one.
    workspace = re.sub(r"\W", "-", notebook)
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/notebooks/{notebook}?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    _wait_for_kernel(page)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    deadline = time.monotonic() + timeout_s
    while True:
        prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()
        shown = [p.strip() for p in prompts if p.strip()]  # a cell with folded-away source shows no prompt
        done = shown and all(re.fullmatch(r"\[\d+\]:", p) for p in shown)
        if done and page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\|\s*Idle")).count():
            return
        assert time.monotonic() < deadline, f"cells still running after {timeout_s} s: {prompts}"
        time.sleep(1)


def _assert_no_errors(page) -> None:
    stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_text_contents()
    bad = [t for t in stderr if re.search(r"Traceback|Error|Exception", t)]
    assert not bad, f"error output in the notebook: {bad[0][:500]}"


def _assert_gifs_render(page, at_least: int) -> None:
    gifs = page.locator(".jp-OutputArea-output img[src^='data:image/gif']")
    gifs.first.wait_for(timeout=10_000)
    assert gifs.count() >= at_least
    for i in range(gifs.count()):
        gifs.nth(i).scroll_into_view_if_needed()
        ok = gifs.nth(i).evaluate("img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0")
        assert ok, f"GIF {i} did not decode"


def _slider(page, label: str):
    return page.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=re.compile(f"^{label}$")))


def _drag(page, slider, fraction: float) -> None:
    """Drag the slider's handle to ``fraction`` of its track, as a person would with the mouse."""
    slider.scroll_into_view_if_needed()
    handle = slider.locator(".noUi-handle")
    track = slider.locator(".noUi-base").bounding_box()
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + fraction * track["width"], box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()


def _wait_for_change(element, before: bytes, timeout_s: float) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        after = element.screenshot()
        if after != before:
            return after
        time.sleep(0.5)
    raise AssertionError(f"the picture did not change within {timeout_s} s")


def test_schedule_lesson_runs_and_its_t_slider_noises_the_sprite(page, lab):
    _open_and_run_all(page, lab, "01_noise_schedule.ipynb", timeout_s=180)
    _assert_no_errors(page)
    _assert_gifs_render(page, at_least=1)
    slider = _slider(page, "t")
    readout = slider.locator(".widget-readout")
    assert readout.inner_text().strip() == "0"
    picture = page.locator(".widget-image").first
    before = picture.screenshot()
    _drag(page, slider, 0.6)
    assert int(readout.inner_text().strip()) > 100
    _wait_for_change(picture, before, timeout_s=20)


def test_context_lesson_runs_and_its_sliders_mix_classes(page, lab):
    _open_and_run_all(page, lab, "06_context.ipynb", timeout_s=900)
    _assert_no_errors(page)
    _assert_gifs_render(page, at_least=1)
    slider = _slider(page, "food")
    picture = page.locator(".widget-image").first
    picture.scroll_into_view_if_needed()
    before = picture.screenshot()
    _drag(page, slider, 0.95)
    assert float(slider.locator(".widget-readout").inner_text().strip()) > 0.5
    _wait_for_change(picture, before, timeout_s=60)


def test_playground_redraws_when_a_slider_moves_and_inpaints_painted_cells(page, lab):
    _open_and_run_all(page, lab, "00_playground.ipynb", timeout_s=300)
    _assert_no_errors(page)
    picture = page.locator(".widget-image").first
    picture.scroll_into_view_if_needed()
    before = picture.screenshot()
    slider = _slider(page, "spell")
    _drag(page, slider, 0.95)
    assert float(slider.locator(".widget-readout").inner_text().strip()) > 0.5
    _wait_for_change(picture, before, timeout_s=60)

    page.locator(".lm-TabBar-tabLabel", has_text=re.compile(r"^Edit$")).click()
    cell = page.locator("button[title='row 4, column 3']")
    cell.wait_for(timeout=10_000)
    colour = cell.evaluate("b => getComputedStyle(b).backgroundColor")
    cell.click()  # paint one pixel by hand
    deadline = time.monotonic() + 20
    while cell.evaluate("b => getComputedStyle(b).backgroundColor") == colour:
        assert time.monotonic() < deadline, "a clicked cell was not painted"
        time.sleep(0.3)
    page.get_by_role("button", name="left half").click()
    page.get_by_role("button", name="inpaint").click()
    result = page.locator(".widget-image").nth(1)
    result.wait_for(state="visible", timeout=60_000)
    deadline = time.monotonic() + 60
    while (result.bounding_box() or {}).get("width", 0) < 100:  # empty until the first inpainting arrives
        assert time.monotonic() < deadline, "inpaint drew nothing"
        time.sleep(0.5)
    assert "fillings in" in page.locator(".widget-label", has_text="fillings in").inner_text()
