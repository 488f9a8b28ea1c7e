"""Bad input everywhere: the client, the magic and the panel each refuse it with one clear line.

Every case asserts what the user sees (one line, no traceback, naming the problem and what to do)
and what the server saw: nothing. The emulator's request counter stays at zero and the journal holds
no pending entry, so a typo can never cost money or leave a phantom "resume me" behind.
"""

from __future__ import annotations

import asyncio
import math
import re

import pytest
from IPython.core.error import UsageError
from PIL import Image

from qimage_nb import AsyncClient, Client
from qimage_nb._exceptions import ValidationError
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.journal._store import Store
from qimage_nb.notebook import _session

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_cap=0.05)
SEEN: dict[str, set[str]] = {"client": set(), "magic": set(), "panel": set()}


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0.1, jitter=0.02) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu):
    emu.reset()
    yield


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "home")
    yield s
    s.close()


@pytest.fixture
async def client(emu, store):
    async with AsyncClient(emu.api_key, emu.base_url, store=store, retry=FAST_RETRY, poll=PollPolicy.for_latency(emu.latency)) as c:
        yield c


def one_clear_line(message: str, says: str) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert "Traceback" not in message and "File \"" not in message, message
    assert 10 < len(message) < 400, message
    assert re.search(says, message, re.IGNORECASE), (says, message)


def sent_nothing(emu, store: Store | None = None, *, listing: bool = False) -> None:
    """Nothing sent, nothing journaled; ``listing``: except the one read of the API's model list
    that tells a model the host lists from a typo (API.md 7.7)."""
    counters = emu.counters()
    assert counters["api_requests"] == (1 if listing else 0), counters
    assert counters["submit_attempts"] == 0
    assert counters["uploads"] == 0 and counters["cdn_hits"] == 0
    if store is not None:
        assert store.pending() == []
        assert store.history() == []


# --- the client: constructor ----------------------------------------------------------------

CONSTRUCTOR = [
    ("key-not-text", {"api_key": 12345}, r"api_key must be a string"),
    ("key-header-injection", {"api_key": "sk-abc\r\nX-Evil: 1"}, r"control characters.*paste the key"),
    ("url-ftp", {"base_url": "ftp://api.example.com"}, r"not an http\(s\) URL.*use an https URL"),
    ("url-no-scheme", {"base_url": "api.example.com"}, r"not an http\(s\) URL.*https://"),
    ("url-blank", {"base_url": "   "}, r"must be an http\(s\) URL"),
    ("url-javascript", {"base_url": "javascript:alert(1)"}, r"not an http\(s\) URL"),
    ("url-plain-http-remote", {"base_url": "http://api.example.com"}, r"unencrypted.*use https"),
    ("url-fake-loopback", {"base_url": "http://localhost.evil.example"}, r"unencrypted"),
    ("url-credentials", {"base_url": "https://me:hunter2@api.example.com"}, r"credentials.*api_key"),
    ("url-query", {"base_url": "https://api.example.com/?x=1"}, r"must not carry a query"),
    ("timeout-zero", {"timeout": 0}, r"timeout must be a positive number"),
    ("timeout-text", {"timeout": "30"}, r"timeout must be a positive number"),
    ("timeout-nan", {"timeout": math.nan}, r"timeout must be a positive number"),
    ("wait-timeout-infinite", {"wait_timeout": math.inf}, r"wait_timeout must be a positive number"),
    ("download-concurrency-zero", {"download_concurrency": 0}, r"download_concurrency must be a whole number"),
]


