"""Hostile conditions, combined: the emulator's fault switches against the client over loopback.

Every test ends with the same audit, from both sides of the wire: the emulator says how many tasks
it created and billed, the journal says what the client kept. The promises checked are the ones a
paying user relies on: one billed task per logical generation (replays allowed, duplicates never),
every completed task's images on disk and in the caller's hands, and every failure a typed error
on one line that says what happened and names the task.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from qimage_nb import AsyncClient
from qimage_nb._contract import PIXEL_SIZES
from qimage_nb._exceptions import (
    GenerationTimeout,
    ImageError,
    QImageError,
    RateLimitError,
    SubmitOutcomeUnknown,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TransportError,
)
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator import Emulator, Faults
from qimage_nb.journal._store import Store

KEY = "sk-hostile-faults-0123456789"
FAST_POLL = PollPolicy(floor=0.02, ceiling=0.2, first=0.05)  # for the MockTransport servers
ALL_POLL_FAULTS = ("500", "503", "html502", "429", "timeout", "reset")


@dataclass(frozen=True)
class SpyRetry(RetryPolicy):
    """A fast retry policy that writes down every wait it was asked for (and the server's hint)."""

    waits: list = None  # type: ignore[assignment]

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        delay = super().backoff(attempt, retry_after)
        if self.waits is not None:
            self.waits.append((attempt, retry_after, delay))
        return delay


def fast_retry(attempts: int = 8, waits: list | None = None) -> SpyRetry:
    return SpyRetry(max_attempts=attempts, backoff_base=0.02, backoff_cap=0.1, max_retry_after=5.0, waits=waits)


@pytest.fixture(scope="module")
def emu():
    with Emulator(api_key=KEY, latency=0.12, jitter=0.05, seed=7) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu):
    emu.reset()
    yield
    emu.reset()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "home")
    yield s
    s.close()


def make_client(emu, store, *, timeout: float = 2.0, retry: RetryPolicy | None = None) -> AsyncClient:
    return AsyncClient(KEY, emu.base_url, store=store, retry=retry or fast_retry(), poll=PollPolicy.for_latency(emu.latency),
                       timeout=timeout)


# --- the audit -------------------------------------------------------------------------------


def server_tasks(emu) -> dict:
    """task id -> (final status, n, idempotency key), as the emulator knows them."""
    state = emu._state
    with state.lock:
        now = state.clock()
        return {
            tid: (state.status_of(task, now)[0], task.n, task.idempotency_key)
            for tid, task in state.tasks.items()
        }


def one_line_error(error: QImageError, *, task_id: str | None) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text, text
    if task_id is not None:
        assert error.task_id == task_id
        assert task_id in text, text
    return text


def audit(emu, client: AsyncClient, generations: list, *, logical: int) -> dict:
    """Nothing billed twice, nothing lost; returns the emulator's counters for further checks."""
    counters = emu.counters()
    tasks = server_tasks(emu)
    # zero duplicate billed tasks: one task per logical generation, whatever was replayed
    assert counters["submits_accepted"] == logical, counters
    assert len(tasks) == logical
    keys = [key for _, _, key in tasks.values()]
    assert None not in keys and len(set(keys)) == logical  # every task came from its own Idempotency-Key
    # the billing matches the completed tasks exactly
    completed = {tid: n for tid, (status, n, _) in tasks.items() if status == "completed"}
    assert counters["images_billed"] == sum(completed.values())
    # zero images lost: every completed task's images are on disk, journaled, and in the caller's hands
    by_task = {g.task_id: g for g in generations if g.task_id}
    for tid, n in completed.items():
        job = client.store.get(tid)
        assert job is not None, f"completed task {tid} is not in the journal"
        assert job.downloaded and len(job.image_paths) == n
        assert all(p is not None and Path(p).is_file() for p in job.image_paths)
        generation = by_task.get(tid)
        assert generation is not None and generation.ok, f"completed task {tid} never reached the caller"
        assert len(generation.images) == len(generation.paths) == n
        assert all(Path(p).is_file() for p in generation.paths)
    # and the other way round: the caller holds no images of a task the server did not complete
    for generation in generations:
        if generation.ok:
            assert generation.task_id in completed
        else:
            assert generation.task_id in tasks and tasks[generation.task_id][0] in ("failed", "cancelled")
            assert isinstance(generation.error, TaskError)
            one_line_error(generation.error, task_id=generation.task_id)
    # nothing left dangling in the journal: what is not downloaded failed or was cancelled
    assert client.pending() == []
    return counters


