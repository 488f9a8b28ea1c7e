"""The panel's faces of issues 12 and 13: its provider choice, the options a host takes, queued/running
and the cost on a run's line, and the journal's outcome-unknown entries. Real widgets, the session's
in-kernel emulators (both hosts at once), clicks through ``button.click()``.
"""

from __future__ import annotations

import re

import pytest
from test_panel import by_class, generate, open_button, panel_text, text_of, thumbs, visible
from test_widgets_compat import browser_uploads

from qimage_nb import Panel
from qimage_nb.emulator import Faults
from qimage_nb.notebook import _session
from qimage_nb.notebook._widgets import tooltip_of
from qimage_nb.providers import get_provider


@pytest.fixture
async def session():
    _session.reset_session()
    yield _session.get_session()
    s = _session.get_session()
    for client in s.clients():
        await client.aclose()
    _session.reset_session()


@pytest.fixture
async def both(session):
    """Both hosts' emulators in this kernel; the seed's API in use."""
    apimart = session.start_emulator("apimart", latency=0.1, jitter=0.0)
    dashscope = session.start_emulator("dashscope", latency=0.1, jitter=0.0)
    yield apimart, dashscope


async def make_panel() -> Panel:
    panel = Panel()
    await panel.wait()
    return panel


def dashscope_jobs(emulator):
    with emulator._state.lock:
        tasks = sorted(emulator._state.tasks.values(), key=lambda t: t.created_mono)
        return [t.request["job"] for t in tasks]


async def test_the_provider_choice_decides_models_and_which_options_are_enabled(both, session):
    panel = await make_panel()
    try:
        assert panel.provider.value == "apimart" and not panel.provider.disabled
        assert dict(panel.provider.options)  # every host is offered, by its title
        # By their short names, which fit the header's dropdown; the whole titles in its tooltip.
        assert [label for label, _ in panel.provider.options] == ["APIMart", "DashScope", "fal", "Replicate"]
        assert "Alibaba Model Studio (DashScope)" in tooltip_of(panel.provider)
        assert list(panel.model.options) == ["qwen-image-2.0", "qwen-image-2.0-pro"]
        assert panel.seed.disabled and panel.extend.disabled and panel.watermark.disabled and panel.free_size.disabled
        (options,) = by_class(panel, "qimage-options")
        assert not visible(options) and not visible(panel.free_size)  # nothing there this host takes
        assert tooltip_of(panel.seed) == "the APIMart API takes no seed"
        assert not panel.uploader.disabled
        assert text_of(panel.provider_note) == ""  # the emulator's banner says where the key is

        panel.provider.value = "dashscope"
        await panel.wait()
        assert list(panel.model.options) == list(get_provider("dashscope").models)
        assert panel.model.value == "qwen-image-2.0"
        assert not (panel.seed.disabled or panel.extend.disabled or panel.watermark.disabled or panel.free_size.disabled)
        assert visible(options) and visible(panel.free_size)
        assert not panel.uploader.disabled  # issue 21: local pictures go inline (data: URIs) there
        assert tooltip_of(panel.seed).startswith("the same seed")
        (banner,) = by_class(panel, "qimage-banner")
        assert visible(banner)
        assert text_of(panel.balance) == ""  # DashScope has no balance endpoint: nothing, not an error
        assert "Type a prompt (1 to 800 characters)" in text_of(panel.hint)  # 2.0's limit
        panel.model.value = "qwen-image-3.0-pro"
        await panel.wait()
        # 3.0's prompt limit is not 2.0's: the hint and the counter say the same number.
        assert "Type a prompt (1 to 20000 characters)" in text_of(panel.hint)
        assert "/ 20000" in text_of(panel.prompt_count)
        panel.prompt.value = "a lighthouse at dusk"
        panel.free_size.value = "1536x1536"  # 2.36 MP: 3.0-pro's dearer tier
        await panel.wait()
        assert "About $0.075 a run (the host's price list)" in text_of(panel.hint)
        panel.model.value = "qwen-image-2.0"  # no published price there: no price said
        panel.free_size.value = ""
        await panel.wait()
        assert "About $" not in text_of(panel.hint)
        (error,) = by_class(panel, "qimage-error")
        assert not visible(error)
    finally:
        panel.close()


