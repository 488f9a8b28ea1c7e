"""Detection latency and polls per task: the adaptive schedule against a fixed 1 s poller.

Tasks run on the bundled emulator, each server in its own process over loopback (as an outside
harness's server would be), with durations uniform in [2, 8] s (``latency=5``, ``jitter=3``),
progress reported honestly and ``estimated_time`` overstated 1.5x. Two kinds of server:

- *queue phase*: the emulator's default, ``pending`` for the first 10 % of each run, progress
  counting from the pickup; one early reading then cannot tell the pickup delay from the rate;
- *progress from submit*: ``pickup=0``, progress counts from the submit.

The server's completion instant of each task comes from the emulator's ``/_emulator/timeline``
(on this host's monotonic clock, shared by every process); the client "notices" when its poll
answer says completed. Both strategies run at the same time on two servers with the same seed, so
they face the same durations. A *cold* wave uses a fresh client; a *warm* wave reuses the policy of
the cold wave (a kernel after its first batch), against a fresh fixed-poller wave. The full run
pools three cold waves (seeds 101-103): a burst's figures vary with the machine's load. A *capped* run
starts a fresh client on 24 tasks with at most 4 in flight, as a batch with a concurrency cap does.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from qimage_nb.core._client import AsyncClient
from qimage_nb.core._polling import PollPolicy

from ._common import EmulatorProcess, Row, median, percentile

FIXED_INTERVAL = 1.0
SERVERS = {"queue phase": 0.1, "progress from submit": 0.0}


async def _adaptive(client: AsyncClient, prompt: str) -> tuple[str, float]:
    started = time.monotonic()
    task_id = await client.submit(prompt)
    async for status in client.iter_updates(task_id, started=started):
        if status.terminal:
            return task_id, time.monotonic()
    raise RuntimeError("no terminal status")


async def _fixed(client: AsyncClient, prompt: str) -> tuple[str, float]:
    task_id = await client.submit(prompt)
    while True:
        await asyncio.sleep(FIXED_INTERVAL)
        status = await client.get_task(task_id)
        if status.terminal:
            return task_id, time.monotonic()


async def _wave(
    server: EmulatorProcess, client: AsyncClient, runner, count: int, cap: int | None = None
) -> dict[str, list[float]]:
    gate = asyncio.Semaphore(cap or count)

    async def one(i: int) -> tuple[str, float]:
        async with gate:
            return await runner(client, f"poll benchmark {i}")

    results = await asyncio.gather(*(one(i) for i in range(count)))
    async with httpx.AsyncClient() as control:
        timeline = (await control.get(server.base_url + "/_emulator/timeline")).json()
    tasks = {task["id"]: task for task in timeline["tasks"]}
    return {
        "latency": [seen - tasks[task_id]["end"] for task_id, seen in results],
        "polls": [tasks[task_id]["polls"] for task_id, _ in results],
    }


async def _pair(
    seed: int, count: int, policy: PollPolicy, pickup: float, cap: int | None = None
) -> tuple[dict, dict]:
    settings = dict(latency=5.0, jitter=3.0, seed=seed, overstate=1.5, pickup=pickup)
    with EmulatorProcess(**settings) as ours, EmulatorProcess(**settings) as theirs:
        adaptive = AsyncClient(ours.api_key, ours.base_url, poll=policy)
        fixed = AsyncClient(theirs.api_key, theirs.base_url)
        async with adaptive, fixed:
            return await asyncio.gather(_wave(ours, adaptive, _adaptive, count, cap),
                                        _wave(theirs, fixed, _fixed, count, cap))


def _rows(name: str, tasks: int, waves: list[tuple[dict, dict]]) -> list[Row]:
    """Rows for one or more waves of ``tasks`` tasks, pooled; each wave's poll ratio is in the name."""
    adaptive = {key: [v for a, _ in waves for v in a[key]] for key in ("latency", "polls")}
    fixed = {key: [v for _, f in waves for v in f[key]] for key in ("latency", "polls")}
    a_med, f_med = median(adaptive["latency"]), median(fixed["latency"])
    a_polls = sum(adaptive["polls"]) / len(adaptive["polls"])
    f_polls = sum(fixed["polls"]) / len(fixed["polls"])
    each = ""
    if len(waves) > 1:
        ratios = [sum(a["polls"]) / sum(f["polls"]) for a, f in waves]
        each = f", {len(waves)} waves: " + " / ".join(f"{r:.2f}x" for r in ratios)
    base = f"fixed {FIXED_INTERVAL:g} s poller"
    return [
        Row(f"{name}: median detection latency ({tasks} tasks, 2-8 s)", a_med, "s",
            f_med, base, "<= 0.35 s", a_med <= 0.35),
        Row(f"{name}: p90 detection latency", percentile(adaptive["latency"], 0.9), "s",
            percentile(fixed["latency"], 0.9), base),
        Row(f"{name}: polls per task{each}", a_polls, "polls", f_polls, base,
            "<= 0.5 x baseline (floor 2)", a_polls <= 0.5 * f_polls),
    ]


def run(quick: bool = False) -> list[Row]:
    count = 24 if quick else 40
    rows: list[Row] = []
    servers = list(SERVERS.items())[:1] if quick else list(SERVERS.items())
    for server, pickup in servers:
        name = f"polling, {server}"
        # Cold: a fresh client's first burst. It varies with the machine's load (each submit's
        # round trip blurs when its task was created), so the full run pools three such bursts.
        cold, policy = [], PollPolicy()
        for seed in (101,) if quick else (101, 102, 103):
            policy = PollPolicy()
            cold.append(asyncio.run(_pair(seed, count, policy, pickup)))
        rows += _rows(f"{name}, cold", count, cold)
        if quick:
            continue
        # Warm: the last cold client's next burst. Capped: a fresh client, 4 tasks in flight.
        rows += _rows(f"{name}, warm", count, [asyncio.run(_pair(202, count, policy, pickup))])
        rows += _rows(f"{name}, capped 4, fresh", 24, [asyncio.run(_pair(303, 24, PollPolicy(), pickup, 4))])
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
