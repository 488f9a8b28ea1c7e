"""The client against the bundled emulator over real loopback HTTP: the contract, end to end."""

from __future__ import annotations

import hashlib
import io
import itertools
import time

import pytest
from PIL import Image

from qimage_nb import AsyncClient
from qimage_nb._contract import PIXEL_SIZES, GenerationRequest
from qimage_nb._exceptions import (
    AuthenticationError,
    ImageError,
    InsufficientBalanceError,
    ServerError,
    TaskFailedError,
    ValidationError,
)
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator import Emulator

FAST_RETRY = RetryPolicy(max_attempts=8, backoff_base=0.02, backoff_cap=0.1)


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0.15, jitter=0.05) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu):
    emu.reset()
    yield
    emu.reset()


@pytest.fixture
async def client(emu):
    async with AsyncClient(
        emu.api_key, emu.base_url, retry=FAST_RETRY, poll=PollPolicy.for_latency(emu.latency), timeout=2.0
    ) as c:
        yield c


async def test_all_fourteen_sizes_are_exact(client, emu):
    combos = sorted(PIXEL_SIZES)
    requests = [{"prompt": f"size check {r} {t}", "size": r, "resolution": t} for r, t in combos]
    results = await client.generate_many(requests, concurrency=7)
    assert [g.error for g in results] == [None] * 14
    for (ratio, tier), generation in zip(combos, results, strict=True):
        assert generation.request.size == ratio and generation.request.resolution == tier
        assert generation.images[0].size == PIXEL_SIZES[(ratio, tier)]
        with Image.open(generation.paths[0]) as on_disk:
            assert on_disk.size == PIXEL_SIZES[(ratio, tier)]
    assert emu.counters()["submits_accepted"] == 14


async def test_six_images_in_api_order(client):
    generation = await client.generate("six of them", n=6, size="3:2")
    assert len(generation.images) == len(generation.urls) == 6
    assert [im.info["source_url"] for im in generation.images] == generation.urls
    assert [im.info["index"] for im in generation.images] == [str(i) for i in range(6)]
    pixels = {hashlib.sha256(im.tobytes()).hexdigest() for im in generation.images}
    assert len(pixels) == 6  # six distinct pictures


async def test_image_to_image_with_an_uploaded_reference(client, emu, tmp_path):
    source = tmp_path / "cat.png"
    Image.new("RGB", (300, 200), (10, 200, 30)).save(source)
    url = await client.upload(source)
    assert url.startswith(emu.cdn_url)
    generation = await client.generate("make it blue", image_urls=[url])
    assert generation.request.image_urls == (url,)
    assert generation.images[0].size == (1024, 1024)
    assert emu.counters()["uploads"] == 1


async def test_uploading_a_generated_pil_image(client, emu):
    first = await client.generate("seed image")
    url = await client.upload(first.images[0])
    assert url.startswith(emu.cdn_url)


async def test_an_upload_is_reused_per_content_and_api_only_when_asked(client, emu, tmp_path):
    source, copy = tmp_path / "cat.png", tmp_path / "same-cat.png"
    Image.new("RGB", (300, 200), (10, 200, 30)).save(source)
    copy.write_bytes(source.read_bytes())
    assert client.find_upload(source) is None
    url = await client.upload(source, reuse=True)
    assert emu.counters()["uploads"] == 1
    # The same bytes under another name, to the same API: the journal's URL, nothing sent.
    assert await client.upload(copy, reuse=True) == url and emu.counters()["uploads"] == 1
    earlier = client.find_upload(copy)
    assert earlier is not None and earlier.url == url and earlier.created_at <= time.time()
    assert await client.upload(source) != url and emu.counters()["uploads"] == 2  # not asked: sent again
    async with AsyncClient(emu.api_key, emu.base_url.replace("127.0.0.1", "localhost"), store=client.store,
                           retry=FAST_RETRY) as elsewhere:
        # Another API origin (one server, two names): an upload URL is its provider's, never shared.
        assert elsewhere.find_upload(source) is None
        await elsewhere.upload(source, reuse=True)
    assert emu.counters()["uploads"] == 3


async def test_an_earlier_upload_is_reused_only_while_it_has_a_day_left_at_the_host(client, emu, tmp_path):
    source = tmp_path / "dog.png"
    Image.new("RGB", (300, 200), (200, 30, 10)).save(source)
    url = await client.upload(source, reuse=True)
    lifetime = client.provider.capabilities.upload_lifetime
    assert lifetime == 72 * 3600  # API.md: uploads are kept 72 hours

    def age_uploads(seconds: float) -> None:
        with client.store._write() as conn:
            conn.execute("UPDATE uploads SET uploaded_at = ?", (time.time() - seconds,))

    age_uploads(lifetime - 25 * 3600)  # 47 h old: 25 h left at the host, reused
    assert await client.upload(source, reuse=True) == url and emu.counters()["uploads"] == 1
    age_uploads(lifetime - 23 * 3600)  # 49 h old: less than a day left, uploaded again
    assert client.find_upload(source) is None
    assert await client.upload(source, reuse=True) != url and emu.counters()["uploads"] == 2


