"""``%%qimage`` and ``%qimage``: the notebook's fastest way to an image.

``%load_ext qimage_nb`` registers :class:`QImageMagics`. Loading imports IPython and traitlets only
(both already loaded in any shell); the client, httpx, Pillow and ipywidgets load on first use.

The cell magic validates everything (arguments, ``%config`` defaults, reference files) before a
single request is sent, shows one output area that is updated in place while the task runs, and
leaves static HTML behind (small thumbnails as ``data:`` URIs plus a plain-text fallback), so a
saved notebook renders anywhere and grows by kilobytes per image, not megabytes.

Around it: the argument syntax in ``_magic_args``, a cell's plan and requests in ``_magic_plan``,
references in ``_refs``, the live output area in ``_display``, ``%qimage resume`` in
``_magic_resume`` and the session's subcommands in ``_magic_session``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from traitlets import Float, Int, Unicode, default, observe

from ._magic_args import (
    DEFAULT_OUTPUT,
    LINE_HELP,
    LINE_SUBCOMMANDS,
    cell_arguments,
    keep_empty_cells,
    parse_cell_line,
    split_refs,
    split_values,
)
from ._magic_plan import CellPlanner

if TYPE_CHECKING:
    from ..core._client import AsyncClient, Generation
    from ._display import LiveGallery
    from ._magic_plan import _Cell
    from ._refs import Ref

__all__ = ["QImageCellError", "QImageMagics"]


class QImageCellError(Exception):
    """A generation ended without images; IPython shows it as one line, not a traceback."""

    def __init__(self, message: str, kind: str = "QImageError", task_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.task_id = task_id

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31m{self.kind}\x1b[0m: {self.message}"]


# --- small helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    """Bad input or settings as IPython's one-line UsageError, never a traceback.

    Around the cell magic and every subcommand: a ValidationError (a bad $QIMAGE_BASE_URL met while
    building the client, a --ref that is not an image, ...) carries a message meant for the user,
    and never a secret.
    """
    from .._exceptions import ValidationError

    try:
        yield
    except ValidationError as exc:
        raise UsageError(exc.message) from None


# --- the magics ------------------------------------------------------------------------------


@magics_class
class QImageMagics(CellPlanner, Magics):
    """``%%qimage`` (generate) and ``%qimage`` (login, emulator, config, resume, history, panel).

    Defaults are configurable: ``%config QImageMagics.model = "qwen-image-2.0-pro"`` in a
    notebook, or ``c.QImageMagics.model = ...`` in ``ipython_config.py``.
    """

    provider = Unicode(
        "", help="Provider: apimart (the APIMart API), dashscope (Alibaba Model Studio), fal or replicate; empty: "
        "$QIMAGE_PROVIDER, else the one provider whose key is set, else apimart."
    ).tag(config=True)
    model = Unicode("qwen-image-2.0", help="Default model: qwen-image-2.0 or qwen-image-2.0-pro (or pro, std).").tag(config=True)
    size = Unicode(
        "", help="Default aspect ratio: 1:1, 4:3, 3:4, 16:9, 9:16, 3:2 or 2:3; empty: the model's default "
        "(1:1; Qwen Image 3.0 chooses its own size)."
    ).tag(config=True)
    resolution = Unicode("1K", help="Default resolution tier: 1K or 2K.").tag(config=True)
    n = Int(1, help="Default number of images per request (1 to 6).").tag(config=True)
    thumb_px = Int(help="Longest side of the thumbnails kept in the notebook, in pixels (default 256).").tag(config=True)
    thumb_format = Unicode("JPEG", help="Thumbnail format kept in the notebook: JPEG or WEBP.").tag(config=True)
    timeout = Float(900.0, help="Seconds to wait for a task before giving up waiting (it keeps running).").tag(
        config=True
    )
    output = Unicode(DEFAULT_OUTPUT, help="Variable that receives the images when -o is not given.").tag(config=True)
    concurrency = Int(4, help="Generations in flight at once for a comparison grid or resume --all.").tag(
        config=True
    )

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._pushed_provider = ""
        self._background_tasks: set[Any] = set()
        self._background_threads: list[threading.Thread] = []
        transforms = getattr(shell, "input_transformers_cleanup", None)
        if transforms is not None and keep_empty_cells not in transforms:
            transforms.append(keep_empty_cells)  # an empty %%qimage cell gets the magic's own message

    # -- settings -----------------------------------------------------------------------------

    @observe("provider")
    def _provider_changed(self, change: Any) -> None:
        # Into the session at once when there is one (so a Panel() made next follows it too); a
        # value from ipython_config.py waits for the first %qimage, so loading stays light.
        if "qimage_nb.notebook._session" in sys.modules:
            self._push_provider()

    def _push_provider(self) -> None:
        """The session's provider follows %config QImageMagics.provider whenever that changes (a
        later %qimage login/emulator --provider wins until it changes again)."""
        if self.provider != self._pushed_provider:
            from ._session import get_session

            get_session().prefer(self.provider.strip() or None)
            self._pushed_provider = self.provider


    @default("thumb_px")
    def _thumb_px_default(self) -> int:
        # The display's own size, read when first needed: loading the extension imports no more.
        from ..view._gallery import DEFAULT_THUMB_PX

        return DEFAULT_THUMB_PX


    # -- %%qimage -----------------------------------------------------------------------------

    @no_var_expand
    @cell_arguments
    @cell_magic("qimage")
    def qimage_cell(self, line: str, cell: str) -> None:
        """Generate images with Qwen Image 2.0; the cell body is the prompt.

        The prompt is sent exactly as written (surrounding whitespace trimmed): braces, quotes,
        $ and any language pass through untouched. When it finishes, NAME (-o, default qimages)
        holds a list of PIL images in the API's order; full images stay on disk and the notebook
        keeps small thumbnails only.

        An identical request that already completed is served from the journal with no request
        to the API ("from cache"); --new pays for fresh images. Comma-separated values for
        --model, --size, --resolution and --seed run every combination concurrently as a
        comparison grid. Options a provider does not take (--seed on the APIMart API, say) are
        refused in one line before anything is sent.

        For example, two wide pictures into the variable cats:

            %%qimage -o cats --size 16:9 -n 2
            a watercolour cat reading "Qwen" on a sign

        and the first of them refined with the pro model:

            %%qimage --ref cats[0] --pro
            the same cat, wearing a hat
        """
        with _usage_errors():
            self._generate(parse_cell_line(line), cell.strip())

    def _generate(self, args: Any, prompt: str) -> None:
        self._push_provider()
        hosts = split_values([args.provider]) if args.provider else []
        if len(hosts) > 1:
            from ._magic_hosts import run_host_grid

            run_host_grid(self, args, prompt, hosts)  # the host as a grid axis
            return
        plan = self._plan(args, prompt)
        thumb_px, fmt, concurrency = self._checked_display_settings()
        cell = self._build(plan, None)  # every value checked before references are looked at
        from ._refs import resolve_refs

        refs = resolve_refs(split_refs(args.ref), self.shell.user_ns)

        from ._session import get_session

        session = get_session()
        provider = session.provider(plan.provider)
        if not session.has_key_for(provider.name):
            from ._magic_session import no_key

            raise UsageError(no_key(provider))
        client = session.client(provider.name)

        from ..core._sync import run_sync

        if plan.dry_run or plan.max_cost is not None:
            from ._batch import dry_run_text

            try:
                estimate = run_sync(self._estimate(client, cell))
            except KeyboardInterrupt:
                print("interrupted before anything was submitted")
                return
            if plan.dry_run:
                print(dry_run_text(estimate, cell.requests, cell.labels, plan.name))
                return
            refused = estimate.refusal(plan.max_cost)
            if refused is not None:
                raise UsageError(refused.replace("max_cost", "--max-cost"))
        say: list[str] = []
        try:
            cell = run_sync(self._prepare(client, cell, refs, say.append))
        except KeyboardInterrupt:
            print("interrupted before anything was submitted")
            return
        live = self._live_for(cell, thumb_px, fmt, emulator=session.emulator_for(provider.name) is not None,
                              host_title=provider.title if plan.provider or provider.name != "apimart" else None)
        from ._display import host_of

        live.host = host_of(client)
        live.setting = provider.base_url_env
        live.keys_honoured = provider.capabilities.idempotency_keys
        for text in say:
            live.notes.append(text)
        from ._host_cancel import split_notes

        live.notes.extend(split_notes(client, cell.requests))
        live.show()
        if plan.background:
            self._start_background(cell, live, concurrency, provider.name)
            print(f"running in the background: {plan.name} is bound when the images arrive")
            return

        started = time.time()
        try:
            generations = run_sync(self._execute(client, cell, live, concurrency))
        except KeyboardInterrupt:
            # Each generation's line says it once: stopped waiting, and the command that resumes it.
            _adopt_journal_ids(client, live, started)
            stopped = live.interrupted()
            if client.provider.capabilities.cancel_on_stop:  # fal, Replicate: every unfinished task
                from ._host_cancel import cancel_at_host

                cancel_at_host(client, started, f"%%qimage -o {plan.name}")
            else:  # DashScope's asynchronous models: a task still queued
                from ._host_cancel import cancel_stopped

                cancel_stopped(client, stopped)
            return
        except BaseException as exc:
            raise self._surface(exc, live) from None
        self._conclude(plan.name, generations, live)

    async def _estimate(self, client: AsyncClient, cell: _Cell) -> Any:
        """The cell's price before anything is sent (references not uploaded: a dry run sends nothing)."""
        await self._checked(client, cell)
        return await client.estimate(cell.requests, cache=not cell.plan.fresh)

    async def _prepare(self, client: AsyncClient, cell: _Cell, refs: list[Ref], say: Any) -> _Cell:
        """The cell's requests with their references, each checked against the provider, before
        anything is submitted.

        A re-run first asks the journal with the references' own URLs (the ones the first run
        sent): a reference made by this package keeps its source URL, which may have expired, or
        (on the emulator, after a kernel restart) point at a port that is gone; uploading its copy
        on disk instead would change the request and miss the cache. Local pictures are uploaded
        only after every value of the cell has passed the provider's checks, so a refused option
        costs no upload.
        """
        from ._refs import ref_urls

        if not refs:
            return await self._checked(client, cell)
        own = [str(ref.url) for ref in refs if ref.url]
        if not cell.plan.fresh and len(own) == len(refs):
            cached = self._build(cell.plan, own)
            if all(client.find_cached(r) is not None for r in cached.requests):
                return cached
        if not all(ref.url_still_good(client.base_url) for ref in refs):
            await self._checked(client, cell)  # uploads come next: refuse what the provider would first
        urls = await ref_urls(client, refs, say)
        return await self._checked(client, self._build(cell.plan, urls))


    async def _execute(self, client: AsyncClient, cell: _Cell, live: LiveGallery, concurrency: int) -> list[Generation]:
        from ..core._retry import retry_observer

        retry_observer.set(live.retrying)  # this run's retries show on its lines while they happen
        from ..journal._provenance import item_label

        plan = cell.plan
        if len(cell.requests) == 1 and cell.items is None:
            generation = await client.generate(
                cell.requests[0],
                on_update=live.on_update,
                timeout=plan.timeout,
                cache=not plan.fresh,
                label=f"%%qimage -o {plan.name}",
            )
            return [generation]
        cell_label = f"%%qimage -o {plan.name}"
        if cell.items is not None:
            labels = [item_label(f"{cell_label} --each {plan.each}", item) for item in cell.items]
        else:
            labels = [cell_label] * len(cell.requests)
        return await client.generate_many(
            cell.requests,
            concurrency=concurrency,
            on_update=live.on_update,
            timeout=plan.timeout,
            cache=not plan.fresh,
            max_cost=plan.max_cost,
            labels=labels,
            progress=False,  # the cell's own gallery shows it
        )

    def _conclude(self, name: str, generations: list[Generation], live: LiveGallery, *, raising: bool = True) -> None:
        """Bind the images, draw the final static output, and say each failure once.

        One generation that failed: the cell raises, and its red line is the reason (the output
        keeps a small mark). Several: each failed generation's reason is a labelled red line in the
        output, and the cell raises only when none succeeded, without repeating them.
        """
        from ..view._words import error_line

        images = [image for gen in generations if gen.error is None for image in gen.images]
        failures = [gen for gen in generations if gen.error is not None]
        if images or not failures:
            self.shell.user_ns[name] = images
        live.footer = f"{name}: {len(images)} image{'s' if len(images) != 1 else ''}" if images else None
        single = len(generations) == 1
        if failures and single and raising:
            live.reason_below = True
        live.finish(list(generations))
        if not failures or len(failures) < len(generations) or not raising:
            return
        first = failures[0].error
        assert first is not None
        kind, message = error_line(first, host=live.host, retries=live.retries, setting=live.setting)
        if not single:
            kinds = {type(gen.error).__name__ for gen in failures}
            kind = kind if len(kinds) == 1 else "QImageError"
            message = f"all {len(failures)} generations failed; each one's reason is in the output above"
        raise QImageCellError(message, kind, getattr(first, "task_id", None))

    def _surface(self, exc: BaseException, live: LiveGallery, *, raising: bool = True) -> BaseException:
        """The one line a user sees for a failure: UsageError for bad input, the API's reason otherwise.

        ``raising``: the cell raises what this returns, so that line is the only place the reason
        is said; otherwise (a background run) the output area says it.
        """
        from .._exceptions import QImageError, ValidationError
        from ..view._words import error_line

        if isinstance(exc, (UsageError, QImageCellError)):
            return exc
        if isinstance(exc, ValidationError):
            live.fail(exc, said_below=raising)
            return UsageError(exc.message)
        if isinstance(exc, QImageError):
            live.fail(exc, said_below=raising)
            kind, message = error_line(exc, host=live.host, retries=live.retries, setting=live.setting)
            return QImageCellError(message, kind, exc.task_id)
        if isinstance(exc, Exception):
            live.fail(exc, said_below=raising)
            return QImageCellError(f"{type(exc).__name__}: {exc}", "QImageError")
        return exc

    # -- background runs ----------------------------------------------------------------------

    def _start_background(self, cell: _Cell, live: LiveGallery, concurrency: int, provider: str) -> None:
        import asyncio

        from ._session import get_session

        session = get_session()

        async def run(client: AsyncClient, owned: bool) -> None:
            try:
                generations = await self._execute(client, cell, live, concurrency)
                self._conclude(cell.plan.name, generations, live, raising=False)
            except asyncio.CancelledError:
                live.interrupted()  # each generation's line says how to resume it
                raise
            except BaseException as exc:  # never lost: a background failure lands in its output area
                self._surface(exc, live, raising=False)
                if not isinstance(exc, Exception):
                    raise
            finally:
                if owned:
                    await client.aclose()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            running = False
        else:
            running = True
        if running:
            # In a kernel: a task on the kernel's own loop, which keeps running between cells.
            task = asyncio.ensure_future(run(session.client(provider), False))
            self._background_tasks.add(task)
            task.add_done_callback(self._background_tasks.discard)
            return
        # No loop running (plain IPython, a script): a daemon thread with its own loop and its own
        # client, because an httpx client's connections belong to the loop that opened them.
        client = session.new_client(provider)

        def main() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(run(client, True))
            finally:
                loop.close()

        thread = threading.Thread(target=main, name="qimage-background", daemon=True)
        self._background_threads.append(thread)
        thread.start()

    def _join_background(self, timeout: float | None = None) -> None:
        """Wait for background runs started without a running loop (tests, scripts)."""
        for thread in list(self._background_threads):
            thread.join(timeout)
            if not thread.is_alive():
                self._background_threads.remove(thread)

    # -- %qimage ------------------------------------------------------------------------------


    @no_var_expand
    @line_magic("qimage")
    def qimage_line(self, line: str) -> None:
        command, _, rest = line.strip().partition(" ")
        if not command or command in ("help", "-h", "--help"):
            print(LINE_HELP)
            return
        if command not in LINE_SUBCOMMANDS:
            raise UsageError(
                f"unknown subcommand {command!r}: use one of {', '.join(LINE_SUBCOMMANDS)}; "
                "to generate, put the prompt in a %%qimage cell"
            )
        with _usage_errors():
            self._push_provider()
            if command == "resume":
                from ._magic_resume import resume

                resume(self, rest.strip())
            else:
                from ._magic_session import SUBCOMMANDS

                SUBCOMMANDS[command](self, rest.strip())


QImageMagics.qimage_line.__doc__ = LINE_HELP


def _adopt_journal_ids(client: AsyncClient, live: LiveGallery, since: float) -> None:
    """Fill in task ids the display never saw (an interrupt before the first poll) from the journal."""
    with contextlib.suppress(Exception):
        entries = [e for e in client.pending() if e.created_at >= since - 1]
        for slot in live.slots:
            if slot.task_id or slot.request is None:
                continue
            wanted = slot.request.fingerprint()
            for entry in entries:
                if entry.fingerprint == wanted:
                    slot.task_id = entry.task_id or entry.key  # resume takes either
                    slot.unconfirmed = entry.task_id is None
                    entries.remove(entry)
                    break
