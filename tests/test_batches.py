"""generate_many: input order, bounded tasks in flight, per-item failures, lazy images, the facade."""

from __future__ import annotations

import os

import pytest

from qimage_nb import Client
from qimage_nb.core._client import AsyncClient
from qimage_nb.core._polling import PollPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.journal._images import LazyImage
from qimage_nb.journal._store import Store


@pytest.fixture
def emu():
    return Emulator(latency=0.3, jitter=0.25, seed=9)


@pytest.fixture
async def client(emu, tmp_path):
    async with AsyncClient(emu.api_key, emu.in_process_base_url, transport=emu.transport(), poll=PollPolicy.for_latency(emu.latency),
                           store=Store(tmp_path)) as c:
        yield c


async def test_results_come_back_in_input_order(client):
    prompts = [f"order {i}" for i in range(12)]
    finished: list[int] = []

    def on_update(update):
        if update.stage == "done":
            finished.append(update.batch_index)

    results = await client.generate_many(prompts, concurrency=12, on_update=on_update)
    assert [r.request.prompt for r in results] == prompts
    assert finished != sorted(finished)  # jittered durations: they finished out of order
    assert all(r.ok and len(r.images) == 1 for r in results)


@pytest.mark.parametrize("limit", [1, 3])
async def test_tasks_in_flight_never_exceed_the_concurrency(client, emu, limit):
    live: set[int] = set()
    peak = 0

    def on_update(update):
        nonlocal peak
        if update.stage == "submitting":
            live.add(update.batch_index)
            peak = max(peak, len(live))
        elif update.stage in ("completed", "failed", "cancelled", "error", "done"):
            live.discard(update.batch_index)

    results = await client.generate_many([f"bounded {i}" for i in range(8)], concurrency=limit,
                                         on_update=on_update)
    assert all(r.ok for r in results)
    assert peak == limit
    assert emu.counters()["submits_accepted"] == 8


async def test_a_slot_is_handed_on_before_the_downloads_finish(client, emu):
    emu.set_faults(cdn_delay=0.3)  # downloads are slow: the next task must not wait for them
    order: list[tuple[int, str]] = []
    await client.generate_many(["first", "second"], concurrency=1,
                               on_update=lambda u: order.append((u.batch_index, u.stage)))
    assert order.index((1, "submitting")) < order.index((0, "downloading"))


async def test_one_failure_does_not_stop_the_others(client, emu):
    prompts = ["fine 0", "FAIL_MODERATION here", "fine 2", "fine 3"]
    results = await client.generate_many(prompts, concurrency=2)
    assert [r.ok for r in results] == [True, False, True, True]
    failed = results[1]
    assert failed.error is not None and failed.task_id and not failed.images
    assert "inappropriate" in str(failed.error)
    assert emu.counters()["submits_accepted"] == 4


async def test_images_are_lazy_and_hold_no_file_descriptors(client):
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    results = await client.generate_many([f"lazy {i}" for i in range(24)], concurrency=8)
    images = [image for r in results for image in r.images]
    assert len(images) == 24
    assert all(isinstance(image, LazyImage) and image._im is None for image in images)  # no pixels yet
    assert all(image.size == (1024, 1024) and image.info["prompt"].startswith("lazy") for image in images)
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) - before < 10
    images[0].load()
    assert images[0]._im is not None and images[1]._im is None


def test_the_sync_facade_runs_a_batch(tmp_path):
    emu = Emulator(latency=0.2, jitter=0.1)
    with Client(emu.api_key, emu.in_process_base_url, transport=emu.transport(), poll=PollPolicy.for_latency(emu.latency),
                store=Store(tmp_path)) as client:
        results = client.generate_many(["sync a", {"prompt": "sync b", "size": "16:9"}], concurrency=2)
    assert [r.request.prompt for r in results] == ["sync a", "sync b"]
    assert results[1].images[0].size == (1280, 720)