async def test_generate_on_dashscope_sends_one_request_with_its_options(both, session):
    _apimart, dashscope = both
    panel = await make_panel()
    try:
        panel.provider.value = "dashscope"
        await panel.wait()
        panel.free_size.value = "1024x768"
        assert panel.ratio.disabled and "1024 × 768 px" in text_of(panel.pixels)
        await generate(panel, "a paper lantern", seed="7", extend="off", watermark=True)
        await panel.wait()
        (job,) = dashscope_jobs(dashscope)
        assert (job.seed, job.prompt_extend, job.watermark, job.width, job.height) == (7, False, True, 1024, 768)
        (gen,) = panel.generations
        assert gen.request.seed == 7 and gen.request.size == "1024x768" and [im.size for im in panel.images] == [(1024, 768)]
        header = text_of(by_class(panel, "qimage-run-header")[0])
        assert "Alibaba Model Studio (DashScope)" in header and "seed 7" in header and "prompt as written" in header
        assert "1024x768" in header and "watermark" in header
        # The cell that reproduces it names its host and options; the magic serves it from the journal.
        open_button(thumbs(panel)[0]).click()
        (cell,) = by_class(panel, "qimage-cell")
        assert cell.value.startswith(
            "%%qimage -o qimages --provider dashscope --model qwen-image-2.0 --size 1024x768 --resolution 1K -n 1 "
            "--seed 7 --no-extend --watermark\n")
    finally:
        panel.close()
    from IPython.core.interactiveshell import InteractiveShell

    from qimage_nb.notebook._magics import QImageMagics

    shell = InteractiveShell.instance()
    shell.register_magics(QImageMagics)
    line, body = cell.value.split("\n", 1)
    shell.run_cell_magic("qimage", line.removeprefix("%%qimage "), body)
    assert shell.user_ns.pop("qimages")[0].info["task_id"] == gen.task_id
    assert len(dashscope_jobs(dashscope)) == 1  # nothing sent again


async def test_a_bad_seed_or_size_disables_generate_with_one_line(both, session):
    panel = await make_panel()
    try:
        panel.provider.value = "dashscope"
        await panel.wait()
        panel.prompt.value = "a kite"
        panel.seed.value = "seven"
        assert panel.generate_button.disabled and "seed 'seven' is not a whole number" in text_of(panel.error)
        assert panel_text(panel).count("is not a whole number") == 1  # said once, in the error line
        panel.seed.value = "7"
        panel.free_size.value = "4000x4000"
        assert panel.generate_button.disabled and "outside what Alibaba Model Studio (DashScope) makes" in text_of(panel.error)
        assert panel_text(panel).count("outside what Alibaba Model Studio (DashScope) makes") == 1
        panel.generate_button.click()  # a click on the disabled button's action says it once too
        assert panel_text(panel).count("outside what Alibaba Model Studio (DashScope) makes") == 1
        panel.free_size.value = ""
        assert not panel.generate_button.disabled
        # Switching to a host without seeds leaves the seed typed but disabled, and never sends it.
        panel.provider.value = "apimart"
        await panel.wait()
        assert panel.seed.disabled and not panel.generate_button.disabled
        panel.generate_button.click()
        await panel.wait()
        assert panel.generations[-1].request.seed is None and panel.generations[-1].ok
    finally:
        panel.close()


async def test_a_provider_without_a_key_says_which_variable(session, monkeypatch):
    session.start_emulator("apimart", latency=0.1, jitter=0.0)
    panel = await make_panel()
    try:
        panel.provider.value = "dashscope"
        await panel.wait()
        assert text_of(panel.provider_note) == "no key ($DASHSCOPE_API_KEY)"
        assert "%qimage emulator --provider dashscope" in panel.provider_note.value  # its tooltip
        await generate(panel, "anything")
        (error,) = by_class(panel, "qimage-error")
        assert visible(error)
        message = text_of(error)
        assert "No API key for Alibaba Model Studio (DashScope): set DASHSCOPE_API_KEY" in message
        assert "%qimage emulator --provider dashscope" in message and panel.runs == []
    finally:
        panel.close()


