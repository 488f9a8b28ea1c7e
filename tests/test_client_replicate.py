"""``Client(provider="replicate")`` against the Replicate emulator: a prediction finished inside the
held create (Prefer: wait, nothing polled), polling ``urls.get`` when the wait runs out (Retry-After
honoured), n images as n predictions, RFC 7807 as one line, cancel at the host, a lost create as
"outcome unknown" with one prediction, and a resume after the outputs were deleted saying why."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from qimage_nb import AsyncClient, Client
from qimage_nb._exceptions import NotFoundError, SubmitOutcomeUnknown, ValidationError
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator.replicate import ReplicateEmulator
from qimage_nb.providers import replicate as replicate_provider

FAST_RETRY = RetryPolicy(max_attempts=4, backoff_base=0.02, backoff_cap=0.1)


@pytest.fixture(scope="module")
def rep():
    with ReplicateEmulator(latency=0.3, jitter=0) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(rep):
    rep.reset()
    yield
    rep.reset()


def client_for(emu, **kwargs) -> AsyncClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("poll", PollPolicy.for_latency(emu.latency))
    kwargs.setdefault("timeout", 5.0)
    return AsyncClient(emu.api_key, emu.base_url, provider="replicate", **kwargs)


@pytest.fixture
def short_wait(monkeypatch):
    """A held create that runs out after 1 s (production waits 60 s)."""
    monkeypatch.setattr(replicate_provider, "WAIT_SECONDS", 1)
    monkeypatch.setattr(replicate_provider, "SUBMIT_READ_TIMEOUT", 5.0)


async def test_a_prediction_finishes_inside_the_held_create_and_nothing_is_polled(rep):
    async with client_for(rep) as client:
        generation = await client.generate("a lighthouse at dusk", size="16:9")
    assert generation.images[0].size == (1280, 720)
    counters = rep.counters()
    assert counters["held_creates"] == {"finished": 1} and counters["polls"] == 0


async def test_when_the_wait_runs_out_the_prediction_is_polled(short_wait):
    with ReplicateEmulator(latency=1.6, jitter=0) as slow:
        async with client_for(slow) as client:
            generation = await client.generate("slow", model="pro", size="1024x768")
        counters = slow.counters()
    assert generation.images[0].size == (1024, 768)
    assert counters["held_creates"] == {"ran_out": 1} and counters["polls"] >= 1


async def test_a_429_on_a_poll_is_waited_out_as_the_host_says(short_wait):
    with ReplicateEmulator(latency=1.3, jitter=0) as slow:
        slow.set_faults(rate_limit_polls=1, retry_after=1)
        async with client_for(slow) as client:
            generation = await client.generate("throttled")
        counters = slow.counters()
    assert len(generation.images) == 1 and counters["faults_injected"] == {"throttle_polls": 1}


async def test_three_images_are_three_predictions(rep):
    async with client_for(rep) as client:
        generation = await client.generate("three dogs", n=3)
    assert len(generation.images) == 3 and len(set(generation.task_ids)) == 3
    assert rep.counters()["requests_per_endpoint"]["POST create"] == 3


async def test_what_a_model_cannot_take_is_refused_before_anything_is_sent(rep):
    async with client_for(rep) as client:
        for fields, words in (({"size": "1024x768"}, "takes an aspect ratio"),
                              ({"resolution": "2K"}, "has no 2K"),
                              ({"watermark": True}, "Replicate does not support watermark")):
            with pytest.raises(ValidationError, match=words):
                await client.generate("nothing sent", **fields)
    assert rep.counters()["api_requests"] == 0


def test_a_problem_answer_is_one_line_naming_the_field(rep):
    # What the provider lets through is valid by its checks; a schema that moved is the host's to
    # say. Its real answer to an input the model refuses, read by the provider:
    answer = httpx.post(rep.base_url + "/v1/models/qwen/qwen-image-2-pro/predictions",
                        json={"input": {"prompt": "x", "size": "3000*3000", "seed": -1}},
                        headers={"Authorization": f"Bearer {rep.api_key}"})
    info = replicate_provider.PROVIDER.read_error(answer.status_code, answer.headers["content-type"], answer.content)
    assert answer.status_code == 422 and "\n" not in info.message
    assert info.message.startswith("input.seed: Must be between 0") and "input.size:" in info.message
    assert info.param == "seed"


async def test_cancel_at_the_host(short_wait):
    with ReplicateEmulator(latency=3, jitter=0) as slow:
        async with client_for(slow) as client:
            running = asyncio.ensure_future(client.generate("cancel me"))
            # the held create runs out (a short wait in this test): then the prediction id is journaled
            deadline = time.monotonic() + 10
            while not (client.pending() and client.pending()[0].task_id) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            task_id = client.pending()[0].task_id
            status = await client.cancel(task_id)
            running.cancel()
        counters = slow.counters()
    assert status.status == "cancelled" and "status canceled" in status.raw["cancel_note"]
    assert counters["predictions_billed"] == 0


async def test_a_lost_create_answer_is_outcome_unknown_with_one_prediction(rep):
    rep.set_faults(lose_submit_answers=1, lose_mode="html502")
    async with client_for(rep) as client:
        with pytest.raises(SubmitOutcomeUnknown, match="may bill twice"):
            await client.generate("lost")
    time.sleep(0.4)
    counters = rep.counters()
    assert counters["requests_per_endpoint"]["POST create"] == 1 and counters["tasks"] == 1


async def test_a_resume_after_the_outputs_were_deleted_says_why():
    with ReplicateEmulator(latency=0.1, jitter=0, retention=0.3) as short:
        async with client_for(short) as client:
            task_id = await client.submit("gone in an hour")
            await asyncio.sleep(0.6)
            with pytest.raises(NotFoundError, match="deletes outputs an hour after"):
                await client.resume(task_id)


def test_the_token_and_base_url_come_from_the_environment(rep, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", rep.api_key)
    monkeypatch.setenv("REPLICATE_BASE_URL", rep.base_url)
    client = Client(provider="replicate", poll=PollPolicy.for_latency(rep.latency))
    assert len(client.generate("from the environment").images) == 1


async def test_random_poll_faults_do_not_end_the_wait(short_wait):
    with ReplicateEmulator(latency=2.0, jitter=0, seed=3) as slow:
        slow.set_faults(poll_fault_rate=0.5, poll_fault_kinds=("500", "503", "html502", "reset"))
        async with client_for(slow) as client:
            generation = await client.generate("through the faults")
        counters = slow.counters()
    assert len(generation.images) == 1 and sum(counters["faults_injected"].values()) >= 1


async def test_qwen_image_3_is_alibabas_model_there(rep):
    async with client_for(rep) as client:
        generation = await client.generate("a koi pond", model="qwen-image-3.0", size="16:9")
    assert generation.images[0].size == (1280, 720)
    with rep._state.lock:
        (task,) = rep._state.tasks.values()
    assert task.request["job"].model.id == "alibaba/qwen-image-3"


def test_a_create_answer_with_a_malformed_status_still_journals_the_prediction():
    from qimage_nb.providers import get_provider

    replicate = get_provider("replicate")
    # succeeded with no output: the status cannot be read, but the prediction exists (and bills)
    submitted = replicate.read_submit({"id": "pred123", "status": "succeeded", "output": None}, {})
    assert submitted.task_id == "pred123" and submitted.result is None  # polled, not called unknown
