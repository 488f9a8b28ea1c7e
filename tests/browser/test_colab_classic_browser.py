"""The panel in classic Notebook 6.5 with widgetsnbextension 3.6: the nearest real renderer of
ipywidgets 7, which is all Colab's front end draws (Colab itself cannot run here).

scripts/colab_stack.sh builds Colab's pinned stack (notebook 6.5.7, ipywidgets 7.7.1, IPython 7.34)
with the built qimage-nb wheel installed and runs this file with ``QIMAGE_COLAB_PYTHON`` naming its
interpreter; elsewhere it is skipped. The server, its kernels and the package all come from that
environment; only the browser and Playwright are the test suite's.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from test_colab_stack import COLAB_PYTHON, colab_env

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not COLAB_PYTHON, reason="runs inside Colab's pinned stack: bash scripts/colab_stack.sh"),
]

UI_MS = 60_000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def classic(tmp_path_factory, artifacts_dir):
    """``jupyter notebook`` 6.5.7 of the Colab environment on a free loopback port, no token."""
    tmp = tmp_path_factory.mktemp("classic")
    root = tmp / "root"
    root.mkdir()
    log_path = artifacts_dir / "colab-classic-notebook.log"
    for _attempt in range(3):  # a free port can be taken between probing and binding
        port = _free_port()
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [COLAB_PYTHON, "-m", "notebook", "--no-browser", "--allow-root", "--ip=127.0.0.1",
                 f"--port={port}", "--NotebookApp.port_retries=0", "--NotebookApp.token=",
                 "--NotebookApp.password=", "--NotebookApp.disable_check_xsrf=True",
                 f"--NotebookApp.notebook_dir={root}"],
                cwd=root, env=colab_env(tmp), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=5).close()
                break
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        if proc.poll() is None and time.monotonic() < deadline:
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("classic Notebook did not start:\n" + log_path.read_text()[-3000:])
    yield url, root
    proc.send_signal(signal.SIGTERM)  # the server stops its kernels too
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_panel_renders_generates_and_cancels_in_classic_notebook(classic, page, artifacts_dir):
    url, root = classic
    nb = new_notebook(cells=[
        new_code_cell("%load_ext qimage_nb\n%qimage emulator --auto --latency 3"),
        new_code_cell("import ipywidgets\nprint('ipywidgets', ipywidgets.__version__)"),
        new_code_cell("%%qimage -o cats --size 16:9\na ginger cat reading a newspaper"),
        new_code_cell("from qimage_nb import Panel\n\npanel = Panel()\npanel"),
    ])  # fmt: skip
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "colab.ipynb")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{url}/notebooks/colab.ipynb")
    page.wait_for_function(
        "() => window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel"
        " && Jupyter.notebook.kernel.is_connected()",
        timeout=UI_MS,
    )
    page.evaluate("() => Jupyter.notebook.execute_all_cells()")
    outputs = page.locator("div.output_area")
    generate = page.locator("button.qimage-generate")
    generate.wait_for(timeout=UI_MS)  # the widget rendered: ipywidgets 7's view of the panel
    assert "ipywidgets 7.7.1" in "\n".join(outputs.all_inner_texts())

    # The magic's output: its done line and a thumbnail that the browser decoded.
    magic = outputs.filter(has_text="a ginger cat reading a newspaper").first
    magic.get_by_text("done in").wait_for(timeout=UI_MS)
    assert magic.locator("img").evaluate("img => img.naturalWidth") > 0

    panel = page.locator(".qimage-panel")  # the magic's static gallery uses qimage-* classes too
    panel.locator(".qimage-prompt textarea").fill("a red fox curled up asleep in fresh snow")
    generate.click()
    panel.locator(".qimage-thumb img").first.wait_for(timeout=UI_MS)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.qimage-panel .qimage-thumb img')].some(i => i.naturalWidth > 0)",
        timeout=UI_MS,
    )
    first = panel.locator(".qimage-run").first
    assert "done" in first.inner_text()
    page.screenshot(path=str(artifacts_dir / "colab-classic-generated.png"), full_page=True)

    # A second run, cancelled while it waits (the emulator takes 3 s a task).
    generate.click()
    cancel = page.locator("button.qimage-cancel")
    page.wait_for_function(
        "() => !document.querySelector('button.qimage-cancel').disabled", timeout=UI_MS
    )
    cancel.click()
    newest = panel.locator(".qimage-run").first
    newest.get_by_text("cancelled").wait_for(timeout=UI_MS)
    assert "%qimage resume task_" in newest.inner_text()  # the task id is kept, not lost
    assert panel.locator(".qimage-run").count() == 2
    assert panel.locator(".qimage-thumb").count() == 1  # the cancelled run added no image
    page.screenshot(path=str(artifacts_dir / "colab-classic-cancelled.png"), full_page=True)

    texts = "\n".join(outputs.all_inner_texts())
    assert "Error displaying widget" not in texts and "Traceback" not in texts
    assert errors == []
