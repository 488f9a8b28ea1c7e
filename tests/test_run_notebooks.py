"""scripts/run_notebooks.py, the headless demo: runs notebooks, writes the gallery, reports failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_notebooks.py"


def test_gallery_of_a_passing_and_a_failing_notebook(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.txt").write_text("from the notebook's folder")
    good = new_notebook(
        cells=[new_code_cell("print(open('data.txt').read())"), new_code_cell("6 * 7")]
    )
    bad = new_notebook(cells=[new_code_cell("raise RuntimeError('boom')")])
    nbformat.write(good, src / "good.ipynb")
    nbformat.write(bad, src / "bad.ipynb")
    out = tmp_path / "out"

    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(src / "good.ipynb"), str(src / "bad.ipynb"),
         "--out", str(out), "--timeout", "60", "--again", "good"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=240,
    )  # fmt: skip

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"gallery: {out / 'index.html'}" in proc.stdout
    assert "1 of 3 notebooks failed: bad" in proc.stdout
    # Kernels are reached over IPC: ipykernel's warning about plain TCP is never printed.
    assert "without encryption" not in proc.stderr, proc.stderr
    index = (out / "index.html").read_text()
    assert 'href="good.html"' in index and 'href="bad.html"' in index
    assert 'href="good-again.html"' in index and "run again in a fresh kernel" in index
    again = nbformat.read(out / "good-again.ipynb", as_version=4)
    assert again.cells[1].execution_count == 2  # its own kernel, counting from 1 again
    assert "FAILED" in index and "boom" in index
    assert "from the notebook" in (out / "good.html").read_text()
    executed = nbformat.read(out / "good.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["data"]["text/plain"] == "42"
    # the source notebook is left as it was
    assert nbformat.read(src / "good.ipynb", as_version=4).cells[1].outputs == []
