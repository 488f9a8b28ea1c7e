"""The panel in real JupyterLab 4 and Notebook 7, driven by its CSS classes in headless Chromium.

The Lab test points the kernel at an emulator running in this test process (so the test can count
what the server received); the Notebook 7 test starts the emulator inside the kernel, the way a
user tries the panel offline, which also shows the emulator banner.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from playwright.sync_api import expect

from qimage_nb.emulator import Emulator

pytestmark = pytest.mark.browser

PANEL_CELL = "from qimage_nb import Panel\n\npanel = Panel()\npanel"
# Run while a generation is in flight: its output proves the kernel was free, and says so itself.
PROBE_CELL = (
    "flying = len(panel.in_flight)\n"
    "print(f'KERNEL FREE while {flying} run(s) in flight; run state: {panel.runs[-1].state}')"
)
AFTER_CELL = "print('IMAGES', [im.size for im in panel.images])"
PROMPT = "A lighthouse on a cliff at dusk, warm windows, long exposure sea, the word QWEN painted on the tower"


@pytest.fixture(scope="module")
def emu():
    # ~5 s per task: a run is still in flight when the next cell runs, even on a slow machine.
    with Emulator(latency=5.0, jitter=0.2) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def lab(start_jupyter, emu):
    server = start_jupyter("lab", env={"QIMAGE_BASE_URL": emu.base_url, "QIMAGE_API_KEY": emu.api_key})
    # Save widget state into the notebook on save, as users who want widgets offline do: then the
    # saved file is the place a leaked key would show up.
    settings = server.env["JUPYTERLAB_SETTINGS_DIR"]
    target = Path(settings) / "@jupyter-widgets" / "jupyterlab-manager" / "plugin.jupyterlab-settings"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"saveState": True}))
    return server


def panel_notebook(*cells: str) -> nbformat.NotebookNode:
    return new_notebook(cells=[new_markdown_cell("# qimage_nb panel"), *(new_code_cell(c) for c in cells)])


def run_cell(ui, index: int) -> None:
    """Run the code cell at ``index`` (0-based among code cells) and wait for it to finish."""
    cell = ui.panel.locator(".jp-CodeCell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    ui.page.keyboard.press("Escape")
    ui.page.keyboard.press("Shift+Enter")
    ui.page.wait_for_function(
        "(el) => /\\[\\d+\\]/.test(el.querySelector('.jp-InputPrompt')?.textContent ?? '')",
        arg=cell.element_handle(),
    )


def count_is(ui, selector: str, n: int, timeout: float = 60_000) -> None:
    ui.page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length === n", arg=[selector, n], timeout=timeout
    )


def test_panel_in_jupyterlab(lab, emu, open_notebook):
    emu.reset()
    ui = open_notebook(lab, panel_notebook(PANEL_CELL, PROBE_CELL, AFTER_CELL), name="panel.ipynb")
    run_cell(ui, 0)
    page = ui.page
    root = ui.panel.locator(".qimage-panel")
    root.wait_for(state="visible")
    assert ui.error_texts() == []
    expect(root.locator(".qimage-balance")).to_contain_text("balance")

    generate = root.locator("button.qimage-generate")
    assert generate.is_disabled()  # no prompt yet: nothing can be sent
    root.locator(".qimage-prompt textarea").fill(PROMPT)
    page.wait_for_function("(el) => !el.disabled", arg=generate.element_handle())
    assert f"{len(PROMPT)} / 800" in root.locator(".qimage-count-chars").first.inner_text()
    root.locator(".qimage-size button", has_text="16:9").click()
    root.locator(".qimage-count button", has_text=re.compile(r"^2$")).click()
    generate.click()

    # The run is in flight; another cell runs now and prints while it still is.
    root.locator(".qimage-run .qimage-status").first.wait_for(state="visible")
    run_cell(ui, 1)
    probe = ui.panel.locator(".jp-CodeCell").nth(1).locator(".jp-OutputArea-output")
    assert "KERNEL FREE while 1 run(s) in flight" in probe.inner_text()
    assert re.search(r"run state: (submitting|running)", probe.inner_text())

    count_is(ui, ".qimage-panel .qimage-thumb", 2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.qimage-thumb img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    status = root.locator(".qimage-status").first
    page.wait_for_function("(el) => el.textContent.includes('done')", arg=status.element_handle())
    assert "done · 2 images" in status.inner_text()
    thumb_img = root.locator(".qimage-thumb img").first
    w, h = thumb_img.evaluate("(el) => [el.naturalWidth, el.naturalHeight]")
    assert w > h  # 16:9 thumbnails
    ui.screenshot("thumbnails")

    preview = root.locator(".qimage-preview")
    assert not preview.is_visible()
    root.locator(".qimage-thumb").nth(1).click()
    preview.wait_for(state="visible")
    # the preview is a larger JPEG than the thumbnail (made in the kernel after the click)
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 256", arg=preview.element_handle())
    assert "image 2 of 2" in root.locator(".qimage-caption").inner_text()
    cell_text = root.locator(".qimage-cell textarea").input_value()
    assert cell_text.startswith("%%qimage -o qimages --model qwen-image-2.0 --size 16:9") and cell_text.endswith(PROMPT)
    assert not root.locator(".qimage-error").is_visible()
    preview.scroll_into_view_if_needed()
    ui.screenshot("preview", full_page=False)

    counters = emu.counters()
    assert counters["submits_accepted"] == 1 and counters["images_billed"] == 2

    # a refusal is one readable line in the panel, on its run, not a traceback
    root.locator(".qimage-prompt textarea").fill("FAIL_MODERATION " + PROMPT)
    generate.click()
    newest = root.locator(".qimage-run").first
    status = newest.locator(".qimage-status")
    expect(status).to_contain_text("inappropriate", timeout=30_000)
    assert status.inner_text().strip().startswith("failed:")
    assert "Traceback" not in status.inner_text()
    assert root.inner_text().count("inappropriate") == 1  # said once
    assert not root.locator(".qimage-error").is_visible()
    assert ui.error_texts() == []
    assert newest.locator(".qimage-thumb, .qimage-placeholder").count() == 0
    status.scroll_into_view_if_needed()
    ui.screenshot("refusal", full_page=False)

    # panel.images in the kernel; then save with widget state and look for the key in the file
    run_cell(ui, 2)
    after = ui.panel.locator(".jp-CodeCell").nth(2).locator(".jp-OutputArea-output").inner_text()
    assert "IMAGES [(1280, 720), (1280, 720)]" in after
    page.keyboard.press("Control+s")
    saved = lab.root_dir / "panel.ipynb"
    deadline = time.monotonic() + 30
    while "widget-state" not in saved.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = saved.read_text()
    widget_state = json.loads(text)["metadata"].get("widgets", {})
    assert "application/vnd.jupyter.widget-state+json" in widget_state
    assert emu.api_key not in text


def test_panel_in_notebook7_with_the_in_kernel_emulator(jupyter_notebook, open_notebook):
    setup = "%load_ext qimage_nb\n%qimage emulator --latency 1"
    ui = open_notebook(jupyter_notebook, panel_notebook(setup, PANEL_CELL), name="panel7.ipynb", run=True)
    root = ui.panel.locator(".qimage-panel")
    root.wait_for(state="visible")
    banner = root.locator(".qimage-banner")
    assert banner.is_visible() and "emulator" in banner.inner_text().lower()
    root.locator(".qimage-prompt textarea").fill("A red paper boat on a still pond, morning mist, soft light")
    root.locator(".qimage-size button", has_text="4:3").click()
    root.locator(".qimage-count button", has_text=re.compile(r"^3$")).click()
    root.locator("button.qimage-generate").click()
    count_is(ui, ".qimage-panel .qimage-thumb", 3)
    ui.page.wait_for_function(
        "() => [...document.querySelectorAll('.qimage-thumb img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    root.locator(".qimage-thumb").first.click()
    preview = root.locator(".qimage-preview")
    ui.page.wait_for_function("(el) => el.complete && el.naturalWidth > 256", arg=preview.element_handle())
    assert ui.error_texts() == []
    ui.screenshot("panel")
    # Tall enough that the whole panel is rendered, for the README.
    ui.page.set_viewport_size({"width": 1400, "height": 2000})
    root.scroll_into_view_if_needed()
    root.screenshot(path=str(ui._shots / "notebook7-panel-readme.png"))
