"""The panel without a browser: real widgets, a real emulator over loopback, the test's own loop.

Each test drives the panel the way the front end does (set widget values, ``button.click()``) and
asserts on widget state a user would see (thumbnails, preview, status lines, the error line) and on
what the emulator received (its counters).
"""

from __future__ import annotations

import asyncio
import io
import json
import os

import ipywidgets as W
import pytest
from PIL import Image
from test_widgets_compat import browser_uploads

from qimage_nb import AsyncClient, Panel, PollPolicy
from qimage_nb._contract import GenerationRequest
from qimage_nb.emulator import Emulator
from qimage_nb.notebook import _session
from qimage_nb.notebook._panel import reproduce_cell, walk_widgets
from qimage_nb.view._words import short_id

# --- helpers ---------------------------------------------------------------------------------


def by_class(panel: Panel, css: str) -> list[W.Widget]:
    """Widgets under the panel's root carrying a CSS class, in display order."""
    found = []

    def visit(widget: W.Widget) -> None:
        if css in getattr(widget, "_dom_classes", ()):
            found.append(widget)
        for child in getattr(widget, "children", ()):
            visit(child)

    visit(panel.root)
    return found


def visible(widget: W.Widget) -> bool:
    return widget.layout.display != "none"


def text_of(widget: W.Widget) -> str:
    """The text a user reads in an HTML/Label widget (tags stripped)."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", " ", widget.value)).strip()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def until(condition, what: str, timeout: float = 30.0) -> None:
    """Wait for a state (not a time): the bound only turns a hang into a readable failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never reached: {what}")
        await asyncio.sleep(0.01)


def thumbs(panel: Panel, run_index: int = 0) -> list[W.Widget]:
    """The thumbnail tiles of one run row (0 = newest, as shown)."""
    row = by_class(panel, "qimage-run")[run_index]
    found = []

    def visit(widget: W.Widget) -> None:
        if "qimage-thumb" in widget._dom_classes:
            found.append(widget)
        for child in getattr(widget, "children", ()):
            visit(child)

    visit(row)
    return found


def thumb_image(tile: W.Widget) -> W.Image:
    (image,) = [c for c in tile.children if isinstance(c, W.Image)]
    return image


def open_button(tile: W.Widget) -> W.Button:
    (button,) = [c for c in tile.children if isinstance(c, W.Button)]
    return button


@pytest.fixture
def emu():
    with Emulator(latency=0.1, jitter=0.05) as emulator:
        yield emulator


@pytest.fixture
async def client(emu):
    c = AsyncClient(emu.api_key, emu.base_url, poll=PollPolicy.for_latency(emu.latency))
    yield c
    await c.aclose()


@pytest.fixture
async def panel(client, tmp_path):
    p = Panel(client=client, folder=tmp_path / "saved")
    await p.wait()  # the balance read
    yield p
    p.cancel()
    await p.wait()
    p.close()


async def generate(panel: Panel, prompt: str, **controls) -> None:
    panel.prompt.value = prompt
    for name, value in controls.items():
        getattr(panel, name).value = value
    assert not panel.generate_button.disabled, text_of(panel.hint)
    panel.generate_button.click()


# --- tests -----------------------------------------------------------------------------------


