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
``qimage-…``), one run's task and row in ``_panel_run``, references and uploads in ``_refs``
(shared with the magic); this module is the behaviour that ties them together.
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._contract import (
    LONG_PROMPT_MAX,
    NEGATIVE_PROMPT_MAX,
    PIXEL_SIZES,
    PROMPT_MAX,
    REFS_MAX,
    SHORT_PROMPT_MODELS,
    GenerationRequest,
    InlineImage,
    _short,
    check_reference_url,
    parse_pixel_size,
)
from .._exceptions import QImageError, ValidationError
from ..core._sync import _running_loop
from ._magic_args import reproduce_cell
from ._panel_run import Run
from ._panel_view import (
    LINE,
    MUTED,
    PREVIEW_PX,
    RED,
    REF_PX,
    PanelView,
    describe,
    thumb_bytes,
    walk_widgets,
)
from ._refs import Ref, local_ref, upload

if TYPE_CHECKING:
    from PIL import Image

    from ..core._client import AsyncClient, Generation
    from ..providers import Provider

__all__ = ["Panel", "reproduce_cell", "walk_widgets"]

logger = logging.getLogger("qimage_nb")


class Panel(PanelView):
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
        self._tasks: set[asyncio.Future[Any]] = set()
        self._build(str(folder))
        problem = self._choose_initial_provider()
        self._wire()
        self._provider_changed()
        if problem is not None:
            self._show_error(f"Settings: {describe(problem)}")

    def _choose_initial_provider(self) -> QImageError | None:
        """The dropdown starts at the client's provider, else the session's (a bad
        $QIMAGE_PROVIDER is said in the error line, and the default is shown)."""
        if self._client_override is not None:
            self.provider.value = self._client_override.provider.name
            self.provider.disabled = True  # a client of your own talks to one host
            return None
        from ._session import get_session

        try:
            self.provider.value = get_session().provider().name
        except QImageError as exc:
            return exc
        return None

    def _provider_changed(self) -> None:
        """Models, sizes, options and the header follow the provider chosen in the dropdown."""
        provider = self._provider()
        models = list(provider.models)
        current = self.model.value
        self.model.options = models
        self.model.value = current if current in models else provider.default_model
        options = provider.capabilities.options
        for widget, option, enabled, disabled in (
            (self.seed, "seed", "the same seed and request give the same picture; empty: random",
             "takes no seed"),
            (self.extend, "prompt_extend", "whether the host may rewrite the prompt", "does not rewrite prompts"),
            (self.watermark, "watermark", "ask the host to stamp its watermark", "has no watermark option"),
            (self.free_size, "pixel_size", "a free pixel size (each side 512 to 2048) instead of the ratio",
             "takes a ratio and a resolution, no free pixel sizes"),
        ):
            widget.disabled = option not in options
            widget.tooltip = f"{provider.title} {disabled}" if widget.disabled else enabled
        # A row with nothing the provider takes is left out: every line the controls save keeps the
        # newest run in view after Generate.
        self.options_row.layout.display = None if options & {"seed", "prompt_extend", "watermark"} else "none"
        self.free_size.layout.display = None if "pixel_size" in options else "none"
        local_refs = provider.capabilities.upload or provider.capabilities.inline_refs is not None
        self.uploader.disabled = not local_refs
        self.uploader.tooltip = "" if local_refs else (
            f"{provider.title} has no upload endpoint: add public https URLs"
        )
        from ._session import emulator_banner

        self.banner.value = self._banner_html(emulator_banner(provider))
        self.banner.layout.display = None if self._using_emulator() else "none"
        self.server.value = self._server_html()
        self.provider_note.value = self._provider_note()
        self.balance.value = ""
        self._refresh_controls()
        try:
            self._client()
        except QImageError as exc:  # e.g. a bad base URL variable: one line where every error goes
            self._show_error(f"Settings: {describe(exc)}")
        else:
            if not self._error_is_validation:
                self.clear_error()
            self._start_background(self._refresh_balance(), "balance")

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

    # -- display protocol --

    def __repr__(self) -> str:
        flying = sum(1 for r in self.runs if r.in_flight)
        return f"<qimage_nb.Panel runs={len(self.runs)} in_flight={flying} images={len(self.images)}>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.root)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.root._repr_mimebundle_(**kwargs)

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
        for widget in reversed(list(walk_widgets(self.root))):
            widget.close()

    # -- helpers --

    def _provider(self) -> Provider:
        if self._client_override is not None:
            return self._client_override.provider
        from ..providers import get_provider

        return get_provider(self.provider.value)

    def _client(self) -> AsyncClient:
        if self._client_override is not None:
            return self._client_override
        from ._session import get_session

        return get_session().client(self.provider.value)

    def _using_emulator(self) -> bool:
        from ._session import get_session

        session = get_session()
        emulator = session.emulator_for(self._provider().name)
        if emulator is None:
            return False
        if self._client_override is None:
            return True
        return getattr(self._client_override, "base_url", None) == emulator.base_url

    def _server_html(self) -> str:
        from urllib.parse import urlsplit

        try:
            base = self._client().base_url
        except QImageError as exc:
            return f'<span style="color:{RED}">{html.escape(describe(exc))}</span>'
        if base == self._provider().default_base_url:
            return ""
        host = urlsplit(base).netloc
        return f'<span style="color:{MUTED};margin-right:12px">server {html.escape(host)}</span>'

    def _provider_note(self) -> str:
        """Where the chosen provider's key comes from (never the key), resolved like the session."""
        if self._client_override is not None:
            return f'<span style="color:{MUTED}">this panel\'s own client</span>'
        from ._session import get_session

        provider = self._provider()
        source = get_session().key_source_for(provider.name)
        if source == "the bundled emulator":
            return ""  # the banner above says it, once
        short = {"%qimage login (memory only)": "%qimage login"}
        text = f"key: {short.get(source, source)}" if source else f"no key (${provider.key_env})"
        tip = (
            f"the {provider.title} key comes from {source} (never shown)" if source else
            f"set ${provider.key_env}, run %qimage login --provider {provider.name}, or "
            f"%qimage emulator --provider {provider.name}"
        )
        return f'<span style="color:{MUTED};white-space:nowrap" title="{html.escape(tip)}">{html.escape(text)}</span>'

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
        self.action_note.value = f'<span style="color:{color}">{html.escape(_short(message, LINE))}</span>'

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
        if free and parse_pixel_size(free) is None:
            raise ValidationError("size", f"size {free!r} is not WIDTHxHEIGHT, e.g. 1024x768 (or leave it empty for the ratio)")
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
            return f"Type a prompt (1 to {PROMPT_MAX} characters) to generate.", False
        if self._uploading:
            return f"Waiting for {len(self._uploading)} upload(s) to finish…", False
        if self._submitting:
            return "Submitting… (Generate is held until the server confirms the task, so a double click cannot pay twice)", False
        try:
            self._request()
        except ValidationError as exc:
            return str(exc), True
        return None, False

    def _refresh_controls(self) -> None:
        prompt_len = len(self.prompt.value.strip())
        # 2.0's character limits are not 3.0's (about 4,500 tokens) nor an unlisted model's.
        short = self.model.value in SHORT_PROMPT_MODELS
        self.prompt_count.value = self._count_html(prompt_len, PROMPT_MAX if short else LONG_PROMPT_MAX)
        self.negative_count.value = self._count_html(
            len(self.negative.value.strip()), NEGATIVE_PROMPT_MAX if short else LONG_PROMPT_MAX
        )
        free = parse_pixel_size(self.free_size.value.strip()) if not self.free_size.disabled else None
        w, h = free or PIXEL_SIZES[(self.ratio.value, self.resolution.value)]
        n = int(self.count.value)
        self.ratio.disabled = self.resolution.disabled = free is not None  # the free size wins
        self.pixels.value = f'<span style="color:{MUTED};margin-left:10px;white-space:nowrap">{w} × {h} px · {n} image{"s" if n > 1 else ""} a run</span>'
        reason, is_error = self._blocker()
        self.generate_button.disabled = reason is not None
        self.generate_button.description = "Submitting…" if self._submitting else "Generate"
        self.generate_button.tooltip = reason or "Start a run; the kernel stays free while it works"
        self.hint.value = (
            f'<span style="color:{RED if is_error else MUTED}">{html.escape(_short(reason, LINE))}</span>'
            if reason else
            f'<span style="color:{MUTED}">The kernel stays free while it runs.</span>'
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
        if parse_pixel_size(request.size):
            self.free_size.value = request.size
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

    # -- references --

    def add_reference(self, url: str | InlineImage, *, thumb: bytes | None = None, name: str = "") -> None:
        """Add a public image URL (or a local picture sent inline) to the next run's references (at most 3)."""
        if isinstance(url, InlineImage):
            checked: str | InlineImage = url
        else:
            url = (url or "").strip()
            if not url:
                raise ValidationError("image_urls", "type or paste a public http(s) image URL first")
            checked = check_reference_url(url, len(self.references))
        if any(r.url == checked for r in self.references):
            self._note("That reference is already in the list.", ok=False)
            return
        if len(self.references) + len(self._uploading) >= REFS_MAX:
            raise ValidationError("image_urls", f"the API takes at most {REFS_MAX} references: remove one first")
        self.references.append(Ref(shown=name, url=checked, thumb=thumb))
        if isinstance(url, str) and self.ref_url.value.strip() == url:
            self.ref_url.value = ""
        self._render_refs()
        self._refresh_controls()

    def remove_reference(self, index: int) -> None:
        if 0 <= index < len(self.references):
            del self.references[index]
        self._render_refs()
        self._refresh_controls()

    def _render_refs(self) -> None:
        def remover(index: int) -> Callable[..., Any]:
            return self._guard("remove reference", lambda _b: self.remove_reference(index))

        self._ref_chips(self.references, self._uploading, remover)

    def _on_upload(self, change: dict[str, Any]) -> None:
        files = change.get("new") or ()
        if not files:
            return
        # The bytes sit in widget state (which notebooks save): take them and clear it at once.
        items = [(f["name"], bytes(f["content"])) for f in files]
        self.uploader.value = ()
        for name, data in items:
            if len(self.references) + len(self._uploading) >= REFS_MAX:
                self._show_error(f"Upload: {name} skipped: the API takes at most {REFS_MAX} references")
                continue
            self._uploading.append(name)
            self._start_background(self._upload(name, data), f"upload of {name}")
        self._render_refs()
        self._refresh_controls()

    async def _upload(self, name: str, data: bytes) -> None:
        try:
            # Checked like the magic's --ref (nothing sent for a non-image), and uploaded once per
            # content and API: the journal remembers the URL.
            ref = await asyncio.to_thread(local_ref, data, name)
            url = await upload(self._client(), ref)
            try:
                thumb: bytes | None = await asyncio.to_thread(thumb_bytes, data, REF_PX * 2)
            except Exception:  # a thumbnail is a nicety; the URL is what matters
                thumb = None
        finally:
            self._uploading.remove(name)
            self._render_refs()
            self._refresh_controls()
        self.add_reference(url, thumb=thumb, name=name)

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

    def _start_run(self, request: GenerationRequest, client: AsyncClient, *, resume: str | None = None) -> Run:
        run = Run(_RunHost(self), len(self.runs) + 1, request, client, resume=resume)
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
            if self._client_override is None:
                from ._session import get_session

                get_session().record([run.generation])  # the session's total in %qimage config
            self._start_background(self._refresh_balance(), "balance")

    # -- preview and per-image actions --

    def select(self, run: Run, index: int) -> None:
        """Show image ``index`` of ``run`` in the preview with its actions (what a thumbnail click does)."""
        slot = run.slots[index]
        if slot.image is None:
            return
        self._selected = (run, index)
        image = slot.image
        info = dict(getattr(image, "info", {}) or {})
        w, h = image.size
        caption = (
            f"<b>#{run.number} · image {index + 1} of {len(run.slots)}</b> · {w}×{h} · {html.escape(info.get('model', run.request.model))}"
            f"<br><span style='color:{MUTED}'>task {html.escape(str(info.get('task_id') or run.task_id or ''))}</span>"
        )
        self.preview_caption.value = caption
        try:
            self.cell.value = reproduce_cell(run.request, provider=self._cell_provider(run))
            self.cell_label.value = (
                f'<span style="color:{MUTED}">The %%qimage cell that reproduces it (after you run it, '
                f"this image is <code>qimages[{index}]</code>; unchanged, it is served from the journal "
                "for free):</span>"
            )
        except ValueError as exc:
            self.cell.value = ""
            self.cell_label.value = f'<span style="color:{MUTED}">No %%qimage cell: {html.escape(str(exc))}.</span>'

        self.action_note.value = ""
        self.preview_pane.layout.display = None
        self.preview_empty.layout.display = "none"
        self.preview_actions.layout.display = None
        # Show the thumbnail at once, then swap in a sharper mid-size JPEG made in a worker thread.
        self.preview.value = slot.thumb or b""
        self.preview.layout.display = None
        source = info.get("path") or image
        self._start_background(self._sharpen_preview(run, index, source), "preview")

    def _cell_provider(self, run: Run) -> str | None:
        """``--provider`` for the reproducing cell: left out only where a bare cell goes to the same
        host anyway (the seed's API, in use), so a cell copied elsewhere keeps its host."""
        from ._session import get_session

        name = run.client.provider.name
        try:
            in_use = get_session().provider().name
        except QImageError:
            in_use = None
        return None if name == in_use == "apimart" else name

    async def _sharpen_preview(self, run: Run, index: int, source: Any) -> None:
        data = await asyncio.to_thread(thumb_bytes, Path(source) if isinstance(source, str) else source, PREVIEW_PX)
        if self._selected == (run, index):
            self.preview.value = data

    def _selected_image(self) -> tuple[Run, int, Image.Image]:
        if self._selected is None:
            raise ValidationError("image", "click a thumbnail first")
        run, index = self._selected
        image = run.slots[index].image
        assert image is not None
        return run, index, image

    def save_selected(self) -> Path:
        """Copy the selected image's full-resolution PNG (with its provenance chunks) into the folder."""
        run, index, image = self._selected_image()
        info = dict(getattr(image, "info", {}) or {})
        source = info.get("path")
        if not source and run.generation is not None and index < len(run.generation.paths):
            source = str(run.generation.paths[index])
        if not source or not Path(source).exists():
            raise QImageError("the full-resolution file is not on disk (it may have been cleaned up)")
        folder = Path(self.folder.value.strip() or "qimage_images").expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        task = str(info.get("task_id") or run.task_id or f"run{run.number}")
        target = folder / f"{task}-{index}.png"
        shutil.copy2(source, target)
        self._note(f"Saved {target} ({image.size[0]}×{image.size[1]}, prompt and task id inside the PNG)")
        return target

    def use_selected_as_reference(self) -> None:
        """Add the selected image's public source URL to the next run's references."""
        _run, _index, image = self._selected_image()
        url = str((getattr(image, "info", {}) or {}).get("source_url") or "")
        if not url:
            raise QImageError("this image has no public source URL to reuse (upload it instead)")
        slot_thumb = _run.slots[_index].thumb
        self.add_reference(url, thumb=slot_thumb, name=f"#{_run.number}/{_index + 1}")
        self._note(f"Added as reference {len(self.references)} of {REFS_MAX} for the next run "
                   "(the provider's URL is temporary: use it within a day or so)")

    # -- balance and journal --

    async def _refresh_balance(self) -> None:
        client = self._client()
        if not client.has_key:
            self.balance.value = f'<span style="color:{MUTED}">no API key set</span>'
            return
        if not client.provider.capabilities.balance:
            self.balance.value = ""  # the host has no balance endpoint: nothing to show
            return
        balance = await client.balance()
        if balance.unlimited_quota:
            text = "balance: unlimited"
        elif balance.remain_balance is not None:
            text = f"balance: {balance.remain_balance:,.2f}"
            if balance.remain_credits is not None:
                text += f" · {balance.remain_credits:,.0f} credits"
        else:
            text = "balance: unknown"
        self.balance.value = f'<span style="color:{MUTED}">{html.escape(text)}</span>'

    def _on_journal_toggle(self, change: dict[str, Any]) -> None:
        if change.get("new") == 0 and not self._journal_loaded:
            self.refresh_journal()

    def refresh_journal(self, limit: int = 20) -> None:
        """List the journal's entries that are not this panel's own runs (newest first)."""
        client = self._client()
        own = {r.task_id for r in self.runs if r.task_id}
        own |= {r.generation.idempotency_key for r in self.runs if r.generation and r.generation.idempotency_key}
        entries = [e for e in client.history(limit) if getattr(e, "task_id", None) not in own
                   and getattr(e, "key", None) not in own]
        self._journal_loaded = True
        def resumer(target: str) -> Callable[..., Any]:
            return self._guard("resume", lambda _b: self.resume(target))

        rows = [self._journal_row(entry, resumer) for entry in entries]
        self.journal_list.children = tuple(rows)
        self.journal_note.value = (
            f'<span style="color:{MUTED};margin-left:8px">{len(rows)} earlier entr{"y" if len(rows) == 1 else "ies"}'
            f" in {html.escape(str(getattr(client.store, 'root', '') or 'the journal'))}</span>"
        )


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