@pytest.mark.parametrize(("case", "kwargs", "says"), CONSTRUCTOR, ids=[c[0] for c in CONSTRUCTOR])
@pytest.mark.parametrize("cls", [AsyncClient, Client])
def test_constructor_refuses_bad_settings(emu, cls, case, kwargs, says):
    options = {"api_key": "sk-ok", "base_url": emu.base_url, **kwargs}
    with pytest.raises(ValidationError) as info:
        cls(**options)
    assert isinstance(info.value, ValueError)
    one_clear_line(str(info.value), says)
    assert "hunter2" not in str(info.value)  # credentials in a URL are never echoed
    sent_nothing(emu)
    SEEN["client"].add(f"constructor:{case}")


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("QIMAGE_BASE_URL", "http://api.example.com", r"unencrypted"),
        ("QIMAGE_BASE_URL", "file:///etc/passwd", r"not an http\(s\) URL"),
        ("QIMAGE_API_KEY", "sk-abc\nsecond line", r"control characters"),
    ],
)
def test_environment_settings_are_checked_like_arguments(emu, monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    if name == "QIMAGE_API_KEY":
        monkeypatch.setenv("QIMAGE_BASE_URL", emu.base_url)
    with pytest.raises(ValidationError) as info:
        AsyncClient()
    one_clear_line(str(info.value), says)
    assert "sk-abc" not in str(info.value)
    sent_nothing(emu)
    SEEN["client"].add(f"env:{name}={value[:12]}")


def test_a_key_passed_where_the_url_goes_is_never_echoed(emu):
    with pytest.raises(ValidationError) as info:
        AsyncClient("https://api.example.com", "sk-SWAPPED-0123456789")  # arguments swapped
    one_clear_line(str(info.value), r"not an http\(s\) URL")
    assert "sk-SWAPPED" not in str(info.value)
    SEEN["client"].add("constructor:swapped-arguments")


# --- the client: generate, generate_many, upload, resume ------------------------------------

GENERATE = [
    ("prompt-none", (None,), {}, r"prompt is required"),
    ("prompt-int", (42,), {}, r"prompt must be text"),
    ("prompt-bytes", (b"a cat",), {}, r"prompt must be text"),
    ("prompt-whitespace", (" \t\n  ",), {}, r"prompt is empty.*describe"),
    ("n-text", ("x",), {"n": "2"}, r"n must be a whole number from 1 to 6"),
    ("n-float", ("x",), {"n": 2.0}, r"n must be a whole number"),
    ("n-bool", ("x",), {"n": True}, r"n must be a whole number"),
    ("n-negative", ("x",), {"n": -1}, r"1 to 6"),
    ("size-word", ("x",), {"size": "square"}, r"size 'square' is not supported.*1:1"),
    ("size-none", ("x",), {"size": None}, r"size must be a ratio"),
    ("resolution-int", ("x",), {"resolution": 1}, r"resolution must be one of 1K, 2K"),
    ("model-typo", ("x",), {"model": "qwen-image-2"}, r"did you mean 'qwen-image-2.0"),
    ("model-other-vendor", ("x",), {"model": "dall-e-3"}, r"model 'dall-e-3' is not served by the APIMart API; known"),
    ("negative-int", ("x",), {"negative_prompt": 7}, r"negative_prompt must be text"),
    ("refs-bare-string", ("x",), {"image_urls": "https://e.org/a.png"}, r"list of 1 to 3"),
    ("refs-not-iterable", ("x",), {"image_urls": 5}, r"list of 1 to 3"),
    ("ref-file-uri", ("x",), {"image_urls": ["file:///etc/passwd"]}, r"local path.*upload"),
    ("ref-windows-path", ("x",), {"image_urls": ["C:\\Users\\me\\cat.png"]}, r"local path.*upload"),
    ("ref-javascript", ("x",), {"image_urls": ["javascript:alert(1)"]}, r"javascript: scheme.*http\(s\)"),
    ("ref-data-uppercase", ("x",), {"image_urls": ["DATA:image/png;base64,AAAA"]}, r"data: URI"),
    ("ref-no-host", ("x",), {"image_urls": ["https://"]}, r"has no host"),
    ("ref-none", ("x",), {"image_urls": [None]}, r"image_urls\[0\] is a NoneType"),
    ("ref-blank", ("x",), {"image_urls": ["  "]}, r"image_urls\[0\] is empty"),
    ("refs-five", ("x",), {"image_urls": [f"https://e.org/{i}.png" for i in range(5)]}, r"5 references.*1 to 3"),
    ("timeout-zero", ("x",), {"timeout": 0}, r"timeout must be a positive number"),
    ("timeout-text", ("x",), {"timeout": "10"}, r"timeout must be a positive number"),
    ("timeout-infinite", ("x",), {"timeout": math.inf}, r"timeout must be a positive number"),
]


@pytest.mark.parametrize(("case", "args", "kwargs", "says"), GENERATE, ids=[c[0] for c in GENERATE])
async def test_generate_refuses_bad_input_before_any_request(client, emu, store, case, args, kwargs, says):
    with pytest.raises(ValidationError) as info:
        await client.generate(*args, **kwargs)
    one_clear_line(str(info.value), says)
    sent_nothing(emu, store, listing=case.startswith("model-"))
    SEEN["client"].add(f"generate:{case}")


BATCHES = [
    ("a-bare-prompt", "a cat", {}, r"list of requests.*wrap one prompt in a list"),
    ("none", None, {}, r"list of requests"),
    ("one-mapping", {"prompt": "a cat"}, {}, r"list of requests"),
    ("item-int", ["ok", 42], {}, r"request 1 is a int"),
    ("item-unknown-field", [{"prompt": "x", "colour": "red"}], {}, r"request 0: .*colour"),
    ("item-bad-ref", ["ok", {"prompt": "x", "image_urls": ["ftp://e.org/a.png"]}], {}, r"request 1: .*ftp"),
    ("item-empty-last", ["ok", "fine", "  "], {}, r"request 2: prompt is empty"),
    ("concurrency-zero", ["ok"], {"concurrency": 0}, r"concurrency must be a whole number"),
    ("concurrency-float", ["ok"], {"concurrency": 2.5}, r"concurrency must be a whole number"),
]


@pytest.mark.parametrize(("case", "requests", "kwargs", "says"), BATCHES, ids=[c[0] for c in BATCHES])
async def test_generate_many_refuses_the_whole_batch_before_any_request(client, emu, store, case, requests, kwargs, says):
    with pytest.raises(ValidationError) as info:
        await client.generate_many(requests, **kwargs)
    one_clear_line(str(info.value), says)
    sent_nothing(emu, store)
    assert emu.counters()["submits_accepted"] == 0  # "a cat" must not become five one-letter tasks
    SEEN["client"].add(f"generate_many:{case}")


def _upload_cases(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("definitely not a picture")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    return [
        ("missing-file", tmp_path / "nope.png", r"nope\.png"),
        ("folder", folder, r"folder\.png"),
        ("text-named-png", text, r"not an image"),
        ("bytes-not-image", b"GIF89a-but-not-really", r"not an image"),
        ("int", 123, r"int"),
    ]


async def test_upload_refuses_what_is_not_an_image_before_any_request(client, emu, store, tmp_path):
    for case, material, says in _upload_cases(tmp_path):
        with pytest.raises(ValidationError) as info:
            await client.upload(material)
        one_clear_line(str(info.value), says)
        SEEN["client"].add(f"upload:{case}")
    sent_nothing(emu, store)


RESUMES = [
    ("empty", "", r"needs a task id"),
    ("none", None, r"needs a task id"),
    ("sentence", "my cat picture", r"is not a task id.*%qimage history"),
    ("path-traversal", "../../v1/balance", r"is not a task id"),
    ("url", "https://api.example.com/v1/tasks/task_01", r"is not a task id"),
    ("control-char", "task_01\x00abc", r"is not a task id"),
    ("dot-dot", "..", r"is not a task id"),
    ("huge", "t" * 300, r"is not a task id"),
]


@pytest.mark.parametrize(("case", "task_id", "says"), RESUMES, ids=[c[0] for c in RESUMES])
async def test_resume_and_get_task_refuse_what_cannot_be_a_task_id(client, emu, store, case, task_id, says):
    with pytest.raises(ValidationError) as info:
        await client.resume(task_id)
    one_clear_line(str(info.value), says)
    with pytest.raises(ValidationError):
        await client.get_task(task_id)
    sent_nothing(emu, store)
    SEEN["client"].add(f"resume:{case}")


async def test_resuming_an_unknown_task_leaves_no_phantom_in_the_journal(client, emu, store):
    """A well-formed id the server does not know: one request, a typed 404, and nothing pending."""
    from qimage_nb._exceptions import NotFoundError

    with pytest.raises(NotFoundError) as info:
        await client.resume("task_01NOSUCHTASK")
    one_clear_line(str(info.value), r"unknown or expired task")
    assert info.value.task_id == "task_01NOSUCHTASK"
    assert client.pending() == []  # `%qimage resume --all` must not ask about it forever
    assert emu.counters()["submit_attempts"] == 0


# --- the magic -------------------------------------------------------------------------------


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    from qimage_nb.notebook._magics import QImageMagics

    sh = InteractiveShell.instance()
    sh.config.pop("QImageMagics", None)
    sh.register_magics(QImageMagics)
    yield sh
    sh.config.pop("QImageMagics", None)
    sh.user_ns.pop("qimages", None)


@pytest.fixture
def session_emu(shell):
    from qimage_nb.core._sync import run_sync

    session = _session.get_session()
    emulator = session.start_emulator(latency=0.1, jitter=0.02)
    yield emulator
    if session._client is not None:
        run_sync(session._client.aclose())
    _session.reset_session()


MAGIC_CELLS = [
    ("empty-cell", "", "", r"cell body is empty"),
    ("size-word", "--size square", "a cat", r"square"),
    ("n-float", "-n 2.5", "a cat", r"invalid int"),
    ("timeout-zero", "--timeout 0", "a cat", r"--timeout 0"),
    ("timeout-infinite", "--timeout inf", "a cat", r"--timeout inf"),
    ("timeout-nan", "--timeout nan", "a cat", r"--timeout nan"),
    ("timeout-missing-value", "--timeout", "a cat", r"--timeout"),
    ("grid-with-a-bad-model", "--model standard,dall-e", "a cat", r"dall-e"),
    ("grid-with-a-bad-size", "--size 1:1,7:5", "a cat", r"7:5"),
    ("negative-too-long", "--negative '" + "n" * 501 + "'", "a cat", r"--negative: .*501"),
    ("ref-data-uri", "--ref data:image/png;base64,AAAA", "a cat", r"data: URI.*upload"),
    ("ref-javascript", "--ref javascript:alert(1)", "a cat", r"javascript: scheme"),
    ("ref-file-uri", "--ref file:///etc/passwd", "a cat", r"local path"),
    ("ref-home-missing", "--ref ~/definitely_missing_qimage.png", "a cat", r"no such file"),
    ("output-with-space", "-o 'my images'", "a cat", r"not a Python variable name"),
]


@pytest.mark.parametrize(("case", "line", "body", "says"), MAGIC_CELLS, ids=[c[0] for c in MAGIC_CELLS])
def test_cell_magic_refuses_bad_input_with_one_line(shell, session_emu, case, line, body, says):
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("qimage", line, body)
    one_clear_line(str(info.value), says)
    # an unknown model is looked up in the API's model list (one GET), nothing more
    sent_nothing(session_emu, _session.get_session().client().store, listing=case.endswith("bad-model"))
    assert "qimages" not in shell.user_ns
    SEEN["magic"].add(f"cell:{case}")


MAGIC_LINES = [
    ("resume-sentence", 'resume "my cat picture"', r"is not a task id"),
    ("resume-id-and-all", "resume task_01X --all", r"not both"),
    ("resume-bad-output", "resume task_01X -o 9lives", r"not a Python variable name"),
    ("history-zero", "history -n 0", r"at least 1"),
    ("login-with-key-in-the-cell", "login sk-TYPED-IN-THE-CELL", r"takes no arguments"),
    ("unknown-subcommand", "generate a cat", r"unknown subcommand 'generate'"),
]


@pytest.mark.parametrize(("case", "line", "says"), MAGIC_LINES, ids=[c[0] for c in MAGIC_LINES])
def test_line_magic_refuses_bad_input_with_one_line(shell, session_emu, case, line, says):
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("qimage", line)
    one_clear_line(str(info.value), says)
    assert "sk-TYPED" not in str(info.value)
    sent_nothing(session_emu, _session.get_session().client().store)
    SEEN["magic"].add(f"line:{case}")


MAGIC_CONFIG = [
    ("size-blank", 'QImageMagics.size = "  "', r"QImageMagics\.size"),
    ("n-zero", "QImageMagics.n = 0", r"QImageMagics\.n"),
    ("thumb-px-huge", "QImageMagics.thumb_px = 100000", r"32 to 1024.*QImageMagics\.thumb_px"),
    ("output-keyword", 'QImageMagics.output = "import"', r"QImageMagics\.output"),
    ("timeout-zero", "QImageMagics.timeout = 0.0", r"QImageMagics\.timeout"),
    ("timeout-infinite", 'QImageMagics.timeout = float("inf")', r"QImageMagics\.timeout"),
    ("concurrency-huge", "QImageMagics.concurrency = 1000", r"1 to 64.*QImageMagics\.concurrency"),
    ("model-other-vendor", 'QImageMagics.model = "midjourney"', r"QImageMagics\.model"),
]


@pytest.mark.parametrize(("case", "setting", "says"), MAGIC_CONFIG, ids=[c[0] for c in MAGIC_CONFIG])
def test_a_broken_config_value_is_one_line_naming_the_setting(shell, session_emu, case, setting, says):
    shell.run_line_magic("config", setting)
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("qimage", "", "a kite")
    one_clear_line(str(info.value), says)
    assert "fix it or pass the option" in str(info.value)
    sent_nothing(session_emu, _session.get_session().client().store, listing=case.startswith("model-"))
    SEEN["magic"].add(f"config:{case}")


def test_a_bad_input_error_renders_as_one_line_in_a_real_cell(shell, session_emu, capsys):
    """What the user sees in the cell: IPython prints UsageError as one line, never a traceback."""
    result = shell.run_cell("%%qimage --size square\na cat")
    assert not result.success
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "UsageError" in text and "square" in text
    assert "Traceback" not in text
    sent_nothing(session_emu)


# --- the panel -------------------------------------------------------------------------------


def _text(widget) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", " ", widget.value)).strip()


@pytest.fixture
async def panel(client, tmp_path):
    from qimage_nb import Panel

    p = Panel(client=client, folder=tmp_path / "saved")
    await p.wait()  # the balance read at start-up
    yield p
    p.cancel()
    await p.wait()
    p.close()


def _file(name: str, data: bytes) -> dict:
    """One FileUpload entry, as the front end sends it."""
    import datetime

    return {"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
            "last_modified": datetime.datetime.now(datetime.timezone.utc)}


def _panel_error(panel) -> str:
    assert panel.error.layout.display != "none", "no error line is shown"
    return _text(panel.error)


PANEL_REFS = [
    ("ref-data-uri", "data:image/png;base64,AAAA", r"data: URI"),
    ("ref-javascript", "javascript:alert(1)", r"javascript: scheme"),
    ("ref-file-uri", "file:///etc/passwd", r"local path"),
    ("ref-relative-path", "pics/cat.png", r"local path"),
    ("ref-empty", "   ", r"type or paste a public http\(s\) image URL"),
]


async def test_panel_refuses_bad_inputs_with_an_error_line_and_sends_nothing(panel, emu, store):
    baseline = emu.counters()["api_requests"]  # the start-up balance read

    # prompts Generate cannot send
    for case, prompt in (("empty", ""), ("whitespace", " \n\t "), ("too-long", "p" * 900)):
        panel.prompt.value = prompt
        assert panel.generate_button.disabled, case
        panel.generate_button.click()
        SEEN["panel"].add(f"prompt:{case}")
    one_clear_line(_panel_error(panel), r"prompt is 900 characters.*shorten it by 100")

    panel.prompt.value = "a fine prompt"
    assert not panel.generate_button.disabled
    panel.negative.value = "n" * 640
    assert panel.generate_button.disabled
    one_clear_line(_panel_error(panel), r"negative_prompt is 640 characters")
    SEEN["panel"].add("negative:too-long")
    panel.negative.value = ""

    # references the API cannot take
    for case, url, says in PANEL_REFS:
        panel.clear_error()
        panel.ref_url.value = url
        panel.ref_add_button.click()
        one_clear_line(_panel_error(panel), says)
        assert panel.references == []
        SEEN["panel"].add(case)

    # a fourth reference
    for i in range(3):
        panel.add_reference(f"https://img.example/{i}.png")
    panel.ref_url.value = "https://img.example/3.png"
    panel.ref_add_button.click()
    one_clear_line(_panel_error(panel), r"at most 3 references.*remove one")
    assert len(panel.references) == 3
    SEEN["panel"].add("ref:fourth")

    await panel.wait()
    assert emu.counters()["api_requests"] == baseline
    assert store.pending() == [] and panel.runs == []


async def test_panel_upload_of_a_file_that_is_not_an_image_sends_nothing(panel, emu, store):
    baseline = emu.counters()["api_requests"]
    panel.uploader.value = (_file("notes.png", b"not a png"),)
    await panel.wait()
    for _ in range(100):  # the upload runs as a task on this loop: let it finish
        if not panel._uploading:
            break
        await asyncio.sleep(0.01)
    one_clear_line(_panel_error(panel), r"not an image")
    assert panel.references == [] and panel.uploader.value == ()
    counters = emu.counters()
    assert counters["api_requests"] == baseline and counters["uploads"] == 0
    assert store.pending() == []
    SEEN["panel"].add("upload:not-an-image")


async def test_panel_upload_of_a_real_image_still_works(panel, emu, tmp_path):
    """The control for the test above: the same path with an image does upload."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, "PNG")
    data = buffer.getvalue()
    panel.uploader.value = (_file("red.png", data),)
    for _ in range(500):
        if panel.references:
            break
        await asyncio.sleep(0.01)
    assert len(panel.references) == 1 and emu.counters()["uploads"] == 1


def test_zz_at_least_thirty_distinct_bad_inputs_were_refused():
    """Runs last in this file: counts the distinct bad inputs the tests above refused."""
    total = sum(len(v) for v in SEEN.values())
    if total == 0:
        pytest.skip("run with the rest of this file")
    assert total >= 30, SEEN
    assert all(SEEN[face] for face in ("client", "magic", "panel")), SEEN