def pixels_ok(generation) -> None:
    for path in generation.paths:
        with Image.open(path) as image:
            image.load()  # decodes to the end: a cut-short download would fail here
            assert image.size == PIXEL_SIZES[(generation.request.size, generation.request.resolution)]


# --- 429 storms ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_429_storm_on_submits_and_polls_honours_retry_after(emu, store, form):
    waits: list = []
    hint = 0.05 if form == "seconds" else 1.0  # an HTTP date has whole-second resolution
    emu.set_faults(rate_limit_submits=5, rate_limit_polls=6, retry_after=hint, retry_after_format=form)
    async with make_client(emu, store, retry=fast_retry(waits=waits)) as client:
        generations = await client.generate_many([f"storm {form} {i}" for i in range(4)], concurrency=4)
        assert all(g.ok for g in generations), [g.error for g in generations]
        counters = audit(emu, client, generations, logical=4)
    injected = counters["faults_injected"]
    assert injected["rate_limit_submit"] == 5 and injected["rate_limit_poll"] == 6
    # every 429 was answered by waiting what the server asked, not our own (shorter) backoff
    hinted = [(after, delay) for _, after, delay in waits if after is not None]
    assert len(hinted) >= 5
    for after, delay in hinted:
        assert 0 <= after <= hint + 1e-6 and delay == after


async def test_a_429_storm_longer_than_we_wait_is_a_typed_error_and_nothing_dangles(emu, store):
    emu.set_faults(rate_limit_submits=1, retry_after=600)
    async with make_client(emu, store) as client:
        with pytest.raises(RateLimitError) as info:
            await client.generate("patience")
        text = one_line_error(info.value, task_id=None)
        assert "rate limited" in text and "retry after 600 s" in text
        assert emu.counters()["submits_accepted"] == 0
        # a 429 is a refusal: nothing exists, nothing is billed, nothing is left to resume
        assert client.pending() == []
        generation = await client.generate("patience")
        audit(emu, client, [generation], logical=1)


# --- failing polls ---------------------------------------------------------------------------


async def test_thirty_percent_of_polls_fail_in_every_way(emu, store):
    emu.set_faults(poll_fault_rate=0.3, poll_fault_kinds=ALL_POLL_FAULTS, retry_after=0.02, slow_seconds=1.0)
    async with make_client(emu, store, timeout=0.3) as client:
        generations = await client.generate_many([f"flaky polls {i}" for i in range(30)], concurrency=10)
        assert all(g.ok for g in generations), [g.error for g in generations]
        counters = audit(emu, client, generations, logical=30)
    injected = counters["faults_injected"]
    failed_polls = sum(injected.get(f"poll_{kind}", 0) for kind in ALL_POLL_FAULTS)
    assert failed_polls >= 3 and len([k for k in ALL_POLL_FAULTS if injected.get(f"poll_{k}")]) >= 3, (
        counters["polls"], dict(injected))
    for generation in generations:
        pixels_ok(generation)


# --- lost answers of accepted submits -------------------------------------------------------