async def test_generate_fills_gallery_history_and_images(panel, emu):
    assert "qimage-panel" in panel.root._dom_classes
    assert repr(panel) == "<qimage_nb.Panel runs=0 in_flight=0 images=0>"
    await generate(panel, "a red fox in fresh snow", count=3, ratio="16:9")
    assert len(panel.in_flight) == 1  # the click returned while the run goes on in the background
    await panel.wait()

    tiles = thumbs(panel)
    assert len(tiles) == 3
    for tile in tiles:
        picture = decode(thumb_image(tile).value)
        assert picture.format == "JPEG" and max(picture.size) <= 256
        assert picture.size[0] > picture.size[1]  # 16:9 thumbnails, not squares
    # the grid adapts to the ratio: wide tiles for 16:9
    w, h = (int(v.removesuffix("px")) for v in (tiles[0].layout.width, tiles[0].layout.height))
    assert w > h

    status = by_class(panel, "qimage-status")[0]
    assert "done · 3 images" in text_of(status)
    assert len(by_class(panel, "qimage-run")) == 1
    assert [im.size for im in panel.images] == [(1280, 720)] * 3
    assert len(panel.generations) == 1 and panel.generations[0].ok
    assert panel.generations[0].request.prompt == "a red fox in fresh snow"
    assert emu.counters()["submits_accepted"] == 1
    assert "balance" in text_of(panel.balance)
    assert not visible(panel.error)


async def test_history_is_newest_first_with_parameters(panel):
    await generate(panel, "first: a lighthouse")
    await panel.wait()
    await generate(panel, "second: a teapot", model="qwen-image-2.0-pro", ratio="9:16", count=2)
    await panel.wait()
    rows = by_class(panel, "qimage-run")
    headers = [text_of(by_class_in(row, "qimage-run-header")[0]) for row in rows]
    assert "second: a teapot" in headers[0] and "qwen-image-2.0-pro" in headers[0] and "9:16" in headers[0]
    assert "first: a lighthouse" in headers[1]
    assert [len(thumbs(panel, i)) for i in range(2)] == [2, 1]
    # panel.images is the latest completed run's
    assert [im.size for im in panel.images] == [(720, 1280)] * 2
    assert [g.request.prompt for g in panel.generations] == ["first: a lighthouse", "second: a teapot"]


def by_class_in(root: W.Widget, css: str) -> list[W.Widget]:
    found = []

    def visit(widget: W.Widget) -> None:
        if css in getattr(widget, "_dom_classes", ()):
            found.append(widget)
        for child in getattr(widget, "children", ()):
            visit(child)

    visit(root)
    return found


async def test_thumbnail_click_shows_a_larger_preview_not_the_full_file(panel):
    (preview,) = by_class(panel, "qimage-preview")
    assert not visible(preview)
    await generate(panel, "a paper boat on a pond", count=2)
    await panel.wait()
    second = thumbs(panel)[1]
    open_button(second).click()
    assert visible(preview) and preview.value  # the thumbnail shows at once
    await panel.wait()  # then a sharper preview made off the loop
    big = decode(preview.value)
    assert big.format == "JPEG"
    assert 256 < max(big.size) <= 768  # larger than the thumbnail, far smaller than 1024
    caption = text_of(panel.preview_caption)
    task_id = panel.images[1].info["task_id"]
    # The id shortened to fit the column beside the run, the whole id in its tooltip.
    assert "image 2 of 2" in caption and short_id(task_id) in caption
    assert f'title="task id: {task_id}"' in panel.preview_caption.value


def panel_text(panel: Panel) -> str:
    """Every word the panel shows: the text of its shown HTML widgets and buttons (hidden ones skipped)."""
    words = []

    def visit(widget: W.Widget) -> None:
        if getattr(getattr(widget, "layout", None), "display", None) == "none":
            return
        if isinstance(widget, W.HTML):
            words.append(text_of(widget))
        elif isinstance(widget, W.Button):
            words.append(widget.description)
        for child in getattr(widget, "children", ()):
            visit(child)

    visit(panel.root)
    return "\n".join(words)


async def test_moderation_refusal_is_said_once_in_its_run(panel, emu):
    await generate(panel, "FAIL_MODERATION a forbidden picture")
    await panel.wait()
    (error,) = by_class(panel, "qimage-error")
    assert not visible(error)  # the panel's error line is for what belongs to no run
    message = text_of(by_class(panel, "qimage-status")[0])
    assert message.startswith("failed:")
    assert "inappropriate content" in message and "not billed" in message
    assert "Traceback" not in message and "\n" not in message
    assert panel_text(panel).count("inappropriate content") == 1
    assert thumbs(panel) == [] and by_class(panel, "qimage-placeholder") == []
    (gen,) = panel.generations
    assert not gen.ok and gen.task_id and gen.error is not None
    assert panel.images == []
    assert emu.counters()["images_billed"] == 0


