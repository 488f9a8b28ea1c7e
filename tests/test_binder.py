"""The Binder files build a working environment: a fresh venv, set up with exactly the pip commands
repo2docker runs for ``binder/``, executes ``notebooks/quickstart.ipynb``.

repo2docker (Python build pack, ``binder/`` present): a base environment with Jupyter, then
``pip install -r binder/requirements.txt`` from the repository root, then ``binder/postBuild``, with
the kernel's prefix in ``KERNEL_PYTHON_PREFIX``. The base below mirrors repo2docker's base
environment for Python 3 (its ``environment.py-3.11.yml``), less the hub and resource-usage extras
that no notebook touches.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"
REPO2DOCKER_BASE = ["jupyterlab==4.*", "notebook==7.*", "ipywidgets==8.*", "jupyter_server==2.*"]
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".venv-colab", "test-artifacts", "demo-output", "__pycache__", "*.egg-info",
    ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", "build", "dist",
)  # fmt: skip


def copy_checkout(dest: Path) -> None:
    """The repository as Binder clones it: the files git tracks, and new ones it does not ignore
    (a developer's notebook not yet added), never a venv, cache or test output. (A copy of the
    whole folder took the Colab step's venv too, 392 MB, while that step was building it.)"""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True
    )
    if listed.returncode != 0:  # not a git checkout (an unpacked sdist): copy all but the known clutter
        shutil.copytree(REPO, dest, ignore=NOT_COPIED)
        return
    for name in filter(None, listed.stdout.decode().split("\0")):
        source, target = REPO / name, dest / name
        if source.is_file():  # (a file deleted but not yet staged is still listed)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def run(cmd: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{output}"
    return output


@pytest.fixture
def binder_env(tmp_path) -> dict[str, str]:
    """Environment variables for the build and the run: no developer venv, no QIMAGE_* settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QIMAGE_", "JUPYTER", "IPYTHON"))
        and k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    }
    prefix = tmp_path / "env"
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    env.update(
        PATH=os.pathsep.join([str(prefix / "bin"), *path]),
        KERNEL_PYTHON_PREFIX=str(prefix),
        NB_PYTHON_PREFIX=str(prefix),
        QIMAGE_HOME=str(tmp_path / "qimage-home"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
        IPYTHONDIR=str(tmp_path / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        # Bytecode is written as modules are imported; compiling all of pandas and JupyterLab at
        # install, as pip does by default, changes nothing the test checks and costs the CPU that
        # the rest of the suite shares with it.
        PIP_NO_COMPILE="1",
    )
    return env


def test_binder_environment_runs_the_quickstart(tmp_path, binder_env, artifacts_dir):
    if not QUICKSTART.exists():
        pytest.skip("notebooks/quickstart.ipynb does not exist yet")
    repo = tmp_path / "repo"
    copy_checkout(repo)
    prefix = Path(binder_env["KERNEL_PYTHON_PREFIX"])
    python = str(prefix / "bin" / "python")

    # The base image, then what repo2docker runs for binder/, in its order and from the repo root.
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    run([base_python, "-m", "venv", str(prefix)], cwd=tmp_path, env=binder_env)
    # repo2docker builds its base with (micro)mamba, not pip, so how the base gets here is ours to
    # choose: uv where scripts/test.sh put it beside this interpreter (a fraction of pip's time). What
    # binder/ itself asks for is installed by pip, below, as repo2docker does.
    uv = Path(sys.executable).parent / "uv"
    if uv.exists():
        run([str(uv), "pip", "install", "-q", "--python", python, *REPO2DOCKER_BASE], cwd=tmp_path, env=binder_env)
    else:
        run([python, "-m", "pip", "install", "-q", *REPO2DOCKER_BASE], cwd=tmp_path, env=binder_env)
    run(
        [str(prefix / "bin" / "pip"), "install", "-q", "-r", "binder/requirements.txt"],
        cwd=repo,
        env=binder_env,
    )
    postbuild = repo / "binder" / "postBuild"
    assert os.access(postbuild, os.X_OK), "binder/postBuild must be executable"
    run([str(postbuild)], cwd=repo, env=binder_env)

    # The package is installed into the environment, not found through the source tree.
    where = run([python, "-c", "import qimage_nb; print(qimage_nb.__file__)"], cwd=tmp_path,
                env=binder_env)  # fmt: skip
    assert Path(where.strip().splitlines()[-1]).is_relative_to(prefix), where
    # Widgets render in JupyterLab only if the widget manager extension is there and enabled.
    extensions = run([str(prefix / "bin" / "jupyter"), "labextension", "list"], cwd=tmp_path,
                     env=binder_env)  # fmt: skip
    manager = [
        line for line in extensions.splitlines() if "@jupyter-widgets/jupyterlab-manager" in line
    ]
    assert manager and "enabled" in manager[0], extensions

    out = tmp_path / "out"
    run(
        [python, str(repo / "scripts" / "run_notebooks.py"), str(repo / "notebooks" / "quickstart.ipynb"),
         "--out", str(out), "--timeout", "300", "--again", "quickstart"],
        cwd=tmp_path,
        env=binder_env,
    )  # fmt: skip
    html = out / "quickstart.html"
    assert html.stat().st_size > 0
    shutil.copy(html, artifacts_dir / "binder-quickstart.html")
    # Section 5 re-runs the first cell; after a restart (a fresh kernel) every image cell is cached.
    assert _cached_cells(out / "quickstart.ipynb") == [False, False, False, True]
    assert _cached_cells(out / "quickstart-again.ipynb") == [True] * 4


def _cached_cells(path: Path) -> list[bool]:
    """For each %%qimage cell of an executed notebook: whether its output says it came from cache."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [
        "from cache" in json.dumps(cell["outputs"])
        for cell in cells
        if cell["cell_type"] == "code" and "".join(cell["source"]).startswith("%%qimage")
    ]


@pytest.fixture
def artifacts_dir() -> Path:
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
