"""The official ``fal-client`` SDK (1.0.3), pointed at the fal emulator, completes generations.

fal-client builds every queue URL as ``https://{FAL_QUEUE_RUN_HOST}/``; the emulator serves plain
HTTP on loopback, so these tests patch the SDK's one module attribute that holds that format
(``fal_client.client.QUEUE_URL_FORMAT``) to the emulator's origin rather than serving TLS. Every
later URL (status, result, cancel) is the one the emulator's submit answer gave, as in production.
Every socket the SDK opens is checked to be loopback, so no test can reach fal.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import time

import httpx
import pytest
from PIL import Image

from qimage_nb.emulator.fal import FalEmulator

fal_client = pytest.importorskip("fal_client")  # a test-only dependency (the product speaks httpx)
import fal_client.client as fal_module  # noqa: E402

T2I = "fal-ai/qwen-image-2/text-to-image"


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Any connection to a non-loopback address fails the test instead of leaving the machine."""
    connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            assert ipaddress.ip_address(host).is_loopback, f"the SDK tried to reach {host}"
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emu(monkeypatch):
    emulator = FalEmulator(latency=0.4, jitter=0, keepalive=0.2).start()
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", emulator.base_url + "/")
    yield emulator
    emulator.stop()


@pytest.fixture
def client(emu):
    return fal_client.SyncClient(key=emu.api_key)


def download(url: str) -> Image.Image:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    return Image.open(io.BytesIO(answer.content))


def test_subscribe_with_logs_completes_and_reports_queue_then_logs(emu, client):
    updates: list = []
    enqueued: list[str] = []
    result = client.subscribe(
        T2I, {"prompt": "a lighthouse at dusk", "image_size": "landscape_16_9", "num_images": 2, "seed": 7},
        with_logs=True, interval=0.05, on_enqueue=enqueued.append, on_queue_update=updates.append,
    )
    assert len(enqueued) == 1
    kinds = [type(update).__name__ for update in updates]
    assert kinds[0] == "Queued" and kinds[-1] == "Completed"
    assert "InProgress" in kinds
    logs = [line["message"] for update in updates if getattr(update, "logs", None) for line in update.logs]
    assert any("step 4/4" in message for message in logs), logs
    assert result["seed"] == 7
    assert len(result["images"]) == 2
    picture = download(result["images"][1]["url"])
    assert picture.size == (1024, 576) == (result["images"][1]["width"], result["images"][1]["height"])
    counters = emu.counters()
    assert counters["requests_per_endpoint"]["POST submit"] == 1
    assert counters["images_billed"] == 2


def test_submit_status_result_and_key_from_id_and_secret(emu, monkeypatch):
    key_id, _, secret = emu.api_key.partition(":")
    monkeypatch.setenv("FAL_KEY_ID", key_id)
    monkeypatch.setenv("FAL_KEY_SECRET", secret)
    client = fal_client.SyncClient()  # the key from the environment, as the SDK builds it
    handle = client.submit("fal-ai/qwen-image-2/pro/text-to-image",
                           {"prompt": "a red bicycle", "image_size": {"width": 1280, "height": 720},
                            "output_format": "webp"})
    first = handle.status(with_logs=True)
    assert isinstance(first, (fal_client.Queued, fal_client.InProgress))
    # The SDK follows the URLs of the submit answer: owner/app only, not the app's full path.
    assert "/fal-ai/qwen-image-2/requests/" in handle.status_url and "/pro/" not in handle.status_url
    result = handle.get(interval=0.05)
    final = handle.status(with_logs=True)
    assert isinstance(final, fal_client.Completed) and final.logs and "inference_time" in final.metrics
    image = result["images"][0]
    assert image["content_type"] == "image/webp"
    assert download(image["url"]).format == "WEBP"


def test_cancel_a_queued_request_is_never_billed(emu, client):
    emu.stop()
    with FalEmulator(latency=0.6, jitter=0, max_concurrent=1) as single:  # one runner: a queue forms
        fal_module.QUEUE_URL_FORMAT = single.base_url + "/"  # restored by the fixture's monkeypatch
        sdk = fal_client.SyncClient(key=single.api_key)
        running = sdk.submit(T2I, {"prompt": "first"})
        queued = sdk.submit(T2I, {"prompt": "second"})
        status = queued.status()
        assert isinstance(status, fal_client.Queued)  # behind the one the only runner has
        queued.cancel()
        assert running.get(interval=0.05)["images"]
        with pytest.raises(fal_client.FalClientHTTPError) as refused:
            queued.get(interval=0.05)
        assert refused.value.status_code == 400 and "cancel" in str(refused.value).lower()
        counters = single.counters()
    assert counters["cancels"] == {"queued": 1}
    assert counters["requests_billed"] == 1 and counters["images_billed"] == 1


def test_cancel_after_completion_is_refused_with_already_completed(emu, client):
    handle = client.submit(T2I, {"prompt": "done already"})
    handle.get(interval=0.05)
    with pytest.raises(fal_client.FalClientHTTPError) as refused:
        handle.cancel()
    assert refused.value.status_code == 400
    assert emu.counters()["cancels"] == {"ALREADY_COMPLETED": 1}


def test_subscribe_client_timeout_cancels_at_the_host(emu):
    emu.stop()
    with FalEmulator(latency=5, jitter=0) as slow:
        fal_module.QUEUE_URL_FORMAT = slow.base_url + "/"
        sdk = fal_client.SyncClient(key=slow.api_key)
        with pytest.raises(fal_client.FalClientTimeoutError) as timed_out:
            sdk.subscribe(T2I, {"prompt": "too slow"}, client_timeout=1.2, interval=0.05)
        assert timed_out.value.request_id
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not slow.counters()["cancels"]:
            time.sleep(0.02)
        counters = slow.counters()
    # The SDK cancels on its timeout; the request had started, so the host says it was running.
    assert counters["cancels"] == {"running": 1}


def test_a_refused_input_reaches_the_sdk_as_fal_detail(emu, client):
    handle = client.submit("fal-ai/qwen-image-2/edit", {"prompt": "make it blue", "num_images": 9})
    with pytest.raises(fal_client.FalClientHTTPError) as refused:
        handle.get(interval=0.05)
    assert refused.value.status_code == 422
    fields = {tuple(item["loc"]) for item in refused.value.message}
    assert fields == {("body", "num_images"), ("body", "image_urls")}
    assert emu.counters()["refusals_billed"] == 1  # fal bills a 422: validate before sending


def test_async_client_subscribe(emu):
    import asyncio

    async def main():
        sdk = fal_client.AsyncClient(key=emu.api_key)
        return await sdk.subscribe("alibaba/qwen-image-3/text-to-image", {"prompt": "a koi pond"},
                                   interval=0.05, with_logs=True)

    result = asyncio.run(main())
    assert download(result["images"][0]["url"]).size == (1024, 1024)
