"""Detection on fal and Replicate: time from a task's completion on the host to its image being
shown, and API requests per task: the client (fal's status stream, Replicate's held create)
against a fixed 1 s poller.

Each host's emulator runs in its own process over loopback, twice with the same seed (one for the
client, one for the poller), so both strategies face the same durations, uniform in [1.5, 4.5] s.
The completion instant of each task comes from the emulator's ``/_emulator/timeline`` (this host's
monotonic clock, shared by every process). "Shown" is when the image's bytes are in hand: the
client's first ``downloading`` update (what the faces draw), the poller's finished download.
The poller: submit, then every second GET the status (fal: then the result at the response URL;
Replicate: no ``Prefer: wait``), then download the image.

    python benchmarks/bench_detection.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

import httpx

from qimage_nb.core._client import AsyncClient
from qimage_nb.core._polling import PollPolicy

from ._common import EmulatorProcess, Row, median, percentile, private_home

FIXED_INTERVAL = 1.0
LATENCY, JITTER = 3.0, 1.5
HOSTS = {"fal": "FalEmulator", "replicate": "ReplicateEmulator"}
FAL_APP = "fal-ai/qwen-image-2/text-to-image"
REPLICATE_MODEL = "/v1/models/qwen/qwen-image-2/predictions"


def _host_id(task_id: str) -> str:
    return task_id.rsplit(":", 1)[-1]  # fal's task ids here are owner:app:request-id


async def _ours(server: EmulatorProcess, host: str, count: int) -> tuple[dict[str, float], dict[str, float]]:
    """Each task's host id -> monotonic time its image was in hand, and when its end was known."""
    client = AsyncClient(server.api_key, server.base_url, provider=host, poll=PollPolicy.for_latency(LATENCY))
    shown: dict[str, float] = {}
    known: dict[str, float] = {}

    async def one(i: int) -> None:
        def on_update(update) -> None:
            if update.stage == "completed" and update.task_id:
                known.setdefault(_host_id(update.task_id), time.monotonic())
            if update.new_image is not None and update.task_id and _host_id(update.task_id) not in shown:
                shown[_host_id(update.task_id)] = time.monotonic()

        await client.generate(f"detection {i}", on_update=on_update)

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await client.aclose()
    return shown, known


async def _poller(server: EmulatorProcess, host: str, count: int) -> tuple[dict[str, float], dict[str, float]]:
    scheme = "Key" if host == "fal" else "Bearer"
    shown: dict[str, float] = {}
    known: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30,
                                 headers={"Authorization": f"{scheme} {server.api_key}"}) as http, \
            httpx.AsyncClient(timeout=30) as cdn:

        async def one(i: int) -> None:
            if host == "fal":
                sent = (await http.post("/" + FAL_APP, json={"prompt": f"detection {i}"})).json()
                while True:
                    await asyncio.sleep(FIXED_INTERVAL)
                    if (await http.get(sent["status_url"])).json()["status"] == "COMPLETED":
                        known[sent["request_id"]] = time.monotonic()
                        break
                url = (await http.get(sent["response_url"])).json()["images"][0]["url"]
                task_id = sent["request_id"]
            else:
                made = (await http.post(REPLICATE_MODEL, json={"input": {"prompt": f"detection {i}"}})).json()
                while True:
                    await asyncio.sleep(FIXED_INTERVAL)
                    prediction = (await http.get(made["urls"]["get"])).json()
                    if prediction["status"] == "succeeded":
                        known[made["id"]] = time.monotonic()
                        break
                url, task_id = prediction["output"], made["id"]
            (await cdn.get(url)).raise_for_status()
            shown[task_id] = time.monotonic()

        await asyncio.gather(*(one(i) for i in range(count)))
    return shown, known


def _measure(server: EmulatorProcess, shown: dict[str, float]) -> tuple[list[float], float]:
    """(ms from completion to image shown, per task), API requests per task."""
    with httpx.Client(base_url=server.origin, timeout=10) as control:
        tasks = control.get("/_emulator/timeline").json()["tasks"]
        counters = control.get("/_emulator/counters").json()
    delays = [(shown[task["id"]] - task["end"]) * 1000 for task in tasks if task["id"] in shown]
    return delays, counters["api_requests"] / max(1, len(tasks))


def run(quick: bool = False) -> list[Row]:
    count = 4 if quick else 10
    rows: list[Row] = []
    for host, kind in HOSTS.items():
        options = dict(latency=LATENCY, jitter=JITTER, seed=7)
        with EmulatorProcess(kind, **options) as ours, EmulatorProcess(kind, **options) as fixed:
            (shown_ours, known_ours), (shown_fixed, known_fixed) = asyncio.run(_both(ours, fixed, host, count))
            ours_ms, ours_requests = _measure(ours, shown_ours)
            fixed_ms, fixed_requests = _measure(fixed, shown_fixed)
            ours_known, _ = _measure(ours, known_ours)
            fixed_known, _ = _measure(fixed, known_fixed)
        how = "status stream" if host == "fal" else "held create (Prefer: wait)"
        rows += [
            Row(f"{host}: completion -> known, median ({how})", median(ours_known), "ms",
                median(fixed_known), "fixed 1 s poller", "<= 50 ms", median(ours_known) <= 50),
            Row(f"{host}: completion -> image shown, median", median(ours_ms), "ms",
                median(fixed_ms), "fixed 1 s poller", "<= 50 ms", median(ours_ms) <= 50),
            Row(f"{host}: completion -> image shown, p90", percentile(ours_ms, 0.9), "ms",
                percentile(fixed_ms, 0.9), "fixed 1 s poller"),
            Row(f"{host}: API requests per task", ours_requests, "", fixed_requests, "fixed 1 s poller",
                "fewer than polling", ours_requests < fixed_requests),
        ]
    return rows


async def _both(ours: EmulatorProcess, fixed: EmulatorProcess, host: str, count: int):
    return await asyncio.gather(_ours(ours, host, count), _poller(fixed, host, count))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 tasks per host instead of 10")
    args = parser.parse_args(argv)
    private_home("detection")
    from .run import table

    print(table(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
