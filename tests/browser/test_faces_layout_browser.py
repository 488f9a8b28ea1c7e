"""What a newcomer sees at the widths JupyterLab and Notebook 7 give a cell: the panel after Generate
and after a refusal, and the magic's error paths. Each message once, nothing cut.

Screenshots go to ``test-artifacts/`` (``lab-…-1280-…png``, ``lab-…-1024-…png``): look at them.
"""

from __future__ import annotations

import re

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

SETUP = "%load_ext qimage_nb\n%qimage emulator --latency 2"
PANEL_CELL = "from qimage_nb import Panel\n\npanel = Panel()\npanel"
PROMPT = "A lighthouse on a cliff at dusk, warm windows, the word QWEN painted on the tower"

# Every button, toggle, label and text of the panel whose words could be cut: none may overflow.
CUT = """(root) => {
    const cut = [];
    for (const el of root.querySelectorAll('button, .widget-label, .widget-html-content, .qimage-status')) {
        if (!el.offsetParent) continue;  // not shown
        const text = (el.innerText || '').trim();
        if (text && el.scrollWidth > el.clientWidth + 1) cut.push(text.slice(0, 40));
    }
    for (const img of root.querySelectorAll('.qimage-ref img, img.qimage-ref-img')) {
        const fit = getComputedStyle(img).objectFit;
        const box = img.clientWidth / img.clientHeight, pic = img.naturalWidth / img.naturalHeight;
        if (fit === 'cover' && Math.abs(box - pic) > 0.02) cut.push('reference thumbnail cropped');
    }
    return cut;
}"""


def count_text(text: str, needle: str) -> int:
    return text.count(needle)