async def test_balance_decreases_with_billed_images(client):
    before = (await client.balance()).remain_balance
    await client.generate("bill me", n=3)
    after = (await client.balance()).remain_balance
    assert after == pytest.approx(before - 3 * 0.006)


@pytest.mark.parametrize(
    ("envelope", "url_format", "multi_url"),
    [
        combo
        for combo in itertools.product(
            ["list", "object", "object-id", "code-success"], ["list", "string"], ["per-item", "one-item"]
        )
        # several URLs cannot share one plain-string item: API.md describes no such shape
        if combo[1:] != ("string", "one-item")
    ],
)
async def test_every_envelope_variant(client, emu, envelope, url_format, multi_url):
    emu.set_faults(submit_envelope=envelope, url_format=url_format, multi_url=multi_url)
    generation = await client.generate("variants", n=3)
    assert len(generation.images) == 3
    assert [im.info["index"] for im in generation.images] == ["0", "1", "2"]
    assert generation.urls == sorted(generation.urls, key=lambda u: u.rsplit("/", 1)[-1])


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_rate_limited_submits_complete_once(client, emu, form):
    emu.set_faults(rate_limit_submits=2, retry_after=1 if form == "http-date" else 0.1, retry_after_format=form)
    generation = await client.generate("rate limited")
    counters = emu.counters()
    assert generation.images
    assert counters["submits_accepted"] == 1
    assert counters["faults_injected"]["rate_limit_submit"] == 2 or sum(counters["faults_injected"].values()) == 2


async def test_poll_faults_do_not_stop_a_generation(client, emu):
    emu.set_faults(poll_fault_rate=0.5, poll_fault_kinds=("500", "503", "html502", "429", "reset"), retry_after=0.05)
    results = await client.generate_many([f"flaky {i}" for i in range(6)], concurrency=6)
    assert [g.error for g in results] == [None] * 6
    counters = emu.counters()
    assert counters["submits_accepted"] == 6
    assert sum(counters["faults_injected"].values()) > 0


async def test_poll_read_timeouts_are_survived(emu):
    emu.set_faults(poll_fault_rate=0.3, poll_fault_kinds=("timeout",), slow_seconds=1.0)
    async with AsyncClient(emu.api_key, emu.base_url, retry=FAST_RETRY, poll=PollPolicy.for_latency(emu.latency), timeout=0.3) as client:
        generation = await client.generate("slow polls")
    assert generation.images and emu.counters()["submits_accepted"] == 1


@pytest.mark.parametrize("mode", ["reset", "html502", "timeout"])
async def test_lost_submit_answer_is_replayed_not_billed_twice(emu, mode):
    async with AsyncClient(emu.api_key, emu.base_url, retry=FAST_RETRY, poll=PollPolicy.for_latency(emu.latency), timeout=0.5) as client:
        await client.generate("first: its versioned answer proves keys are honoured")
        emu.set_faults(lose_submit_answers=1, lose_mode=mode, slow_seconds=1.0)
        generation = await client.generate("lost answer")
    counters = emu.counters()
    assert generation.images
    assert counters["submits_accepted"] == 2
    assert counters["submit_replays"] >= 1


async def test_truncated_and_slow_downloads_recover(client, emu):
    emu.set_faults(cdn_truncate=2, cdn_delay=0.05)
    generation = await client.generate("cut short", n=2)
    for image in generation.images:
        image.load()  # decodes: the bytes on disk are whole
    assert emu.counters()["cdn_hits"] >= 4


async def test_moderation_refusal_is_typed_and_not_billed(client, emu):
    before = (await client.balance()).remain_balance
    with pytest.raises(TaskFailedError, match="inappropriate content") as info:
        await client.generate("FAIL_MODERATION please")
    assert info.value.task_id
    assert (await client.balance()).remain_balance == before
    assert client.pending() == []  # a failed task is not "pending"


async def test_unknown_status_and_malformed_json_are_survived(client, emu):
    await client.generate("first: its versioned answer proves keys are honoured")
    emu.set_faults(unknown_status=1, malformed_json=1)
    generation = await client.generate("odd answers")
    assert generation.images
    assert emu.counters()["submits_accepted"] == 2


@pytest.mark.parametrize("body", ["bomb", "huge", "not-image"])
async def test_hostile_cdn_bodies_are_refused(client, emu, body):
    emu.set_faults(cdn_body=body)
    with pytest.raises(ImageError) as info:
        await client.generate(f"hostile {body}")
    assert info.value.task_id
    assert "\n" not in str(info.value)


async def test_no_authorization_ever_reaches_the_cdn(client, emu, tmp_path):
    await client.generate("one", n=2)
    path = tmp_path / "r.png"
    Image.new("RGB", (64, 64)).save(path)
    await client.generate("two", image_urls=[await client.upload(path)])
    counters = emu.counters()
    assert counters["cdn_hits"] >= 3
    assert counters["cdn_authorization_headers"] == 0


