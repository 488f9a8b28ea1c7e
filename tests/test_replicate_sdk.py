"""The official ``replicate`` SDK (1.0.7), pointed at the Replicate emulator, completes predictions.

The SDK takes its base URL from ``Client(base_url=...)`` (or ``REPLICATE_BASE_URL``), so nothing is
patched. Every socket it opens is checked to be loopback, so no test can reach Replicate.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import time

import httpx
import pytest
from PIL import Image

from qimage_nb.emulator.replicate import ReplicateEmulator

replicate = pytest.importorskip("replicate")  # a test-only dependency (the product speaks httpx)
from replicate.exceptions import ModelError, ReplicateError  # noqa: E402


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            assert ipaddress.ip_address(host).is_loopback, f"the SDK tried to reach {host}"
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.05")


@pytest.fixture
def emu():
    emulator = ReplicateEmulator(latency=0.4, jitter=0).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def client(emu):
    return replicate.Client(api_token=emu.api_key, base_url=emu.base_url)


def download(url: str) -> Image.Image:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    return Image.open(io.BytesIO(answer.content))


def test_run_finishes_inside_the_held_request(emu, client):
    output = client.run("qwen/qwen-image-2", input={"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"})
    assert download(str(output)).size == (1280, 720)
    counters = emu.counters()
    assert counters["held_creates"] == {"finished": 1}
    assert counters["polls"] == 0  # Prefer: wait answered with the result: nothing to poll
    assert counters["predictions_billed"] == 1


def test_run_polls_when_the_wait_runs_out(emu, client):
    emu.stop()
    with ReplicateEmulator(latency=2.0, jitter=0) as slow:
        sdk = replicate.Client(api_token=slow.api_key, base_url=slow.base_url)
        output = sdk.run("qwen/qwen-image-2-pro", input={"prompt": "a red bicycle", "size": "1024*768"}, wait=1)
        counters = slow.counters()
        assert download(str(output)).size == (1024, 768)
    assert counters["held_creates"] == {"ran_out": 1} and counters["polls"] >= 1


def test_run_with_the_base_url_from_the_environment(emu, monkeypatch):
    monkeypatch.setenv("REPLICATE_BASE_URL", emu.base_url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", emu.api_key)
    output = replicate.Client().run("alibaba/qwen-image-3", input={"prompt": "a koi pond", "aspect_ratio": "2:1"})
    assert download(str(output)).size == (1440, 720)


def test_a_cancelled_prediction(emu, client):
    prediction = client.models.predictions.create(model="qwen/qwen-image-2", input={"prompt": "cancel me"})
    assert prediction.status == "starting"
    prediction.cancel()
    prediction.wait()
    assert prediction.status == "canceled" and prediction.output is None
    time.sleep(0.5)  # past the time it would have finished
    assert emu.counters()["predictions_billed"] == 0


def test_create_wait_and_reload(emu, client):
    prediction = client.models.predictions.create(model="qwen/qwen-image-2", input={"prompt": "waiting"})
    prediction.wait()
    assert prediction.status == "succeeded"
    assert "Image generated." in prediction.logs
    assert download(prediction.output).size == (1024, 1024)


def test_problems_reach_the_sdk(emu, client):
    with pytest.raises(ReplicateError) as refused:
        client.models.predictions.create(model="qwen/qwen-image-2", input={"aspect_ratio": "5:4"})
    assert refused.value.status == 422 and "prompt" in refused.value.detail
    with pytest.raises(ReplicateError) as unknown:
        client.run("qwen/not-a-model", input={"prompt": "x"})
    assert unknown.value.status == 404
    emu.set_faults(moderation_words=("FORBIDDEN",))
    with pytest.raises(ModelError) as failed:
        client.run("qwen/qwen-image-2", input={"prompt": "FORBIDDEN thing"})
    assert "E005" in str(failed.value)


def test_outputs_are_removed_after_the_retention_time(emu):
    emu.stop()
    with ReplicateEmulator(latency=0.2, jitter=0, retention=0.3) as short:
        sdk = replicate.Client(api_token=short.api_key, base_url=short.base_url)
        prediction = sdk.models.predictions.create(model="qwen/qwen-image-2", input={"prompt": "soon gone"}, wait=5)
        assert prediction.status == "succeeded"
        assert httpx.get(prediction.output).status_code == 200
        time.sleep(0.4)
        prediction.reload()
        assert prediction.output is None and prediction.input == {}
        assert httpx.get(f"{short.cdn_url}/xezq/{prediction.id}/out-0.png").status_code == 404