def run_cell(ui, index: int) -> None:
    cell = ui.panel.locator(".jp-CodeCell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    ui.page.keyboard.press("Escape")
    ui.page.keyboard.press("Shift+Enter")
    ui.page.wait_for_function(
        "(el) => /\\[\\d+\\]/.test(el.querySelector('.jp-InputPrompt')?.textContent ?? '')",
        arg=cell.element_handle(),
    )


def in_view(locator, height: int) -> bool:
    box = locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height


@pytest.mark.parametrize("width", [1280, 1024])
def test_panel_after_generate_and_a_refusal_at_the_widths_of_a_cell(jupyter_lab, open_notebook, width):
    nb = new_notebook(cells=[new_markdown_cell("# Panel"), new_code_cell(SETUP), new_code_cell(PANEL_CELL)])
    ui = open_notebook(jupyter_lab, nb, name=f"panel-{width}.ipynb")
    page = ui.page
    page.set_viewport_size({"width": width, "height": 1000})
    run_cell(ui, 0)
    run_cell(ui, 1)
    root = ui.panel.locator(".qimage-panel")
    root.wait_for(state="visible")
    assert ui.error_texts() == []
    root.evaluate("(el) => el.scrollIntoView({block: 'start'})")

    # Generate: the newest run shows up where the user is looking, without scrolling.
    root.locator(".qimage-prompt textarea").fill(PROMPT)
    root.locator(".qimage-size button", has_text="16:9").click()
    generate = root.locator("button.qimage-generate")
    page.wait_for_function("(el) => !el.disabled", arg=generate.element_handle())
    generate.click()
    newest = root.locator(".qimage-run").first
    newest.wait_for(state="visible")
    page.wait_for_timeout(300)
    ui.screenshot(f"{width}-generating", full_page=False)
    assert in_view(newest.locator(".qimage-status"), 1000), newest.bounding_box()
    assert in_view(newest.locator(".qimage-gallery > *").first, 1000)
    expect(newest.locator(".qimage-thumb")).to_have_count(1, timeout=30_000)
    expect(newest.locator(".qimage-status")).to_contain_text("done")

    # Its image as a reference: the chip shows the whole picture, and no button reads "+ A...".
    newest.locator(".qimage-thumb").first.click()
    root.locator("button.qimage-use-ref").click()
    root.locator(".qimage-ref").first.wait_for(state="visible")
    page.wait_for_function(
        "(el) => el.complete && el.naturalWidth > 0", arg=root.locator(".qimage-ref img").first.element_handle()
    )
    # The preview's words are true: the image is qimages[0] only once the cell has run.
    label = root.locator(".qimage-cell-label").inner_text()
    assert "after you run it" in label, label
    root.evaluate("(el) => el.scrollIntoView({block: 'start'})")
    ui.screenshot(f"{width}-reference", full_page=False)
    assert root.evaluate(CUT) == []

    # A refusal: its reason once, in the run's own line; no empty tile left behind.
    root.locator(".qimage-prompt textarea").fill("FAIL_MODERATION " + PROMPT)
    root.locator(".qimage-ref-remove").first.click()
    root.evaluate("(el) => el.scrollIntoView({block: 'start'})")  # the panel in view, as when it was made
    generate.click()
    refused = root.locator(".qimage-run").first
    expect(refused.locator(".qimage-status")).to_contain_text("inappropriate", timeout=30_000)
    page.wait_for_timeout(300)
    assert count_text(root.inner_text(), "inappropriate") == 1, root.inner_text()
    assert refused.locator(".qimage-thumb, .qimage-placeholder").count() == 0
    assert in_view(refused.locator(".qimage-status"), 1000)
    ui.screenshot(f"{width}-refusal", full_page=False)
    assert root.evaluate(CUT) == []
    assert ui.error_texts() == []


def test_magic_error_paths_say_each_thing_once(jupyter_lab, open_notebook):
    cells = [
        "%load_ext qimage_nb",
        "%%qimage\na cat without a key",
        "%qimage emulator --latency 1",
        "%%qimage\nFAIL_MODERATION a cat",
        "%%qimage --sise 16:9\na cat",
        "%%qimage",
        "%%qimage -o cats --size 16:9\na ginger cat reading a newspaper",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    ui = open_notebook(jupyter_lab, nb, name="magic-errors.ipynb")
    ui.page.set_viewport_size({"width": 1280, "height": 1000})
    for index in range(len(cells)):
        run_cell(ui, index)
    ui.wait_for_execution()
    outputs = [ui.panel.locator(".jp-CodeCell").nth(i).locator(".jp-OutputArea").inner_text() for i in range(len(cells))]
    no_key, refusal, misspelt, empty, cats = outputs[1], outputs[3], outputs[4], outputs[5], outputs[6]
    assert no_key.strip().startswith("UsageError: no API key yet: run %qimage emulator"), no_key
    assert refusal.count("inappropriate content") == 1, refusal
    assert "✕ failed" in refusal
    assert "did you mean --size?" in misspelt
    assert "prompt is empty" in empty and "line magic" not in empty
    assert "bundled offline emulator" in outputs[2]
    assert sum("bundled offline emulator" in text for text in outputs) == 1  # the banner once
    thumb = ui.panel.locator(".jp-CodeCell").nth(6).locator("img.qimage-thumb")
    ui.page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=thumb.element_handle())
    assert thumb.evaluate("(el) => [el.naturalWidth, el.naturalHeight]") == [256, 144]  # crisp: 1 px per px
    ui.panel.locator(".jp-CodeCell").nth(3).evaluate("(el) => el.scrollIntoView({block: 'start'})")
    ui.screenshot("magic-errors", full_page=False)
    assert re.search(r"cats: 1 image", cats)


# --- issue 19: the panel fits the default JupyterLab layout -----------------------------------

# The rule, on every element of the panel: its content is no wider than its box (nothing cut or
# hidden), it ends before the cell's right edge, a row of buttons stays on one line, a dropdown
# shows its whole choice. Text fields scroll what the user typed, as fields do: left out.
FITS = """(root) => {
    const edge = (root.closest('.jp-OutputArea-output') || root.parentElement).getBoundingClientRect().right;
    const name = (el) => {
        const cls = [...el.classList].filter((c) => c.startsWith('qimage-'))[0];
        const own = cls ? '.' + cls : el.tagName.toLowerCase() + (el.className && typeof el.className === 'string'
            ? '.' + el.className.trim().split(/\\s+/).slice(0, 2).join('.') : '');
        const text = (el.innerText || el.value || '').trim().replace(/\\s+/g, ' ').slice(0, 50);
        return text ? `${own} "${text}"` : own;
    };
    const shown = (el) => {
        if (el.closest('[style*="display: none"]')) return false;
        const cs = getComputedStyle(el);
        if (cs.display === 'none' || cs.visibility === 'hidden') return false;
        const r = el.getBoundingClientRect();
        return r.width > 0 && r.height > 0;
    };
    const canvas = document.createElement('canvas').getContext('2d');
    const problems = [];
    const rows = new Map();
    for (const el of [root, ...root.querySelectorAll('*')]) {
        if (!shown(el)) continue;
        const r = el.getBoundingClientRect();
        if (r.right > edge + 1) problems.push(`past the cell's right edge by ${Math.round(r.right - edge)} px: ${name(el)}`);
        const tag = el.tagName;
        if (tag === 'TEXTAREA' || tag === 'INPUT' || tag === 'svg' || el.closest('svg')) continue;
        if (tag === 'SELECT') {
            const cs = getComputedStyle(el);
            canvas.font = `${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
            const text = el.options[el.selectedIndex]?.text || '';
            const room = el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
            if (canvas.measureText(text).width > room + 1) problems.push(`dropdown cut: ${name(el)} "${text}"`);
            continue;
        }
        if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
            problems.push(`content wider than its box (${el.scrollWidth} > ${el.clientWidth}): ${name(el)}`);
        }
        if (tag === 'BUTTON') {
            const row = el.parentElement;
            if (!rows.has(row)) rows.set(row, []);
            rows.get(row).push(el);
        }
    }
    for (const [row, buttons] of rows) {
        const tops = buttons.map((b) => Math.round(b.getBoundingClientRect().top));
        if (Math.max(...tops) - Math.min(...tops) > 2) problems.push(`buttons wrap onto ${new Set(tops).size} rows: ${name(row)}`);
    }
    return problems;
}"""

# Each shown task id: shortened when long, the whole id in a tooltip of the same element or a parent.
TASK_IDS = """(root) => {
    const out = [];
    for (const el of root.querySelectorAll('[data-task-id]')) {
        const full = el.dataset.taskId;
        const titled = el.closest('[title]');
        out.push({full, shown: el.innerText.trim(), title: titled ? titled.getAttribute('title') : ''});
    }
    return out;
}"""


def set_notebook_width(ui, layout: str) -> int:
    """``file-browser``: a 1280 px window with JupyterLab's file browser open (the default layout);
    ``full``: the same window with the left sidebar closed; ``narrow``: a 700 px window, sidebar
    closed (the panel's columns stack). The notebook's width, measured."""
    page = ui.page
    page.set_viewport_size({"width": 700 if layout == "narrow" else 1280, "height": 900})
    left_open = page.locator("#jp-left-stack:not(.lm-mod-hidden)").count() > 0
    if layout == "file-browser" and not left_open:
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id='filebrowser']").click()
    elif layout in ("full", "narrow") and left_open:
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()
    page.wait_for_timeout(400)
    return round(ui.panel.bounding_box()["width"])


