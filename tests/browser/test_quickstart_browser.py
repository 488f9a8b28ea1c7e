"""The quickstart in real JupyterLab 4 (headless Chromium), the way a newcomer meets it.

The server's kernels have no key (the harness removes every ``QIMAGE_*`` variable), so the notebook
starts the emulator inside its kernel and shows the banner. Run All must leave the magic's static
thumbnails (``img.qimage-thumb``) on the page, loaded and decoded, the re-run served from the
journal, and no error. Screenshots go to
``test-artifacts/``; ``lab-…-thumbnails.png`` is the README's picture (``docs/quickstart.png``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

QUICKSTART = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"
THUMBS = "img.qimage-thumb"
EXPECTED_THUMBS = 5  # qimages (1), cats (2), hats (1), qimages again from the journal (1)


def test_quickstart_runs_in_jupyterlab_and_shows_thumbnails(jupyter_lab, open_notebook):
    ui = open_notebook(jupyter_lab, QUICKSTART, run=True)
    page = ui.page

    assert ui.error_texts() == []
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length === n",
        arg=[THUMBS, EXPECTED_THUMBS],
        timeout=30_000,
    )
    thumbs = ui.panel.locator(THUMBS)
    # Loaded and decoded in the browser, at most 256 px, and drawn at the ratio of the picture.
    for i in range(EXPECTED_THUMBS):
        thumb = thumbs.nth(i)
        thumb.scroll_into_view_if_needed()
        page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=thumb.element_handle())
        natural = thumb.evaluate("(el) => [el.naturalWidth, el.naturalHeight]")
        assert 0 < max(natural) <= 256, natural
    cats = [thumbs.nth(i).evaluate("(el) => el.naturalWidth / el.naturalHeight") for i in (1, 2)]
    assert all(abs(r - 16 / 9) < 0.05 for r in cats), cats

    texts = "\n".join(ui.output_texts())
    assert texts.count("from cache") == 1  # section 5 runs the first cell again, at no cost
    # JupyterLab renders only the cells near the viewport: go back to the top for the banner.
    ui.panel.locator(".jp-Cell").first.evaluate("(el) => el.scrollIntoView({block: 'start'})")
    # (A cell just brought into view may report no text until it is painted: expect() waits.)
    banner = ui.panel.locator(".qimage-banner").first
    expect(banner).to_contain_text("bundled offline emulator", timeout=10_000)  # not real pictures

    # The README picture: sidebar closed, from "3. Options" down to the refined cat, all in view.
    page.keyboard.press("Escape")
    if page.locator("#jp-left-stack:not(.lm-mod-hidden)").count():
        page.keyboard.press("Control+b")
    page.set_viewport_size({"width": 1400, "height": 1360})
    ui.panel.locator(".jp-MarkdownCell").filter(has_text="3. Options").first.evaluate(
        "(el) => el.scrollIntoView({block: 'start'})"
    )
    page.wait_for_timeout(500)
    shot = ui.screenshot("thumbnails", full_page=False)
    assert shot.stat().st_size > 20_000
