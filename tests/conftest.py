"""Shared fixtures. Every test is offline: the client is always pointed at the emulator."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test sees the developer's key, base URL or journal (nor DashScope's, for the SDK tests);
    each gets a private QIMAGE_HOME."""
    from qimage_nb.providers import all_providers

    providers = all_providers()
    # Every host's variables (QIMAGE_, DASHSCOPE_, FAL_, REPLICATE_, and the next host's) are the
    # developer's, never a test's: derived from the providers, so a new host is covered by its module.
    prefixes = ("QIMAGE_", *{p.key_env.split("_", 1)[0] + "_" for p in providers})
    for name in list(os.environ):
        if name.startswith(prefixes):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("qimage_home")
    monkeypatch.setenv("QIMAGE_HOME", str(home))
    # A test that forgets to point at the emulator must fail, not reach the production host.
    for provider in providers:
        monkeypatch.setenv(provider.base_url_env, "http://127.0.0.1:9/never-the-production-host")
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