def panel_cells(provider: str) -> list[str]:
    option = f" --provider {provider}" if provider != "apimart" else ""
    return [
        f"%load_ext qimage_nb\n%qimage emulator{option} --latency 1",
        # An earlier generation, so that the panel's journal has a row with a Show button.
        "%%qimage -o earlier\nA harbour at dawn, fishing boats, gulls over the water, soft pastel light",
        "from qimage_nb import Panel\n\npanel = Panel()\npanel",
    ]


# Each provider's panel in the layouts a newcomer meets: JupyterLab's default (file browser open,
# about 950 px), the sidebar closed, and (DashScope's, the widest) a 700 px window. One notebook and
# one kernel per provider; every check runs at every layout, as the panel opens and after a run.
LAYOUTS = {"apimart": ("file-browser", "full"), "dashscope": ("file-browser", "full", "narrow")}
WIDTHS = {"file-browser": (900, 1000), "full": (1180, 10_000), "narrow": (0, 699)}


@pytest.mark.parametrize("provider", ["apimart", "dashscope"])
def test_every_element_of_the_panel_fits_the_default_layouts(jupyter_lab, open_notebook, provider):
    cells = panel_cells(provider)
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    ui = open_notebook(jupyter_lab, nb, name=f"fits-{provider}.ipynb")
    layouts = LAYOUTS[provider]
    set_notebook_width(ui, layouts[0])

    def at_each_layout(check) -> None:
        for layout in layouts:
            width = set_notebook_width(ui, layout)
            low, high = WIDTHS[layout]  # file-browser: the notebook a newcomer gets, about 950 px
            assert low <= width <= high, (layout, width)
            check(layout, width)

    _generate_and_check_every_element(ui, len(cells), provider, at_each_layout)


