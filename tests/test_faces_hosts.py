"""fal and Replicate through the faces: the magic in a real InteractiveShell (``--provider``, the
in-kernel emulators, ``%qimage login fal``, one cell unchanged on all four hosts, 6 images as two
fal submits said in the output) and the panel (its Cancel cancels a queued fal task at the host,
which never bills it, and the run's line says the host's answer)."""

from __future__ import annotations

import pytest
from test_magics import _close_session, last_html, outputs, shell, visible  # noqa: F401
from test_panel import by_class, generate, text_of, until

from qimage_nb import Panel
from qimage_nb.notebook import _session
from qimage_nb.notebook._session import get_session

NAMES = ("qimages", "f", "r", "a", "d", "six")


@pytest.fixture
def session(shell):  # noqa: F811
    yield get_session()
    for name in NAMES:
        shell.user_ns.pop(name, None)
    _close_session()


def test_emulator_provider_fal_runs_the_cell_on_its_status_stream(shell, session, capsys):  # noqa: F811
    shell.run_line_magic("qimage", "emulator --provider fal --latency 0.2")
    banner = capsys.readouterr().out + visible(outputs(shell)[-1]["text/html"])
    assert "fal emulator running at http://127.0.0.1:" in banner
    emulator = session.emulator_for("fal")
    assert session.provider().name == "fal"
    shell.run_cell_magic("qimage", "-o f -n 2 --seed 9 --size 16:9", "a paper boat")
    assert [im.size for im in shell.user_ns["f"]] == [(1280, 720)] * 2
    seen = visible(last_html(shell))
    assert "on fal" in seen and "from the emulator" in seen and "seed 9" in seen
    counters = emulator.counters()
    assert counters["streams"] == 1 and counters["polls"] == 0


def test_six_images_on_fal_are_two_submits_said_in_the_output(shell, session):  # noqa: F811
    emulator = session.start_emulator("fal", latency=0.1, jitter=0.0)
    shell.run_cell_magic("qimage", "-o six -n 6 --provider fal", "six lanterns")
    assert len(shell.user_ns["six"]) == 6
    seen = visible(last_html(shell))
    assert "fal makes at most 4 images per request: 6 images are 2 submits (3 + 3)" in seen
    assert emulator.counters()["requests_per_endpoint"]["POST submit"] == 2


def test_the_same_cell_runs_unchanged_on_all_four_hosts(shell, session):  # noqa: F811
    for name in ("apimart", "dashscope", "fal", "replicate"):
        session.start_emulator(name, latency=0.1, jitter=0.0)
    for name, out in (("apimart", "a"), ("dashscope", "d"), ("fal", "f"), ("replicate", "r")):
        shell.run_cell_magic("qimage", f"-o {out} --size 16:9 --provider {name}", "a red kite over the sea")
        assert [im.size for im in shell.user_ns[out]] == [(1280, 720)], name
        assert shell.user_ns[out][0].info["provider"] == name  # the provenance written into the file


def test_login_names_the_host_as_a_word(shell, session, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "fal-key-id:fal-key-secret")
    shell.run_line_magic("qimage", "login fal")
    assert session.provider().name == "fal"
    assert session.key_source_for("fal") == "%qimage login (memory only)"
    assert "fal-key-secret" not in capsys.readouterr().out


@pytest.fixture
async def panel_session():
    _session.reset_session()
    yield _session.get_session()
    for client in _session.get_session().clients():
        await client.aclose()
    _session.reset_session()


async def test_the_panels_cancel_cancels_a_queued_fal_task_at_the_host(panel_session):
    emulator = panel_session.start_emulator("fal", latency=1.0, jitter=0.0, max_concurrent=1)
    panel_session.choose("fal")
    panel = Panel()
    await panel.wait()
    try:
        await generate(panel, "takes the only runner")
        await until(lambda: panel.runs and panel.runs[0].task_id is not None, "first task id")
        await generate(panel, "waits in the queue")
        await until(lambda: len(panel.runs) == 2 and panel.runs[1].task_id is not None, "second task id")
        queued = panel.runs[1]
        queued.cancel()
        await until(lambda: queued.host_cancel is not None, "the host's answer")
        assert "CANCELLATION_REQUESTED" in queued.host_cancel and "not billed" in queued.host_cancel
        await until(lambda: panel.runs[0].state == "done", "the first run done", timeout=10)
        statuses = " ".join(text_of(s) for s in by_class(panel, "qimage-status"))
        assert "cancelled at the host" in statuses
        counters = emulator.counters()
        assert counters["cancels"] == {"queued": 1} and counters["requests_billed"] == 1
    finally:
        panel.close()


