"""The magic's faces of issues 12 and 13 through a real InteractiveShell, against both emulators.

Providers (choosing one, its keys, its emulator, its options), what a task costs, queued/running,
the model list, and a submit whose outcome is unknown. Each test asserts what the user sees (the
output area as it ended, printed lines, the one red line) and what the emulator received.
"""

from __future__ import annotations

import re

import pytest
from IPython.core.error import UsageError
from test_magics import (
    _close_session,
    last_html,
    outputs,
    shell,  # noqa: F401  (the fixture)
    user_sees,
    visible,
)

from qimage_nb.emulator import Faults
from qimage_nb.notebook._magics import QImageCellError
from qimage_nb.notebook._session import get_session

NAMES = ("qimages", "ds", "am", "grid", "wild", "lost")


@pytest.fixture
def session(shell):  # noqa: F811
    yield get_session()
    for name in NAMES:
        shell.user_ns.pop(name, None)
    _close_session()


def dashscope_jobs(emulator):
    """What the DashScope emulator received: each generation's parsed request, oldest first."""
    with emulator._state.lock:
        tasks = sorted(emulator._state.tasks.values(), key=lambda t: t.created_mono)
        return [t.request["job"] for t in tasks]


# --- choosing a provider -----------------------------------------------------------------------


def test_emulator_provider_dashscope_runs_the_cell_there_with_its_options(shell, session, capsys):  # noqa: F811
    shell.run_line_magic("qimage", "emulator --provider dashscope --latency 0.2")
    banner = capsys.readouterr().out + visible(outputs(shell)[-1]["text/html"])
    assert "Alibaba Model Studio (DashScope) emulator running at http://127.0.0.1:" in banner
    assert "%qimage login --provider dashscope" in banner
    emulator = session.emulator_for("dashscope")
    assert session.provider().name == "dashscope" and emulator is not None

    shell.run_cell_magic("qimage", "-o ds --seed 7 --size 1024x768 --no-extend --watermark", "a paper boat")
    images = shell.user_ns["ds"]
    assert [im.size for im in images] == [(1024, 768)]
    (job,) = dashscope_jobs(emulator)
    assert (job.seed, job.prompt_extend, job.watermark, job.width, job.height) == (7, False, True, 1024, 768)
    seen = visible(last_html(shell))
    assert "seed 7" in seen and "prompt as written" in seen and "watermark" in seen
    assert "on Alibaba Model Studio (DashScope)" in seen and "from the emulator" in seen
    assert "1024x768 1K" not in seen  # a pixel size has no tier to show


def test_seed_values_make_a_grid_axis_on_dashscope(shell, session):  # noqa: F811
    emulator = session.start_emulator("dashscope", latency=0.1, jitter=0.0)
    session.choose("dashscope")
    shell.run_cell_magic("qimage", "-o grid --seed 1,2 --size 1:1,16:9", "a lantern")
    seen = visible(last_html(shell))
    labels = re.findall(r"standard · (1:1|16:9) · 1K · seed (\d)", seen)
    assert [(s, int(n)) for s, n in dict.fromkeys(labels)] == [("1:1", 1), ("1:1", 2), ("16:9", 1), ("16:9", 2)]
    assert len(shell.user_ns["grid"]) == 4
    assert sorted((j.seed, j.width) for j in dashscope_jobs(emulator)) == [(1, 1024), (1, 1280), (2, 1024), (2, 1280)]


def test_an_option_the_provider_lacks_is_one_line_before_any_request_in_any_cell_of_a_grid(shell, session):  # noqa: F811
    apimart = session.start_emulator("apimart", latency=0.1, jitter=0.0)
    dashscope = session.start_emulator("dashscope", latency=0.1, jitter=0.0)
    # qwen-image-max makes fixed sizes only: the second cell of the grid is refused, the first never sent.
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("qimage", "--provider dashscope --model standard,qwen-image-max --size 1024x768", "a kite")
    assert "qwen-image-max on Alibaba Model Studio (DashScope) makes only" in str(caught.value)
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("qimage", "--provider apimart --seed 3", "a kite")
    assert str(caught.value).startswith("the APIMart API does not support seed")
    assert "dashscope" in str(caught.value)  # where it is supported
    assert dashscope.counters()["api_requests"] == 0 and apimart.counters()["api_requests"] == 0


