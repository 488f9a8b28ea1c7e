"""The harness itself, proven end to end: a widget notebook in JupyterLab 4 and in Notebook 7."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

pytestmark = pytest.mark.browser

PREFIX_CELL = "import sys\nprint('KERNEL_PREFIX=' + sys.prefix)"

WIDGET_CELL = """\
import ipywidgets as widgets

label = widgets.Label("not clicked").add_class("smoke-label")
button = widgets.Button(description="Click me").add_class("smoke-button")

def on_click(_):
    label.value = "clicked"

button.on_click(on_click)
widgets.VBox([button, label])
"""

IMAGE_CELL = """\
import io
from IPython.display import Image
from PIL import Image as PILImage

buf = io.BytesIO()
PILImage.new("RGB", (96, 48), (220, 40, 40)).save(buf, format="PNG")
Image(data=buf.getvalue())
"""


def smoke_notebook() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_markdown_cell("# Harness smoke test"),
            new_code_cell(PREFIX_CELL),
            new_code_cell(WIDGET_CELL),
            new_code_cell(IMAGE_CELL),
        ]
    )


def assert_rendered(ui) -> None:
    """Kernel is the venv's python, the widget works when clicked, the PNG is shown."""
    assert ui.error_texts() == []
    prefix_lines = [t for t in ui.output_texts() if "KERNEL_PREFIX=" in t]
    assert prefix_lines, ui.output_texts()
    assert Path(prefix_lines[0].split("KERNEL_PREFIX=", 1)[1].strip()) == Path(sys.prefix)

    label = ui.panel.locator(".smoke-label")
    button = ui.panel.locator("button.smoke-button")
    button.wait_for(state="visible")
    assert "not clicked" in label.inner_text()
    button.click()
    ui.page.wait_for_function(
        "(el) => el.textContent.trim() === 'clicked'", arg=label.element_handle(), timeout=15_000
    )

    img = ui.panel.locator(".jp-OutputArea-output img[src^='data:image/png']")
    img.wait_for(state="visible")
    assert img.evaluate("(el) => [el.complete, el.naturalWidth, el.naturalHeight]") == [
        True,
        96,
        48,
    ]


def test_jupyterlab_runs_widgets_and_images(jupyter_lab, open_notebook):
    ui = open_notebook(jupyter_lab, smoke_notebook(), name="smoke.ipynb", run=True)
    assert_rendered(ui)
    shot = ui.screenshot("smoke")
    assert shot.stat().st_size > 0


def test_notebook7_renders_the_same_notebook(jupyter_notebook, open_notebook):
    ui = open_notebook(jupyter_notebook, smoke_notebook(), name="smoke.ipynb", run=True)
    assert_rendered(ui)
    ui.screenshot("smoke")