def test_a_grid_of_hosts_draws_one_labelled_tile_per_host(shell, session, capsys):  # noqa: F811
    emulators = {name: session.start_emulator(name, latency=0.1, jitter=0.0)
                 for name in ("apimart", "dashscope", "fal", "replicate")}
    shell.run_cell_magic("qimage", "-o grid --size 16:9 --provider apimart,dashscope,fal,replicate",
                         "a red kite over the sea")
    images = shell.user_ns["grid"]
    assert [im.info["provider"] for im in images] == ["apimart", "dashscope", "fal", "replicate"]
    seen = visible(last_html(shell))
    for label in ("the APIMart API", "Alibaba Model Studio (DashScope)", "fal · est. $0.035/image", "Replicate"):
        assert label in seen, label
    assert seen.count("done in") == 4  # each tile's time from submit to image
    assert "4 hosts x 1 combination x 1 -> grid" in seen
    for emulator in emulators.values():
        assert emulator.counters()["api_requests"] >= 1


def test_a_grid_of_hosts_checks_every_host_before_sending_anything(shell, session):  # noqa: F811
    emulators = [session.start_emulator(name, latency=0.1, jitter=0.0) for name in ("dashscope", "replicate")]
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match=r"Replicate: .*takes an aspect ratio.*nothing was sent to any host"):
        shell.run_cell_magic("qimage", "--size 1024x768 --provider dashscope,replicate", "a kite")
    assert [e.counters()["api_requests"] for e in emulators] == [0, 0]


def test_an_interrupt_cancels_the_cells_unfinished_tasks_at_the_host(capsys):
    """What the magic does after KeyboardInterrupt on fal: each unfinished task of the cell is
    cancelled at the host and its answer printed (the queued one is never billed)."""
    import time

    from qimage_nb import Client
    from qimage_nb.core._polling import PollPolicy
    from qimage_nb.emulator.fal import FalEmulator
    from qimage_nb.notebook._host_cancel import cancel_at_host

    with FalEmulator(latency=0.8, jitter=0.0, max_concurrent=1) as single:
        client = Client(api_key=single.api_key, base_url=single.base_url, provider="fal",
                        poll=PollPolicy.for_latency(single.latency))
        since = time.time()
        first = client.submit("running")
        client.submit("queued")
        while client.get_task(first).status != "processing":
            time.sleep(0.02)
        cancel_at_host(client._async, since)
        printed = capsys.readouterr().out
        counters = single.counters()
    assert printed.count("fal answered CANCELLATION_REQUESTED") == 2
    assert "never started, so it is not billed" in printed and "may still bill it" in printed
    assert counters["cancels"] == {"running": 1, "queued": 1}


def test_an_interrupt_cancels_only_this_cells_tasks_at_the_host(capsys):
    import time
    from types import SimpleNamespace

    from qimage_nb.notebook._host_cancel import cancel_at_host

    now = time.time()
    entries = [  # one journal shared with another notebook's cell
        SimpleNamespace(task_id="a:b:mine", label="%%qimage -o kites part 1/2", created_at=now),
        SimpleNamespace(task_id="a:b:theirs", label="%%qimage -o boats", created_at=now),
        SimpleNamespace(task_id="a:b:older", label="%%qimage -o kites", created_at=now - 3600),
    ]
    cancelled = []

    async def cancel(task_id):
        cancelled.append(task_id)
        return SimpleNamespace(raw={"cancel_note": "cancelled"}, phase="cancelled")

    client = SimpleNamespace(pending=lambda: entries, cancel=cancel, provider=SimpleNamespace(title="fal"))
    cancel_at_host(client, now - 5, "%%qimage -o kites")
    assert cancelled == ["a:b:mine"]
    assert "a:b:mine: cancelled" in capsys.readouterr().out