@pytest.mark.parametrize("mode", ["reset", "html502", "timeout"])
async def test_lost_submit_answers_under_rate_limits_and_poll_faults(emu, store, mode):
    async with make_client(emu, store, timeout=0.4) as client:
        first = await client.generate("warm-up: its versioned answer proves keys are honoured here")
        emu.set_faults(
            lose_submit_answers=3, lose_mode=mode, slow_seconds=1.0,
            rate_limit_submits=2, retry_after=0.02,
            poll_fault_rate=0.3, poll_fault_kinds=("500", "reset", "html502"),
        )
        generations = await client.generate_many([f"lost {mode} {i}" for i in range(5)], concurrency=5)
        assert all(g.ok for g in generations), [g.error for g in generations]
        counters = audit(emu, client, [first, *generations], logical=6)
    assert counters["faults_injected"][f"lose_submit_answer_{mode}"] == 3
    assert counters["submit_replays"] >= 3  # each lost answer was asked again with the same key


async def test_every_answer_of_an_accepted_submit_lost_then_resume_bills_once(emu, store):
    async with make_client(emu, store, retry=fast_retry(attempts=3)) as client:
        first = await client.generate("warm-up: keys are honoured here")
        emu.set_faults(lose_submit_answers=100, lose_mode="reset")
        with pytest.raises(SubmitOutcomeUnknown) as info:
            await client.generate("answers lost")
        text = one_line_error(info.value, task_id=None)
        assert "submit" in text and "may be billed" in text and "after 3 attempts" in text
        assert emu.counters()["submits_accepted"] == 2  # the server made (and will bill) the task
        (entry,) = client.pending()
        assert entry.task_id is None and entry.outcome_unknown
        emu.set_faults(lose_submit_answers=0)
        generation = await client.resume(entry.key)
        assert generation.ok
        counters = audit(emu, client, [first, generation], logical=2)
    assert counters["submit_replays"] >= 3


# --- downloads -------------------------------------------------------------------------------


async def test_truncated_slow_and_dripping_downloads_complete_whole(emu, store):
    emu.set_faults(cdn_truncate=4, cdn_delay=0.05, cdn_bytes_per_second=4_000_000)
    async with make_client(emu, store) as client:
        generations = await client.generate_many(
            [{"prompt": "cut short", "n": 3}, {"prompt": "slow", "n": 2, "size": "16:9"}], concurrency=2
        )
        assert all(g.ok for g in generations), [g.error for g in generations]
        counters = audit(emu, client, generations, logical=2)
    assert counters["faults_injected"]["cdn_truncate"] == 4
    assert counters["cdn_authorization_headers"] == 0
    for generation in generations:
        pixels_ok(generation)


async def test_a_retried_download_is_shown_to_the_face_waiting_on_it(emu, store):
    from qimage_nb.core._retry import retry_observer

    notes = []
    retry_observer.set(lambda what, failure, retry, retries, delay: notes.append((what, str(failure), retry, retries)))
    emu.set_faults(cdn_truncate=2)
    async with make_client(emu, store, retry=fast_retry(attempts=4)) as client:
        generation = await client.generate("cut short twice")
    assert generation.ok
    task_id = generation.task_id
    # The same observer an API call's retries reach, naming the task (a face finds its line by it).
    assert [(what, retry, retries) for what, _, retry, retries in notes] == [
        (f"image download for task {task_id}", 1, 3), (f"image download for task {task_id}", 2, 3)
    ]
    # What the line shows: the body ended early (the socket closed mid-body, or fewer bytes than declared).
    assert all(task_id in text and ("RemoteProtocolError" in text or "cut short" in text) for _, text, _, _ in notes)
    pixels_ok(generation)


async def test_a_download_that_never_arrives_is_typed_and_resumable_without_paying_again(emu, store):
    emu.set_faults(cdn_delay=1.0)  # longer than the read timeout, on every attempt
    async with make_client(emu, store, timeout=0.3, retry=fast_retry(attempts=2)) as client:
        with pytest.raises(TransportError) as info:
            await client.generate("cdn down", n=2)
        task_id = info.value.task_id
        text = one_line_error(info.value, task_id=task_id)
        assert "image download" in text and "timed out" in text
        (entry,) = client.pending()
        assert entry.task_id == task_id and entry.status == "completed" and not entry.downloaded
        emu.set_faults(cdn_delay=0.0)
        generation = await client.resume(task_id)
        assert generation.ok and generation.task_id == task_id
        audit(emu, client, [generation], logical=1)
        pixels_ok(generation)


