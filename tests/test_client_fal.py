"""``Client(provider="fal")`` against the fal emulator: completion from the status stream (polling
when the stream fails), the result from the response URL, 5-6 images as two journaled submits, a
refusal as one line, cancel at the host with its answer, a lost submit as "outcome unknown" with one
billed request, and the key and queue host read as fal-client reads them."""

from __future__ import annotations

import httpx
import pytest

from qimage_nb import AsyncClient, Client
from qimage_nb._exceptions import SubmitOutcomeUnknown, TaskFailedError, ValidationError
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator.fal import FalEmulator

FAST_RETRY = RetryPolicy(max_attempts=4, backoff_base=0.02, backoff_cap=0.1)


@pytest.fixture(scope="module")
def fal():
    with FalEmulator(latency=0.3, jitter=0, keepalive=0.1) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(fal):
    fal.reset()
    yield
    fal.reset()


def client_for(emu, **kwargs) -> AsyncClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("poll", PollPolicy.for_latency(emu.latency))
    kwargs.setdefault("timeout", 5.0)
    return AsyncClient(emu.api_key, emu.base_url, provider="fal", **kwargs)


async def test_a_generation_completes_from_the_status_stream_without_polling(fal):
    updates = []
    async with client_for(fal) as client:
        generation = await client.generate("a lighthouse at dusk", size="16:9", n=2, seed=5,
                                           on_update=updates.append)
    assert [image.size for image in generation.images] == [(1280, 720)] * 2
    assert generation.seed == 5
    assert generation.task_id.startswith("fal-ai:qwen-image-2:")
    counters = fal.counters()
    assert counters["streams"] == 1 and counters["polls"] == 0
    assert counters["requests_per_endpoint"]["GET result"] == 1
    assert "running" in [u.stage for u in updates]
    # fal's status has no progress field: the app's log lines ("step k/N") are its progress
    # fal's step logs become progress, in order (a loaded machine may merge two steps into one event)
    running = [u.progress for u in updates if u.stage == "running"]
    assert running == sorted(running) and set(running) & {25, 50, 75} and set(running) <= {0, 25, 50, 75}


