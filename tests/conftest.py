"""Shared fixtures. Every test is offline: the client is always pointed at the emulator."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test sees the developer's key, base URL or journal (nor DashScope's, for the SDK tests);
    each gets a private QIMAGE_HOME."""
    for name in list(os.environ):
        if name.startswith(("QIMAGE_", "DASHSCOPE_")):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("qimage_home")
    monkeypatch.setenv("QIMAGE_HOME", str(home))
    # A test that forgets to point at the emulator must fail, not reach the production host.
    monkeypatch.setenv("QIMAGE_BASE_URL", "http://127.0.0.1:9/never-the-production-host")
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "http://127.0.0.1:9/never-the-production-host")
    yield home
