"""``Client(provider="dashscope")`` against the DashScope emulator: the official host of Qwen Image.

The emulator itself is held to the official SDK in ``test_dashscope_sdk.py``; here the product's own
httpx client speaks to it: the synchronous models, an asynchronous model polled as a task, options,
sizes, a lost answer (no idempotency key there: never resent), and bad values refused locally.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from PIL import Image

from qimage_nb import AsyncClient, Client
from qimage_nb._exceptions import (
    AuthenticationError,
    BadRequestError,
    ImageError,
    SubmitOutcomeUnknown,
    ValidationError,
)
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator import DashScopeEmulator
from qimage_nb.providers import choose_provider

FAST_RETRY = RetryPolicy(max_attempts=4, backoff_base=0.02, backoff_cap=0.1)


@pytest.fixture(scope="module")
def ds():
    with DashScopeEmulator(latency=0.15, jitter=0.02) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(ds):
    ds.reset()
    yield
    ds.reset()


def client_for(ds, **kwargs) -> AsyncClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("poll", PollPolicy.for_latency(ds.latency))
    kwargs.setdefault("timeout", 2.0)
    return AsyncClient(ds.api_key, ds.base_url, provider="dashscope", **kwargs)


def posts(ds) -> int:
    per_endpoint = ds.counters()["requests_per_endpoint"]
    return sum(count for name, count in per_endpoint.items() if "generation" in name or "synthesis" in name)


async def test_a_synchronous_model_answers_with_its_images_and_nothing_is_polled(ds):
    async with client_for(ds) as client:
        generation = await client.generate("a lighthouse at dusk", size="16:9", resolution="2K", n=2, seed=42)
    assert [im.size for im in generation.images] == [(2048, 1152)] * 2  # the seed API's table, as W*H
    assert ds.counters()["polls"] == 0 and ds.counters()["generations_billed"] == 1
    info = generation.images[0].info
    assert info["model"] == "qwen-image-2.0" and info["seed"] == "42"
    with Image.open(generation.paths[1]) as on_disk:
        assert on_disk.size == (2048, 1152)


async def test_a_pixel_size_and_the_hosts_switches_reach_the_host(ds):
    async with client_for(ds) as client:
        generation = await client.generate(
            "a poster", size="1024x768", prompt_extend=False, watermark=True, negative_prompt="blurry"
        )
    assert generation.images[0].size == (1024, 768)
    assert generation.request.options == {"prompt_extend": False, "watermark": True}


async def test_an_asynchronous_model_is_polled_as_a_task_and_says_what_it_really_drew(ds):
    stages: list[str] = []
    async with client_for(ds) as client:
        generation = await client.generate("a red fox", model="qwen-image", size="16:9",
                                           on_update=lambda u: stages.append(u.stage))
    assert generation.images[0].size == (1664, 928)  # the host's fixed size for 16:9
    assert ds.counters()["polls"] >= 1
    assert generation.actual_prompt and generation.images[0].info.get("actual_prompt") == generation.actual_prompt
    assert stages[0] == "submitting" and stages[-1] == "done"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"model": "qwen-image", "n": 2}, "one image per request"),
        ({"model": "qwen-image", "size": "3:2"}, "not 3:2"),
        ({"model": "qwen-image", "resolution": "2K"}, "no 2K"),
        ({"size": "4096x4096"}, "each side 512 to 2048"),
        ({"size": "300x2048"}, "each side 512 to 2048"),
        # A model outside the table is sent (test_dashscope3.py); a known model's rules still hold.
        ({"model": "qwen-image-2.0", "host_params": {"prompt_extend_mode": "agent"}}, "Qwen Image 3.0 parameter"),
        ({"seed": 2**31}, "0 to 2147483647"),
    ],
)
async def test_bad_values_are_one_line_naming_the_host_and_nothing_is_sent(ds, fields, fragment):
    async with client_for(ds) as client:
        with pytest.raises(ValidationError) as info:
            await client.generate("a cat", **fields)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert ds.counters()["api_requests"] == 0


async def test_a_lost_synchronous_answer_is_never_resent_and_says_it_may_be_billed(ds):
    ds.set_faults(lose_submit_answers=1, lose_mode="reset")
    async with client_for(ds) as client:
        with pytest.raises(SubmitOutcomeUnknown) as info:
            await client.generate("lost after the work was done")
        (entry,) = client.pending()
    assert posts(ds) == 1
    message = str(info.value)
    assert "may be billed" in message and "no idempotency key" in message and "\n" not in message
    assert entry.outcome_unknown
    # resending is the user's choice, made knowing it may bill twice
    async with client_for(ds) as client:
        generation = await client.resend(entry.key)
    assert generation.images and posts(ds) == 2


async def test_a_wrong_key_names_the_region_and_how_to_switch(ds):
    async with AsyncClient("sk-wrong", ds.base_url, provider="dashscope", retry=FAST_RETRY) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.generate("x")
    message = str(info.value)
    assert "InvalidApiKey" in message and "per region" in message and "dashscope-intl" in message
    assert info.value.code == "InvalidApiKey"


async def test_moderation_and_the_hosts_own_refusals_are_typed(ds):
    async with client_for(ds) as client:
        for model in ("qwen-image-2.0", "qwen-image"):  # the host inspects the input at submit
            with pytest.raises(BadRequestError) as info:
                await client.generate("FAIL_MODERATION please", model=model)
            assert info.value.code == "DataInspectionFailed" and "inappropriate" in str(info.value)
        assert client.pending() == []


def test_the_provider_follows_the_key_the_user_has(monkeypatch):
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-ds")
    assert choose_provider().name == "dashscope"
    monkeypatch.setenv("QIMAGE_API_KEY", "sk-apimart")
    assert choose_provider().name == "apimart"  # both set: the default, unless QIMAGE_PROVIDER says
    monkeypatch.setenv("QIMAGE_PROVIDER", "dashscope")
    assert choose_provider().name == "dashscope"
    monkeypatch.setenv("QIMAGE_PROVIDER", "dalle")
    with pytest.raises(ValidationError, match="choose one of apimart, dashscope"):
        choose_provider()


def test_dashscope_base_url_means_what_the_sdk_means(monkeypatch, ds):
    monkeypatch.setenv("DASHSCOPE_API_KEY", ds.api_key)
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", ds.base_url)
    with Client(retry=FAST_RETRY, poll=PollPolicy.for_latency(ds.latency)) as client:
        assert client.provider.name == "dashscope" and client.base_url == ds.base_url
        assert client.generate("from the environment").images


async def test_a_queued_task_can_be_cancelled_and_a_running_one_cannot(ds):
    with DashScopeEmulator(latency=0.6, jitter=0.0, max_concurrent=1) as busy:
        async with client_for(busy) as client:
            running = await client.submit("the first takes the only worker", model="qwen-image")
            queued = await client.submit("the second waits its turn", model="qwen-image")
            status = await client.cancel(queued)
            assert status.status == "cancelled" and status.terminal
            (entry,) = [job for job in client.history() if job.task_id == queued]
            assert entry.status == "cancelled"
            while (await client.get_task(running)).status != "processing":
                await asyncio.sleep(0.02)
            with pytest.raises(BadRequestError):  # only while PENDING, as the host says
                await client.cancel(running)


async def test_the_seed_api_has_no_cancel_and_says_so(ds):
    from qimage_nb.emulator import Emulator

    with Emulator(latency=0.1) as emu:
        async with AsyncClient(emu.api_key, emu.base_url, retry=FAST_RETRY) as client:
            with pytest.raises(ValidationError, match="no way to cancel a task"):
                await client.cancel("task_0123")
        assert emu.counters()["api_requests"] == 0


async def test_a_submit_still_in_flight_is_neither_resent_nor_called_unknown(ds):
    with DashScopeEmulator(latency=1.0, jitter=0.0) as slow:
        async with client_for(slow) as client:
            first = asyncio.ensure_future(client.generate("a slow synchronous call"))
            while not client.pending():
                await asyncio.sleep(0.02)
            (entry,) = client.pending()
            assert entry.in_flight and not entry.outcome_unknown
            with pytest.raises(ValidationError, match="still being submitted"):
                await client.resend(entry.key)
            with pytest.raises(SubmitOutcomeUnknown, match="still being submitted"):
                await client.generate("a slow synchronous call", cache=True)  # the same cell, re-run
            assert (await first).images
        assert slow.counters()["generations_billed"] == 1


async def test_a_synchronous_result_whose_download_failed_is_fetched_later_without_paying_again(ds):
    ds.set_faults(cdn_body="not-image")
    async with client_for(ds, retry=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_cap=0.02)) as client:
        with pytest.raises(ImageError) as info:
            await client.generate("paid, then the CDN misbehaves")
        task_id = info.value.task_id
        ds.set_faults(cdn_body="image")
        generation = await client.resume(task_id)  # from the journaled URLs: no task to poll
        again = await client.generate("paid, then the CDN misbehaves", cache=True)
    assert generation.images and again.cached
    assert ds.counters()["generations_billed"] == 1 and ds.counters()["polls"] == 0


async def test_an_asynchronous_models_durations_are_learned_from_the_hosts_own_times(ds):
    # Issue 24: the host gives no progress, so the client learns how long this model's tasks
    # take, exactly, from submit_time / scheduled_time / end_time (not from its polls' spacing).
    policy = PollPolicy.for_latency(ds.latency)
    async with client_for(ds, poll=policy) as client:
        first = await client.generate_many(
            [{"prompt": f"a heron {i}", "model": "qwen-image-plus"} for i in range(6)], concurrency=6)
        assert all(result.ok for result in first)
        learned = policy.calibration.durations.to_json()["qwen-image-plus"]
        second = await client.generate_many(
            [{"prompt": f"a crane {i}", "model": "qwen-image-plus"} for i in range(6)], concurrency=6)
        assert all(result.ok for result in second)  # polled on what the first batch taught
    async with httpx.AsyncClient() as control:
        tasks = (await control.get(ds.origin + "/_emulator/timeline")).json()["tasks"][:6]
    server = sorted(task["end"] - task["created"] for task in tasks)
    runs = sorted(task["end"] - task["processing"] for task in tasks)
    assert sorted((lo + hi) / 2 for lo, hi in learned["total"]) == pytest.approx(server, abs=0.003)
    assert sorted((lo + hi) / 2 for lo, hi in learned["run"]) == pytest.approx(runs, abs=0.003)
    assert policy.calibration.durations.known("qwen-image-plus")
    assert not policy.calibration.durations.known("qwen-image")  # learned per model