async def test_run_rows_say_queued_then_running_and_the_cost(session):
    session.start_emulator(latency=1.2, jitter=0.0, faults=Faults(dialect="wild"))
    panel = await make_panel()
    seen: list[str] = []
    try:
        await generate(panel, "a lighthouse at dusk")
        run = panel.runs[-1]
        run.status.observe(lambda change: seen.append(text_of(run.status)), names="value")
        await panel.wait()
        assert any(re.match(r"queued", line) for line in seen), seen
        assert any(re.match(r"running \d+%", line) for line in seen), seen
        assert not any(re.search(r"\b(submitted|in_progress|pending|processing)\b", line) for line in seen), seen
        assert re.match(r"done · 1 image in \d+ s · \$0\.006 · +task_", text_of(run.status)), text_of(run.status)
        assert f'title="task id: {run.task_id}"' in run.status.value  # the whole id, shortened on the line
        assert session.spent == (pytest.approx(0.006), 1)  # %qimage config's session total
    finally:
        panel.close()


async def test_the_journal_offers_the_resend_command_for_an_unknown_outcome(session):
    emulator = session.start_emulator(latency=0.1, jitter=0.0)
    emulator.set_faults(lose_submit_answers=1, lose_mode="reset")
    panel = await make_panel()
    try:
        await generate(panel, "a fox under the aurora")
        await panel.wait()
        run = panel.runs[-1]
        status = text_of(run.status)
        assert status.startswith("failed: submit to 127.0.0.1") and status.count("may be billed") == 1
        panel.journal.selected_index = 0
        panel.refresh_journal()
        rows = by_class(panel, "qimage-journal-entry")
        assert rows == []  # the failed run is this panel's own, already on its line
        panel.close()
        fresh = await make_panel()  # a later panel (another cell) finds it in the journal
        fresh.refresh_journal()
        (row,) = by_class(fresh, "qimage-journal-entry")
        words = " ".join(text_of(w) for w in row.children if hasattr(w, "value") and isinstance(w.value, str))
        key = run.generation.idempotency_key or re.search(r"--resend (\S+)", status).group(1)
        assert "outcome unknown" in words and f"%qimage resume --resend {key}" in words
        assert not by_class(fresh, "qimage-resume")  # no button that would resend behind the user's back
        fresh.close()
    finally:
        panel.close()


# --- issue 19.4: the header follows the session; 19.5: a resend says what it risks -------------


def _magic_shell():
    from IPython.core.interactiveshell import InteractiveShell

    from qimage_nb.notebook._magics import QImageMagics

    shell = InteractiveShell.instance()
    shell.register_magics(QImageMagics)
    return shell


async def test_the_header_follows_emulator_stop_login_and_provider_switches_without_a_new_panel(
    session, monkeypatch, capsys
):
    from urllib.parse import urlsplit

    shell = _magic_shell()
    panel = await make_panel()  # no key, no emulator yet
    try:
        (banner,) = by_class(panel, "qimage-banner")
        assert not visible(banner) and "no key ($QIMAGE_API_KEY)" in text_of(panel.provider_note)

        shell.run_line_magic("qimage", "emulator --latency 0.1")
        await panel.wait()
        first = urlsplit(session.emulator_for("apimart").base_url).netloc
        assert visible(banner) and first in text_of(panel.server)
        assert "no key" not in text_of(panel.provider_note)  # the emulator's tag says where the key is

        shell.run_line_magic("qimage", "emulator --stop")
        await panel.wait()
        assert not visible(banner) and first not in text_of(panel.server)
        assert "no key ($QIMAGE_API_KEY)" in text_of(panel.provider_note)

        shell.run_line_magic("qimage", "emulator --latency 0.1")  # a new emulator on a new port
        await panel.wait()
        second = urlsplit(session.emulator_for("apimart").base_url).netloc
        assert second != first and second in text_of(panel.server) and first not in text_of(panel.server)

        shell.run_line_magic("qimage", "emulator --provider dashscope --latency 0.1")
        await panel.wait()
        dashscope = urlsplit(session.emulator_for("dashscope").base_url).netloc
        assert panel.provider.value == "dashscope"  # the provider in use, switched in a cell
        assert dashscope in text_of(panel.server) and visible(banner) and "--provider dashscope" in banner.value
        assert not panel.seed.disabled  # the controls followed it too

        monkeypatch.setattr("getpass.getpass", lambda prompt="": "sk-dashscope-typed-0001")
        shell.run_line_magic("qimage", "login --provider dashscope")  # stops its emulator: the real API
        await panel.wait()
        assert not visible(banner) and dashscope not in text_of(panel.server)
        assert "key: %qimage login" in text_of(panel.provider_note)
        assert "sk-dashscope-typed-0001" not in panel_text(panel)
        # Every message once: the header's state is said once, nothing of the old one is left.
        assert panel_text(panel).count("key:") == 1 and "no key" not in panel_text(panel)
    finally:
        panel.close()
    capsys.readouterr()