def test_the_same_cell_on_both_hosts_is_two_generations_never_one_from_the_others_cache(shell, session):  # noqa: F811
    apimart = session.start_emulator("apimart", latency=0.1, jitter=0.0)
    dashscope = session.start_emulator("dashscope", latency=0.1, jitter=0.0)
    shell.run_cell_magic("qimage", "-o am --provider apimart --size 16:9", "a red bicycle")
    shell.run_cell_magic("qimage", "-o ds --provider dashscope --size 16:9", "a red bicycle")
    assert "from cache" not in visible(last_html(shell))
    assert apimart.counters()["submits_accepted"] == 1 and len(dashscope_jobs(dashscope)) == 1
    am, ds = shell.user_ns["am"][0], shell.user_ns["ds"][0]
    assert am.info["origin"] == apimart.base_url and ds.info["origin"] == dashscope.base_url
    # Each host's re-run is served from its own journal entries.
    shell.run_cell_magic("qimage", "-o ds --provider dashscope --size 16:9", "a red bicycle")
    assert "from cache" in visible(last_html(shell)) and len(dashscope_jobs(dashscope)) == 1


def test_provider_from_config_and_from_the_environment(shell, session, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-ds-from-env-5678")
    shell.run_line_magic("qimage", "config")
    printed = capsys.readouterr().out
    # The only provider whose key is set is the one in use; the key itself is never shown.
    assert "provider:    Alibaba Model Studio (DashScope) (dashscope) (the only provider whose key is set" in printed
    assert "key:         set (from $DASHSCOPE_API_KEY)" in printed
    assert "API:         http://127.0.0.1:9/never-the-production-host ($DASHSCOPE_HTTP_BASE_URL)" in printed
    assert "has no balance endpoint" in printed and "sk-ds-from-env" not in printed

    monkeypatch.setenv("QIMAGE_API_KEY", "sk-am-from-env-1234")
    shell.run_line_magic("config", 'QImageMagics.provider = "apimart"')
    shell.run_line_magic("qimage", "config")
    printed = capsys.readouterr().out
    assert "provider:    the APIMart API (apimart) (chosen in this kernel)" in printed
    assert "key:         set (from $QIMAGE_API_KEY)" in printed
    assert "    provider = 'apimart'" in printed and "sk-am-from-env" not in printed

    shell.run_line_magic("config", 'QImageMagics.provider = "nowhere"')
    with pytest.raises(UsageError, match="unknown provider 'nowhere'"):
        shell.run_cell_magic("qimage", "", "a kite")


def test_login_provider_keeps_each_hosts_key_apart_and_never_shows_it(shell, session, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "sk-dashscope-typed-0001")
    shell.run_line_magic("qimage", "login --provider dashscope")
    printed = capsys.readouterr().out
    assert "using Alibaba Model Studio (DashScope) at" in printed
    assert session.provider().name == "dashscope" and session.key_source == "%qimage login (memory only)"
    assert session.key_source_for("apimart") is None
    with pytest.raises(UsageError) as caught:
        shell.run_line_magic("qimage", "login sk-pasted-in-the-cell")
    assert "sk-pasted" not in str(caught.value) and "--provider" in str(caught.value)
    shell.run_line_magic("qimage", "config")
    assert "sk-dashscope-typed" not in capsys.readouterr().out
    # The seed's API still has no key: a cell sent there says how to get one, for that host.
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("qimage", "--provider apimart", "a kite")
    assert "%qimage emulator --provider apimart" in str(caught.value)
    assert "QIMAGE_API_KEY" in str(caught.value)
    shell.run_line_magic("qimage", "logout --provider dashscope")
    assert "forgot the key for Alibaba Model Studio (DashScope)" in capsys.readouterr().out
    assert not session.has_key


# --- costs, queued/running, models -------------------------------------------------------------


def test_wild_statuses_show_as_queued_then_running_and_the_cost_everywhere(shell, session, capsys):  # noqa: F811
    session.start_emulator(latency=1.2, jitter=0.0, faults=Faults(dialect="wild"))
    texts: list[str] = []
    shell.display_pub.hook = lambda data: texts.append(data.get("text/plain", ""))
    try:
        shell.run_cell_magic("qimage", "-o wild", "a lighthouse at dusk")
    finally:
        shell.display_pub.hook = None
    lines = [line for text in texts for line in text.splitlines()]
    assert any(re.match(r"queued( · about \d+ s left)? · task_", line) for line in lines), lines
    assert any(re.match(r"running \d+%", line) for line in lines), lines
    assert not any(re.search(r"\b(submitted|in_progress|pending|processing)\b", line) for line in lines), lines
    done = visible(last_html(shell))
    assert re.search(r"done in \d+ s · \$0\.006 · task_", done), done

    shell.run_line_magic("qimage", "history")
    table = outputs(shell)[-1]["text/plain"]
    header, row = table.splitlines()[:2]
    assert header.split()[-1] == "cost" and row.split()[-1] == "$0.006"
    assert " completed " in row

    # A re-run served from the journal costs nothing: the session total counts the first run only.
    shell.run_cell_magic("qimage", "-o wild", "a lighthouse at dusk")
    assert "$0.006" not in visible(last_html(shell))
    capsys.readouterr()
    shell.run_line_magic("qimage", "config")
    assert "this session: $0.006 for 1 generation " in capsys.readouterr().out


def test_models_lists_the_hosts_models_and_marks_the_documented_ones(shell, session, capsys):  # noqa: F811
    session.start_emulator(latency=0.1, jitter=0.0, faults=Faults(dialect="wild"))
    session.start_emulator("dashscope", latency=0.1, jitter=0.0)
    shell.run_line_magic("qimage", "models")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("models listed by the emulator of the APIMart API (http://127.0.0.1:")
    assert "  * qwen-image-2.0" in printed and "  * qwen-image-2.0-pro" in printed
    assert "    qwen-image-3.0" in printed and "    gpt-image-1" in printed
    shell.run_line_magic("qimage", "models --provider dashscope")
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("Alibaba Model Studio (DashScope) has no model listing; the Qwen Image models it serves: ")
    assert "qwen-image-plus" in line


# --- a submit whose outcome is unknown ---------------------------------------------------------


def test_an_unknown_outcome_is_one_red_line_then_pending_and_resend_get_the_same_task(shell, session, capsys):  # noqa: F811
    emulator = session.start_emulator(latency=0.2, jitter=0.0)
    emulator.set_faults(lose_submit_answers=1, lose_mode="reset")
    result = shell.run_cell("%%qimage -o lost\na fox under the aurora\n")
    assert isinstance(result.error_in_exec, QImageCellError)
    everything = user_sees(shell, capsys)
    assert everything.count("may be billed") == 1, everything  # said once: the red line
    key = re.search(r"%qimage resume --resend (\S+)", everything).group(1)
    assert result.error_in_exec.kind == "SubmitOutcomeUnknown"
    assert "Traceback" not in everything and "lost" not in shell.user_ns

    shell.run_line_magic("qimage", "pending")
    table = outputs(shell)[-1]["text/plain"]
    assert "outcome unknown" in table and f"(no id; key {key})" in table
    assert f"%qimage resume --resend {key}" in table and "TASK_ID" not in table
    capsys.readouterr()
    shell.run_line_magic("qimage", "resume --all")  # never resends behind the user's back
    assert "not resumed: 1 submit whose outcome is unknown" in capsys.readouterr().out
    assert emulator.counters()["submit_attempts"] == 1

    shell.run_line_magic("qimage", f"resume --resend {key} -o lost")
    assert shell.user_ns["lost"][0].info["prompt"] == "a fox under the aurora"
    counters = emulator.counters()
    # The emulator honours keys: the resend got the task the lost answer was about, billed once.
    assert counters["submit_attempts"] == 2 and counters["tasks_billed"] == 1
    shell.run_line_magic("qimage", "pending")
    assert outputs(shell)[-1]["text/plain"] == "no pending tasks"


# --- issue 19.6: the small ones ------------------------------------------------------------------


def test_emulator_stop_stops_the_one_in_use_or_named_and_says_which(shell, session, capsys):  # noqa: F811
    shell.run_line_magic("qimage", "emulator --latency 0.1")
    shell.run_line_magic("qimage", "emulator --provider dashscope --latency 0.1")  # started last, now in use
    apimart_url = session.emulator_for("apimart").base_url
    capsys.readouterr()

    shell.run_line_magic("qimage", "emulator --stop --provider apimart")  # named: not the one in use
    said = capsys.readouterr().out
    assert session.emulator_for("apimart") is None and session.emulator_for("dashscope") is not None
    assert said.startswith(f"stopped the APIMart API emulator (was at {apimart_url})"), said

    shell.run_line_magic("qimage", "emulator --provider apimart --latency 0.1")
    shell.run_line_magic("qimage", "emulator --provider dashscope --latency 0.1")  # in use again
    capsys.readouterr()
    shell.run_line_magic("qimage", "emulator --stop")  # the one in use: DashScope's
    said = capsys.readouterr().out
    assert session.emulator_for("dashscope") is None and session.emulator_for("apimart") is not None
    assert said.startswith("stopped the Alibaba Model Studio (DashScope) emulator"), said

    shell.run_line_magic("qimage", "emulator --stop")  # none in use: says so, and which one runs
    said = capsys.readouterr().out
    assert "the Alibaba Model Studio (DashScope) emulator is not running" in said
    assert "the APIMart API emulator is running (%qimage emulator --stop --provider apimart stops it)" in said
    assert session.emulator_for("apimart") is not None


def test_provider_names_read_naturally_in_every_emulator_message(shell, session, capsys):  # noqa: F811
    shell.run_line_magic("qimage", "emulator --latency 0.1")
    shell.run_line_magic("qimage", "emulator --latency 0.1")
    shell.run_line_magic("qimage", "emulator --stop")
    shell.run_line_magic("qimage", "emulator --stop")
    shell.run_line_magic("qimage", "emulator --provider dashscope --latency 0.1")
    shell.run_line_magic("qimage", "emulator --provider dashscope --latency 0.1")
    said = capsys.readouterr().out + " ".join(visible(o.get("text/html", "")) for o in outputs(shell))
    assert "the APIMart API emulator is already running at" in said
    assert "the Alibaba Model Studio (DashScope) emulator is already running at" in said
    assert not re.search(r"\bthe the\b", said, re.IGNORECASE), said
    assert "the seed's API" not in said
    shell.run_line_magic("qimage", "help")
    assert "seed's API" not in capsys.readouterr().out


def test_config_answers_within_3_s_when_the_balance_never_comes(shell, session, capsys):  # noqa: F811
    import socket
    import threading
    import time

    # A server that takes the connection and never answers: the balance must not hold the settings.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        session.set_base_url(f"http://{host}", "apimart")
        session.login("sk-test-config-0001", "apimart")
        started = time.monotonic()
        shell.run_line_magic("qimage", "config")
        took = time.monotonic() - started
        said = capsys.readouterr().out
        assert took < 3.0, took
        assert f"balance:     no answer from {host} in 2.5 s" in said, said
        assert f"API:         http://{host}" in said and "sk-test-config-0001" not in said
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()
