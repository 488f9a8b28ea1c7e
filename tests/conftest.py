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


# The longest files first, longest of all first (seconds of work each, from `--durations=0` on a
# quiet 2-core machine): a worker takes whole files in this order (scripts/test.sh runs
# `--dist loadfile --no-loadscope-reorder`; xdist's default reorder, by number of tests, would put
# the one-test Binder build last and leave it running alone at the end). Within a file the order is
# unchanged; files not named here follow in collection order.
_FIRST = (
    "tests/browser/test_faces_layout_browser.py",  # 90 s
    "tests/test_binder.py",  # 32 s alone, up to 100 s beside the rest: a venv built from scratch
    "tests/test_hostile_faults.py",  # 43 s
    "tests/browser/test_panel_browser.py",  # 33 s
    "tests/test_notebooks.py",  # 28 s
    "tests/test_magics.py",  # 26 s
    "tests/browser/test_batch_browser.py",  # 18 s
    "tests/browser/",  # 13-25 s each
    "tests/test_secrets.py",  # 15 s
    "tests/test_client_emulator.py",  # 15 s
    "tests/test_emulator_dashscope.py",  # 13 s
    "tests/test_panel.py",  # 12 s
    "tests/test_emulator.py",  # 12 s
    "tests/test_client_replicate.py",  # 11 s
    "tests/test_durability.py",  # 10 s
    "tests/test_magic_notebook.py",  # 10 s
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        return next((i for i, prefix in enumerate(_FIRST) if item.nodeid.startswith(prefix)), len(_FIRST))

    items.sort(key=rank)  # stable: each file keeps its own order