async def test_a_panel_that_is_closed_no_longer_follows_the_session(session):
    panel = await make_panel()
    panel.close()
    session.start_emulator(latency=0.1, jitter=0.0)  # nothing of the closed panel runs, nothing raises
    assert all(ref() is None or ref().__self__ is not panel for ref in session._listeners)


def in_row(row, css: str) -> list:
    from qimage_nb.notebook._panel import walk_widgets

    return [w for w in walk_widgets(row) if css in getattr(w, "_dom_classes", ())]


async def _unknown_outcome_in_a_later_panel(session, provider: str):
    """A Generate whose submit answer is lost, then a later panel that finds it in the journal."""
    emulator = session.start_emulator(provider, latency=0.1, jitter=0.0)
    session.choose(provider)
    emulator.set_faults(lose_submit_answers=1, lose_mode="reset")
    panel = await make_panel()
    await generate(panel, "a fox under the aurora")
    await panel.wait()
    run = panel.runs[-1]
    panel.close()
    fresh = await make_panel()
    fresh.refresh_journal()
    (row,) = by_class(fresh, "qimage-journal-entry")
    return emulator, run, fresh, row


async def test_on_apimart_the_resend_promises_no_second_bill_and_gets_the_same_task(session):
    emulator, _run, panel, row = await _unknown_outcome_in_a_later_panel(session, "apimart")
    try:
        (hint,) = in_row(row, "qimage-resend-hint")
        assert "same key, no second bill" in text_of(hint) and "may bill again" not in text_of(hint)
        (resend,) = in_row(row, "qimage-resend")
        resend.click()  # the host honours the key: no question, one resend
        await panel.wait()
        (confirm,) = by_class(panel, "qimage-resend-confirm")
        assert not visible(confirm)
        (gen,) = panel.generations
        assert gen.ok and len(emulator._state.tasks) == 1  # the task the lost answer was about, billed once
    finally:
        panel.close()


async def test_on_dashscope_the_resend_warns_it_may_bill_again_and_asks_first(session):
    emulator, run, panel, row = await _unknown_outcome_in_a_later_panel(session, "dashscope")
    try:
        status = text_of(run.status)
        assert "no second bill" not in status and re.search(r"may bill (again|twice)", status)  # it promises nothing
        (hint,) = in_row(row, "qimage-resend-hint")
        assert "may bill again" in text_of(hint) and "no second bill" not in text_of(hint)
        before = len(dashscope_jobs(emulator))
        (resend,) = in_row(row, "qimage-resend")
        resend.click()
        await panel.wait()
        (confirm,) = by_class(panel, "qimage-resend-confirm")
        assert visible(confirm) and "may bill again" in text_of(panel.resend_question)
        assert len(dashscope_jobs(emulator)) == before and panel.runs == []  # nothing sent before the answer
        panel.resend_no.click()
        assert not visible(confirm) and panel.runs == []
        resend.click()
        panel.resend_yes.click()  # the user's yes: now it is sent
        await panel.wait()
        assert len(dashscope_jobs(emulator)) == before + 1 and panel.generations[-1].ok
        assert not visible(confirm)
    finally:
        panel.close()


