"""Qwen Image 3.0 on Alibaba Model Studio (DashScope), models outside the table, host parameters,
local references as ``data:`` URIs, and regions and workspaces (issue 21).

Every request body the client sends is recorded on its way to the emulator, so each test asserts
what reached the host, not what the client meant to send.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import sqlite3

import httpx
import pytest
from PIL import Image

from qimage_nb import AsyncClient
from qimage_nb._exceptions import AuthenticationError, BadRequestError, ValidationError
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator import DashScopeEmulator
from qimage_nb.providers import get_provider

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.02, backoff_cap=0.1)
DASHSCOPE = get_provider("dashscope")


class Recording(httpx.AsyncBaseTransport):
    """A real HTTP transport that keeps every POST body it sends."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.posts: list[tuple[str, dict]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.posts.append((request.url.path, json.loads(await request.aread())))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(scope="module")
def ds():
    with DashScopeEmulator(latency=0.1, jitter=0.0) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(ds):
    ds.reset()


def client_for(ds, wire: Recording) -> AsyncClient:
    return AsyncClient(ds.api_key, ds.base_url, provider="dashscope", retry=FAST_RETRY,
                       poll=PollPolicy.for_latency(ds.latency), timeout=5.0, transport=wire)


def parameters_of(wire: Recording) -> dict:
    ((path, body),) = wire.posts
    assert path.endswith("/services/aigc/multimodal-generation/generation")
    return body["parameters"]


def png_bytes(size: tuple[int, int], color: str = "teal") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


# --- 1. Qwen Image 3.0 ---------------------------------------------------------------------------


async def test_a_3_0_generation_sends_its_options_and_no_size_and_keeps_the_size_the_model_chose(ds):
    wire = Recording()
    async with client_for(ds, wire) as client:
        generation = await client.generate(
            "a wide mountain panorama at dawn", model="qwen-image-3.0", seed=7, negative_prompt="blurry",
            prompt_extend=False, n=2,
        )
    body = wire.posts[0][1]
    assert body["model"] == "qwen-image-3.0"
    assert parameters_of(wire) == {"n": 2, "seed": 7, "negative_prompt": "blurry", "prompt_extend": False}
    # The model chose 2560x1440 for a panorama: the images, the answer and provenance agree.
    assert [im.size for im in generation.images] == [(2560, 1440)] * 2
    assert generation.request.size == "auto"
    info = generation.images[0].info
    assert info["model"] == "qwen-image-3.0" and info["size"] == "auto" and info["output_size"] == "2560x1440"
    assert ds.counters()["images_billed"] == 2  # images counted, not content parts (3.0 adds a text part)


async def test_a_long_prompt_and_a_2560_wide_size_reach_the_host_on_3_0_while_2_0_keeps_its_limits(ds):
    long_prompt = "a quiet harbour with fishing boats, " * 43  # about 1,500 characters
    assert 1400 < len(long_prompt) < 1600
    wire = Recording()
    async with client_for(ds, wire) as client:
        generation = await client.generate(long_prompt, model="qwen-image-3.0-pro", size="2560x1440")
        assert generation.images[0].size == (2560, 1440)
        assert wire.posts[0][1]["input"]["messages"][0]["content"][-1]["text"] == long_prompt
        assert parameters_of(wire)["size"] == "2560*1440"
        with pytest.raises(ValidationError, match=r"1[45][0-9][0-9] characters; the API allows at most 800"):
            await client.generate(long_prompt, model="qwen-image-2.0")
        with pytest.raises(ValidationError, match="each side 512 to 2048"):
            await client.generate("a cat", model="qwen-image-2.0", size="2560x1440")
    assert len(wire.posts) == 1


@pytest.mark.parametrize(
    ("size", "fragment"),
    [("2304x256", "aspect up to 8:1"), ("2600x1000", "each side up to 2560"), ("2048x2304", "2048x2048"),
     ("400x400", "512x512")],
)
async def test_sizes_3_0_cannot_make_are_refused_before_anything_is_sent(ds, size, fragment):
    wire = Recording()
    async with client_for(ds, wire) as client:
        with pytest.raises(ValidationError, match=fragment) as info:
            await client.generate("a cat", model="qwen-image-3.0", size=size)
    assert "\n" not in str(info.value) and wire.posts == [] and ds.counters()["api_requests"] == 0


async def test_3_0_rewriting_modes_are_its_own_and_agent_is_text_to_image_only(ds):
    wire = Recording()
    async with client_for(ds, wire) as client:
        await client.generate("a cat", model="qwen-image-3.0", host_params={"prompt_extend_mode": "agent"})
        assert parameters_of(wire)["prompt_extend_mode"] == "agent"
        with pytest.raises(ValidationError, match="text-to-image only"):
            await client.generate("make it blue", model="qwen-image-3.0", image_urls=[png_bytes((512, 512))],
                                  host_params={"prompt_extend_mode": "agent"})
        with pytest.raises(ValidationError, match="not one of direct, agent"):
            await client.generate("a cat", model="qwen-image-3.0", host_params={"prompt_extend_mode": "deep"})
    assert len(wire.posts) == 1


