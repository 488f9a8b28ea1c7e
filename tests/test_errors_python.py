"""Errors from Python: a dead address is one exception naming it, the attempts, the time and the fix;
retries are visible while they happen (on_update, logging)."""

from __future__ import annotations

import logging
import socket

import pytest

from qimage_nb import Client, TransportError
from qimage_nb.core._client import AsyncClient
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.journal._store import Store

FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_cap=0.02)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_dead_address_is_one_exception_naming_it_the_attempts_the_time_and_the_fix(tmp_path, caplog):
    url = f"http://127.0.0.1:{closed_port()}"
    client = Client("sk-test", url, retry=FAST, store=Store(tmp_path))
    with caplog.at_level(logging.INFO, logger="qimage_nb"), pytest.raises(TransportError) as info:
        client.generate("a lighthouse")
    message = str(info.value)
    assert "\n" not in message
    assert f"3 attempts to {url} over " in message and " s, nothing was sent" in message
    assert "start the emulator (%qimage emulator, or python -m qimage_nb.emulator)" in message
    assert "QIMAGE_BASE_URL" in message
    # each retry was said while it happened, as a warning (no face was showing it)
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert [r.levelno for r in retries] == [logging.WARNING] * 2
    assert client.pending() == []  # the request never left: nothing to resume, nothing billed


def test_a_dead_remote_address_names_the_network_and_the_variable(tmp_path):
    import httpx

    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    client = Client("sk-test", "https://api.example.com", transport=httpx.MockTransport(refuse), retry=FAST,
                    store=Store(tmp_path))
    with pytest.raises(TransportError) as info:
        client.balance()
    message = str(info.value)
    assert "3 attempts to https://api.example.com over" in message
    assert "check the network connection, or QIMAGE_BASE_URL (base_url=) if the API is at another address" in message
    assert "emulator" not in message


async def test_retries_reach_on_update_as_they_happen(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    seen = []
    async with AsyncClient("sk-test", url, retry=FAST, store=Store(tmp_path)) as client:
        with pytest.raises(TransportError):
            await client.generate("a lighthouse", on_update=seen.append)
    retries = [u.retry for u in seen if u.retry]
    assert len(retries) == 2 and "could not connect" in retries[0] and retries[0].endswith("s")
    assert "retry 1 of 2" in retries[0] and "retry 2 of 2" in retries[1]
