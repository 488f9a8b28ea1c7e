"""The client's seams: the parts AsyncClient wires can be replaced one at a time.

``Waiting`` is the seam a host that pushes its statuses (a server-sent-event stream) plugs into:
these tests drive a whole generation, a resume and ``wait`` through a stream-like ``Waiting`` and
check that the rest of the client (journal, downloads, updates, errors) does not care how the
statuses came.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from test_client_unit import API, CDN, FakeAPI, make

from qimage_nb import AsyncClient
from qimage_nb._contract import TaskStatus
from qimage_nb._exceptions import GenerationTimeout, TaskFailedError
from qimage_nb.core._waiting import Polling, Waiting
from qimage_nb.providers import all_providers


class Pushed(Waiting):
    """Statuses as a host would push them: no request of ours asks for them."""

    def __init__(self, statuses: list[TaskStatus]) -> None:
        self.statuses = statuses
        self.asked: list[tuple[str, float, bool]] = []

    async def updates(
        self, task_id: str, *, timeout: float, immediate: bool, started: float
    ) -> AsyncIterator[TaskStatus]:
        self.asked.append((task_id, timeout, immediate))
        for status in self.statuses:
            if status.task_id != task_id:
                raise AssertionError(f"asked for {task_id}, pushing {status.task_id}")
            yield status
        if not self.statuses[-1].terminal:
            raise GenerationTimeout(f"task {task_id} is still running", task_id=task_id)


def pushed(fake: FakeAPI, final: str = "completed") -> list[TaskStatus]:
    """task_T1 running, then ``final`` (completed with the fake CDN's images, or failed)."""
    urls = tuple(fake.images) if final == "completed" else ()
    running = TaskStatus(task_id="task_T1", status="processing", progress=40)
    return [running, TaskStatus(task_id="task_T1", status=final, progress=100 if urls else 0, urls=urls)]


async def test_a_pushed_wait_drives_a_whole_generation_without_a_single_poll():
    fake = FakeAPI(n_images=2)
    async with make(fake, wait_timeout=33.0) as client:
        stream = client._waiting = Pushed(pushed(fake))
        updates = []
        generation = await client.generate("a kite over dunes", n=2, on_update=updates.append)
        entry = client.store.get(generation.task_id)
    assert [r.method + " " + r.url.path for r in fake.api_requests()] == ["POST /v1/images/generations"]
    assert len(fake.cdn_requests()) == 2 and all(str(r.url).startswith(CDN) for r in fake.cdn_requests())
    assert stream.asked == [("task_T1", 33.0, False)]  # the client's deadline, a fresh task
    assert [image.info["task_id"] for image in generation.images] == ["task_T1", "task_T1"]
    assert ("running", 40) in [(u.stage, u.progress) for u in updates] and updates[-1].stage == "done"
    assert entry is not None and entry.status == "completed" and entry.downloaded


async def test_a_pushed_failure_and_a_pushed_timeout_end_the_wait_as_a_poll_would():
    fake = FakeAPI()
    async with make(fake) as client:
        client._waiting = Pushed(pushed(fake, "failed"))
        with pytest.raises(TaskFailedError, match="task_T1 failed"):
            await client.generate("x")
        assert client.store.get("task_T1").status == "failed"
    fake = FakeAPI()
    async with make(fake) as client:
        client._waiting = Pushed([TaskStatus(task_id="task_T1", status="processing", progress=10)])
        with pytest.raises(GenerationTimeout) as info:
            await client.generate("y")
        assert info.value.task_id == "task_T1"  # the id to resume it by
        assert client.store.get("task_T1").status == "processing"  # still pending: nothing lost
        assert [e.task_id for e in client.pending()] == ["task_T1"]


async def test_wait_and_resume_ask_the_same_seam_for_a_task_of_unknown_age():
    fake = FakeAPI()
    async with make(fake) as client:
        stream = client._waiting = Pushed(pushed(fake))
        status = await client.wait("task_T1", timeout=5)
        generation = await client.resume("task_T1")
    assert status.status == "completed" and len(generation.images) == 1
    assert stream.asked == [("task_T1", 5.0, True), ("task_T1", 900.0, True)]
    assert [r.url.path for r in fake.api_requests()] == []  # adopted by id: nothing was submitted


def test_every_host_waits_by_polling_unless_it_declares_a_status_stream():
    # What a provider does not declare otherwise: the adaptive poll schedule; a host that streams
    # its statuses (fal) is read through its stream, polling as the fallback.
    from qimage_nb.core._waiting import Streaming

    for provider in all_providers():
        client = AsyncClient("sk-any-key-0000", API, provider=provider)
        expected = Streaming if provider.capabilities.status_stream else Polling
        assert isinstance(client._waiting, expected), provider.name
    assert [p.name for p in all_providers() if p.capabilities.status_stream] == ["fal"]


@pytest.mark.parametrize("spins", [0, 1, 2])
async def test_a_cancel_that_lands_as_a_stream_event_arrives_ends_the_wait(spins):
    """asyncio.wait_for (before Python 3.12) returns the event instead: a user's Cancel was lost and
    the task ran on, billed. ``spins``: loop turns between the event's arrival and the cancel."""
    import asyncio

    from qimage_nb.core._stream import next_within

    ready = asyncio.Event()
    closed = []

    async def events():
        try:
            await ready.wait()
            yield "event"
            await asyncio.sleep(3600)
        finally:
            closed.append(True)

    stream = events()
    waiting = asyncio.ensure_future(next_within(stream, 5.0))
    for _ in range(3):
        await asyncio.sleep(0)  # the wait has begun
    ready.set()
    for _ in range(spins):
        await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await stream.aclose()
    assert closed == [True]


async def test_a_stream_that_stays_silent_times_out_and_is_told_so():
    import asyncio

    from qimage_nb.core._stream import next_within

    cancelled = []

    async def silent():
        try:
            await asyncio.sleep(3600)
            yield "never"
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(asyncio.TimeoutError):
        await next_within(silent(), 0.05)
    assert cancelled == [True]  # the pending read was cancelled, not left running
