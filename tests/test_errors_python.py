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


def test_small_text_a_shape_suggests_its_nearest_ratio_and_a_task_is_named_once():
    from qimage_nb import GenerationRequest, ValidationError
    from qimage_nb._exceptions import TaskFailedError
    from qimage_nb.view._words import progress_status

    with pytest.raises(ValidationError, match=r"size '5:4' is not supported \(the closest is '4:3'\)"):
        GenerationRequest.create("x", size="5:4")
    with pytest.raises(ValidationError, match=r"\(the closest is '3:4'\)"):
        GenerationRequest.create("x", size="4:5")
    failed = TaskFailedError("task_01AB failed: refused", task_id="task_01AB")
    assert "task task_" not in str(failed)
    assert str(TaskFailedError("refused", task_id="3f2a-uuid")) == "refused (task 3f2a-uuid)"
    assert progress_status("queued", eta=0.3, task_id="task_01AB") == "queued · almost done · task_01AB"
    assert "about 0 s" not in progress_status("running", progress=50, eta=0.4)


def test_the_help_names_the_host_not_the_seed_document():
    from qimage_nb.notebook._magic_args import cell_arguments

    @cell_arguments
    def probe(line, cell):
        """x"""

    assert "seed's" not in (probe.__doc__ or "") and "the APIMart API" in (probe.__doc__ or "")
