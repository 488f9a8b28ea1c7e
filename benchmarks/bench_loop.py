"""How long the client blocks the event loop it runs on: the longest stall during a batch.

A kernel's event loop also serves the panel, widget messages and other cells' tasks: while the
client runs a journal write (SQLite with ``synchronous=FULL``, an fsync) or saves an image (hash,
provenance chunks, fsync) on that loop, nothing else moves. This runs 50 generations on the
in-process emulator (no sockets; its CDN renders in a thread) with a throwaway journal, while a
ticker task sleeps 5 ms at a time and records how late each wake-up was: the longest lateness is
the longest stall of the loop, the p99 how often it happens. It also adds up the time the loop's
own thread spent inside the journal's methods (``Store``): what moving them to a thread removes.

    .venv/bin/python -m benchmarks.bench_loop
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time

from qimage_nb.core._client import AsyncClient
from qimage_nb.core._polling import PollPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.journal._store import Store

from ._common import Row, percentile, private_home

TICK = 0.005
GENERATIONS = 50
CONCURRENCY = 10
LATENCY = 0.5


async def _ticker(lateness: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        planned = time.perf_counter() + TICK
        await asyncio.sleep(TICK)
        lateness.append(time.perf_counter() - planned)


_STORE_CALLS = ("begin", "set_task_id", "record_status", "save_image", "mark_outcome_unknown",
                "confirm_idempotency", "get", "find_cached", "find_unfinished", "idempotency_confirmed",
                "temp_path", "find_upload", "remember_upload")


def _timed_store(home, on_loop: list[float]) -> Store:
    """A Store whose methods add the time they take to ``on_loop`` when called on the loop's thread."""
    store, loop_thread = Store(home), threading.current_thread()
    for name in _STORE_CALLS:
        method = getattr(store, name)

        @functools.wraps(method)
        def timed(*args, _method=method, **kwargs):
            if threading.current_thread() is not loop_thread:
                return _method(*args, **kwargs)
            started = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                on_loop.append(time.perf_counter() - started)

        setattr(store, name, timed)
    return store


async def _batch(count: int) -> tuple[list[float], float, int, list[float]]:
    home = private_home("loop")
    on_loop: list[float] = []
    emulator = Emulator(latency=LATENCY, jitter=0.2, seed=7)
    client = AsyncClient(
        emulator.api_key, emulator.in_process_base_url, transport=emulator.transport(),
        store=_timed_store(home, on_loop), poll=PollPolicy.for_latency(LATENCY),
    )
    lateness: list[float] = []
    stop = asyncio.Event()
    async with client:
        await client.generate("warm up: the journal and the connection pool exist before timing")
        on_loop.clear()
        ticker = asyncio.create_task(_ticker(lateness, stop))
        started = time.perf_counter()
        results = await client.generate_many(
            [f"loop stall benchmark {i}" for i in range(count)], concurrency=CONCURRENCY, new=True
        )
        elapsed = time.perf_counter() - started
        stop.set()
        await ticker
    images = sum(len(result.images) for result in results if result.ok)
    return lateness, elapsed, images, on_loop


def run(quick: bool = False) -> list[Row]:
    count = 20 if quick else GENERATIONS
    lateness, elapsed, images, on_loop = asyncio.run(_batch(count))
    worst, p99 = max(lateness) * 1000, percentile(lateness, 0.99) * 1000
    journal = sum(on_loop) * 1000
    # The stalls move with the machine's load (other processes, the GIL shared with the journal's
    # worker threads and the emulator's renderer); the journal's time on the loop does not.
    return [
        Row(f"event loop, {count} generations ({CONCURRENCY} at once, in-process emulator): time its "
            f"thread spent in journal calls ({len(on_loop)} calls there)", journal, "ms",
            target="<= 50 ms", ok=journal <= 50),
        Row("event loop: longest stall", worst, "ms"),
        Row(f"event loop: p99 tick lateness ({len(lateness)} ticks of {TICK * 1000:g} ms, {images} images, "
            f"{elapsed:.1f} s)", p99, "ms"),
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row.name}: {row.value:.1f} {row.unit}")
