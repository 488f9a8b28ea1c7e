"""From a generation's completion on the server to its image on disk: the official host's synchronous
models against the seed's provider's task polling, in one run.

The official host (Alibaba Model Studio, DashScope) answers a synchronous model's call when the
image exists: there is nothing to poll, so the client learns of the completion with the answer. The
seed's API answers a submit with a task that the client polls on its adaptive schedule. Both
emulators run in their own processes at once, with the same seed, so the k-th generation on each
takes the same time (``LATENCY`` +/- ``JITTER`` seconds). For each generation the server's
completion instant comes from its ``/_emulator/timeline`` (on this host's monotonic clock, shared by
every process); the client's instants are the ``Update`` that says the generation completed (the
sync answer, or the poll that saw it done) and the one that says its image is on disk (downloaded,
checked, provenance written, journaled). Both clients are fresh, as in a new kernel.

    .venv/bin/python -m benchmarks.bench_providers
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httpx

from qimage_nb.core._client import AsyncClient
from qimage_nb.core._results import Update
from qimage_nb.journal._store import Store

from ._common import EmulatorProcess, Row, median, percentile, private_home

GENERATIONS = 20
LATENCY, JITTER = 2.0, 0.5


async def _batch(server: EmulatorProcess, client: AsyncClient, count: int) -> dict[str, list[float]]:
    """Seconds from each generation's completion on the server to the client knowing it, and to
    its image on disk."""
    known: dict[int, float] = {}
    on_disk: dict[int, float] = {}

    def seen(update: Update) -> None:
        if update.batch_index is None:
            return
        if update.stage == "completed":
            known.setdefault(update.batch_index, time.monotonic())
        elif update.stage == "downloading":
            on_disk[update.batch_index] = time.monotonic()  # n=1: its one image has landed

    results = await client.generate_many(
        [f"providers benchmark {i}" for i in range(count)], concurrency=count, on_update=seen, new=True
    )
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} generations failed: {failed[0]}")
    async with httpx.AsyncClient() as control:
        timeline = (await control.get(server.origin + "/_emulator/timeline")).json()["tasks"]
    ends = {task["id"]: task["end"] for task in timeline}
    # The server's own id of each generation is in its image URL (.../<id>/<index>.png): the sync
    # answer's id for the client is the host's request id, not the task it ran.
    end = [ends[urlsplit(r.urls[0]).path.split("/")[-2]] for r in results]
    return {"known": [known[i] - end[i] for i in range(count)], "on disk": [on_disk[i] - end[i] for i in range(count)]}


async def _both(count: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    settings = dict(latency=LATENCY, jitter=JITTER, seed=505)
    with EmulatorProcess("DashScopeEmulator", **settings) as official, EmulatorProcess(**settings) as seed:
        home = private_home("providers")
        sync = AsyncClient(official.api_key, official.base_url, provider="dashscope", store=Store(home / "sync"))
        polled = AsyncClient(seed.api_key, seed.base_url, provider="apimart", store=Store(home / "polled"))
        async with sync, polled:
            return await asyncio.gather(_batch(official, sync, count), _batch(seed, polled, count))


def run(quick: bool = False) -> list[Row]:
    count = 10 if quick else GENERATIONS
    sync, polled = asyncio.run(_both(count))
    base = "seed's API: task + adaptive polling"
    what = f"{count} generations of {LATENCY:g} +/- {JITTER:g} s"
    disk_sync, disk_polled = sync["on disk"], polled["on disk"]
    return [
        Row(f"official host (DashScope), sync model: completion -> image on disk, median ({what})",
            median(disk_sync), "s", median(disk_polled), base, "< the polled median",
            median(disk_sync) < median(disk_polled)),
        Row("official host (DashScope), sync model: completion -> image on disk, p90",
            percentile(disk_sync, 0.9), "s", percentile(disk_polled, 0.9), base),
        Row("official host (DashScope), sync model: completion -> client knows it, median",
            median(sync["known"]), "s", median(polled["known"]), base),
        Row("official host (DashScope), sync model: completion -> client knows it, p90",
            percentile(sync["known"], 0.9), "s", percentile(polled["known"], 0.9), base),
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row.name}: {row.value:.3f} s; {row.baseline_name}: {row.baseline:.3f} s")