# --- 3. models and parameters outside the table ------------------------------------------------


async def test_an_unlisted_model_is_sent_once_as_written_and_the_hosts_refusal_is_one_line(ds, caplog):
    wire = Recording()
    with caplog.at_level(logging.WARNING, logger="qimage_nb"):
        async with client_for(ds, wire) as client:
            with pytest.raises(BadRequestError) as info:
                await client.generate("a cat", model="qwen-image-3")
    notes = [r.getMessage() for r in caplog.records if "not in qimage_nb's DashScope models" in r.getMessage()]
    assert notes == [
        "qimage_nb: qwen-image-3 is not in qimage_nb's DashScope models (checked 2026-12); sending it as "
        "written (did you mean 'qwen-image-3.0'?)"
    ]
    assert [body["model"] for _, body in wire.posts] == ["qwen-image-3"]
    assert wire.posts[0][1]["parameters"] == {"n": 1}  # as written: no size it did not ask for
    assert "Model not exist" in str(info.value) and "\n" not in str(info.value)
    assert ds.counters()["generations_billed"] == 0


async def test_host_params_reach_parameters_as_written_and_provenance_keeps_them(ds):
    wire = Recording()
    async with client_for(ds, wire) as client:
        generation = await client.generate(
            "a lantern", model="qwen-image-3.0", size="1024x1024", host_params={"enable_thinking": False}
        )
    assert parameters_of(wire) == {"size": "1024*1024", "n": 1, "enable_thinking": False}
    assert json.loads(generation.images[0].info["host_params"]) == {"enable_thinking": False}
    assert generation.request.host_params == {"enable_thinking": False}


async def test_host_params_cannot_overwrite_qimage_nbs_own_fields(ds):
    wire = Recording()
    async with client_for(ds, wire) as client:
        with pytest.raises(ValidationError, match=r"pass seed=\.\.\. instead"):
            await client.generate("a cat", model="qwen-image-3.0", host_params={"seed": 3})
    assert wire.posts == []


# --- 4. local references as data: URIs ---------------------------------------------------------


async def test_a_3_0_pro_edit_with_a_local_png_and_a_pil_image_sends_data_uris_and_uploads_nothing(ds, tmp_path):
    path = tmp_path / "sketch.png"
    path.write_bytes(png_bytes((640, 480), "navy"))
    picture = Image.new("RGB", (800, 600), "orange")
    wire = Recording()
    async with client_for(ds, wire) as client:
        generation = await client.generate(
            "Image 1 in the colours of Image 2", model="qwen-image-3.0-pro", image_urls=[str(path), picture]
        )
        # Sent again from the journal alone: the same bytes come back from its folder.
        (entry,) = client.history()
    content = wire.posts[0][1]["input"]["messages"][0]["content"]
    assert [list(part) for part in content] == [["image"], ["image"], ["text"]]
    for part, expected in zip(content[:2], ((640, 480), (800, 600)), strict=True):
        assert part["image"].startswith("data:image/png;base64,")
        decoded = Image.open(io.BytesIO(base64.b64decode(part["image"].split(",", 1)[1])))
        assert decoded.size == expected
    assert not any("upload" in name for name in ds.counters()["requests_per_endpoint"])
    # No size asked on an edit: the model kept the last reference's 4:3 shape.
    width, height = generation.images[0].size
    assert abs(width / height - 4 / 3) < 0.02
    # The journal keeps digests, not the base64, and each reference's bytes once.
    home = client.store.root
    with sqlite3.connect(home / "journal.sqlite3") as db:
        (row,) = db.execute("SELECT request_json FROM jobs").fetchall()
    assert "base64" not in row[0] and len(row[0]) < 2000
    assert row[0].count("data:image/png;sha256,") == 2
    assert sorted(len(files) for _, _, files in os.walk(home / "refs") if files) == [1, 1]
    assert [ref.uri for ref in entry.request.image_urls] == [part["image"] for part in content[:2]]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: Image.new("RGB", (4000, 500), "red"), "each side 384 to 3072"),
        (lambda: Image.new("RGB", (200, 200), "red"), "each side 384 to 3072"),
        (lambda: Image.frombytes("RGB", (1900, 1900), os.urandom(1900 * 1900 * 3)), "up to 10.0 MB"),
        (lambda: b"not an image at all", "image"),
    ],
)
async def test_a_local_reference_over_the_hosts_limits_is_refused_naming_the_limit(ds, make, fragment):
    wire = Recording()
    async with client_for(ds, wire) as client:
        with pytest.raises(ValidationError, match=fragment) as info:
            await client.generate("edit it", model="qwen-image-3.0", image_urls=[make()])
    assert "\n" not in str(info.value) and wire.posts == []


