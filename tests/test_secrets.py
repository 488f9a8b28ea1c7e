"""The API key, hunted everywhere it could leak.

A distinctive key (``sk-LEAKCHECK-<uuid>``) goes through full runs (retries, failures, a server that
echoes the key back, the magic, the panel, a real kernel) and is then searched for in everything a
user could see or keep: outputs, the saved notebook and its widget state, reprs, exception messages
and tracebacks, log records, the journal and every file under QIMAGE_HOME, and the process
environment. On the wire it must reach the API origin only: never the CDN (even through a
redirect), never a host an API redirect points to, never plain http to a remote host.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import traceback
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image

from qimage_nb import AsyncClient, Client
from qimage_nb._exceptions import APIError, QImageError, ValidationError
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.journal._store import Store
from qimage_nb.notebook import _session

KEY = f"sk-LEAKCHECK-{uuid.uuid4()}"
FAST_RETRY = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_cap=0.05)
FAST_POLL = PollPolicy(floor=0.02, ceiling=0.2, first=0.05)


# --- where to look ---------------------------------------------------------------------------


class Records(logging.Handler):
    """Every log record of every logger, formatted with its traceback if any."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs():
    root = logging.getLogger()
    handler = Records()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # httpx and httpcore log at DEBUG too: watch them, not only our own logger
    touched = {name: logging.getLogger(name).level for name in ("qimage_nb", "httpx", "httpcore")}
    for name in touched:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(saved)
    for name, level in touched.items():
        logging.getLogger(name).setLevel(level)


def files_holding(root: Path, needle: bytes = KEY.encode()) -> list[Path]:
    """Every file under root whose bytes contain the needle (SQLite, WAL, images, sidecars...)."""
    return [p for p in Path(root).rglob("*") if p.is_file() and needle in p.read_bytes()]


def everything_about(exc: BaseException) -> str:
    """What a user could ever see of an exception: message, repr, attributes, full chained traceback."""
    parts = [str(exc), repr(exc), repr(vars(exc)), "".join(traceback.format_exception(exc))]
    return "\n".join(parts)


def assert_keyless(*texts: str) -> None:
    for text in texts:
        assert KEY not in text, text[:2000]


# --- a server that echoes the key back --------------------------------------------------------

PNG = io.BytesIO()
Image.new("RGB", (1024, 1024), (10, 90, 200)).save(PNG, "PNG")
PNG_BYTES = PNG.getvalue()