async def test_wrong_key_and_empty_balance(emu):
    async with AsyncClient("sk-wrong", emu.base_url, retry=FAST_RETRY) as bad:
        with pytest.raises(AuthenticationError):
            await bad.generate("x")
    poor = Emulator(latency=0.1, jitter=0.0, balance=0.001).start()
    try:
        async with AsyncClient(poor.api_key, poor.base_url, retry=FAST_RETRY) as client:
            with pytest.raises(InsufficientBalanceError):
                await client.generate("x", n=6)
        assert poor.counters()["submits_accepted"] == 0
    finally:
        poor.stop()


async def test_unknown_model_at_the_server_is_not_retried(emu):
    # A model list read before the model was withdrawn: the server's 503 model_not_found must not
    # be retried.
    from qimage_nb.core import _account

    _account._LISTED_MODELS[("apimart", emu.base_url)] = ["qwen-image-2.0", "qwen-image-9"]
    async with AsyncClient(emu.api_key, emu.base_url, retry=FAST_RETRY) as client:
        forged = GenerationRequest(prompt="x", model="qwen-image-9")
        with pytest.raises(ServerError, match="model") as info:
            await client.submit(forged)
    assert info.value.error_type == "model_not_found"
    assert emu.counters()["submit_attempts"] == 1


BAD_CALLS = [
    {"prompt": ""},
    {"prompt": "x" * 801},
    {"prompt": "x", "n": 0},
    {"prompt": "x", "n": 7},
    {"prompt": "x", "size": "5:4"},
    {"prompt": "x", "resolution": "8K"},
    {"prompt": "x", "model": "qwen-image-3"},
    {"prompt": "x", "negative_prompt": "n" * 501},
    {"prompt": "x", "image_urls": ["data:image/png;base64,AAAA"]},
    {"prompt": "x", "image_urls": ["./cat.png"]},
    {"prompt": "x", "image_urls": ["https://e.org/1.png"] * 4},
    {"prompt": "x", "image_urls": ["gopher://e.org/1.png"]},
    {"prompt": "x", "timeout": -5},
]


@pytest.mark.parametrize("call", BAD_CALLS)
async def test_bad_input_sends_nothing(client, emu, call):
    kwargs = dict(call)
    with pytest.raises(ValidationError):
        await client.generate(kwargs.pop("prompt"), **kwargs)
    counters = emu.counters()
    # a model the table does not know is looked up in the API's model list first, nothing more
    assert counters["api_requests"] == (1 if "model" in kwargs else 0)
    assert counters["submit_attempts"] == 0
    assert client.pending() == []


async def test_bad_batch_item_sends_nothing(client, emu):
    with pytest.raises(ValidationError, match="request 2"):
        await client.generate_many(["ok", "fine", {"prompt": "bad", "n": 99}])
    assert emu.counters()["api_requests"] == 0


async def test_batch_keeps_going_when_one_fails(client, emu):
    results = await client.generate_many(["good 1", "FAIL_MODERATION", "good 2"], concurrency=3)
    assert [g.ok for g in results] == [True, False, True]
    assert isinstance(results[1].error, TaskFailedError) and results[1].task_id
    assert [g.request.prompt for g in results] == ["good 1", "FAIL_MODERATION", "good 2"]


async def test_in_process_transport_needs_no_sockets():
    emulator = Emulator(latency=0.05, jitter=0.0)
    async with AsyncClient(
        emulator.api_key, emulator.in_process_base_url, transport=emulator.transport(), retry=FAST_RETRY, poll=PollPolicy.for_latency(emulator.latency)
    ) as client:
        generation = await client.generate("no sockets", n=2)
    assert [im.size for im in generation.images] == [(1024, 1024)] * 2
    assert emulator.counters()["cdn_authorization_headers"] == 0


def test_png_bytes_on_disk_are_the_cdn_bytes_plus_provenance(emu):
    from qimage_nb import Client

    client = Client(emu.api_key, emu.base_url, retry=FAST_RETRY, poll=PollPolicy.for_latency(emu.latency))
    generation = client.generate("provenance 海", negative_prompt="blur")
    with Image.open(generation.paths[0]) as saved:
        text = dict(saved.text)
    assert text["prompt"] == "provenance 海" and text["negative_prompt"] == "blur"
    assert text["model"] == "qwen-image-2.0" and text["task_id"] == generation.task_id
    assert text["source_url"] == generation.urls[0]
    buffer = io.BytesIO()
    generation.images[0].save(buffer, "PNG")
    assert Image.open(buffer).size == (1024, 1024)


async def test_an_image_carries_what_its_file_says_fresh_or_from_the_journal(client, emu):
    from qimage_nb.journal._png_text import read_provenance

    fresh = await client.generate("said once", n=2, cache=True)
    again = await client.generate("said once", n=2, cache=True)
    assert again.cached and not fresh.cached
    for made, served, path in zip(fresh.images, again.images, fresh.paths, strict=True):
        # Built once, at download, and written into the file; both runs show the file's words.
        on_file = read_provenance(path)
        assert on_file["task_id"] == fresh.task_id and on_file["origin"] == emu.base_url
        assert int(on_file["expires_at"]) > 0 and on_file["provider"] == "apimart"
        assert made.info == served.info == {**on_file, "path": str(path)}
