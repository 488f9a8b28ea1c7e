"""Inside Colab's pinned stack: every demo notebook headless, and what the magic leaves in them.

scripts/colab_stack.sh builds that environment (ci/colab-constraints.txt: IPython 7.34, ipywidgets
7.7.1, ...) with the built qimage-nb wheel installed, and runs this file with ``QIMAGE_COLAB_PYTHON``
naming its interpreter; elsewhere it is skipped. The notebooks run in kernels of that interpreter
(scripts/run_notebooks.py run by it), importing the installed wheel, not this checkout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

REPO = Path(__file__).resolve().parents[1]
COLAB_PYTHON = os.environ.get("QIMAGE_COLAB_PYTHON", "")
DEMOS = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.skipif(
    not COLAB_PYTHON, reason="runs inside Colab's pinned stack: bash scripts/colab_stack.sh"
)


def colab_env(tmp: Path) -> dict[str, str]:
    """The Colab interpreter's own world: no QIMAGE_* of the caller, no PYTHONPATH pointing at this
    checkout, private Jupyter and qimage folders (a user-level kernelspec could name another python)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QIMAGE_", "JUPYTER", "DASHSCOPE_"))}
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(name, None)
    for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                      ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"), ("QIMAGE_HOME", "qimage")):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(tmp / sub)
    env["PATH"] = str(Path(COLAB_PYTHON).parent) + os.pathsep + env.get("PATH", "")
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # ipykernel 6.17's debugger note on every kernel start
    return env


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """Every demo notebook, and a probe of the kernel's versions, run once by the Colab interpreter."""
    tmp = tmp_path_factory.mktemp("colab")
    probe = new_notebook(cells=[new_code_cell(
        "import sys, json, IPython, ipykernel, ipywidgets, traitlets, qimage_nb\n"
        "print(json.dumps({'python': sys.version.split()[0], 'executable': sys.executable,\n"
        "    'ipython': IPython.__version__, 'ipykernel': ipykernel.__version__,\n"
        "    'ipywidgets': ipywidgets.__version__, 'traitlets': traitlets.__version__,\n"
        "    'qimage_nb': qimage_nb.__file__}))"
    )])  # fmt: skip
    nbformat.write(probe, tmp / "versions.ipynb")
    out = tmp / "out"
    notebooks = [str(REPO / "notebooks" / f"{name}.ipynb") for name in DEMOS] + [str(tmp / "versions.ipynb")]
    # Two runners, each on half the notebooks, in their own folders: kernels mostly wait on the
    # emulator, so the halves overlap.
    runs = []
    for half, part in enumerate((notebooks[::2], notebooks[1::2])):
        env = colab_env(tmp / f"half{half}")
        runs.append(subprocess.Popen(
            [COLAB_PYTHON, "-P", str(REPO / "scripts" / "run_notebooks.py"), *part,
             "--out", str(out / f"half{half}"), "--timeout", "120"],
            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL,
        ))  # fmt: skip
    results = [run.communicate(timeout=600) for run in runs]
    for half in (0, 1):
        for executed_nb in (out / f"half{half}").glob("*.ipynb"):
            executed_nb.rename(out / executed_nb.name)
    proc = subprocess.CompletedProcess(
        [r.args for r in runs], max(r.returncode for r in runs),
        "".join(o for o, _e in results), "".join(e for _o, e in results),
    )
    return proc, out


def outputs(nb: nbformat.NotebookNode) -> list[tuple[str, dict]]:
    """(cell source, output) of every output of every code cell."""
    return [(c.source, o) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def text(output: dict) -> str:
    return str(output.get("text") or output.get("data", {}).get("text/plain") or "")


def test_the_kernels_run_colab_s_stack_and_the_installed_wheel(executed):
    _proc, out = executed
    nb = nbformat.read(out / "versions.ipynb", as_version=4)
    (output,) = [o for _src, o in outputs(nb) if o.output_type == "stream"]
    seen = json.loads(output.text)
    assert seen["executable"].startswith(str(Path(COLAB_PYTHON).parent.parent)), seen
    assert (seen["ipython"], seen["ipykernel"], seen["ipywidgets"], seen["traitlets"]) == (
        "7.34.0", "6.17.1", "7.7.1", "5.7.1",
    ), seen
    package = Path(seen["qimage_nb"])  # the wheel installed in that venv, not this checkout's folder
    assert "site-packages" in package.parts and package.is_relative_to(Path(COLAB_PYTHON).parent.parent), seen
    assert not package.is_relative_to(REPO / "qimage_nb"), seen


def test_every_demo_notebook_runs_with_no_error(executed):
    proc, out = executed
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    for name in DEMOS:
        nb = nbformat.read(out / f"{name}.ipynb", as_version=4)
        errors = [text(o) or o.get("evalue", "") for _src, o in outputs(nb) if o.output_type == "error"]
        assert errors == [], f"{name}: {errors}"


def test_the_magic_leaves_thumbnails_and_its_done_line(executed):
    _proc, out = executed
    nb = nbformat.read(out / "quickstart.ipynb", as_version=4)
    (cats,) = [o for src, o in outputs(nb) if src.startswith("%%qimage -o cats")]
    plain, page = cats.data["text/plain"], cats.data["text/html"]
    assert re.search(r"done in \d+ s · \$0\.012 · task_\w+", plain), plain
    assert "cats: 2 images" in plain and "[1] 1280x720" in plain
    thumbnails = re.findall(r'<img[^>]+src="data:image/(?:jpeg|webp);base64,', page)
    assert len(thumbnails) == 2, page[:500]
    # The re-run of the first cell is served from the journal, at no cost.
    (again,) = [o for src, o in outputs(nb) if src.startswith("%%qimage\n")][1:]
    assert "from cache" in again.data["text/plain"]


def test_the_panel_notebook_shows_a_widget_and_generates(executed):
    _proc, out = executed
    nb = nbformat.read(out / "panel.ipynb", as_version=4)
    views = [o for _src, o in outputs(nb) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1 and views[0].data["application/vnd.jupyter.widget-view+json"]["version_major"] == 2
    # The notebook ends with the panel's two pictures as a static gallery (thumbnails in the page).
    pages = [o.data.get("text/html", "") for _src, o in outputs(nb) if "data" in o]
    assert sum(len(re.findall(r'<img[^>]+src="data:image/', page)) for page in pages) == 2, pages
    # The saved widget state is ipywidgets 7's (what Colab's front end reads back).
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    versions = {m["model_module_version"] for m in state.values() if m["model_module"] == "@jupyter-widgets/controls"}
    assert versions == {"1.5.0"}, versions