async def test_invalid_prompt_disables_generate_and_sends_nothing(panel, emu):
    assert panel.generate_button.disabled  # a fresh panel has no prompt
    assert "Type a prompt" in text_of(panel.hint)
    panel.generate_button.click()  # even a click that gets through sends nothing

    panel.prompt.value = "   \n  "
    assert panel.generate_button.disabled

    panel.prompt.value = "x" * 801
    assert panel.generate_button.disabled
    (error,) = by_class(panel, "qimage-error")
    assert visible(error) and "801 characters" in text_of(error) and "800" in text_of(error)
    assert "801 / 800" in text_of(panel.prompt_count)
    panel.generate_button.click()

    panel.prompt.value = "a fine prompt"
    panel.negative.value = "n" * 501
    assert panel.generate_button.disabled and "negative_prompt is 501" in text_of(error)
    panel.generate_button.click()
    panel.negative.value = ""
    assert not panel.generate_button.disabled and not visible(error)
    assert "13 / 800" in text_of(panel.prompt_count)

    await panel.wait()
    counters = emu.counters()
    assert counters["submit_attempts"] == 0 and counters["tasks"] == 0
    assert panel.runs == []


async def test_two_runs_in_flight_at_once(client, tmp_path):
    with Emulator(latency=1.5, jitter=0.0) as slow:
        c = AsyncClient(slow.api_key, slow.base_url, poll=PollPolicy.for_latency(slow.latency))
        panel = Panel(client=c, folder=tmp_path)
        try:
            await generate(panel, "run one: a cat")
            # Generate is held until the server confirms the first task (no double-click double-pay)
            assert panel.generate_button.disabled
            await until(lambda: not panel.generate_button.disabled, "first submit confirmed")
            await generate(panel, "run two: a dog")
            await until(lambda: panel.runs[1].task_id is not None, "second submit confirmed")
            assert len(panel.in_flight) == 2
            assert panel.cancel_button.description == "Cancel 2"
            statuses = [text_of(s) for s in by_class(panel, "qimage-status")]
            assert all("done" not in s for s in statuses)
            await panel.wait()
            assert [r.state for r in panel.runs] == ["done", "done"]
            assert slow.counters()["submits_accepted"] == 2
            assert {g.request.prompt for g in panel.generations} == {"run one: a cat", "run two: a dog"}
        finally:
            panel.close()
            await c.aclose()


async def test_cancel_stops_waiting_and_keeps_the_task_resumable(tmp_path):
    with Emulator(latency=3.0, jitter=0.0) as slow:
        c = AsyncClient(slow.api_key, slow.base_url, poll=PollPolicy.for_latency(slow.latency))
        panel = Panel(client=c, folder=tmp_path)
        try:
            assert panel.cancel_button.disabled
            await generate(panel, "a slow sunrise")
            await until(lambda: panel.runs[0].task_id is not None, "task id known")
            assert not panel.cancel_button.disabled
            (cancel,) = by_class(panel, "qimage-cancel")
            cancel.click()
            await panel.wait()
            run = panel.runs[0]
            assert run.state == "cancelled"
            status = text_of(by_class(panel, "qimage-status")[0])
            assert "cancelled" in status and run.task_id in status and "journal" in status
            assert panel.cancel_button.disabled
            assert not panel.generate_button.disabled
            # the journal kept the task id: the images can still be had without a second submit
            assert c.store.get(run.task_id) is not None
            gen = await c.resume(run.task_id)
            assert len(gen.images) == 1
            assert slow.counters()["submits_accepted"] == 1
        finally:
            panel.close()
            await c.aclose()


