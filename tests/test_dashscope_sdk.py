"""The official ``dashscope`` SDK, pointed at the DashScope emulator, completes generations.

The host's own SDK is the ground truth of its protocol (shared/PROVIDERS.md): an emulator is only
trusted once that SDK, unmodified, gets images out of it and reads its refusals. Every socket the
SDK opens is checked to be loopback, so no test can reach Alibaba Cloud.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from qimage_nb.emulator import DashScopeEmulator

dashscope = pytest.importorskip("dashscope")  # a test-only dependency (the product speaks httpx)
from dashscope import ImageSynthesis, MultiModalConversation  # noqa: E402


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


@pytest.fixture
def emu(monkeypatch):
    emulator = DashScopeEmulator(latency=0.2, jitter=0).start()
    # The SDK reads DASHSCOPE_HTTP_BASE_URL once, at import; per call it uses this module attribute.
    monkeypatch.setattr(dashscope, "base_http_api_url", emulator.base_url)
    monkeypatch.setattr(dashscope, "api_key", None)
    assert ipaddress.ip_address(urlsplit(dashscope.base_http_api_url).hostname).is_loopback
    yield emulator
    emulator.stop()


def prompt_message(text: str, images: tuple[str, ...] = ()) -> list[dict]:
    return [{"role": "user", "content": [*({"image": url} for url in images), {"text": text}]}]


def download(url: str) -> Image.Image:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.content.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(answer.content))


def test_multimodal_conversation_call_returns_n_pngs_of_the_requested_size(emu):
    response = MultiModalConversation.call(
        model="qwen-image-2.0", api_key=emu.api_key, messages=prompt_message("a paper crane on a desk"),
        size="1024*1024", n=2, seed=42, prompt_extend=True, watermark=False, negative_prompt="blurry",
    )

    assert response.status_code == 200, response
    message = response.output.choices[0].message
    assert message.role == "assistant" and response.output.choices[0].finish_reason == "stop"
    urls = [part["image"] for part in message.content]
    assert len(urls) == 2
    pictures = [download(url) for url in urls]
    assert [p.size for p in pictures] == [(1024, 1024), (1024, 1024)]
    assert pictures[0].tobytes() != pictures[1].tobytes()
    assert (response.usage.width, response.usage.height, response.usage.image_count) == (1024, 1024, 2)
    assert emu.counters()["images_billed"] == 2


def test_multimodal_conversation_edits_a_previous_result(emu):
    first = MultiModalConversation.call(model="qwen-image-2.0-pro", api_key=emu.api_key,
                                        messages=prompt_message("a teapot"), size="1536*1024")
    source = first.output.choices[0].message.content[0]["image"]
    edit = MultiModalConversation.call(model="qwen-image-2.0-pro", api_key=emu.api_key,
                                       messages=prompt_message("make it green", (source,)))
    assert edit.status_code == 200, edit
    assert download(edit.output.choices[0].message.content[0]["image"]).size == (1536, 1024)


def test_a_qwen_image_3_0_generation_with_no_size_gets_the_size_the_model_chose(emu):
    response = MultiModalConversation.call(
        model="qwen-image-3.0", api_key=emu.api_key, messages=prompt_message("a tall lighthouse poster " * 60),
        n=2, seed=3, prompt_extend=True, prompt_extend_mode="direct", negative_prompt="text",
    )
    assert response.status_code == 200, response
    content = response.output.choices[0].message.content
    urls = [part["image"] for part in content if "image" in part]  # 3.0 adds a part with text only
    assert len(urls) == 2 and len(content) == 3
    usage = response.usage
    assert (usage["output_width"], usage["output_height"], usage["output_image_count"]) == (1440, 2560, 2)
    assert [download(url).size for url in urls] == [(1440, 2560)] * 2


def test_a_qwen_image_3_0_edit_takes_a_data_uri_reference(emu):
    out = io.BytesIO()
    Image.new("RGB", (768, 512), "purple").save(out, "PNG")
    reference = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
    response = MultiModalConversation.call(
        model="qwen-image-3.0-pro", api_key=emu.api_key, messages=prompt_message("make Image 1 gold", (reference,)),
        size="1536*1024",
    )
    assert response.status_code == 200, response
    (url,) = [part["image"] for part in response.output.choices[0].message.content if "image" in part]
    assert download(url).size == (1536, 1024)
    assert response.usage["input_image_count"] == 1
    assert not any("upload" in name for name in emu.counters()["requests_per_endpoint"])


def test_image_synthesis_call_waits_for_the_async_task_and_gets_its_image(emu):
    response = ImageSynthesis.call(model="qwen-image", api_key=emu.api_key, prompt="a snowy village",
                                   negative_prompt="people", size="1328*1328")

    assert response.status_code == 200, response
    assert response.output.task_status == "SUCCEEDED"
    [result] = response.output.results
    assert result.orig_prompt == "a snowy village"
    assert result.actual_prompt.startswith("a snowy village")
    assert download(result.url).size == (1328, 1328)
    assert response.usage.image_count == 1
    counters = emu.counters()
    assert counters["requests_per_endpoint"]["POST image-synthesis"] == 1
    assert counters["requests_per_endpoint"]["GET tasks/{id}"] >= 2  # PENDING first, then SUCCEEDED


def test_image_synthesis_async_call_fetch_and_cancel_while_pending():
    emulator = DashScopeEmulator(latency=2.0, jitter=0, pickup=0.9).start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(dashscope, "base_http_api_url", emulator.base_url)
            task = ImageSynthesis.async_call(model="qwen-image-plus", api_key=emulator.api_key,
                                             prompt="a kite", size="1664*928")
            assert task.status_code == 200 and task.output.task_status == "PENDING"
            cancelled = ImageSynthesis.cancel(task, api_key=emulator.api_key)
            assert cancelled.status_code == 200, cancelled
            fetched = ImageSynthesis.fetch(task, api_key=emulator.api_key)
            assert fetched.output.task_status == "CANCELED"
            again = ImageSynthesis.cancel(task, api_key=emulator.api_key)
            assert (again.status_code, again.code) == (400, "UnsupportedOperation")
        assert emulator.counters()["generations_billed"] == 0
    finally:
        emulator.stop()


def test_wait_on_an_unknown_task_returns_unknown_at_once(emu):
    response = ImageSynthesis.wait("00000000-0000-4000-8000-000000000000", api_key=emu.api_key)
    assert response.status_code == 200
    assert response.output.task_status == "UNKNOWN"


def test_a_wrong_key_is_reported_as_401_invalid_api_key(emu):
    sync = MultiModalConversation.call(model="qwen-image-2.0", api_key="sk-wrong", messages=prompt_message("x"))
    assert (sync.status_code, sync.code, sync.message) == (401, "InvalidApiKey", "Invalid API-key provided.")
    submit = ImageSynthesis.async_call(model="qwen-image", api_key="sk-wrong", prompt="x")
    assert (submit.status_code, submit.code) == (401, "InvalidApiKey")
    assert emu.counters()["tasks"] == 0


def test_bad_values_are_reported_as_400_invalid_parameter_naming_the_field(emu):
    size = MultiModalConversation.call(model="qwen-image-2.0", api_key=emu.api_key,
                                       messages=prompt_message("x"), size="4096*4096")
    assert (size.status_code, size.code) == (400, "InvalidParameter") and "size" in size.message
    many = MultiModalConversation.call(model="qwen-image-2.0", api_key=emu.api_key,
                                       messages=prompt_message("x"), n=7)
    assert (many.status_code, many.code) == (400, "InvalidParameter") and "parameters.n" in many.message
    two = ImageSynthesis.async_call(model="qwen-image", api_key=emu.api_key, prompt="x", n=2)
    assert (two.status_code, two.code) == (400, "InvalidParameter") and "parameters.n" in two.message
    long_negative = ImageSynthesis.async_call(model="qwen-image", api_key=emu.api_key, prompt="x",
                                              negative_prompt="n" * 501)
    assert (long_negative.status_code, long_negative.code) == (400, "InvalidParameter")
    assert emu.counters()["tasks"] == 0


def test_inspection_throttling_and_the_async_header_reach_the_sdk_as_the_hosts_codes(emu):
    flagged = MultiModalConversation.call(model="qwen-image-max", api_key=emu.api_key,
                                          messages=prompt_message("FAIL_MODERATION"))
    assert (flagged.status_code, flagged.code) == (400, "DataInspectionFailed")
    emu.set_faults(rate_limit_submits=1)
    throttled = MultiModalConversation.call(model="qwen-image-max", api_key=emu.api_key,
                                            messages=prompt_message("x"))
    assert (throttled.status_code, throttled.code) == (429, "Throttling.RateQuota")
    asynchronous = MultiModalConversation.call(model="qwen-image-max", api_key=emu.api_key,
                                               messages=prompt_message("x"),
                                               headers={"X-DashScope-Async": "enable"})
    assert (asynchronous.status_code, asynchronous.code) == (403, "AccessDenied")
    assert asynchronous.message == "current user api does not support asynchronous calls"


def test_a_failed_task_ends_the_sdks_wait_with_failed_and_the_hosts_code(emu):
    emu.set_faults(fail_rate=1.0)
    response = ImageSynthesis.call(model="qwen-image", api_key=emu.api_key, prompt="x")
    assert response.status_code == 200
    assert response.output.task_status == "FAILED"
    assert response.output.code == "InternalError"
    sync = MultiModalConversation.call(model="qwen-image-2.0", api_key=emu.api_key, messages=prompt_message("x"))
    assert (sync.status_code, sync.code) == (500, "InternalError")


def test_the_sdk_resends_a_sync_call_whose_connection_was_reset_and_is_billed_twice(emu):
    # What a client built on the SDK inherits: HttpRequest retries once on any ConnectionError, and
    # a reset after the host did the work is one. The host offers no idempotency key.
    emu.set_faults(lose_submit_answers=1, lose_mode="reset")
    response = MultiModalConversation.call(model="qwen-image-2.0", api_key=emu.api_key,
                                           messages=prompt_message("a lighthouse"), size="512*512")
    assert response.status_code == 200
    counters = emu.counters()
    assert counters["requests_per_endpoint"]["POST multimodal-generation"] == 2
    assert counters["generations_billed"] == 2
