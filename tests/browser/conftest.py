"""Browser test harness: real JupyterLab 4 and Notebook 7 servers driven by headless Chromium.

Write browser tests as plain sync tests (Playwright's sync API refuses to run inside an asyncio
test) and mark them ``@pytest.mark.browser`` (or ``pytestmark = pytest.mark.browser``).

Fixtures
--------
``jupyter_lab`` (session) -> ``JupyterServer``
    One throwaway JupyterLab 4 server for the whole session, on a free loopback port, no token,
    with temporary ``JUPYTER_CONFIG_DIR`` / ``JUPYTER_DATA_DIR`` / ``JUPYTER_RUNTIME_DIR`` /
    ``JUPYTERLAB_SETTINGS_DIR`` / ``JUPYTERLAB_WORKSPACES_DIR`` / ``IPYTHONDIR``, the news toast
    (announcements plugin) disabled, and an empty temporary ``root_dir`` that tests copy notebooks into.
``jupyter_notebook`` (session) -> ``JupyterServer``
    The same for Notebook 7 (``jupyter notebook``).
``start_jupyter`` (session) -> ``start_jupyter(app="lab" | "notebook", env=None) -> JupyterServer``
    A server of its own, for a test that needs different environment variables (stopped at session end).
``browser`` -> ``playwright.sync_api.Browser``
    Headless Debian Chromium (``/usr/bin/chromium``, or ``$CHROMIUM_PATH``) with the flags that keep it
    off the network. One instance serves consecutive browser tests; it is closed as soon as the next
    test does not use it, because open sync Playwright breaks asyncio in later tests. Skips when
    Chromium or Playwright is missing, except under ``CI=true``, where a missing browser FAILS.
``page`` (function) -> ``playwright.sync_api.Page``
    A page in a fresh browser context (1400x1000). On failure its screenshot and console log go to
    ``test-artifacts/``.
``open_notebook`` (function) -> ``open_notebook(server, notebook, *, name=None, run=False) -> NotebookUI``
    Puts ``notebook`` (a path to an .ipynb, an ``nbformat`` node, or the name of a file already in
    ``server.root_dir``) into the server's root dir, opens it in ``page`` (``?reset`` in Lab) and waits
    for the kernel to be idle; ``run=True`` also runs all cells and waits for them. The kernels it
    started are shut down after the test.
``artifacts_dir`` (session) -> ``Path`` of ``test-artifacts/`` at the repo root (gitignored).

``JupyterServer``: ``app``, ``url``, ``root_dir``, ``env``, ``log_path``, ``add_notebook(src, name=None)
-> name``, ``notebook_url(name)``, ``api(method, path)``, ``shutdown_kernels()``.

``NotebookUI``: ``page``, ``server``, ``name``, ``panel`` (locator of the visible notebook),
``run_all(timeout=...)``, ``wait_idle(timeout=...)``, ``wait_for_execution(timeout=...)``
(after running cells another way),
``output_texts()``, ``error_texts()``, ``screenshot(label) -> Path``.

Environment of the servers (and so of their kernels): the test process's, with the venv's ``bin``
first on PATH (the kernel is the venv's ``python3`` kernelspec, run by the venv's interpreter), every
``QIMAGE_*`` variable removed, ``QIMAGE_HOME`` set to a temporary folder, then whatever ``env`` a test
passes to ``start_jupyter``. No test reaches the internet: point the product at the bundled emulator.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# Lab's notebook panel; in Notebook 7 the same class is used for the one notebook shown.
VISIBLE_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
ERROR_OUTPUT = (
    ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']:has([class*='ansi-'])"
)
KERNEL_INDICATOR = ".jp-Notebook-ExecutionIndicator"
SERVER_START_TIMEOUT = 90.0
UI_TIMEOUT_MS = 60_000


def _missing(reason: str) -> None:
    """Skip on a developer machine; fail under CI, where a missing browser is a broken install."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120]


# --------------------------------------------------------------------------------------- servers