async def test_the_upload_button_sends_a_local_picture_inline_on_dashscope_and_lists_3_0(both, session):
    import io

    from PIL import Image

    _, dashscope = both
    panel = await make_panel()
    panel.provider.value = "dashscope"
    await panel.wait()
    assert "qwen-image-3.0" in panel.model.options and "qwen-image-3.0-pro" in panel.model.options
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (20, 120, 200)).save(buf, "PNG")
    data = buf.getvalue()
    browser_uploads(panel.uploader, [("mine.png", data)])  # as this ipywidgets' front end sends it
    await panel.wait()
    (ref,) = panel.references
    assert ref.thumb is not None and not visible(panel.error)
    await generate(panel, "make it gold", model="qwen-image-3.0")
    await panel.wait()
    assert panel.generations[-1].images, text_of(panel.error)
    (job,) = dashscope_jobs(dashscope)
    assert job.model == "qwen-image-3.0" and len(job.images) == 1
    assert job.images[0].startswith("data:image/png;base64,")
    assert not any("upload" in name for name in dashscope.counters()["requests_per_endpoint"])


async def test_cancel_cancels_a_queued_dashscope_task_on_the_host_and_says_so_for_a_running_one(session):
    import asyncio

    busy = session.start_emulator("dashscope", latency=1.5, jitter=0.0, max_concurrent=1)
    panel = await make_panel()
    panel.provider.value = "dashscope"
    await panel.wait()
    panel.model.value = "qwen-image"
    await generate(panel, "the first takes the only worker")
    while panel.generate_button.disabled:  # held until the host confirms the first task
        await asyncio.sleep(0.02)
    await generate(panel, "the second waits its turn")
    for _ in range(200):
        if all(run.task_id for run in panel.runs) and busy.counters()["tasks_by_status"].get("RUNNING"):
            break
        await asyncio.sleep(0.02)
    panel.cancel_button.click()
    await panel.wait()
    first, second = panel.runs
    assert second.state == "cancelled" and "the host cancelled it; nothing is billed" in second.cancel_message()
    assert first.state == "cancelled" and "already running" in first.cancel_message()
    assert f"%qimage resume {first.task_id}" in first.cancel_message()
    assert busy.counters()["tasks_by_status"].get("CANCELED") == 1


async def test_the_estimate_shows_beside_generate_and_learns_the_host_s_price(session):
    from qimage_nb.core import _estimate

    session.start_emulator("apimart", latency=0.1, jitter=0.0, price_per_image=0.01)
    panel = await make_panel()
    try:
        panel.prompt.value = "a lighthouse at dusk"
        panel.count.value = panel.count.options[1] if len(panel.count.options) > 1 else panel.count.value
        n = int(panel.count.value)
        assert f"About ${0.006 * n:.3f} a run (the host's price list)" in text_of(panel.hint)
        await generate(panel, "a lighthouse at dusk")
        await panel.wait()
        _estimate._recent.clear()  # the journal is read again at most every few seconds
        panel.prompt.value = "a lighthouse at dawn"
        assert "a run (the last price seen)" in text_of(panel.hint)
        assert f"About ${0.01 * n:.2f}" in text_of(panel.hint)
    finally:
        panel.close()


async def test_auto_in_the_size_field_sends_no_size_and_3_0_picks_one(both, session):
    _, dashscope = both
    panel = await make_panel()
    try:
        panel.provider.value = "dashscope"
        await panel.wait()
        panel.model.value = "qwen-image-3.0"
        panel.free_size.value = "Auto"
        assert "size by the model" in text_of(panel.pixels) and panel.ratio.disabled
        await generate(panel, "a wide panorama of a mountain lake")
        await panel.wait()
        (gen,) = panel.generations
        assert gen.request.size == "auto"
        (job,) = dashscope_jobs(dashscope)
        assert job.size_chosen  # no size reached the host
        assert [im.size for im in panel.images] == [(job.width, job.height)] == [(2560, 1440)]
        panel.free_size.value = ""
        panel.load_request(gen.request)  # Reuse settings on a run the model sized
        assert panel.free_size.value == "auto" and "size by the model" in text_of(panel.pixels)
    finally:
        panel.close()