async def test_callbacks_from_a_subshell_thread_run_on_the_panel_loop(panel, emu):
    """JupyterLab may deliver widget messages on a kernel subshell: another thread, another loop."""
    home = asyncio.get_running_loop()

    def subshell() -> None:
        async def deliver() -> None:  # what ipykernel's subshell thread does with a comm message
            panel.prompt.value = "a tram in the rain"
            panel.generate_button.click()

        asyncio.run(deliver())

    await asyncio.to_thread(subshell)
    await until(lambda: panel.runs, "the click reached the panel")
    assert panel.runs[0].task.get_loop() is home
    await panel.wait()
    assert panel.runs[0].state == "done" and len(thumbs(panel)) == 1
    assert not visible(panel.error)


async def test_save_writes_the_full_png_with_provenance(panel, tmp_path):
    await generate(panel, "a bicycle leaning on a blue wall", ratio="3:2", negative="people")
    await panel.wait()
    open_button(thumbs(panel)[0]).click()
    panel.folder.value = str(tmp_path / "keep")
    (save,) = by_class(panel, "qimage-save")
    save.click()
    saved = list((tmp_path / "keep").glob("*.png"))
    assert len(saved) == 1
    assert str(saved[0]) in text_of(panel.action_note)
    with Image.open(saved[0]) as image:
        assert image.size == (1248, 832)
        text = image.text
    assert text["prompt"] == "a bicycle leaning on a blue wall"
    assert text["negative_prompt"] == "people"
    assert text["model"] == "qwen-image-2.0" and text["size"] == "3:2" and text["resolution"] == "1K"
    assert text["task_id"] == panel.generations[0].task_id


async def test_use_as_reference_feeds_the_next_run(panel, emu):
    await generate(panel, "a stone bridge")
    await panel.wait()
    source = panel.images[0].info["source_url"]
    open_button(thumbs(panel)[0]).click()
    (use,) = by_class(panel, "qimage-use-ref")
    use.click()
    assert [r.url for r in panel.references] == [source]
    assert len(by_class(panel, "qimage-ref")) == 1
    await generate(panel, "the same bridge at night")
    await panel.wait()
    latest = panel.generations[-1]
    assert latest.ok and latest.request.image_urls == (source,)


async def test_reference_urls_are_checked_and_removable(panel, emu):
    panel.ref_url.value = "/home/me/cat.png"
    panel.ref_add_button.click()
    (error,) = by_class(panel, "qimage-error")
    assert visible(error) and "local path" in text_of(error)
    assert panel.references == []
    for i in range(3):
        panel.ref_url.value = f"https://example.com/ref{i}.png"
        panel.ref_add_button.click()
    assert len(by_class(panel, "qimage-ref")) == 3
    assert panel.ref_url.value == ""
    panel.ref_url.value = "https://example.com/one-too-many.png"
    panel.ref_add_button.click()
    assert "at most 3" in text_of(error) and len(panel.references) == 3
    remove = by_class_in(by_class(panel, "qimage-ref")[1], "qimage-ref-remove")[0]
    remove.click()
    assert [r.url for r in panel.references] == ["https://example.com/ref0.png", "https://example.com/ref2.png"]
    assert emu.counters()["submit_attempts"] == 0


async def test_local_file_upload_becomes_a_reference(panel, emu):
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 40, 40)).save(buf, "PNG")
    data = buf.getvalue()
    browser_uploads(panel.uploader, [("mine.png", data)])  # as this ipywidgets' front end sends it
    assert panel.uploader.value in ((), {})  # the file's bytes do not stay in widget state (8, 7)
    await panel.wait()
    assert emu.counters()["uploads"] == 1
    (ref,) = panel.references
    assert ref.url.startswith("http") and ref.thumb is not None
    assert not visible(panel.error)
    await generate(panel, "make it blue")
    await panel.wait()
    assert panel.generations[-1].request.image_urls == (ref.url,)


