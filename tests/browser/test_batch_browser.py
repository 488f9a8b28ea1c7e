"""A 24-prompt batch in real JupyterLab 4 (headless Chromium): one progress display, one grid.

A ``%%qimage --each`` cell over 24 products and ``generate_many`` over 24 prompts from Python each
leave one output area: while they run, a page-side observer counts the progress lines ("N of 24
done") on every change of the page, and there is never more than one per batch (updated in place,
never a line per update); at the end each output holds one grid of 24 thumbnails. Screenshots (mid
run and at the end) go to ``test-artifacts/`` for the issue's notes.
"""

from __future__ import annotations

import re

import nbformat
import pytest

pytestmark = pytest.mark.browser

COUNT = 24
CELLS = [
    "%load_ext qimage_nb\n%qimage emulator --auto --latency 0.75",
    f"products = [f'product {{i}}' for i in range({COUNT})]",
    "%%qimage -o shots --each products\nstudio photo of {}, white background",
    "import qimage_nb\n\nclient = qimage_nb.current_client()\n"
    "lifestyle = client.generate_many([f'{p} on a kitchen table' for p in products], concurrency=6)",
]

# Every change of the notebook's DOM: per output area, how many progress lines it shows.
WATCH = """(sel) => {
    const panel = document.querySelector(sel);
    window.__qimageMostLines = 0;
    window.__qimageChanges = 0;
    const observer = new MutationObserver(() => {
        window.__qimageChanges += 1;
        for (const area of panel.querySelectorAll('.jp-OutputArea-output')) {
            const lines = [...area.querySelectorAll('.qimage-note')]
                .filter((n) => /\\d+ of 24 done/.test(n.textContent)).length;
            window.__qimageMostLines = Math.max(window.__qimageMostLines, lines);
        }
    });
    observer.observe(panel, {subtree: true, childList: true, characterData: true});
}"""


def test_a_24_prompt_batch_is_one_progress_line_and_one_grid(jupyter_lab, open_notebook):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    ui = open_notebook(jupyter_lab, notebook, name="batch24.ipynb")
    page = ui.page
    page.evaluate(WATCH, ".jp-NotebookPanel:not(.lm-mod-hidden)")

    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
    # Mid-run: some done, not all; the one line and the grid filling in.
    page.wait_for_function(
        """() => [...document.querySelectorAll('.qimage-note')].some((n) => {
            const m = /(\\d+) of 24 done/.exec(n.textContent);
            return m && +m[1] >= 6 && +m[1] < 24;
        })""",
        timeout=90_000,
    )
    ui.screenshot("mid-run", full_page=False)
    ui.wait_for_execution(timeout=180_000)
    assert ui.error_texts() == []

    batches = ui.panel.locator(".jp-OutputArea-output").filter(has=page.locator(".qimage-gallery"))
    assert batches.count() == 2  # the cell's, and generate_many's: one display each
    for i in range(2):
        area = batches.nth(i)
        area.scroll_into_view_if_needed()
        lines = [t for t in area.locator(".qimage-note").all_inner_texts() if re.search(r"of 24 done", t)]
        assert len(lines) == 1 and lines[0].startswith("24 of 24 done"), lines
        assert area.locator(".qimage-gallery").count() == 1  # one grid
        assert area.locator("img.qimage-thumb").count() == COUNT
    # While they ran, no output ever showed more than one progress line, and it changed many times.
    assert page.evaluate("window.__qimageMostLines") == 1
    assert page.evaluate("window.__qimageChanges") > COUNT

    page.keyboard.press("Escape")
    batches.nth(0).evaluate("(el) => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    shot = ui.screenshot("each-24-done", full_page=False)
    assert shot.stat().st_size > 20_000
    batches.nth(1).evaluate("(el) => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    ui.screenshot("generate-many-24-done", full_page=False)
