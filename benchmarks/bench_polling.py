"""Detection latency and polls per task: the adaptive schedule against a fixed 1 s poller.

Tasks run on the bundled emulator over loopback, with durations uniform in [2, 8] s (``latency=5``,
``jitter=3``), progress reported honestly and ``estimated_time`` overstated 1.5x. The server's
completion instant of each task is read from the emulator's own task state (``Task.end``, on the
same monotonic clock as this process); the client "notices" when its poll answer says completed.
Both strategies run at the same time on two emulators with the same seed, so they face the same
durations. A *cold* wave uses a fresh policy; a *warm* wave reuses the policy of the cold wave
(what a kernel looks like after its first batch), against a fresh fixed-poller wave.
"""

from __future__ import annotations

import asyncio
import time

from qimage_nb._client import AsyncClient
from qimage_nb._polling import PollPolicy
from qimage_nb.emulator import Emulator

from ._common import Row, median, percentile, widen_backlog

FIXED_INTERVAL = 1.0


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


async def _wave(emu: Emulator, client: AsyncClient, runner, count: int) -> dict[str, list[float]]:
    results = await asyncio.gather(*(runner(client, f"poll benchmark {i}") for i in range(count)))
    counters = emu.counters()
    tasks = emu._state.tasks  # the server's own timeline: Task.end is when it completed
    latencies = [seen - tasks[task_id].end for task_id, seen in results]
    polls = [counters["polls_per_task"][task_id] for task_id, _ in results]
    return {"latency": latencies, "polls": polls}


async def _pair(seed: int, count: int, policy: PollPolicy) -> tuple[dict, dict]:
    widen_backlog()
    emus = [Emulator(latency=5.0, jitter=3.0, seed=seed, overstate=1.5).start() for _ in range(2)]
    try:
        adaptive = AsyncClient(emus[0].api_key, emus[0].base_url, poll=policy)
        fixed = AsyncClient(emus[1].api_key, emus[1].base_url)
        async with adaptive, fixed:
            a, f = await asyncio.gather(_wave(emus[0], adaptive, _adaptive, count),
                                        _wave(emus[1], fixed, _fixed, count))
        return a, f
    finally:
        for emu in emus:
            emu.stop()


def run(quick: bool = False) -> list[Row]:
    count = 24 if quick else 40
    policy = PollPolicy()
    rows: list[Row] = []
    waves = [("cold", 101)] if quick else [("cold", 101), ("warm", 202)]
    for label, seed in waves:
        adaptive, fixed = asyncio.run(_pair(seed, count, policy))
        a_med, f_med = median(adaptive["latency"]), median(fixed["latency"])
        a_polls = sum(adaptive["polls"]) / count
        f_polls = sum(fixed["polls"]) / count
        base = f"fixed {FIXED_INTERVAL:g} s poller"
        rows += [
            Row(f"polling {label}: median detection latency ({count} tasks, 2-8 s)", a_med, "s",
                f_med, base, "<= 0.35 s", a_med <= 0.35),
            Row(f"polling {label}: p90 detection latency", percentile(adaptive["latency"], 0.9), "s",
                percentile(fixed["latency"], 0.9), base),
            Row(f"polling {label}: polls per task", a_polls, "polls", f_polls, base,
                "<= 0.5 x baseline (floor 2)", a_polls <= 0.5 * f_polls),
        ]
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