# --- task outcomes ---------------------------------------------------------------------------


async def test_failed_and_cancelled_tasks_are_typed_named_and_not_billed(emu, store):
    emu.set_faults(fail_rate=0.3, cancel_rate=0.2, poll_fault_rate=0.2, retry_after=0.02)
    prompts = [f"fate {i}" for i in range(14)] + ["FAIL_MODERATION here"]
    async with make_client(emu, store) as client:
        generations = await client.generate_many(prompts, concurrency=5)
        audit(emu, client, generations, logical=len(prompts))
    kinds = {type(g.error) for g in generations if g.error is not None}
    assert TaskFailedError in kinds and TaskCancelledError in kinds  # the seed gives both
    for generation in generations:
        if isinstance(generation.error, TaskFailedError):
            assert "failed" in str(generation.error) and "not billed" in str(generation.error)
        elif isinstance(generation.error, TaskCancelledError):
            assert "cancelled" in str(generation.error)
    refused = generations[-1]
    assert isinstance(refused.error, TaskFailedError) and "inappropriate content" in str(refused.error)
    assert refused.error.error_type == "content_policy_violation"


# --- protocol oddities -----------------------------------------------------------------------


async def test_an_unknown_status_now_and_then_is_survived(emu, store):
    async with make_client(emu, store) as client:
        first = await client.generate("warm-up: keys are honoured here, so a garbled answer is resent")
        emu.set_faults(unknown_status=2, malformed_json=2, poll_fault_rate=0.2, retry_after=0.02)
        generations = await client.generate_many([f"odd {i}" for i in range(4)], concurrency=2)
        assert all(g.ok for g in generations), [g.error for g in generations]
        counters = audit(emu, client, [first, *generations], logical=5)
    assert counters["faults_injected"]["unknown_status"] == 2
    assert counters["faults_injected"]["malformed_json"] == 2


async def test_a_status_word_that_never_ends_means_running_until_the_deadline_then_resumable(emu, store):
    emu.set_faults(unknown_status=1000)
    async with make_client(emu, store) as client:
        with pytest.raises(GenerationTimeout) as info:
            await client.generate("paused forever", timeout=0.8)
        task_id = info.value.task_id
        assert task_id
        text = one_line_error(info.value, task_id=task_id)
        assert "still running" in text and f"resume({task_id!r})" in text
        (entry,) = client.pending()
        assert entry.task_id == task_id
        emu.set_faults(unknown_status=0)
        generation = await client.resume(task_id)
        assert generation.ok
        audit(emu, client, [generation], logical=1)


async def test_a_garbled_answer_to_every_submit_attempt_is_typed_and_replayed_once(emu, store):
    async with make_client(emu, store, retry=fast_retry(attempts=3)) as client:
        first = await client.generate("warm-up: keys are honoured here")
        emu.set_faults(malformed_json=3)  # the task is made; its answer arrives cut mid-object, three times
        with pytest.raises(SubmitOutcomeUnknown) as info:
            await client.generate("garbled")
        text = one_line_error(info.value, task_id=None)
        assert "submit" in text and "not valid JSON" in text and "may be billed" in text
        (entry,) = client.pending()
        generation = await client.resume(entry.key)
        assert generation.ok
        counters = audit(emu, client, [first, generation], logical=2)
    assert counters["submit_replays"] >= 2


async def test_the_wait_deadline_is_typed_and_the_task_is_resumable(store):
    with Emulator(api_key=KEY, latency=1.5, jitter=0.0) as slow:
        async with make_client(slow, store) as client:
            with pytest.raises(GenerationTimeout) as info:
                await client.generate("slow one", timeout=0.3)
            task_id = info.value.task_id
            text = one_line_error(info.value, task_id=task_id)
            assert "resume(" in text
            generation = await client.resume(task_id)
            assert generation.ok
            audit(slow, client, [generation], logical=1)


# --- the soak --------------------------------------------------------------------------------

