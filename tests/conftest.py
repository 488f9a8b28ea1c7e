"""Shared fixtures. Every test is offline: the client is always pointed at the emulator."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test sees the developer's key, base URL or journal (nor DashScope's, for the SDK tests);
    each gets a private QIMAGE_HOME."""
    for name in list(os.environ):
        if name.startswith(("QIMAGE_", "DASHSCOPE_", "FAL_", "REPLICATE_")):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("qimage_home")
    monkeypatch.setenv("QIMAGE_HOME", str(home))
    # A test that forgets to point at the emulator must fail, not reach the production host.
    monkeypatch.setenv("QIMAGE_BASE_URL", "http://127.0.0.1:9/never-the-production-host")
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "http://127.0.0.1:9/never-the-production-host")
    monkeypatch.setenv("REPLICATE_BASE_URL", "http://127.0.0.1:9/never-the-production-host")
    monkeypatch.setenv("FAL_QUEUE_RUN_HOST", "127.0.0.1:9")
    # The model list is cached per origin for a process's session; each test is a new session.
    from qimage_nb.core import _account

    _account._LISTED_MODELS.clear()
    _account._MODEL_SCHEMAS.clear()
    yield home


# The longest end-to-end files (a Binder venv built from scratch, real JupyterLab in Chromium,
# notebooks in fresh kernels) go first. Under scripts/test.sh's `-n 2 --dist loadfile` a worker
# takes whole files in this order, so these overlap with the rest of the suite instead of running
# alone at its end; within a file the order is unchanged.
_FIRST = ("tests/test_binder.py", "tests/browser/", "tests/test_notebooks.py", "tests/test_secrets.py",
          "tests/test_magic_notebook.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        return next((i for i, prefix in enumerate(_FIRST) if item.nodeid.startswith(prefix)), len(_FIRST))

    items.sort(key=rank)  # stable: each file keeps its own order