@pytest.mark.parametrize("provider", ["apimart", "dashscope"])
def test_every_element_of_the_panel_fits_notebook7(jupyter_notebook, open_notebook, provider):
    """Notebook 7 in a 1280 px window: the same rule as in JupyterLab."""
    cells = panel_cells(provider)
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    ui = open_notebook(jupyter_notebook, nb, name=f"fits7-{provider}.ipynb")
    ui.page.set_viewport_size({"width": 1280, "height": 900})
    ui.page.wait_for_timeout(400)

    def at_1280(check) -> None:
        width = round(ui.panel.bounding_box()["width"])
        assert 900 <= width <= 1280, width
        check("notebook7", width)

    _generate_and_check_every_element(ui, len(cells), provider, at_1280)


def _generate_and_check_every_element(ui, count: int, provider: str, at_each_layout) -> None:
    """Run the cells, check the panel as it opens, make a run (its picture in the preview with every
    action shown, the saved-to message, the journal open), check again; ``at_each_layout(check)``
    calls ``check(layout, width)`` at each layout the test covers."""
    page = ui.page
    for index in range(count):
        run_cell(ui, index)
    ui.wait_for_execution()
    assert ui.error_texts() == []
    root = ui.panel.locator(".qimage-panel")
    root.wait_for(state="visible")
    problems: list[str] = []

    def as_it_opens(layout: str, width: int) -> None:
        root.evaluate("(el) => el.scrollIntoView({block: 'start'})")
        problems.extend(f"{layout}, {width} px, as it opens: {p}" for p in root.evaluate(FITS))

    at_each_layout(as_it_opens)

    root.locator(".qimage-prompt textarea").fill(PROMPT)
    generate = root.locator("button.qimage-generate")
    page.wait_for_function("(el) => !el.disabled", arg=generate.element_handle())
    generate.click()
    newest = root.locator(".qimage-run").first
    expect(newest.locator(".qimage-status")).to_contain_text("done", timeout=30_000)
    newest.locator(".qimage-thumb").first.click()
    root.locator(".qimage-preview img, img.qimage-preview").first.wait_for(state="visible")
    root.locator("button.qimage-save").click()
    expect(root.locator(".qimage-note")).to_contain_text("Saved", timeout=10_000)
    root.locator(".qimage-journal .lm-AccordionPanel-title, .qimage-journal .p-Collapse-header, "
                 ".qimage-journal .jupyter-widget-Collapse-header").first.click()
    expect(root.locator("button.qimage-resume").first).to_be_visible(timeout=10_000)
    page.wait_for_timeout(500)

    def after_a_run(layout: str, width: int) -> None:
        root.evaluate("(el) => el.scrollIntoView({block: 'start'})")
        ui.screenshot(f"{provider}-{layout}-{width}px", full_page=True)
        root.locator(".qimage-journal").evaluate("(el) => el.scrollIntoView({block: 'end'})")
        page.wait_for_timeout(300)
        ui.screenshot(f"{provider}-{layout}-{width}px-journal", full_page=True)
        problems.extend(f"{layout}, {width} px: {p}" for p in root.evaluate(FITS))
        # Task ids: never a long id across the row; the whole id in the tooltip.
        ids = root.evaluate(TASK_IDS)
        assert ids, "the run and the journal show their task ids"
        for shown in ids:
            assert shown["full"] in shown["title"], shown
            if len(shown["full"]) > 24:
                assert shown["full"] not in shown["shown"] and len(shown["shown"]) <= 24, shown

    at_each_layout(after_a_run)
    assert problems == [], f"{provider}:\n" + "\n".join(problems)
    assert ui.error_texts() == []
