"""Never lose a paid image: a real SIGKILL mid-poll, resume in a new process, re-runs that cost nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from PIL import Image

from qimage_nb import Client
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator import Emulator

FAST_RETRY = RetryPolicy(max_attempts=6, backoff_base=0.05, backoff_cap=0.2)

CHILD = textwrap.dedent(
    """
    import sys
    from qimage_nb import Client

    def show(update):
        if update.task_id:
            print("TASK", update.task_id, flush=True)

    client = Client(sys.argv[1], sys.argv[2])
    print("START", flush=True)
    client.generate(sys.argv[3], n=2, on_update=show)
    print("FINISHED", flush=True)
    """
)


def _spawn(emu: Emulator, home, prompt: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIMAGE_")}
    env["QIMAGE_HOME"] = str(home)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, emu.api_key, emu.base_url, prompt],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read_until(proc: subprocess.Popen, prefix: str, limit: float = 20.0) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.stderr.read()}")
    raise AssertionError(f"no {prefix!r} line within {limit}s")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QIMAGE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_sigkill_mid_poll_then_resume_in_a_new_process(home):
    with Emulator(latency=2.5, jitter=0.0) as emu:
        child = _spawn(emu, home, "a long lighthouse task")
        task_line = _read_until(child, "TASK")
        task_id = task_line.split()[1]
        time.sleep(0.4)  # it is now polling
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert child.returncode == -signal.SIGKILL

        client = Client(emu.api_key, emu.base_url, retry=FAST_RETRY, poll=PollPolicy(floor=0.05, first=0.1))
        pending = client.pending()
        assert [job.task_id for job in pending] == [task_id]

        resumed = client.resume(task_id)
        assert resumed.task_id == task_id
        assert len(resumed.images) == 2
        assert all(image.size == (1024, 1024) for image in resumed.images)
        assert client.pending() == []

        counters = emu.counters()
        assert counters["submits_accepted"] == 1
        assert counters["cdn_authorization_headers"] == 0

        # The images are on disk with their provenance, readable by any PNG tool.
        with Image.open(resumed.paths[0]) as saved:
            assert saved.text["task_id"] == task_id
            assert saved.text["prompt"] == "a long lighthouse task"

        # Resuming again is served from disk: no request at all.
        polls_before = emu.counters()["polls"]
        again = client.resume(task_id)
        assert again.paths == resumed.paths
        assert emu.counters()["polls"] == polls_before


def test_lost_submit_answer_and_a_kill_replays_the_same_key(home):
    # The submit is accepted (and will be billed) but its answer never arrives; the process dies
    # while retrying. Resume must replay the journaled Idempotency-Key, not create a second task.
    # An earlier generation on this host proved (in the shared journal) that it honours keys: only
    # there does the retrying child, or resume, ever resend a submit.
    with Emulator(latency=0.3, jitter=0.0) as emu:
        client = Client(emu.api_key, emu.base_url, retry=FAST_RETRY, poll=PollPolicy(floor=0.05, first=0.1))
        client.generate("an earlier generation")
        emu.set_faults(lose_submit_answers=50, lose_mode="reset")
        child = _spawn(emu, home, "lost answer")
        _read_until(child, "START")
        deadline = time.monotonic() + 10
        while emu.counters()["submits_accepted"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert emu.counters()["submits_accepted"] == 2

        emu.set_faults(lose_submit_answers=0)
        pending = client.pending()
        assert len(pending) == 1 and pending[0].task_id is None

        generation = client.resume(pending[0].key)
        assert len(generation.images) == 2
        counters = emu.counters()
        assert counters["submits_accepted"] == 2
        assert counters["submit_replays"] >= 1 and counters["tasks_per_key"][pending[0].key] == 1


def test_identical_rerun_is_served_from_cache_without_requests(home):
    with Emulator(latency=0.1, jitter=0.0) as emu:
        client = Client(emu.api_key, emu.base_url, retry=FAST_RETRY, poll=PollPolicy(floor=0.02, first=0.05))
        first = client.generate("cache me", size="16:9", cache=True)
        before = emu.counters()
        second = client.generate("cache me", size="16:9", cache=True)
        after = emu.counters()
        assert second.cached and not first.cached
        assert second.paths == first.paths
        # a cached image says when it was really made and when its CDN URL expires (from the file)
        assert second.images[0].info["created"] == first.images[0].info["created"]
        assert int(second.images[0].info["expires_at"]) > 0
        assert second.images[0].info["origin"] == emu.base_url
        assert after["submit_attempts"] == before["submit_attempts"]
        assert after["polls"] == before["polls"] and after["cdn_hits"] == before["cdn_hits"]
        third = client.generate("cache me", size="16:9", new=True)  # a fresh, billed generation
        assert not third.cached and emu.counters()["submits_accepted"] == 2


def test_cache_never_crosses_origins(home):
    with Emulator(latency=0.1, jitter=0.0) as one, Emulator(latency=0.1, jitter=0.0) as two:
        fast = {"retry": FAST_RETRY, "poll": PollPolicy(floor=0.02, first=0.05)}
        Client(one.api_key, one.base_url, **fast).generate("same prompt", cache=True)
        other = Client(two.api_key, two.base_url, **fast).generate("same prompt", cache=True)
        assert not other.cached
        assert two.counters()["submits_accepted"] == 1


def test_expired_cdn_url_uses_the_disk_copy(home):
    with Emulator(latency=0.1, jitter=0.0) as emu:
        client = Client(emu.api_key, emu.base_url, retry=FAST_RETRY, poll=PollPolicy(floor=0.02, first=0.05))
        generation = client.generate("keep the bytes")
    # The emulator (and its CDN) is gone; the images are still there.
    again = Client("k", "http://127.0.0.1:9").resume(generation.task_id)
    assert again.paths == generation.paths
    assert again.images[0].tobytes() == generation.images[0].tobytes()


def test_rerun_after_a_timeout_reattaches_instead_of_paying_again(home):
    from qimage_nb._exceptions import GenerationTimeout

    with Emulator(latency=1.0, jitter=0.0) as emu:
        client = Client(emu.api_key, emu.base_url, retry=FAST_RETRY, poll=PollPolicy(floor=0.05, first=0.1))
        with pytest.raises(GenerationTimeout) as info:
            client.generate("slow and paid for", cache=True, timeout=0.3)
        updates = []
        again = client.generate("slow and paid for", cache=True, on_update=updates.append)
        assert again.task_id == info.value.task_id
        assert updates and all(u.reattached for u in updates)
        assert emu.counters()["submits_accepted"] == 1
        # new=True (the magic's --new) is the way to pay for fresh images
        fresh = client.generate("slow and paid for", new=True)
        assert fresh.task_id != again.task_id and emu.counters()["submits_accepted"] == 2


def test_resume_refuses_another_origin(home):
    from qimage_nb._exceptions import ValidationError

    with Emulator(latency=0.3, jitter=0.0) as one, Emulator(latency=0.3, jitter=0.0) as two:
        one.set_faults(lose_submit_answers=50, lose_mode="reset")
        lossy = Client(one.api_key, one.base_url, retry=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_cap=0.02))
        with pytest.raises(Exception):  # noqa: B017 - whichever transport error; the journal is what matters
            lossy.generate("sent to one")
        [entry] = lossy.pending()
        other = Client(two.api_key, two.base_url, retry=FAST_RETRY)
        with pytest.raises(ValidationError, match="was sent to") as refused:
            other.resume(entry.key)
        assert one.base_url in str(refused.value)
        assert two.counters()["submit_attempts"] == 0


async def test_journal_writes_and_image_fsyncs_run_off_the_event_loop_in_the_same_order(tmp_path):
    import threading

    import httpx

    from qimage_nb import AsyncClient
    from qimage_nb.journal._store import Store

    emu = Emulator(latency=0.1, jitter=0.0)
    store, loop_thread, events = Store(tmp_path / "home"), threading.current_thread(), []

    def spy(name, method):
        def call(*args, **kwargs):
            result = method(*args, **kwargs)
            events.append((name, threading.current_thread() is loop_thread))
            return result
        return call

    for name in ("begin", "set_task_id", "record_status", "save_image", "get", "idempotency_confirmed"):
        setattr(store, name, spy(name, getattr(store, name)))
    inner = emu.transport()

    class Watching(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            if request.method == "POST":
                # What the journal holds as the POST leaves: the row, and no task id yet.
                (entry,) = store.history(5)
                events.append(("POST", entry.status == "submitting" and entry.task_id is None))
            return await inner.handle_async_request(request)

    async with AsyncClient(emu.api_key, emu.in_process_base_url, transport=Watching(), store=store,
                           poll=PollPolicy.for_latency(0.1)) as client:
        generation = await client.generate("written off the loop", n=2)
    assert generation.ok and len(generation.paths) == 2
    on_loop = [name for name, there in events if name != "POST" and there]
    assert on_loop == [], f"journal calls ran on the event loop: {on_loop}"
    order = [name for name, _ in events if name in ("begin", "POST", "set_task_id", "save_image")]
    assert order == ["begin", "POST", "set_task_id", "save_image", "save_image"]
    assert ("POST", True) in events
    assert store.history(1)[0].downloaded
