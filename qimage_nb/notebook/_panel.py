"""The interactive panel: stock ipywidgets over the async client, on the kernel's own event loop.

``Panel()`` composes ``Textarea``, ``ToggleButtons``, ``Button``, ``Image`` and a few boxes into one
``VBox``. Generate starts a task on the loop the kernel already runs (the ipywidgets "Widget
Asynchronous" pattern), so the kernel stays free for other cells and several runs can be in flight.

Three rules shape the code:

* Nothing a user pays for is lost: the client journals every submit before it is sent; Cancel only
  stops *waiting* and says how to resume; a double click cannot submit twice (Generate is held while
  a submit is unanswered).
* No failure is silent: every widget callback and every background task goes through one guard
  that turns exceptions into a one-line message in the ``qimage-error`` widget.
* Widget state is saved into notebooks, so no widget ever holds the API key, and images enter widget
  state only as thumbnails or a mid-size preview JPEG; full-resolution files stay on disk.

The widgets and their layout live in ``_panel_view`` (every part carries a stable CSS class,
``qimage-…``) and ``_panel_parts``, one run's task and row in ``_panel_run``; the header and its
connection in ``_panel_header``, references in ``_panel_refs`` (over ``_refs``, shared with the
magic), the preview and the journal in ``_panel_picks``. This module is what ties them together:
the loop, the guard, the controls, Generate and Cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._contract import (
    AUTO_SIZE,
    LONG_PROMPT_MAX,
    NEGATIVE_PROMPT_MAX,
    PIXEL_SIZES,
    PROMPT_MAX,
    SHORT_PROMPT_MODELS,
    GenerationRequest,
    _short,
    parse_pixel_size,
)
from .._exceptions import QImageError, ValidationError
from ..core._sync import _running_loop
from ._magic_args import reproduce_cell
from ._panel_header import PanelHeader
from ._panel_parts import LINE, MUTED, RED, count_html, describe, walk_widgets
from ._panel_picks import PanelPicks
from ._panel_refs import PanelRefs
from ._panel_run import Run
from ._panel_view import PanelView
from ._refs import Ref
from ._widgets import mimebundle

if TYPE_CHECKING:
    from PIL import Image

    from ..core._client import AsyncClient, Generation

__all__ = ["Panel", "reproduce_cell", "walk_widgets"]

logger = logging.getLogger("qimage_nb")


class Panel(PanelHeader, PanelRefs, PanelPicks, PanelView):
    """An ipywidgets panel for Qwen Image 2.0 that never blocks the kernel.

    Parameters
    ----------
    client:
        An :class:`~qimage_nb.AsyncClient`. By default the kernel's session client is used at each
        Generate, so ``%qimage login`` or ``%qimage emulator`` in another cell takes effect at once.
    folder:
        Where "Save PNG" copies full-resolution files (editable in the panel).

    Attributes
    ----------
    images:
        The latest completed run's images (``list[PIL.Image.Image]``).
    generations:
        Every finished run's :class:`~qimage_nb.Generation`, oldest first (failed or cancelled runs
        have ``error`` set, with the task id when one exists).
    root:
        The top ``VBox``; the controls are attributes too (``prompt``, ``generate_button``, ...).
    """

    def __init__(self, client: AsyncClient | None = None, *, folder: str | Path = "qimage_images") -> None:
        self._client_override = client
        # The loop of the cell that made the panel: the kernel's own. Widget callbacks may arrive
        # on another thread with another loop (JupyterLab sends comm messages on a kernel subshell
        # when ipykernel supports it), so _guard brings every callback back to this loop: all panel
        # state, widgets and the client's connection pool live on one loop in one thread.
        self._home = _running_loop()
        self.runs: list[Run] = []
        self.references: list[Ref] = []
        self._uploading: list[str] = []
        self._submitting: set[int] = set()
        self._selected: tuple[Run, int] | None = None
        self._error_is_validation = False
        self._journal_loaded = False
        self._resend_key: str | None = None  # the resend the panel asked about, until answered
        self._session_provider: str | None = None  # the session's provider in use, as last seen
        self._tasks: set[asyncio.Future[Any]] = set()
        self._build(str(folder))
        problem = self._choose_initial_provider()
        self._wire()
        self._provider_changed()
        if problem is not None:
            self._show_error(f"Settings: {describe(problem)}")

    def _wire(self) -> None:

        # every callback goes through _guard: a widget callback that raises is otherwise silent
        self.provider.observe(self._guard("provider", lambda _c: self._provider_changed()), names="value")
        for widget in (self.prompt, self.negative, self.model, self.ratio, self.resolution, self.count,
                       self.free_size, self.seed, self.extend, self.watermark):
            widget.observe(self._guard("update controls", lambda _c: self._refresh_controls()), names="value")
        self.generate_button.on_click(self._guard("generate", lambda _b: self.generate()))
        self.cancel_button.on_click(self._guard("cancel", lambda _b: self.cancel()))
        self.ref_add_button.on_click(self._guard("add reference", lambda _b: self.add_reference(self.ref_url.value)))
        self.uploader.observe(self._guard("upload", self._on_upload), names="value")
        self.save_button.on_click(self._guard("save", lambda _b: self.save_selected()))
        self.use_ref_button.on_click(self._guard("use as reference", lambda _b: self.use_selected_as_reference()))
        self.journal_refresh.on_click(self._guard("journal", lambda _b: self.refresh_journal()))
        self.journal.observe(self._guard("journal", self._on_journal_toggle), names="selected_index")
        self.resend_yes.on_click(self._guard("resend", lambda _b: self.confirm_resend()))
        self.resend_no.on_click(self._guard("resend", lambda _b: self.keep_unsent()))

    # -- display protocol --

    def __repr__(self) -> str:
        flying = sum(1 for r in self.runs if r.in_flight)
        return f"<qimage_nb.Panel runs={len(self.runs)} in_flight={flying} images={len(self.images)}>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.root)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return mimebundle(self.root, **kwargs)

    # -- public state --

    @property
    def images(self) -> list[Image.Image]:
        """The latest completed run's images."""
        done = [r for r in self.runs if r.state == "done" and r.finished_at is not None]
        return max(done, key=lambda r: r.finished_at or 0.0).images if done else []

    @property
    def generations(self) -> list[Generation]:
        """Every finished run's Generation, in the order the runs started."""
        return [r.generation for r in self.runs if r.generation is not None and not r.in_flight]

    @property
    def in_flight(self) -> list[Run]:
        return [r for r in self.runs if r.in_flight]

    async def wait(self) -> list[Generation]:
        """Wait until no run is in flight and the panel is idle (uploads, preview, balance).

        Runs started meanwhile are waited for too. Returns the Generations of the runs waited on.
        """
        waited: list[Run] = []
        while True:
            flying = [r for r in self.runs if r.in_flight]
            background = [t for t in self._tasks if not t.done()]
            if not flying and not background:
                break
            waited += [r for r in flying if r not in waited]
            pending = [r.task for r in flying if r.task is not None] + background
            await asyncio.gather(*pending, return_exceptions=True)
        return [r.generation for r in waited if r.generation is not None]

    def close(self) -> None:
        """Stop waiting on every run and close all widgets."""
        self.cancel()
        if self._client_override is None:
            from ._session import get_session

            get_session().unsubscribe(self._session_changed)
        for widget in reversed(list(walk_widgets(self.root))):
            widget.close()

    # -- helpers --

    def _loop(self) -> asyncio.AbstractEventLoop:
        """The loop runs live on: the panel's home loop, else (no loop at construction) the caller's."""
        loop = self._home if self._home is not None and not self._home.is_closed() else _running_loop()
        if loop is None or loop.is_closed():
            raise QImageError(
                "the panel needs a running event loop: use it in a Jupyter kernel (or an async test)"
            )
        self._home = loop
        return loop

    def _guard(self, action: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a widget callback: run it on the home loop, and show any failure in the panel."""

        def invoke(*args: Any) -> Any:
            try:
                return fn(*args)
            except Exception as exc:
                if not isinstance(exc, QImageError):
                    logger.exception("qimage_nb: panel %s failed", action)
                self._show_error(f"{action.capitalize()}: {describe(exc)}")
                return None

        @functools.wraps(fn)
        def guarded(*args: Any) -> Any:
            home = self._home
            if home is not None and not home.is_closed() and _running_loop() is not home:
                try:
                    home.call_soon_threadsafe(functools.partial(invoke, *args))
                    return None
                except RuntimeError:  # the home loop closed meanwhile: run here rather than drop it
                    pass
            return invoke(*args)

        return guarded

    def _start_background(self, coro: Any, action: str) -> asyncio.Future[Any] | None:
        """Run a coroutine on the kernel's loop; its failure lands in the error line."""
        try:
            loop = self._loop()
        except QImageError:
            coro.close()
            return None

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not isinstance(exc, QImageError):
                    logger.exception("qimage_nb: panel %s failed", action)
                self._show_error(f"{action.capitalize()}: {describe(exc)}")

        task = loop.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _show_error(self, message: str, *, validation: bool = False) -> None:
        self._error_is_validation = validation
        self.error.value = (
            f'<div style="color:{RED};background:#fdecea;border-radius:4px;padding:5px 10px;margin:4px 0">'
            f"⚠ {html.escape(_short(message, LINE))}</div>"
        )
        self.error.layout.display = None

    def clear_error(self) -> None:
        self.error.value = ""
        self.error.layout.display = "none"
        self._error_is_validation = False

    def _note(self, message: str, *, ok: bool = True) -> None:
        color = "#1b6e3a" if ok else MUTED
        # A block that wraps anywhere: a saved file's path is one long word, and was cut.
        self.action_note.value = (
            f'<div style="color:{color};line-height:1.35;overflow-wrap:anywhere">{html.escape(_short(message, LINE))}</div>'
        )

    # -- controls and validation --

    def _request(self) -> GenerationRequest:
        """The one request the controls describe (sent as is); raises ValidationError naming what is
        wrong. Options the provider does not take are disabled and never sent; the provider's own
        check (models, sizes) runs too, before anything is sent."""
        prompt = self.prompt.value.strip()
        negative = self.negative.value.strip() or None
        free = self.free_size.value.strip() if not self.free_size.disabled else ""
        seed_text = self.seed.value.strip() if not self.seed.disabled else ""
        seed: Any = None
        if seed_text:
            try:
                seed = int(seed_text)
            except ValueError:
                raise ValidationError("seed", f"seed {seed_text!r} is not a whole number (0 to 2147483647), or leave it empty") from None
        extend = None if self.extend.disabled else {"default": None, "on": True, "off": False}[self.extend.value]
        if free.lower() == AUTO_SIZE:
            free = AUTO_SIZE  # no size sent: the model picks (Qwen Image 3.0), else the host's default
        elif free and parse_pixel_size(free) is None:
            raise ValidationError(
                "size", f"size {free!r} is not WIDTHxHEIGHT, e.g. 1024x768, nor auto (or leave it empty for the ratio)"
            )
        request = GenerationRequest.create(
            prompt,
            model=self.model.value,
            size=free or self.ratio.value,
            resolution=self.resolution.value,
            n=int(self.count.value),
            negative_prompt=negative,
            image_urls=[r.url for r in self.references] or None,
            seed=seed,
            prompt_extend=extend,
            watermark=True if self.watermark.value and not self.watermark.disabled else None,
        )
        self._provider().check(request)
        return request

    def _blocker(self) -> tuple[str | None, bool]:
        """(why Generate is unavailable, whether that is an error to show); (None, False) when ready."""
        if not self.prompt.value.strip():
            limit = PROMPT_MAX if self.model.value in SHORT_PROMPT_MODELS else LONG_PROMPT_MAX
            return f"Type a prompt (1 to {limit} characters) to generate.", False
        if self._uploading:
            return f"Waiting for {len(self._uploading)} upload(s) to finish…", False
        if self._submitting:
            return "Submitting… (Generate is held until the server confirms the task, so a double click cannot pay twice)", False
        try:
            self._request()
        except ValidationError as exc:
            return str(exc), True
        return None, False

    def _price_note(self) -> str:
        """What a run of the current request should cost, shown beside Generate ("" when unknown)."""
        from ..core._estimate import money, price_of

        with contextlib.suppress(Exception):  # a price that cannot be read never blocks a run
            client = self._client()
            price = price_of(self._request(), provider=client.provider, store=client.store, scope=client.cache_scope)
            if price.cost is not None:
                where = "the last price seen" if price.source == "journal" else "the host's price list"
                return f"About {money(price.cost)} a run ({where}). "
        return ""

    def _refresh_controls(self) -> None:
        prompt_len = len(self.prompt.value.strip())
        # 2.0's character limits are not 3.0's (about 4,500 tokens) nor an unlisted model's.
        short = self.model.value in SHORT_PROMPT_MODELS
        self.prompt_count.value = count_html(prompt_len, PROMPT_MAX if short else LONG_PROMPT_MAX)
        self.negative_count.value = count_html(
            len(self.negative.value.strip()), NEGATIVE_PROMPT_MAX if short else LONG_PROMPT_MAX
        )
        typed = self.free_size.value.strip() if not self.free_size.disabled else ""
        auto = typed.lower() == AUTO_SIZE
        free = parse_pixel_size(typed) if typed and not auto else None
        w, h = free or PIXEL_SIZES[(self.ratio.value, self.resolution.value)]
        n = int(self.count.value)
        self.ratio.disabled = self.resolution.disabled = free is not None or auto  # the free size wins
        size = "size by the model" if auto else f"{w} × {h} px"
        self.pixels.value = f'<span style="color:{MUTED};margin-left:10px;white-space:nowrap">{size} · {n} image{"s" if n > 1 else ""}</span>'
        reason, is_error = self._blocker()
        self.generate_button.disabled = reason is not None
        self.generate_button.description = "Submitting…" if self._submitting else "Generate"
        self.generate_button.tooltip = reason or "Start a run; the kernel stays free while it works"
        # A refusal is said once, in the error line; the hint says only what is not an error
        # (a bad size was said twice, in red, one above the other).
        self.hint.value = (
            "" if is_error else
            f'<span style="color:{MUTED}">{html.escape(_short(reason, LINE))}</span>'
            if reason else
            # The price where it is known, else why Generate is safe to click: beside the buttons, in
            # the column next to the preview, both at once took five lines.
            f'<span style="color:{MUTED}">{html.escape(self._price_note().strip() or "The kernel stays free while it runs.")}</span>'
        )
        if is_error and reason:
            self._show_error(reason, validation=True)
        elif self._error_is_validation:
            self.clear_error()
        flying = sum(1 for r in self.runs if r.in_flight)
        self.cancel_button.disabled = flying == 0
        self.cancel_button.description = "Cancel" if flying <= 1 else f"Cancel {flying}"

    def load_request(self, request: GenerationRequest) -> None:
        """Put a request's prompt and settings back into the controls."""
        self.prompt.value = request.prompt
        self.negative.value = request.negative_prompt or ""
        if request.model in self.model.options:
            self.model.value = request.model
        if parse_pixel_size(request.size) or request.size == AUTO_SIZE:
            self.free_size.value = request.size  # auto: the model picked (Qwen Image 3.0)
        else:
            self.free_size.value = ""
            self.ratio.value = request.size
        self.resolution.value = request.resolution
        self.count.value = request.n
        self.seed.value = "" if request.seed is None else str(request.seed)
        self.extend.value = {None: "default", True: "on", False: "off"}[request.prompt_extend]
        self.watermark.value = bool(request.watermark)
        self.references = [Ref(url=url) for url in request.image_urls]
        self._render_refs()
        self._refresh_controls()

    # -- generate and cancel --

    def generate(self) -> Run | None:
        """What the Generate button does: validate, then start a run in the background."""
        if self._submitting:
            self.hint.value = (
                f'<span style="color:{MUTED}">Still submitting the previous run: '
                "click again once it is confirmed.</span>"
            )
            return None
        try:
            request = self._request()
        except ValidationError as exc:
            self._show_error(str(exc), validation=True)
            self._refresh_controls()
            return None
        if self._uploading:
            self._show_error("Uploads are still running: wait for the reference thumbnails to appear")
            return None
        client = self._client()
        if not client.has_key:
            provider = self._provider()
            option = "" if provider.name == "apimart" else f" --provider {provider.name}"
            self._show_error(
                f"No API key for {provider.title}: set {provider.key_env}, or run %qimage login{option} in a "
                f"cell (the key stays in memory), or %qimage emulator{option} to try everything offline"
            )
            return None
        self._loop()  # fail here, visibly, if there is no loop to run on
        self.clear_error()
        return self._start_run(request, client)

    def resume(self, task_id: str) -> Run:
        """Re-attach to a journaled task (never submits again) and show it as a run."""
        client = self._client()
        job = client.store.get(task_id)
        request = job.request if job is not None else GenerationRequest(prompt="")
        return self._start_run(request, client, resume=task_id)

    def _start_run(
        self, request: GenerationRequest, client: AsyncClient, *, resume: str | None = None, resend: bool = False
    ) -> Run:
        run = Run(_RunHost(self), len(self.runs) + 1, request, client, resume=resume, resend=resend)
        self.runs.append(run)
        self.history.children = (run.box, *self.history.children)
        if resume is None:
            self._submitting.add(run.number)
        run.start()
        self._refresh_controls()
        return run

    def cancel(self) -> None:
        """Stop waiting on every run in flight (the tasks stay in the journal)."""
        for run in self.runs:
            run.cancel()

    def _submit_settled(self, run: Run) -> None:
        if run.number in self._submitting:
            self._submitting.discard(run.number)
            self._refresh_controls()

    def _run_finished(self, run: Run) -> None:
        self._refresh_controls()
        if run.state == "done":
            self._start_background(self._refresh_balance(), "balance")


class _RunHost:
    """The panel as its runs see it (``_panel_run.RunHost``): a run never reaches past this."""

    def __init__(self, panel: Panel) -> None:
        self._panel = panel

    def loop(self) -> asyncio.AbstractEventLoop:
        return self._panel._loop()

    def guard(self, action: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        return self._panel._guard(action, fn)

    def show_error(self, message: str) -> None:
        self._panel._show_error(message)

    def submit_settled(self, run: Run) -> None:
        self._panel._submit_settled(run)

    def run_finished(self, run: Run) -> None:
        self._panel._run_finished(run)

    def select(self, run: Run, index: int) -> None:
        self._panel.select(run, index)

    def load_request(self, request: GenerationRequest) -> None:
        self._panel.load_request(request)
