"""Batches: wall time of ``generate_many`` against the ideal and a sequential fixed-poll loop, and
peak memory / lost images / open descriptors of a 500-image batch (measured in a subprocess).

Throughput: the emulator runs at most 8 tasks at once (``max_concurrent=8``) with fixed durations
(``jitter=0``), so 24 requests take at best 3 waves x the duration. The baseline is the loop a user
would write first: submit, poll every second until done, download, next.

Memory: a child process runs one batch of one-image 1K requests against an emulator in this process
(so the emulator's own memory is not counted) and reports ``ru_maxrss``, how many images came back,
and how many file descriptors it holds while every image is open as a PIL image. The baseline child
opens the same files with ``PIL.Image.open`` and decodes them, as code holding PIL images would.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from qimage_nb.core._client import AsyncClient
from qimage_nb.emulator import Emulator

from ._common import EmulatorProcess, Row, widen_backlog

DURATION = 3.0  # real tasks take 19-50 s: fixed per-wave costs weigh more here than there
SLOTS = 8
REQUESTS = 24


async def _batch(emu: Emulator | EmulatorProcess, concurrency: int) -> tuple[float, int, int]:
    in_flight, peak = set(), 0

    def on_update(update) -> None:
        nonlocal peak
        # On the server: from the submit until the task is over there (downloads are bounded apart).
        if update.stage == "submitting":
            in_flight.add(update.batch_index)
        elif update.done or update.stage in ("completed", "downloading"):
            in_flight.discard(update.batch_index)
        peak = max(peak, len(in_flight))

    async with AsyncClient(emu.api_key, emu.base_url) as client:
        started = time.monotonic()
        results = await client.generate_many(
            [f"batch benchmark {i}" for i in range(REQUESTS)], concurrency=concurrency, on_update=on_update,
            new=True,  # fresh tasks each run: the journal must not serve an earlier run's
        )
        wall = time.monotonic() - started
    return wall, sum(1 for r in results if r.ok), peak


async def _sequential(emu: Emulator | EmulatorProcess, count: int) -> float:
    async with AsyncClient(emu.api_key, emu.base_url) as client:
        started = time.monotonic()
        for i in range(count):
            task_id = await client.submit(f"sequential benchmark {i}")
            while True:
                await asyncio.sleep(1.0)
                status = await client.get_task(task_id)
                if status.terminal:
                    break
            await client.download(status)
        return time.monotonic() - started


def _emulator() -> EmulatorProcess:
    return EmulatorProcess(latency=DURATION, jitter=0.0, max_concurrent=SLOTS)


def throughput(quick: bool) -> list[Row]:
    ideal = REQUESTS / SLOTS * DURATION
    rows = []
    with _emulator() as emu:
        wall, ok, peak = asyncio.run(_batch(emu, SLOTS))
    with _emulator() as emu:
        # The sequential loop takes ~75 s for 24; --quick runs 8 of them and scales the time by 3.
        count = 8 if quick else REQUESTS
        sequential = asyncio.run(_sequential(emu, count)) * REQUESTS / count
    label = f"{REQUESTS} x {DURATION:g} s tasks, server cap {SLOTS}, concurrency={SLOTS}"
    rows.append(Row(f"batch: wall time ({label})", wall, "s", ideal, "ideal 3 waves x duration",
                    "<= 1.15 x ideal", wall <= 1.15 * ideal))
    seq_name = "sequential loop, fixed 1 s poll" + (" (8 run, x3)" if quick else "")
    rows.append(Row("batch: speed-up over the sequential loop", sequential / wall, "x", None, seq_name,
                    ">= 6 x", sequential / wall >= 6))
    rows.append(Row("batch: sequential loop wall time", sequential, "s", None, seq_name))
    rows.append(Row("batch: results ok", ok, f"of {REQUESTS}", None, "", f"{REQUESTS}", ok == REQUESTS))
    rows.append(Row("batch: peak tasks in flight on the server", peak, "tasks", None, "", f"<= {SLOTS}",
                    peak <= SLOTS))
    return rows


_CHILD = r"""
import asyncio, json, os, resource, sys, time
mode, base_url, key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def fds():
    return len(os.listdir("/proc/self/fd"))
out = {}
if mode == "qimage":
    from qimage_nb import AsyncClient
    from qimage_nb.journal._thumbnails import thumbnail
    async def main():
        async with AsyncClient(key, base_url) as client:
            t = time.monotonic()
            results = await client.generate_many([f"memory benchmark {i}" for i in range(count)], concurrency=32, new=True)
            out["wall"] = time.monotonic() - t
        images = [image for r in results for image in r.images]
        out["ok"] = sum(1 for r in results if r.ok)
        out["images"] = len(images)
        out["paths"] = [str(p) for r in results for p in r.paths]
        out["fds_holding_images"] = fds()
        # What a gallery does: one small thumbnail per image, from the file (no full decode kept).
        thumbs = [thumbnail(image) for image in images]
        out["thumb_bytes"] = sum(len(b) for b in thumbs)
        out["sizes_known"] = sum(1 for image in images if image.size == (1024, 1024))
        return images, thumbs
    kept = asyncio.run(main())
else:
    from PIL import Image
    paths = json.loads(sys.stdin.read())
    images = [Image.open(p) for p in paths]
    out["fds_holding_images"] = fds()
    for image in images:
        image.load()
    out["images"] = len(images)
out["fds_baseline_start"] = 0
out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _child(mode: str, emu: Emulator | None, count: int, stdin: str = "", home: Path | None = None) -> dict:
    env = {**os.environ}
    if home is not None:
        env["QIMAGE_HOME"] = str(home)
    args = [sys.executable, "-c", _CHILD, mode, emu.base_url if emu else "-", emu.api_key if emu else "-", str(count)]
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, env=env, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(quick: bool, home: Path) -> list[Row]:
    count = 100 if quick else 500
    widen_backlog()
    emu = Emulator(latency=0.3, jitter=0.1).start()
    try:
        ours = _child("qimage", emu, count, home=home / "memory")
        counters = emu.counters()
    finally:
        emu.stop()
    eager = _child("eager", None, count, stdin=json.dumps(ours["paths"]))
    lost = count - ours["ok"]
    return [
        Row(f"batch of {count}: peak RSS", ours["maxrss_mb"], "MB", eager["maxrss_mb"],
            "same files via Image.open + load", "< 400 MB", ours["maxrss_mb"] < 400),
        Row(f"batch of {count}: images lost", lost, "images", None,
            f"{counters['submits_accepted']} submits, {ours['images']} images", "0", lost == 0),
        Row(f"batch of {count}: open fds holding every image", ours["fds_holding_images"], "fds",
            eager["fds_holding_images"], "Image.open (lazy, before load)", f"<< {count}",
            ours["fds_holding_images"] < 50),
        Row(f"batch of {count}: thumbnail bytes per image", ours["thumb_bytes"] / max(1, ours["images"]), "B",
            None, "", "small"),
        Row(f"batch of {count}: wall time", ours["wall"], "s", None, "emulator 0.3 s tasks, concurrency 32"),
    ]


def run(quick: bool = False, home: Path | None = None) -> list[Row]:
    from ._common import private_home

    home = home or private_home("batches")
    return throughput(quick) + memory(quick, home)
