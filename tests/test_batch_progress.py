"""One progress display per batch: generate_many(progress=...) in a kernel, and what a session spent."""

from __future__ import annotations

import html
import re

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell

from qimage_nb.core import _observe
from qimage_nb.core._client import AsyncClient
from qimage_nb.core._polling import PollPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.journal._store import Store
from qimage_nb.notebook._batch import show_batch_progress


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    saved = sh.display_pub
    sh.display_pub = CapturingDisplayPublisher()
    _observe.register_batch_display(show_batch_progress)  # as in a kernel
    yield sh
    _observe._display.clear()
    sh.display_pub = saved


@pytest.fixture
def emu():
    return Emulator(latency=0.1, jitter=0.08, seed=11)


def make(emu, tmp_path):
    return AsyncClient(emu.api_key, emu.in_process_base_url, transport=emu.transport(),
                       poll=PollPolicy.for_latency(emu.latency), store=Store(tmp_path))


def visible(html_text: str) -> str:
    text = re.sub(r"<style>.*?</style>", "", html_text, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "\n", text))


async def test_a_batch_is_one_display_updated_in_place_with_one_progress_line(shell, emu, tmp_path, capsys):
    prompts = [f"catalogue shot {i}" for i in range(8)] + ["FAIL_MODERATION one"]
    async with make(emu, tmp_path) as client:
        results = await client.generate_many(prompts, concurrency=3, progress=True)
    published = shell.display_pub.outputs
    ids = {(o.get("transient") or {}).get("display_id") for o in published}
    assert len(ids) == 1 and None not in ids  # one display, every later state an update of it
    assert len(published) > 9  # it was updated while the batch ran
    lines_seen = set()
    for out in published:
        summary = [ln for ln in visible(out["data"]["text/html"]).splitlines() if " done" in ln and " of 9" in ln]
        assert len(summary) == 1  # never a line per generation
        lines_seen.add(summary[0])
    # Time left while running: "about N s left", or "finishing" once under a second remains (on a
    # quiet machine this short batch can be there from its first finished image).
    assert any(" left" in ln or "finishing" in ln for ln in lines_seen), lines_seen
    final = visible(published[-1]["data"]["text/html"])
    assert "8 of 9 done · 1 failed · $0.048 spent" in final
    assert "about 0 s left" not in "".join(lines_seen)
    assert published[-1]["data"]["text/html"].count("data:image/") == 8  # one grid of thumbnails
    assert capsys.readouterr().out == ""  # nothing printed
    assert [r.ok for r in results] == [True] * 8 + [False]
    # the cell's own result is not a second grid of the same pictures
    assert "text/html" not in results._repr_mimebundle_()
    assert "text/html" in results._repr_mimebundle_()


async def test_progress_false_shows_nothing(shell, emu, tmp_path):
    async with make(emu, tmp_path) as client:
        await client.generate_many(["quiet one", "quiet two"], progress=False)
    assert shell.display_pub.outputs == []


async def test_the_session_cost_counts_images_made_from_python(emu, tmp_path):
    from qimage_nb.notebook import _session

    _session.reset_session()
    session = _session.get_session()
    async with make(emu, tmp_path) as client:
        await client.generate_many([f"billed {i}" for i in range(3)], progress=False)
        await client.generate_many([f"billed {i}" for i in range(3)], progress=False, cache=True)  # served free
    total, count = session.spent
    assert count == 3 and total == pytest.approx(3 * 0.006)
    _session.reset_session()


async def test_a_batch_stopped_by_its_cost_cap_says_so_on_its_one_line(shell, tmp_path):
    emu = Emulator(latency=0.05, jitter=0.0, seed=2, price_per_image=0.02)  # dearer than the price table
    async with make(emu, tmp_path) as client:
        results = await client.generate_many([f"capped {i}" for i in range(5)], concurrency=1, max_cost=0.05,
                                             progress=True)
    final = visible(shell.display_pub.outputs[-1]["data"]["text/html"])
    assert [r.ok for r in results].count(True) == 2
    line = next(ln for ln in final.splitlines() if "of 5 done" in ln)
    assert line == "2 of 5 done · $0.04 spent · 3 not sent: the cost cap of $0.05 was reached"
    assert "failed" not in final


async def test_running_the_same_generate_many_again_submits_nothing(emu, tmp_path):
    prompts = [f"again {i}" for i in range(4)]
    async with make(emu, tmp_path) as client:
        first = await client.generate_many(prompts, progress=False)
        again = await client.generate_many(prompts, progress=False)
        assert emu.counters()["submits_accepted"] == 4  # the second run sent nothing
        assert all(g.cached for g in again) and [g.task_id for g in again] == [g.task_id for g in first]
        fresh = await client.generate_many(prompts[:1], progress=False, new=True)
        assert not fresh[0].cached and emu.counters()["submits_accepted"] == 5
        assert not (await client.generate(prompts[1], cache=False)).cached
    assert emu.counters()["submits_accepted"] == 6