async def test_other_formats_are_sent_as_png_and_a_jpeg_as_it_is(ds, tmp_path):
    bmp, jpeg = tmp_path / "a.bmp", tmp_path / "b.jpg"
    Image.new("RGB", (512, 512), "green").save(bmp)
    Image.new("RGB", (512, 512), "blue").save(jpeg, quality=90)
    wire = Recording()
    async with client_for(ds, wire) as client:
        await client.generate("merge", model="qwen-image-2.0", image_urls=[bmp, str(jpeg)])
    content = wire.posts[0][1]["input"]["messages"][0]["content"]
    assert content[0]["image"].startswith("data:image/png;base64,")
    assert base64.b64decode(content[1]["image"].split(",", 1)[1]) == jpeg.read_bytes()


async def test_the_seed_api_still_refuses_local_references_in_image_urls():
    from qimage_nb.emulator import Emulator

    with Emulator(latency=0.05) as emu:
        async with AsyncClient(emu.api_key, emu.base_url, retry=FAST_RETRY) as client:
            with pytest.raises(ValidationError, match="upload"):
                await client.generate("a cat", image_urls=[Image.new("RGB", (512, 512))])
        assert emu.counters()["api_requests"] == 0


# --- 5. regions and workspaces -----------------------------------------------------------------


def base_url_with(monkeypatch, **env: str) -> str:
    monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return AsyncClient("sk-test", provider="dashscope").base_url


def test_a_new_user_gets_singapore_and_the_sdk_variables_choose_the_rest(monkeypatch):
    assert base_url_with(monkeypatch) == "https://dashscope-intl.aliyuncs.com/api/v1"
    assert base_url_with(monkeypatch, DASHSCOPE_API_REGION="cn-beijing") == "https://dashscope.aliyuncs.com/api/v1"
    assert (base_url_with(monkeypatch, DASHSCOPE_API_REGION="eu-central-1", DASHSCOPE_WORKSPACE_ID="ws-42ab")
            == "https://ws-42ab.eu-central-1.maas.aliyuncs.com/api/v1")
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "https://gateway.example.org/api/v1")
    assert AsyncClient("sk-test", provider="dashscope").base_url == "https://gateway.example.org/api/v1"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"DASHSCOPE_API_REGION": "us-east-1", "DASHSCOPE_WORKSPACE_ID": "evil.com/x#"}, "DASHSCOPE_WORKSPACE_ID is not a DNS label"),
        ({"DASHSCOPE_API_REGION": "evil.com#", "DASHSCOPE_WORKSPACE_ID": "ws1"}, "DASHSCOPE_API_REGION is not a DNS label"),
        ({"DASHSCOPE_API_REGION": "us-east-1"}, "needs \\$DASHSCOPE_WORKSPACE_ID"),
    ],
)
def test_a_hostile_or_incomplete_region_is_refused_before_any_key_is_sent(monkeypatch, env, fragment):
    with pytest.raises(ValidationError, match=fragment) as info:
        base_url_with(monkeypatch, **env)
    assert "evil.com" not in str(info.value) and "\n" not in str(info.value)


async def test_a_refused_key_names_the_region_and_the_variables_that_chose_it(ds, monkeypatch):
    monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL")
    transport = httpx.MockTransport(lambda request: httpx.Response(
        401, json={"code": "InvalidApiKey", "message": "Invalid API-key provided.", "request_id": "r1"}))
    monkeypatch.setenv("DASHSCOPE_API_REGION", "ap-northeast-1")
    monkeypatch.setenv("DASHSCOPE_WORKSPACE_ID", "ws7")
    async with AsyncClient("sk-wrong-key-123", provider="dashscope", transport=transport) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.generate("a cat")
    message = str(info.value)
    assert "workspace ws7 in Tokyo (ap-northeast-1)" in message
    assert "chosen by $DASHSCOPE_API_REGION=ap-northeast-1 (Tokyo) with $DASHSCOPE_WORKSPACE_ID" in message
    assert "DASHSCOPE_HTTP_BASE_URL" in message and "sk-wrong-key-123" not in message


async def test_a_lost_answer_with_a_local_reference_is_resent_identically_from_the_journal(ds, tmp_path):
    from qimage_nb._exceptions import SubmitOutcomeUnknown

    picture = Image.new("RGB", (700, 500), "maroon")
    ds.set_faults(lose_submit_answers=1, lose_mode="reset")
    wire = Recording()
    async with client_for(ds, wire) as client:
        with pytest.raises(SubmitOutcomeUnknown) as info:
            await client.generate("make it snow", model="qwen-image-3.0", image_urls=[picture])
        key = info.value.idempotency_key
    async with client_for(ds, wire) as later:  # a new client: the request comes from the journal
        generation = await later.resend(key)
    assert generation.images
    first, second = (body for _, body in wire.posts)
    assert first == second and first["input"]["messages"][0]["content"][0]["image"].startswith("data:image/png;base64,")
    # Its bytes gone from the journal folder: one line says so, nothing is sent.
    for path in (later.store.root / "refs").rglob("*"):
        if path.is_file():
            path.unlink()
    (entry,) = later.history()
    with pytest.raises(ValidationError, match="missing from the journal folder"):
        entry.request.image_urls[0].raw()