async def test_reproduce_cell_text(panel):
    await generate(panel, "a kite with the word 'Qwen' on it", model="qwen-image-2.0-pro", ratio="4:3",
                   resolution="2K", count=2, negative="blurry, low quality")
    await panel.wait()
    open_button(thumbs(panel)[1]).click()
    (cell,) = by_class(panel, "qimage-cell")
    assert cell.value == (
        "%%qimage -o qimages --model qwen-image-2.0-pro --size 4:3 --resolution 2K -n 2 "
        "--negative 'blurry, low quality'\n"
        "a kite with the word 'Qwen' on it"
    )
    assert "after you run it, this image is qimages[1]" in " ".join(text_of(panel.cell_label).split()).replace(" ;", ";")


def test_reproduce_cell_runs_in_the_real_magic_and_costs_nothing(tmp_path):
    """The cell the panel shows makes the same request: the magic serves it from the journal."""
    from IPython.core.interactiveshell import InteractiveShell

    from qimage_nb.core._sync import run_sync
    from qimage_nb.notebook._magics import QImageMagics

    session = _session.get_session()
    emulator = session.start_emulator(latency=0.1, jitter=0.05)
    try:
        request = GenerationRequest.create(
            "a sign that says \"it's $5 {today}\"", size="2:3", n=2,
            negative_prompt="blur, 'noise'", image_urls=["https://example.com/a b.png?x=1&y=2"],
        )
        gen = run_sync(session.client().generate(
            request.prompt, size=request.size, n=request.n, negative_prompt=request.negative_prompt,
            image_urls=request.image_urls,
        ))
        before = emulator.counters()["submit_attempts"]
        shell = InteractiveShell.instance()
        shell.register_magics(QImageMagics)
        line, body = reproduce_cell(request).split("\n", 1)
        shell.run_cell_magic("qimage", line.removeprefix("%%qimage "), body)
        images = shell.user_ns.pop("qimages")
        assert [im.info["task_id"] for im in images] == [gen.task_id] * 2
        assert emulator.counters()["submit_attempts"] == before  # served from the journal
    finally:
        if session._client is not None:
            run_sync(session._client.aclose())
        _session.reset_session()


async def test_no_widget_state_holds_the_key(panel, emu):
    await generate(panel, "a quiet harbour", count=2)
    await panel.wait()
    open_button(thumbs(panel)[0]).click()
    panel.use_ref_button.click()
    panel.prompt.value = "FAIL_MODERATION again"
    panel.generate_button.click()
    await panel.wait()
    panel.journal.selected_index = 0
    key = emu.api_key
    widgets = list(walk_widgets(panel.root))
    assert len(widgets) > 50
    for widget in widgets:
        state = widget.get_state()
        blob = json.dumps(
            {k: (bytes(v).hex() if isinstance(v, (bytes, memoryview)) else v) for k, v in state.items()}, default=str
        )
        assert key not in blob, f"{type(widget).__name__} holds the key"
        for value in state.values():
            if isinstance(value, (bytes, memoryview)):
                assert key.encode() not in bytes(value)
    assert key not in repr(panel)


async def test_session_panel_shows_the_emulator_banner_and_balance():
    session = _session.get_session()
    session.start_emulator(latency=0.1, jitter=0.05)
    try:
        panel = Panel()
        await panel.wait()
        (banner,) = by_class(panel, "qimage-banner")
        assert visible(banner) and "emulator" in text_of(banner).lower()
        assert "balance: 100.00" in text_of(panel.balance)
        await generate(panel, "an orange on a plate")
        await panel.wait()
        assert len(thumbs(panel)) == 1
        panel.close()
    finally:
        await session.client().aclose()
        _session.reset_session()