async def test_polling_takes_over_when_the_stream_fails(fal):
    inner = fal.transport()

    class NoStreams(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            if request.url.path.endswith("/status/stream"):
                raise httpx.ConnectError("the stream is blocked here", request=request)
            return await inner.handle_async_request(request)

    async with AsyncClient(fal.api_key, fal.in_process_base_url, provider="fal", transport=NoStreams(),
                           retry=FAST_RETRY, poll=PollPolicy.for_latency(fal.latency)) as client:
        generation = await client.generate("polled", model="pro")
    assert len(generation.images) == 1
    counters = fal.counters()
    assert counters["polls"] >= 1 and counters["requests_per_endpoint"]["POST submit"] == 1


async def test_six_images_are_two_journaled_submits_and_one_generation(fal):
    seen = []
    async with client_for(fal) as client:
        generation = await client.generate("six cats", n=6, on_update=seen.append)
        journal = client.history(10)
    assert len(generation.images) == 6 and len(generation.task_ids) == 2
    assert fal.counters()["requests_per_endpoint"]["POST submit"] == 2
    assert sorted(job.request.n for job in journal[:2]) == [3, 3]
    assert seen[-1].stage == "done" and len(seen[-1].images) == 6 and all(seen[-1].images)


async def test_running_a_split_request_again_serves_each_part_from_its_own_journal_entry(fal):
    async with client_for(fal) as client:
        first = await client.generate("six dogs", n=6)
        again = await client.generate("six dogs", n=6)
    assert fal.counters()["requests_per_endpoint"]["POST submit"] == 2  # the re-run sent nothing
    assert again.cached and sorted(again.task_ids) == sorted(first.task_ids)  # each part its own job
    assert [p.read_bytes() for p in again.paths] == [p.read_bytes() for p in first.paths]


async def test_a_refusal_of_the_app_is_one_line_naming_the_field_and_billed(fal):
    async with client_for(fal) as client:
        with pytest.raises(TaskFailedError) as failed:
            await client.generate("FAIL_MODERATION please")
    message = str(failed.value)
    assert "prompt: The content could not be processed" in message and "\n" not in message
    assert "bills a request it refuses" in message
    assert fal.counters()["refusals_billed"] == 1


async def test_what_fal_cannot_make_is_refused_before_anything_is_sent(fal):
    async with client_for(fal) as client:
        for fields, words in (({"watermark": True}, "fal does not support watermark"),
                              ({"size": "4096x4096"}, "outside what fal makes"),
                              ({"model": "qwen-image-max"}, "not served by fal")):
            with pytest.raises(ValidationError, match=words):
                await client.generate("nothing sent", **fields)
    assert fal.counters()["api_requests"] == 0


async def test_cancel_a_queued_request_at_the_host_is_never_billed():
    with FalEmulator(latency=0.5, jitter=0, max_concurrent=1) as single:
        async with client_for(single) as client:
            first = await client.submit("runs first")
            second = await client.submit("waits in the queue")
            status = await client.cancel(second)
            await client.wait(first)
            (entry,) = [job for job in client.history() if job.task_id == second]
        counters = single.counters()
    assert entry.status == "cancelled"  # the journal says cancelled, not lost
    assert status.status == "cancelled"
    assert "CANCELLATION_REQUESTED" in status.raw["cancel_note"] and "not billed" in status.raw["cancel_note"]
    assert counters["cancels"] == {"queued": 1} and counters["requests_billed"] == 1


async def test_the_queue_position_shows_while_queued():
    from qimage_nb.view._words import progress_status

    # long enough that the first still runs when the second first looks, on a loaded machine too
    with FalEmulator(latency=1.5, jitter=0, max_concurrent=1, pickup=0.5) as single:
        async with client_for(single) as client:
            await client.submit("first")
            seen = []
            await client.generate("second", on_update=seen.append)
    queued = [u.queue_position for u in seen if u.stage == "queued" and u.queue_position is not None]
    assert queued and queued[0] == 1  # the first request was ahead of it
    assert progress_status("queued", position=queued[0]) == "queued (1 ahead)"


async def test_cancel_after_the_end_says_the_hosts_refusal(fal):
    async with client_for(fal) as client:
        task = await client.submit("finishes")
        await client.wait(task)
        status = await client.cancel(task)
    assert status.status == "completed" and "ALREADY_COMPLETED" in status.raw["cancel_note"]


async def test_a_lost_submit_answer_is_outcome_unknown_with_one_billed_request(fal):
    fal.set_faults(lose_submit_answers=1, lose_mode="reset")
    async with client_for(fal) as client:
        with pytest.raises(SubmitOutcomeUnknown) as unknown:
            await client.generate("lost on the way back")
    assert "may bill twice" in str(unknown.value)
    counters = fal.counters()
    assert counters["requests_per_endpoint"]["POST submit"] == 1 and counters["tasks"] == 1


def test_the_key_and_queue_host_come_from_the_environment_as_fal_client_reads_them(fal, monkeypatch):
    key_id, _, secret = fal.api_key.partition(":")
    monkeypatch.setenv("FAL_KEY_ID", key_id)
    monkeypatch.setenv("FAL_KEY_SECRET", secret)
    monkeypatch.setenv("FAL_QUEUE_RUN_HOST", fal.base_url)  # a URL with its scheme is kept as given
    client = Client(provider="fal", poll=PollPolicy.for_latency(fal.latency))
    assert client.base_url == fal.base_url
    assert len(client.generate("from the environment").images) == 1
    monkeypatch.setenv("FAL_QUEUE_RUN_HOST", "queue.example.test")
    assert Client(provider="fal").base_url == "https://queue.example.test"


async def test_a_task_id_resumes_in_a_new_client_through_the_urls_the_submit_gave(fal):
    async with client_for(fal) as first:
        task_id = await first.submit("resume me later")
    owner, app, _request_id = task_id.split(":")
    assert (owner, app) == ("fal-ai", "qwen-image-2")  # owner/app of the answer's URLs, not the app's path
    async with client_for(fal) as later:
        generation = await later.resume(task_id)
    assert len(generation.images) == 1 and generation.task_id == task_id
    assert fal.counters()["requests_per_endpoint"]["POST submit"] == 1


async def test_qwen_image_3_goes_to_alibabas_app_and_its_edit_app_with_references(fal):
    async with client_for(fal) as client:
        made = await client.generate("a koi pond", model="qwen-image-3.0", size="2560x1440")
        edited = await client.generate("the same pond at night", model="qwen-image-3.0", image_urls=[made.urls[0]])
    assert made.images[0].size == (2560, 1440) and made.task_id.startswith("alibaba:qwen-image-3:")
    # 3.0 with no size asked sends none (the model picks); fal's edit app then keeps the reference's size
    assert edited.images[0].size == (2560, 1440)
    with fal._state.lock:
        apps = sorted(task.request["app"] for task in fal._state.tasks.values())
    assert apps == ["alibaba/qwen-image-3/edit", "alibaba/qwen-image-3/text-to-image"]


async def test_fals_own_options_go_as_written_and_a_bad_one_is_refused_before_sending(fal):
    async with client_for(fal) as client:
        made = await client.generate("a kite", host_params={"output_format": "jpeg", "enable_safety_checker": False})
        with pytest.raises(ValidationError, match="output_format on fal must be png or jpeg or webp"):
            await client.generate("a kite", host_params={"output_format": "gif"})
    assert made.images[0].format == "JPEG"  # the app made what was asked
    (task,) = fal._state.tasks.values()  # one request reached fal: the refused one never left
    job = task.request["job"]
    assert (job.output_format, job.safety_checker) == ("jpeg", False)


def test_a_submit_answer_without_its_response_url_still_journals_the_request():
    from qimage_nb.providers import get_provider

    fal = get_provider("fal")
    status_only = {"request_id": "r9", "status_url": "https://queue.fal.run/fal-ai/qwen-image-2/requests/r9/status"}
    assert fal.read_submit(status_only, {}).task_id == "fal-ai:qwen-image-2:r9"
    # Nothing names the app: the bare id is journaled, never "outcome unknown" (whose resend bills twice)
    assert fal.read_submit({"request_id": "r9"}, {}).task_id == "r9"


async def test_submit_refuses_more_images_than_fal_makes_in_one_request_before_sending(fal):
    async with client_for(fal) as client:
        with pytest.raises(ValidationError, match="at most 4 images per submit: use generate"):
            await client.submit("six cats", n=6)
        assert client.history(5) == []  # nothing journaled
    assert "POST submit" not in fal.counters()["requests_per_endpoint"]