def echoing_server(where: str, seen: list[httpx.Request]):
    """A MockTransport handler for api.example.com / cdn.example.net that puts the key it received
    (from the Authorization header) in one hostile place of its answers."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        echoed = request.headers.get("authorization", "").removeprefix("Bearer ")
        path = request.url.path
        if request.url.host == "cdn.example.net":
            return httpx.Response(200, content=PNG_BYTES, headers={"content-type": "image/png"})
        if path == "/v1/images/generations":
            if where == "401":
                return httpx.Response(401, json={"error": {"code": 401, "message": f"Invalid API key {echoed}",
                                                           "type": "authentication_error"}})
            if where == "500":
                return httpx.Response(500, json={"error": {"message": f"upstream choked on {echoed}"}})
            if where == "429":
                return httpx.Response(429, headers={"retry-after": "9999"},
                                      json={"error": {"message": f"slow down, {echoed}"}})
            if where == "html":
                return httpx.Response(502, headers={"content-type": "text/html"},
                                      text=f"<html><title>Bad gateway for {echoed}</title></html>")
            if where == "200-code":
                return httpx.Response(200, json={"code": 401, "message": f"key {echoed} is not valid"})
            if where == "200-no-id":
                return httpx.Response(200, json={"code": 200, "data": {"echo": echoed}})
            if where == "text":
                return httpx.Response(400, text=f"bad request from {echoed}")
            return httpx.Response(200, json={"code": 200, "data": [{"status": "submitted", "task_id": "task_01ECHO"}]})
        if path.startswith("/v1/tasks/"):
            if where == "failed-task":
                return httpx.Response(200, json={"code": 200, "data": {
                    "id": "task_01ECHO", "status": "failed",
                    "error": {"code": 400, "message": f"refused for key {echoed}", "type": "x"}}})
            if where == "status":
                return httpx.Response(200, json={"code": 200, "data": {"id": "task_01ECHO", "status": echoed}})
            return httpx.Response(200, json={"code": 200, "data": {
                "id": "task_01ECHO", "status": "completed", "progress": 100, "note": echoed,
                "result": {"images": [{"url": ["https://cdn.example.net/a/0.png"]}]}}})
        return httpx.Response(404)

    return handler


ECHOES = ["401", "500", "429", "html", "200-code", "200-no-id", "text", "failed-task", "status"]


@pytest.mark.parametrize("where", ECHOES)
async def test_a_server_that_echoes_the_key_never_gets_it_shown_logged_or_kept(where, tmp_path, logs):
    seen: list[httpx.Request] = []
    updates = []
    store = Store(tmp_path / "home")
    client = AsyncClient(KEY, "https://api.example.com", transport=httpx.MockTransport(echoing_server(where, seen)),
                         store=store, retry=FAST_RETRY, poll=FAST_POLL)
    async with client:
        with pytest.raises(QImageError) as info:
            # a status word that is the key reads as "still running" (API.md 7.2) until the deadline
            await client.generate("echo chamber", on_update=updates.append, timeout=0.5)
        assert seen, "the server was never asked"
        assert_keyless(everything_about(info.value), *logs.lines, *map(repr, updates))
        assert "\n" not in str(info.value)
        assert "***" in str(info.value) or where in ("failed-task", "status", "text") or "HTML" in str(info.value)
        assert_keyless(*(repr(job) for job in store.history()))
    store.close()
    assert files_holding(tmp_path) == []


async def test_a_completed_answer_that_echoes_the_key_is_kept_without_it(tmp_path, logs):
    seen: list[httpx.Request] = []
    store = Store(tmp_path / "home")
    async with AsyncClient(KEY, "https://api.example.com", transport=httpx.MockTransport(echoing_server("ok", seen)),
                           store=store, retry=FAST_RETRY, poll=FAST_POLL) as client:
        generation = await client.generate("echo in an unknown field", n=1)
        assert generation.ok
        assert_keyless(repr(generation), repr(generation.images[0].info), *logs.lines)
    store.close()
    assert files_holding(tmp_path) == []


async def test_a_transport_error_that_quotes_the_key_is_redacted(tmp_path, logs):
    def handler(request):
        raise httpx.ConnectError(f"proxy refused {request.headers['authorization']}", request=request)

    store = Store(tmp_path / "home")
    async with AsyncClient(KEY, "https://api.example.com", transport=httpx.MockTransport(handler),
                           store=store, retry=FAST_RETRY) as client:
        with pytest.raises(QImageError) as info:
            await client.balance()
    assert "network error: could not connect to api.example.com" in str(info.value)
    assert_keyless(everything_about(info.value), *logs.lines)
    store.close()
    assert files_holding(tmp_path) == []


# --- reprs -----------------------------------------------------------------------------------


async def test_no_repr_shows_the_key(tmp_path, monkeypatch):
    emu = Emulator(api_key=KEY, latency=0.05, jitter=0.0)
    updates = []
    store = Store(tmp_path / "home")
    client = AsyncClient(KEY, emu.in_process_base_url, transport=emu.transport(), store=store,
                         retry=FAST_RETRY, poll=FAST_POLL)
    async with client:
        generation = await client.generate("reprs", n=2, on_update=updates.append)
        failure = None
        try:
            await client.generate("FAIL_MODERATION reprs")
        except QImageError as exc:
            failure = exc
    assert failure is not None and updates
    monkeypatch.setenv("QIMAGE_API_KEY", KEY)
    monkeypatch.setenv("QIMAGE_BASE_URL", "https://api.example.com")
    sync = Client()
    session = _session.Session()
    session.login(KEY)
    shown = [
        repr(client), str(client), repr(sync), repr(session), repr(vars(session)), repr(session.describe()),
        repr(session.client()), repr(generation), repr(generation.images), repr(generation.request),
        *map(repr, updates), *(repr(job) for job in store.history()), repr(store),
        everything_about(failure), repr(client._key), str(client._key),
    ]
    assert_keyless(*shown)
    assert session.has_key and sync.aio.has_key  # the key is there, only never shown
    store.close()


def test_key_errors_never_echo_what_was_typed():
    for typed in (f"{KEY}\nX-Evil: 1", f"Bearer {KEY}", f"{KEY} extra", f"{KEY}\x00"):
        with pytest.raises(ValidationError) as info:
            AsyncClient(typed, "https://api.example.com")
        assert_keyless(everything_about(info.value))
    with pytest.raises(ValidationError) as info:
        AsyncClient(base_url=f"https://{KEY}@api.example.com")  # the key pasted into the URL
    assert_keyless(everything_about(info.value))


# --- logs through a full run with retries ----------------------------------------------------


async def test_a_full_run_with_retries_logs_no_key(tmp_path, logs):
    with Emulator(api_key=KEY, latency=0.1, jitter=0.05, seed=3) as emu:
        store = Store(tmp_path / "home")
        async with AsyncClient(KEY, emu.base_url, store=store, retry=RetryPolicy(max_attempts=8, backoff_base=0.02,
                               backoff_cap=0.1), poll=FAST_POLL) as client:
            await client.generate("first: keys are honoured here, so a lost answer is resent")
            emu.set_faults(rate_limit_submits=2, retry_after=0.02, poll_fault_rate=0.4,
                           poll_fault_kinds=("500", "503", "html502", "429", "reset"), lose_submit_answers=1,
                           cdn_truncate=1, malformed_json=1, unknown_status=1)
            results = await client.generate_many([f"logged {i}" for i in range(6)] + ["FAIL_MODERATION"],
                                                 concurrency=4)
            url = await client.upload(PNG_BYTES)
            await client.generate("with a reference", image_urls=[url])
        counters = emu.counters()
    assert sum(g.ok for g in results) == 6
    ours = [line for line in logs.lines if line.startswith("qimage_nb")]
    assert len(ours) >= 3, "the retries should have been logged"  # so the check below is not vacuous
    assert any(line.startswith("httpx") for line in logs.lines)
    assert_keyless(*logs.lines)
    assert counters["cdn_authorization_headers"] == 0 and counters["cdn_hits"] >= 7
    store.close()
    assert files_holding(tmp_path) == []


# --- only the API origin ever gets the key ---------------------------------------------------


async def test_the_cdn_never_gets_the_key_even_through_redirects(tmp_path):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        host, path = request.url.host, request.url.path
        if host == "api.example.com" and path == "/v1/images/generations":
            return httpx.Response(200, json={"code": 200, "data": [{"status": "submitted", "task_id": "task_01R"}]})
        if host == "api.example.com" and path.startswith("/v1/tasks/"):
            urls = ["https://cdn.example.net/hop/0.png",        # redirects to another CDN host
                    "https://cdn.example.net/to-api/1.png",     # redirects to the API origin itself
                    "https://api.example.com/files/2.png"]      # an image served by the API origin
            return httpx.Response(200, json={"code": 200, "data": {
                "id": "task_01R", "status": "completed", "progress": 100,
                "result": {"images": [{"url": [u]} for u in urls]}}})
        if host == "cdn.example.net" and path.startswith("/hop/"):
            return httpx.Response(302, headers={"location": "https://media.example.org/final/0.png"})
        if host == "cdn.example.net" and path.startswith("/to-api/"):
            return httpx.Response(307, headers={"location": "https://api.example.com/files/1.png"})
        if path.endswith(".png"):
            return httpx.Response(200, content=PNG_BYTES, headers={"content-type": "image/png"})
        return httpx.Response(404)

    store = Store(tmp_path / "home")
    async with AsyncClient(KEY, "https://api.example.com", transport=httpx.MockTransport(handler), store=store,
                           retry=FAST_RETRY, poll=FAST_POLL) as client:
        generation = await client.generate("three images, three routes", n=3)
    assert generation.ok and len(generation.images) == 3
    hosts = {r.url.host for r in seen}
    assert {"cdn.example.net", "media.example.org"} <= hosts  # the redirects were really followed
    for request in seen:
        carries = "authorization" in request.headers
        is_api_call = request.url.host == "api.example.com" and request.url.path.startswith("/v1/")
        assert carries == is_api_call, (request.method, str(request.url))
        assert KEY not in str(request.url)
    store.close()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_an_api_redirect_is_not_followed_so_the_key_stays_home(tmp_path, status):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "api.example.com":
            return httpx.Response(status, headers={"location": "https://collector.evil.example/v1/images/generations"})
        return httpx.Response(200, json={"code": 200, "data": [{"status": "submitted", "task_id": "task_01STOLEN"}]})

    store = Store(tmp_path / "home")
    async with AsyncClient(KEY, "https://api.example.com", transport=httpx.MockTransport(handler), store=store,
                           retry=FAST_RETRY, poll=FAST_POLL) as client:
        with pytest.raises(APIError) as info:
            await client.generate("go elsewhere")
        with pytest.raises(APIError):
            await client.balance()
    assert {r.url.host for r in seen} == {"api.example.com"}
    assert f"HTTP {status}" in str(info.value) and "\n" not in str(info.value)
    assert_keyless(everything_about(info.value))
    store.close()


@pytest.mark.parametrize(
    "url", ["http://api.example.com", "http://10.0.0.5:8080", "http://localhost.evil.example", "http://0.0.0.0"]
)
def test_the_key_is_never_sent_over_plain_http_to_a_remote_host(url, monkeypatch):
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200, json={}))
    with pytest.raises(ValidationError, match="unencrypted"):
        AsyncClient(KEY, url, transport=transport)
    with pytest.raises(ValidationError, match="unencrypted"):
        _session.Session().set_base_url(url)
    monkeypatch.setenv("QIMAGE_BASE_URL", url)
    monkeypatch.setenv("QIMAGE_API_KEY", KEY)
    with pytest.raises(ValidationError, match="unencrypted"):
        Client()
    assert sent == []
    # loopback is fine over http (the emulator), and an explicit opt-in is the only way past the rule
    AsyncClient(KEY, "http://127.0.0.1:9")
    AsyncClient(KEY, url, allow_insecure_http=True)


# --- %qimage login keeps the key in memory ---------------------------------------------------


def test_login_keeps_the_key_in_this_kernels_memory_only(monkeypatch, capsys, _isolated_env):
    from IPython.core.interactiveshell import InteractiveShell

    from qimage_nb.core._sync import run_sync
    from qimage_nb.notebook._magics import QImageMagics

    home = _isolated_env
    shell = InteractiveShell.instance()
    shell.register_magics(QImageMagics)
    published = []
    monkeypatch.setattr(shell.display_pub, "publish", lambda data, *a, **k: published.append(repr(data)))
    monkeypatch.setattr("getpass.getpass", lambda prompt="": KEY)
    with Emulator(api_key=KEY, latency=0.05, jitter=0.0) as emu:
        session = _session.get_session()
        try:
            session.set_base_url(emu.base_url)
            shell.run_line_magic("qimage", "login")
            assert session.has_key and session.key_source == "%qimage login (memory only)"
            shell.run_line_magic("qimage", "config")  # reads the balance with the key
            shell.run_cell_magic("qimage", "-o keyed -n 2", "a lighthouse")
            assert len(shell.user_ns.pop("keyed")) == 2
            shell.run_line_magic("qimage", "history")
            counters = emu.counters()
            assert counters["submits_accepted"] == 1 and counters["balance_reads"] == 1
            assert counters["api_requests_without_valid_auth"] == 0
            assert_keyless(repr(session), repr(session.client()), repr(session.describe()))
            shell.run_line_magic("qimage", "logout")
            assert not session.has_key
        finally:
            if session._client is not None:
                run_sync(session._client.aclose())
            _session.reset_session()
    printed = capsys.readouterr()
    assert "key set for this kernel" in printed.out
    assert_keyless(printed.out, printed.err, *published)
    assert not any(KEY in value for value in os.environ.values())
    assert not any(isinstance(v, str) and KEY in v for v in shell.user_ns.values())
    assert files_holding(home) == []


# --- a real kernel: outputs, the saved notebook, widget state -------------------------------

NOTEBOOK_CELLS = [
    "import logging, sys\nlogging.basicConfig(level=logging.DEBUG, stream=sys.stdout, force=True)",
    "%load_ext qimage_nb",
    # %qimage login, with getpass reading the key once from the environment (ipykernel installs its
    # own getpass for each cell, so the stand-in is set in the same cell)
    "import getpass, os\ngetpass.getpass = lambda prompt='': os.environ.pop('LEAKTEST_LOGIN_KEY')\n"
    "%qimage login",
    "print('keys in os.environ:', sum('LEAKCHECK' in v for v in os.environ.values()))",
    "%qimage config",
    "%%qimage -o pics -n 2\na lighthouse under a storm",
    "%%qimage -o refused\nFAIL_MODERATION please",
    "from qimage_nb import Panel\nfrom qimage_nb.notebook._session import get_session\npanel = Panel()\npanel",
    "panel.prompt.value = 'a red kite over the dunes'\npanel.count.value = 2\npanel.generate_button.click()\n"
    "await panel.wait()\n[len(g.images) for g in panel.generations]",
    "client = get_session().client()\nclient, get_session(), get_session().describe()",
    "await client.generate('a fox in the snow')",
    "await client.generate('FAIL_MODERATION with a traceback')",
    "%qimage history",
    "%qimage logout",
]


@pytest.mark.slow
def test_an_executed_notebook_with_magic_and_panel_holds_no_key(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    path = tmp_path / "secrets.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK_CELLS]), path)
    with Emulator(api_key=KEY, latency=0.2, jitter=0.05) as emu:
        emu.set_faults(rate_limit_submits=1, retry_after=0.05, poll_fault_rate=0.3,
                       poll_fault_kinds=("500", "html502", "429", "reset"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("QIMAGE_")}
        env.update(QIMAGE_BASE_URL=emu.base_url, QIMAGE_HOME=str(tmp_path / "home"), LEAKTEST_LOGIN_KEY=KEY)
        nb = nbformat.read(path, as_version=4)
        runner = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                                         store_widget_state=True, resources={"metadata": {"path": str(tmp_path)}})
        runner.execute(env=env)
        nbformat.write(nb, path)
        counters = emu.counters()

    outputs = [out for cell in nb.cells for out in cell.get("outputs", [])]
    text = "\n".join(str(out) for out in outputs)
    # the run really happened: images, a refusal with its traceback, the panel, debug logs
    assert counters["submits_accepted"] == 5 and counters["api_requests_without_valid_auth"] == 0
    assert "keys in os.environ: 0" in text
    assert "[2]" in text  # the panel's run
    errors = [out for out in outputs if out.output_type == "error"]
    assert {e.ename for e in errors} == {"QImageCellError", "TaskFailedError"}
    assert any(len(e.traceback) > 3 for e in errors)  # a real traceback was saved
    assert "DEBUG" in text and "qimage_nb" in text  # debug logging reached the cell outputs
    widgets = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    assert len(widgets.get("state", {})) > 20  # the panel's widget state was saved with the notebook
    assert counters["cdn_authorization_headers"] == 0

    raw = path.read_bytes()
    assert KEY.encode() not in raw
    assert KEY.split("-", 2)[2].encode() not in raw  # not even the key's random part
    assert files_holding(tmp_path) == []  # the notebook, the journal, the images, the sidecars
    assert KEY not in "".join(os.environ.values())


def test_the_test_process_never_exported_the_key():
    assert KEY not in "".join(os.environ.values())
    assert KEY not in " ".join(sys.argv)