SOAK_GENERATIONS = 200
SOAK_CONCURRENCY = 16


@pytest.mark.parametrize(
    "deployment",
    [
        {},  # the documented contract, keys honoured on every submit
        {"dialect": "wild", "idempotency": "versioned"},  # API.md section 7 as the provider serves it
    ],
    ids=["documented", "wild-versioned"],
)
async def test_soak_200_generations_under_mixed_faults(store, capsys, deployment):
    faults = {
        "rate_limit_submits": 6,
        "rate_limit_polls": 8,
        "retry_after": 0.02,
        "poll_fault_rate": 0.3,
        "poll_fault_kinds": ALL_POLL_FAULTS,
        "slow_seconds": 0.6,
        "lose_submit_answers": 6,
        "lose_mode": "reset",
        "cdn_truncate": 6,
        "cdn_delay": 0.01,
        "fail_rate": 0.05,
        "cancel_rate": 0.05,
        "unknown_status": 3,
        "malformed_json": 4,
    }
    requests = [
        {"prompt": f"soak {i}", "size": ("1:1", "16:9", "2:3")[i % 3], "n": 1 + (i % 7 == 0)}
        for i in range(SOAK_GENERATIONS)
    ]
    with Emulator(api_key=KEY, latency=0.1, jitter=0.05, seed=11, faults=Faults(**deployment)) as emu:
        started = time.monotonic()
        async with make_client(emu, store, timeout=0.25, retry=fast_retry(attempts=12)) as client:
            # A user's first generation on this host: its versioned answer is what proves the host
            # honours Idempotency-Key, and only then is a lost submit answer ever resent.
            first = await client.generate("warm-up")
            emu.set_faults(**faults)
            generations = await asyncio.wait_for(
                client.generate_many(requests, concurrency=SOAK_CONCURRENCY), timeout=240
            )
            wall = time.monotonic() - started
            counters = audit(emu, client, [first, *generations], logical=SOAK_GENERATIONS + 1)
            peak = tasks_running_at_once(emu)
    assert 1 < peak <= SOAK_CONCURRENCY
    assert [g.request.prompt for g in generations] == [r["prompt"] for r in requests]  # input order
    unexpected = [g.error for g in generations if g.error is not None and not isinstance(g.error, TaskError)]
    assert unexpected == []
    injected = counters["faults_injected"]
    for switch in ("rate_limit_submit", "rate_limit_poll", "lose_submit_answer_reset", "cdn_truncate",
                   "unknown_status", "malformed_json"):
        assert injected.get(switch, 0) > 0, switch
    lost = sum(1 for g in generations if g.ok and len(g.paths) != g.request.n)
    with capsys.disabled():
        print(
            f"\nsoak: {SOAK_GENERATIONS} generations, {counters['submits_accepted']} billed tasks "
            f"({sum(g.ok for g in generations)} completed, {counters['images_billed']} images billed), "
            f"{counters['submit_replays']} replays, {sum(injected.values())} faults injected {dict(injected)}, "
            f"{lost} images lost, peak in flight {peak}, wall {wall:.1f} s"
        )
    assert lost == 0


def tasks_running_at_once(emu) -> int:
    """The most tasks the server ever had running at the same moment (its own clock)."""
    with emu._state.lock:
        events = [(t.created_mono, 1) for t in emu._state.tasks.values()]
        events += [(t.end, -1) for t in emu._state.tasks.values()]
    running = peak = 0
    for _, step in sorted(events):  # at equal times an end (-1) sorts before a start (+1)
        running += step
        peak = max(peak, running)
    return peak


def test_a_broken_callback_never_costs_an_image(emu, store):
    """A progress display that raises on every update must not lose the paid images."""
    from qimage_nb.core._sync import run_sync

    def explode(update):
        raise RuntimeError("display broke")

    async def main():
        async with make_client(emu, store) as client:
            generation = await client.generate("callback boom", n=2, on_update=explode)
            audit(emu, client, [generation], logical=1)
            return generation

    generation = run_sync(main())
    assert generation.ok and len(generation.images) == 2