async def test_no_key_explains_itself(monkeypatch):
    monkeypatch.setenv("QIMAGE_BASE_URL", "https://api.example.invalid")
    _session.reset_session()
    try:
        panel = Panel()
        await panel.wait()
        (banner,) = by_class(panel, "qimage-banner")
        assert not visible(banner)
        assert "no API key" in text_of(panel.balance)
        await generate(panel, "anything")
        (error,) = by_class(panel, "qimage-error")
        assert visible(error) and "QIMAGE_API_KEY" in text_of(error) and "%qimage emulator" in text_of(error)
        assert panel.runs == []
    finally:
        _session.reset_session()


async def test_journal_lists_earlier_entries_and_shows_them_without_requests(client, emu, tmp_path):
    earlier = await client.generate("an earlier picture of a tram", n=2)
    panel = Panel(client=client, folder=tmp_path)
    panel.journal.selected_index = 0  # opening the journal loads it
    rows = by_class(panel, "qimage-journal-entry")
    assert len(rows) == 1 and "an earlier picture of a tram" in text_of(rows[0].children[0])
    (show,) = by_class_in(rows[0], "qimage-resume")
    assert show.description == "Show"
    before = emu.counters()
    show.click()
    await panel.wait()
    assert len(thumbs(panel)) == 2
    assert panel.generations[-1].task_id == earlier.task_id
    after = emu.counters()
    assert after["submit_attempts"] == before["submit_attempts"] and after["cdn_hits"] == before["cdn_hits"]
    panel.close()


async def test_callback_failures_land_in_the_error_line(panel, monkeypatch):
    await generate(panel, "a small house")
    await panel.wait()
    open_button(thumbs(panel)[0]).click()
    panel.folder.value = os.devnull + "/cannot/be/a/folder"
    panel.save_button.click()
    (error,) = by_class(panel, "qimage-error")
    assert visible(error) and text_of(error).startswith("⚠ Save:")
    assert "Traceback" not in text_of(error)


def test_panel_builds_without_a_running_loop_and_says_so_on_generate(client_sync_env):
    panel = Panel(client=client_sync_env)
    assert "qimage-panel" in panel.root._dom_classes
    panel.prompt.value = "a cloud"
    panel.generate_button.click()
    assert "running event loop" in text_of(panel.error)
    assert panel.runs == []
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.root.model_id


@pytest.fixture
def client_sync_env(emu):
    return AsyncClient(emu.api_key, emu.base_url, poll=PollPolicy.for_latency(emu.latency))


def test_reproduce_cell_refuses_what_the_magic_cannot_express():
    plain = GenerationRequest.create("a cat", negative_prompt="dogs")
    assert reproduce_cell(plain) == (
        "%%qimage -o qimages --model qwen-image-2.0 --size 1:1 --resolution 1K -n 1 --negative dogs\na cat"
    )
    both = GenerationRequest.create("a cat", negative_prompt="\"big\" 'dogs'")
    with pytest.raises(ValueError, match="both"):
        reproduce_cell(both)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://api.example.com", "plain http to a non-loopback host"),
        ("https://qimage-user:hunter2-SECRET@api.example.com", "must not carry credentials"),
    ],
)
async def test_a_bad_base_url_shows_in_the_error_line(monkeypatch, url, says):
    monkeypatch.setenv("QIMAGE_API_KEY", "sk-test-KEY-0000")
    monkeypatch.setenv("QIMAGE_BASE_URL", url)
    panel = Panel()
    try:
        await panel.wait()
        assert visible(panel.error) and says in text_of(panel.error)
        panel.prompt.value = "a cat"
        panel.generate_button.click()
        assert says in text_of(panel.error) and panel.runs == []
        state = json.dumps([w.get_state() for w in walk_widgets(panel.root)], default=repr)
        for secret in ("hunter2", "qimage-user", "sk-test-KEY"):
            assert secret not in state
    finally:
        panel.close()
        _session.reset_session()