@dataclass(eq=False)
class JupyterServer:
    """A running ``jupyter lab`` / ``jupyter notebook`` on loopback, without a token."""

    app: str
    url: str
    root_dir: Path
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen = field(repr=False)

    def notebook_url(self, name: str) -> str:
        """The page that opens ``name`` (relative to root_dir) alone."""
        if self.app == "lab":
            return f"{self.url}/lab/tree/{name}?reset"
        return f"{self.url}/notebooks/{name}"

    def add_notebook(self, src: Any, name: str | None = None) -> str:
        """Copy a notebook (path or nbformat node) into root_dir; returns its name there.

        A notebook without kernelspec metadata gets ``python3``, so no kernel picker pops up.
        """
        import nbformat

        if isinstance(src, (str, Path)):
            path = Path(src)
            nb = nbformat.read(path, as_version=4)
            name = name or path.name
        else:
            nb = src
            if name is None:
                raise ValueError("name= is required for a notebook node")
        nb.metadata.setdefault(
            "kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"}
        )
        target = self.root_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        return name

    def api(self, method: str, path: str) -> Any:
        """Call the server's REST API (``path`` like ``/api/kernels``); returns decoded JSON or None."""
        req = urllib.request.Request(f"{self.url}{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel (and session) the server runs, so tests do not pile them up."""
        with contextlib.suppress(OSError, urllib.error.URLError):
            for session in self.api("GET", "/api/sessions") or []:
                self.api("DELETE", f"/api/sessions/{session['id']}")
            for kernel in self.api("GET", "/api/kernels") or []:
                self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the server's own pid: it stops its kernels too."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _server_env(base: Path, extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIMAGE_")}
    for name in ("JUPYTER_PATH", "JUPYTER_PREFER_ENV_PATH", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    dirs = {
        "JUPYTER_CONFIG_DIR": base / "config",
        "JUPYTER_DATA_DIR": base / "data",
        "JUPYTER_RUNTIME_DIR": base / "runtime",
        "JUPYTERLAB_SETTINGS_DIR": base / "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": base / "lab-workspaces",
        "IPYTHONDIR": base / "ipython",
        "QIMAGE_HOME": base / "qimage-home",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    # The kernel imports the package from this checkout, the code under test, even when the venv's
    # install points at another one (several worktrees share one venv).
    env["PYTHONPATH"] = str(REPO)
    # The kernelspec says "python": make it, and any `jupyter` subcommand, the venv's.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    labconfig = base / "config" / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env.update(extra or {})
    return env


def _start_server(app: str, base: Path, extra_env: dict[str, str] | None) -> JupyterServer:
    try:
        import jupyterlab  # noqa: F401
        import notebook  # noqa: F401
    except ImportError as exc:
        _missing(f"jupyterlab / notebook are not installed ({exc}): pip install -e '.[test]'")
    module = {"lab": "jupyterlab", "notebook": "notebook"}[app]
    root = base / "root"
    root.mkdir(parents=True, exist_ok=True)
    env = _server_env(base, extra_env)
    ARTIFACTS.mkdir(exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between probing and binding
        port = _free_port()
        log_path = ARTIFACTS / f"jupyter-{app}-{port}.log"
        cmd = [
            sys.executable, "-m", module,
            "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
            "--no-browser", "--allow-root",
            # REST calls from the harness (shutting kernels down) carry no XSRF cookie.
            "--ServerApp.disable_check_xsrf=True",
            "--IdentityProvider.token=", "--PasswordIdentityProvider.hashed_password=",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]  # fmt: skip
        log = log_path.open("w")
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        server = JupyterServer(app, f"http://127.0.0.1:{port}", root, env, log_path, proc)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                server.api("GET", "/api/status")
                return server
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        server.stop()
        last_error = server.log_tail()
    raise RuntimeError(f"jupyter {app} did not start; its log ends with:\n{last_error}")


@pytest.fixture(scope="session")
def start_jupyter(tmp_path_factory) -> Iterator[Callable[..., JupyterServer]]:
    servers: list[JupyterServer] = []

    def start(app: str = "lab", env: dict[str, str] | None = None) -> JupyterServer:
        server = _start_server(app, tmp_path_factory.mktemp(f"jupyter-{app}"), env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def jupyter_lab(start_jupyter) -> JupyterServer:
    return start_jupyter("lab")


@pytest.fixture(scope="session")
def jupyter_notebook(start_jupyter) -> JupyterServer:
    return start_jupyter("notebook")


# --------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Chromium:
    """Playwright's sync API and one Chromium, started on demand and stopped as soon as the next
    test does not need them: while sync Playwright is open it marks its own event loop as running
    in this thread, which breaks every asyncio test (``asyncio.run``, pytest-asyncio) after it."""

    def __init__(self) -> None:
        self._playwright = None
        self._browser = None

    def get(self):
        if self._browser is None:
            executable = _chromium_path()
            if executable is None:
                _missing("Chromium not found (apt-get install chromium, or set CHROMIUM_PATH)")
            try:
                from playwright.sync_api import sync_playwright
            except ImportError:
                _missing("playwright is not installed: pip install -e '.[test]'")
            self._playwright = sync_playwright().start()
            try:
                self._browser = self._playwright.chromium.launch(
                    executable_path=executable, headless=True, args=CHROMIUM_ARGS
                )
            except BaseException:
                self.stop()
                raise
        return self._browser

    def stop(self) -> None:
        browser, playwright = self._browser, self._playwright
        self._browser = self._playwright = None
        if browser is not None:
            with contextlib.suppress(Exception):
                browser.close()
        if playwright is not None:
            playwright.stop()


_CHROMIUM = _Chromium()


@pytest.fixture
def browser():
    """The shared headless Chromium (started once, kept while consecutive tests use it)."""
    return _CHROMIUM.get()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield  # fixtures (pages, contexts) are torn down by now
    if nextitem is None or "browser" not in getattr(nextitem, "fixturenames", ()):
        _CHROMIUM.stop()
    return result


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def page(browser, request, artifacts_dir):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
    page.on("pageerror", lambda exc: console.append(f"[pageerror] {exc}"))
    yield page
    failed = any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed:
        stem = artifacts_dir / f"FAILED-{_slug(request.node.nodeid)}"
        with contextlib.suppress(Exception):
            page.screenshot(path=f"{stem}.png", full_page=True)
        Path(f"{stem}.console.log").write_text("\n".join(console))
    context.close()


# --------------------------------------------------------------------------------------- notebooks


class NotebookUI:
    """One notebook open in a page, in JupyterLab or Notebook 7."""

    def __init__(self, page, server: JupyterServer, name: str, shots: Path, prefix: str):
        self.page = page
        self.server = server
        self.name = name
        self._shots = shots
        self._prefix = prefix

    @property
    def panel(self):
        return self.page.locator(VISIBLE_NOTEBOOK)

    def open(self, timeout: float = UI_TIMEOUT_MS) -> NotebookUI:
        self.page.goto(self.server.notebook_url(self.name))
        self.panel.wait_for(state="visible", timeout=timeout)
        self.wait_idle(timeout)
        return self

    def wait_idle(self, timeout: float = UI_TIMEOUT_MS) -> None:
        """Wait until a kernel is connected and idle.

        The indicator also says "idle" for a moment while the notebook still has "No Kernel"; a
        run-all then pops the "Select Kernel" dialog. So the kernel's name must be shown too.
        """
        self.page.wait_for_function(
            """() => {
                const name = document.querySelector('.jp-Toolbar-kernelName')?.textContent ?? '';
                const status = document.querySelector(KERNEL_INDICATOR)?.dataset.status;
                return name.trim() !== '' && name.trim() !== 'No Kernel' && status === 'idle';
            }""".replace("KERNEL_INDICATOR", json.dumps(KERNEL_INDICATOR)),
            timeout=timeout,
        )

    def run_all(self, timeout: float = 120_000) -> None:
        """Run all cells from the Run menu and wait until the run is over (all ran, or one failed
        and the rest were skipped) and the kernel is idle."""
        # A fresh kernel can give a re-run notebook the very prompts it was saved with, so "every
        # cell has a count" proves nothing: watch for the run to start ("[*]") before the click.
        self.page.evaluate(
            """(sel) => {
                const panel = document.querySelector(sel);
                window.__qimageRunStarted = false;
                const running = () => [...panel.querySelectorAll('.jp-InputPrompt')]
                    .some((p) => p.textContent.includes('*'));
                const observer = new MutationObserver(() => {
                    if (running()) { window.__qimageRunStarted = true; observer.disconnect(); }
                });
                observer.observe(panel, {subtree: true, childList: true, characterData: true});
            }""",
            VISIBLE_NOTEBOOK,
        )
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        self.page.wait_for_function("() => window.__qimageRunStarted === true", timeout=timeout)
        self.wait_for_execution(timeout)

    def wait_for_execution(self, timeout: float = 120_000) -> None:
        """Wait until no cell is queued or running ("[*]") and the kernel is idle."""
        self.page.wait_for_function(
            """(sel) => {
                const panel = document.querySelector(sel);
                return !!panel && ![...panel.querySelectorAll('.jp-InputPrompt')]
                    .some((p) => p.textContent.includes('*'));
            }""",
            arg=VISIBLE_NOTEBOOK,
            timeout=timeout,
        )
        self.wait_idle(timeout)

    def output_texts(self) -> list[str]:
        return self.panel.locator(".jp-OutputArea-output").all_inner_texts()

    def error_texts(self) -> list[str]:
        """Tracebacks shown in the notebook, not plain stderr.

        Lab renders an error output as stderr text; unlike a plain write to stderr, IPython's
        traceback is ANSI-coloured, which is what tells the two apart here.
        """
        return self.panel.locator(ERROR_OUTPUT).all_inner_texts()

    def screenshot(self, label: str, full_page: bool = True) -> Path:
        path = self._shots / f"{self._prefix}-{_slug(label)}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
def open_notebook(page, request, artifacts_dir):
    used: list[JupyterServer] = []
    prefix = _slug(request.node.name)

    def _open(server: JupyterServer, notebook: Any, *, name: str | None = None, run: bool = False):
        if isinstance(notebook, str) and name is None and (server.root_dir / notebook).is_file():
            name = notebook
        else:
            name = server.add_notebook(notebook, name)
        if server not in used:
            used.append(server)
        ui = NotebookUI(page, server, name, artifacts_dir, f"{server.app}-{prefix}")
        ui.open()
        if run:
            ui.run_all()
        return ui

    yield _open
    for server in used:
        server.shutdown_kernels()