async def test_hostile_image_body_fails_typed_with_task_id_and_nothing_half_saved(emu, store):
    emu.set_faults(cdn_body="not-image")
    async with make_client(emu, store) as client:
        with pytest.raises(ImageError) as info:
            await client.generate("not an image")
        one_line_error(info.value, task_id=info.value.task_id)
        assert "not an image" in str(info.value)
    files = [p for p in (store.root / "images").rglob("*") if p.is_file()] if (store.root / "images").exists() else []
    assert files == []
    assert [p for p in (store.root / "tmp").rglob("*") if p.is_file()] == []


# --- hostile responses (shapes the emulator cannot produce: httpx.MockTransport) -------------

import io  # noqa: E402
import struct  # noqa: E402
import zlib  # noqa: E402

import httpx  # noqa: E402

from qimage_nb.journal._images import MAX_DOWNLOAD_BYTES  # noqa: E402


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, extra: bytes = b"") -> bytes:
    """A small, well-formed PNG file that *declares* width x height (its pixels are not all there)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra
            + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))


def _encoded(fmt: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, fmt)
    return buffer.getvalue()


def _gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encoded("GIF", (8, 8)))
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen size in the header
    return bytes(data)


class HostileCDN:
    """The API answers honestly; the image URL is whatever the test says, served by a handler."""

    def __init__(self, image_url: str, serve) -> None:
        self.image_url = image_url
        self.serve = serve
        self.requests: list[httpx.Request] = []
        self.body_chunks_read = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == "api.example.com":
            if request.url.path.endswith("/generations"):
                return httpx.Response(200, json={"code": 200, "data": [{"status": "submitted", "task_id": "task_01H"}]})
            return httpx.Response(200, json={"code": 200, "data": {
                "id": "task_01H", "status": "completed", "progress": 100,
                "result": {"images": [{"url": [self.image_url]}]}}})
        return self.serve(self, request)

    async def counted(self, chunks):
        for chunk in chunks:
            self.body_chunks_read += 1
            yield chunk


async def _generate_against(cdn: HostileCDN, store: Store):
    client = AsyncClient("sk-hostile", "https://api.example.com", transport=httpx.MockTransport(cdn.handler),
                         store=store, retry=fast_retry(attempts=2), poll=FAST_POLL)
    async with client:
        with pytest.raises(QImageError) as info:
            await client.generate("hostile body")
        pending = client.pending()
    return info.value, pending


def _nothing_kept(store: Store) -> None:
    for folder in ("images", "tmp"):
        where = store.root / folder
        assert not where.exists() or [p for p in where.rglob("*") if p.is_file()] == []


HOSTILE_BODIES = [
    ("png-bomb-header", _png(100_000, 100_000), r"100000x100000 pixels.*refused before decoding"),
    ("png-far-over-the-contract", _encoded("PNG", (6000, 6000)), r"6000x6000 pixels.*cap"),
    ("gif-huge-screen", _gif_claiming(65535, 65535), r"65535x65535 pixels"),
    ("png-ztxt-bomb", _png(64, 64, _chunk(b"zTXt", b"c\0\0" + zlib.compress(b"A" * (64 << 20), 9))), r"not an image"),
    ("svg-with-script", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', r"SVG"),
    ("html-page", b"<!doctype html><html><body>Access denied</body></html>", r"HTML page"),
    ("empty", b"", r"empty"),
    ("png-cut-short", _encoded("PNG", (256, 256))[:-40], r"cut short"),
]


@pytest.mark.parametrize(("case", "body", "says"), HOSTILE_BODIES, ids=[c[0] for c in HOSTILE_BODIES])
async def test_hostile_image_bodies_are_refused_with_a_clear_typed_error(store, case, body, says):
    def serve(cdn, request):
        return httpx.Response(200, content=body, headers={"content-type": "image/png"})

    error, pending = await _generate_against(HostileCDN("https://cdn.example.net/a/0.png", serve), store)
    assert isinstance(error, ImageError)
    text = one_line_error(error, task_id="task_01H")
    assert re.search(says, text), text
    assert "cdn.example.net" in text  # where it came from
    _nothing_kept(store)
    # the task is paid for and still listed, so the images can be fetched if the CDN recovers
    assert [entry.task_id for entry in pending] == ["task_01H"]


async def test_a_content_length_over_the_cap_is_refused_before_reading(store):
    def serve(cdn, request):
        body = cdn.counted(b"\0" * (1 << 16) for _ in range(10))
        return httpx.Response(200, headers={"content-type": "image/png",
                                            "content-length": str(MAX_DOWNLOAD_BYTES + 1)}, content=body)

    cdn = HostileCDN("https://cdn.example.net/a/0.png", serve)
    error, _ = await _generate_against(cdn, store)
    assert isinstance(error, ImageError)
    text = one_line_error(error, task_id="task_01H")
    assert f"{MAX_DOWNLOAD_BYTES + 1} bytes" in text and "cap" in text
    assert cdn.body_chunks_read == 0  # not one byte of the body was read
    _nothing_kept(store)


async def test_an_endless_body_without_length_is_cut_at_the_byte_cap(store):
    chunk = 1 << 20

    def serve(cdn, request):
        endless = cdn.counted(b"\x89PNG\r\n\x1a\n" + b"\0" * (chunk - 8) if i == 0 else b"\0" * chunk
                              for i in range(10_000))  # 10 GB, if anyone kept reading
        return httpx.Response(200, headers={"content-type": "image/png"}, content=endless)

    cdn = HostileCDN("https://cdn.example.net/a/0.png", serve)
    error, _ = await _generate_against(cdn, store)
    assert isinstance(error, ImageError) and "over" in str(error) and str(MAX_DOWNLOAD_BYTES) in str(error)
    one_line_error(error, task_id="task_01H")
    assert cdn.body_chunks_read <= MAX_DOWNLOAD_BYTES // chunk + 2  # stopped at the cap, not at 10 GB
    _nothing_kept(store)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "data:image/png;base64,iVBORw0KGgo=", "ftp://cdn.example.net/0.png",
     "javascript:alert(1)", "gopher://cdn.example.net/0"],
)
async def test_only_http_image_urls_are_fetched(store, url, tmp_path):
    def serve(cdn, request):  # pragma: no cover - must never be called
        raise AssertionError(f"fetched {request.url}")

    cdn = HostileCDN(url, serve)
    error, _ = await _generate_against(cdn, store)
    assert isinstance(error, ImageError)
    text = one_line_error(error, task_id="task_01H")
    scheme = url.split(":", 1)[0]
    assert f"scheme '{scheme}'" in text and "only http(s)" in text
    assert all(r.url.host == "api.example.com" for r in cdn.requests)  # nothing else was asked
    _nothing_kept(store)


@pytest.mark.parametrize("kind", ["ConnectTimeout", "PoolTimeout"])
async def test_a_submit_that_never_got_a_connection_is_sent_again_and_billed_once(store, kind):
    """A connect that times out (a loaded machine, a slow network) sent nothing: the submit is
    tried again like a refused connection, never 'outcome unknown' (once seen in a soak test's
    first submit on a loaded 2-core machine)."""
    import httpx

    with Emulator(api_key=KEY, latency=0.05, jitter=0.0, seed=3) as emu:
        inner = emu.transport()
        failed = []

        class FirstConnectFails(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request):
                if request.method == "POST" and not failed:
                    failed.append(request.url.path)
                    raise getattr(httpx, kind)("no connection in time", request=request)
                return await inner.handle_async_request(request)

        async with AsyncClient(KEY, emu.in_process_base_url, store=store, retry=fast_retry(),
                               poll=PollPolicy.for_latency(emu.latency), transport=FirstConnectFails()) as client:
            generation = await client.generate("a lighthouse in fog")
        assert failed and generation.ok and len(generation.images) == 1
        assert emu.counters()["submits_accepted"] == 1  # sent once, after the failed connect
        assert store.pending() == []
