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

Every part carries a stable CSS class (``qimage-…``) for outside checks and user styling.
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ._contract import (
    MODELS,
    N_MAX,
    N_MIN,
    NEGATIVE_PROMPT_MAX,
    PIXEL_SIZES,
    PROMPT_MAX,
    RATIOS,
    REFS_MAX,
    RESOLUTIONS,
    GenerationRequest,
    check_reference_url,
)
from ._exceptions import QImageError, ValidationError

if TYPE_CHECKING:
    from PIL import Image

    from ._client import AsyncClient, Generation, Update

__all__ = ["Panel", "reproduce_cell", "walk_widgets"]

logger = logging.getLogger("qimage_nb")

_LABEL_W = "92px"
_DESC = {"description_width": _LABEL_W}
_THUMB_AREA = 176 * 176  # gallery tiles keep the same area whatever the ratio
_THUMB_PX = 256  # longest side of the thumbnail bytes
_PREVIEW_PX = 768  # longest side of the preview JPEG (never the full-resolution file)
_REF_PX = 64
_MUTED = "#5f6b7a"
_RED = "#b3261e"


# --- small helpers ----------------------------------------------------------------------------


def _one_line(text: Any, limit: int = 360) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _short(text: str, limit: int = 70) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _tile_size(ratio: str) -> tuple[int, int]:
    """Display size of a gallery tile: equal area for every ratio, so grids look balanced."""
    w, h = PIXEL_SIZES.get((ratio, "1K"), (1, 1))
    r = w / h
    return round(math.sqrt(_THUMB_AREA * r)), round(math.sqrt(_THUMB_AREA / r))


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


def _image_format(mime: str) -> str:
    return "webp" if "webp" in mime else "jpeg"


def _describe(exc: BaseException) -> str:
    """One readable line for any failure: our errors speak for themselves; others get their type."""
    if isinstance(exc, QImageError):
        return _one_line(str(exc))
    return _one_line(f"unexpected {type(exc).__name__}: {exc}" if str(exc) else f"unexpected {type(exc).__name__}")


def _quote(value: str) -> str:
    """Quote one %%qimage argument the way the magic reads it back.

    IPython's argument splitter (non-POSIX shlex) keeps quotes on the token and has no escapes;
    the magic then drops one surrounding pair. So a value is wrapped in a quote character it does
    not contain whenever it has whitespace or quotes. A value holding both kinds of quote cannot
    be written at all; ``reproduce_cell`` refuses it rather than print a cell that means something else.
    """
    if value and not any(c.isspace() or c in "'\"" for c in value):
        return value
    for mark in ("'", '"'):
        if mark not in value:
            return f"{mark}{value}{mark}"
    raise ValueError("a value with both ' and \" cannot be passed as a %%qimage argument")


def reproduce_cell(request: GenerationRequest, *, name: str = "qimages") -> str:
    """The exact ``%%qimage`` cell that makes this request again (served from the journal when unchanged).

    Raises ``ValueError`` when an argument (negative prompt or reference URL) holds both kinds of
    quote, which the magic's argument syntax cannot express.
    """
    args = [
        "-o", name,
        "--model", request.model,
        "--size", request.size,
        "--resolution", request.resolution,
        "-n", str(request.n),
    ]  # fmt: skip
    if request.negative_prompt:
        args += ["--negative", request.negative_prompt]
    for url in request.image_urls:
        args += ["--ref", url]
    return "%%qimage " + " ".join(_quote(a) for a in args) + "\n" + request.prompt


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _thumb_bytes(source: Any, max_side: int) -> bytes:
    """JPEG thumbnail bytes of a path, PIL image or encoded bytes (runs in a worker thread)."""
    from ._images import thumbnail

    if isinstance(source, (bytes, bytearray, memoryview)):
        import io

        from PIL import Image as PILImage

        source = PILImage.open(io.BytesIO(bytes(source)))
    return thumbnail(source, max_side=max_side, fmt="JPEG")


def walk_widgets(root: W.Widget) -> Any:
    """Every widget reachable from ``root``: children, layouts, styles, nested widgets (depth first)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        yield widget
        for name in widget.keys:
            value = getattr(widget, name, None)
            items = value if isinstance(value, (list, tuple)) else (value,)
            stack.extend(v for v in items if isinstance(v, W.Widget))


def _inline(widget: W.Widget) -> W.Widget:
    # ToggleButtons lack ipywidgets' own "inline row" class, so their description sits above the
    # buttons, left-aligned; with it, the label lines up right-aligned like every other control's.
    widget.add_class("jupyter-widget-inline-hbox")
    widget.add_class("widget-inline-hbox")  # the label's right alignment still keys on the old name
    return widget


@dataclass
class _Ref:
    url: str
    thumb: bytes | None = None  # a local thumbnail when we have the image; else the browser loads the URL
    name: str = ""


# --- one run -------------------------------------------------------------------------------------


class _Slot:
    """One gallery cell of a run: a placeholder until its image lands, then a clickable thumbnail."""

    def __init__(self, run: _Run, index: int) -> None:
        self.run = run
        self.index = index
        self.image: Image.Image | None = None
        self.thumb: bytes | None = None
        w, h = _tile_size(run.request.size)
        self.size = (w, h)
        self.waiting = W.HTML(
            f'<div style="width:{w}px;height:{h}px;display:flex;align-items:center;justify-content:center;'
            f'background:#eef0f3;color:{_MUTED};border-radius:6px;font-size:12px">image {index + 1}…</div>',
            layout=W.Layout(grid_area="tile", margin="0"),
        )
        self.box = W.GridBox(
            [self.waiting],
            layout=W.Layout(
                grid_template_columns=f"{w}px",
                grid_template_rows=f"{h}px",
                grid_template_areas='"tile"',
                width=f"{w}px",
                height=f"{h}px",
                overflow="hidden",
            ),
        )
        self.box.add_class("qimage-placeholder")

    def fill(self, image: Image.Image, thumb: bytes, mime: str, tooltip: str) -> None:
        if self.image is not None:
            return
        self.image, self.thumb = image, thumb
        w, h = self.size
        picture = W.Image(
            value=thumb,
            format=_image_format(mime),
            layout=W.Layout(grid_area="tile", width=f"{w}px", height=f"{h}px", object_fit="cover", margin="0"),
        )
        picture.add_class("qimage-thumb-img")
        # ipywidgets' Image has no click event: a transparent Button laid over it in the same grid
        # area takes the click (and gives hover/focus feedback), so the whole tile is the target.
        opener = W.Button(
            description="",
            tooltip=f"image {self.index + 1}: click for a larger preview\n{tooltip}",
            layout=W.Layout(grid_area="tile", width=f"{w}px", height=f"{h}px", margin="0", padding="0"),
            style={"button_color": "transparent"},
        )
        opener.add_class("qimage-open")
        opener.on_click(self.run.panel._guard("preview", lambda _b: self.run.panel.select(self.run, self.index)))
        self.box.children = (picture, opener)
        self.box.remove_class("qimage-placeholder")
        self.box.add_class("qimage-thumb")


class _Run:
    """One Generate (or resume) of the panel: its task, its row in the history, its results."""

    def __init__(
        self, panel: Panel, number: int, request: GenerationRequest, client: AsyncClient, *, resume: str | None = None
    ) -> None:
        self.panel = panel
        self.number = number
        self.request = request
        self.client = client
        self.resume_id = resume
        self.task: asyncio.Task[None] | None = None
        self.update: Update | None = None
        self.generation: Generation | None = None
        self.error: BaseException | None = None
        self.state = "starting"  # starting, submitting, running, done, failed, cancelled
        self.task_id: str | None = None
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.finished_at: float | None = None
        self._cancel_requested = False
        self.slots: list[_Slot] = []

        self.header = W.HTML(self._header_html())
        self.header.add_class("qimage-run-header")
        self.status = W.HTML(self._status_html("starting…"), layout=W.Layout(flex="1 1 auto"))
        self.status.add_class("qimage-status")
        self.progress = W.IntProgress(value=0, min=0, max=100, layout=W.Layout(width="160px", flex="0 0 160px"))
        self.progress.add_class("qimage-progress")
        self.stop_button = W.Button(
            description="Stop", icon="stop", tooltip="Stop waiting on this run (the task id stays in the journal)",
            layout=W.Layout(width="80px", flex="0 0 auto"),
        )
        self.stop_button.add_class("qimage-run-cancel")
        self.stop_button.on_click(panel._guard("stop", lambda _b: self.cancel()))
        self.reuse_button = W.Button(
            description="Reuse settings", icon="undo", tooltip="Put this run's prompt and settings back in the controls",
            layout=W.Layout(width="140px", flex="0 0 auto"),
        )
        self.reuse_button.add_class("qimage-reuse")
        self.reuse_button.on_click(panel._guard("reuse settings", lambda _b: panel.load_request(self.request)))
        w, _h = _tile_size(request.size)
        self.gallery = W.GridBox(
            [],
            layout=W.Layout(
                grid_template_columns=f"repeat(auto-fill, {w}px)",
                grid_gap="8px",
                width="100%",
                margin="4px 0 0 0",
            ),
        )
        self.gallery.add_class("qimage-gallery")
        self._set_slots(0 if resume else request.n)
        self.box = W.VBox(
            [
                self.header,
                W.HBox([self.progress, self.status, self.stop_button, self.reuse_button],
                       layout=W.Layout(align_items="center", width="100%")),
                self.gallery,
            ],
            layout=W.Layout(border_top="1px solid #dde1e6", padding="6px 0 8px 0", width="100%"),
        )
        self.box.add_class("qimage-run")

    # -- display --

    def _header_html(self) -> str:
        r = self.request
        w, h = r.pixel_size
        when = time.strftime("%H:%M:%S", time.localtime(self.started_wall))
        bits = [f"<b>#{self.number}</b>", when]
        if self.resume_id:
            bits.append(f"resumed {html.escape(self.resume_id)}")
        bits += [html.escape(r.model), f"{r.size} {r.resolution} ({w}×{h})", f"{r.n} image{'s' if r.n > 1 else ''}"]
        if r.image_urls:
            bits.append(f"{len(r.image_urls)} reference{'s' if len(r.image_urls) > 1 else ''}")
        prompt = f"“{html.escape(_short(r.prompt, 90))}”" if r.prompt else "<i>prompt unknown</i>"
        neg = f' <span style="color:{_MUTED}">not: {html.escape(_short(r.negative_prompt, 40))}</span>' if r.negative_prompt else ""
        return (
            f'<div style="line-height:1.4"><span style="color:{_MUTED}">{" · ".join(bits)}</span><br>'
            f"{prompt}{neg}</div>"
        )

    def _status_html(self, text: str, *, color: str = _MUTED) -> str:
        return f'<span style="color:{color};padding-left:8px">{html.escape(_one_line(text))}</span>'

    def _set_slots(self, count: int) -> None:
        if count == len(self.slots):
            return
        self.slots = [_Slot(self, i) for i in range(count)]
        self.gallery.children = tuple(s.box for s in self.slots)

    def _running_text(self) -> str:
        u = self.update
        tid = f" · {self.task_id}" if self.task_id else ""
        if u is None or u.stage == "submitting":
            return "submitting…"
        if u.stage == "pending":
            return f"queued{self._eta()}{tid}"
        if u.stage == "processing":
            return f"processing {u.progress}%{self._eta()}{tid}"
        if u.stage == "downloading":
            got = sum(1 for i in u.images if i is not None)
            return f"downloading {got}/{len(u.images)}{tid}"
        return f"{u.stage}{tid}"

    def _eta(self) -> str:
        u = self.update
        if u is None or u.estimated_time is None:
            return ""
        left = u.estimated_time - (time.monotonic() - self.started)
        if left <= 0:
            return " · any moment now"
        return f" · about {_fmt_seconds(left)} left (server estimate)"

    def render(self) -> None:
        running = self.state in ("starting", "submitting", "running")
        self.stop_button.layout.display = None if running else "none"
        if running:
            self.status.value = self._status_html(self._running_text())
            if self.update is not None:
                self.progress.value = self.update.progress
            return
        # Placeholders of images that will not come are dropped; any image that did land stays.
        self.gallery.children = tuple(s.box for s in self.slots if s.image is not None or self.state == "done")
        if self.state == "done":
            gen = self.generation
            assert gen is not None
            took = (self.finished_at or time.monotonic()) - self.started
            source = "from the journal (no request)" if gen.cached else f"in {_fmt_seconds(took)}"
            n = len(gen.images)
            self.status.value = self._status_html(
                f"done · {n} image{'s' if n != 1 else ''} {source} · {gen.task_id}", color="#1b6e3a"
            )
            self.progress.value = 100
            self.progress.bar_style = "success"
        elif self.state == "failed":
            self.status.value = self._status_html(f"failed: {_describe(self.error)}" if self.error else "failed", color=_RED)
            self.progress.bar_style = "danger"
        elif self.state == "cancelled":
            self.status.value = self._status_html(self.cancel_message(), color="#8a5a00")
            self.progress.bar_style = "warning"

    def cancel_message(self) -> str:
        if self.task_id:
            return (
                f"cancelled: stopped waiting for task {self.task_id}. It may still finish on the server; "
                f"the journal keeps the task id, so %qimage resume {self.task_id} (or the Journal below) "
                "fetches its images without paying again"
            )
        return (
            "cancelled before the server confirmed the task. If it was accepted, the journal kept the "
            "request and its idempotency key: %qimage resume --all fetches it without paying twice"
        )

    # -- work --

    @property
    def in_flight(self) -> bool:
        # By state, not task.done(): the run's own epilogue (which refreshes the buttons) runs
        # inside the task, after the outcome is known.
        return self.task is not None and not self.task.done() and self.state in ("starting", "submitting", "running")

    def start(self) -> None:
        self.task = self.panel._loop().create_task(self.main())

    def cancel(self) -> None:
        if self.in_flight:
            self._cancel_requested = True
            assert self.task is not None
            self.task.cancel()

    async def main(self) -> None:
        panel = self.panel
        ticker = asyncio.ensure_future(self._tick())
        try:
            self.state = "submitting"
            self.render()
            if self.resume_id:
                gen = await self.client.resume(self.resume_id, on_update=self.on_update)
            else:
                r = self.request
                gen = await self.client.generate(
                    r.prompt,
                    model=r.model,
                    size=r.size,
                    resolution=r.resolution,
                    n=r.n,
                    negative_prompt=r.negative_prompt,
                    image_urls=list(r.image_urls) or None,
                    on_update=self.on_update,
                    cache=False,  # the panel's Generate always makes new images
                    label=f"panel #{self.number}",
                )
            if self.resume_id and gen.request.prompt:
                self.request = gen.request
                self.header.value = self._header_html()
            self.task_id = gen.task_id or self.task_id
            await self._fill_all(gen.images)
            self.generation = gen
            self.state = "done"
        except asyncio.CancelledError:
            self.state = "cancelled"
            self._record_unfinished(None)
            if not self._cancel_requested:
                raise  # the loop itself is going away: do not swallow that
        except Exception as exc:
            self.state = "failed"
            self.error = exc
            self.task_id = getattr(exc, "task_id", None) or self.task_id
            if not isinstance(exc, QImageError):
                logger.exception("qimage_nb: panel run #%d failed", self.number)
            self._record_unfinished(exc)
            panel._show_error(f"Run #{self.number}: {_describe(exc)}")
        finally:
            ticker.cancel()
            self.finished_at = time.monotonic()
            panel._submit_settled(self)
            try:
                self.render()
                panel._run_finished(self)
            except Exception as exc:  # the display must never hide the outcome of a paid run
                logger.exception("qimage_nb: panel display failed")
                panel._show_error(f"Run #{self.number}: display failed: {_describe(exc)}")

    def _record_unfinished(self, exc: BaseException | None) -> None:
        from ._client import Generation

        error = exc if isinstance(exc, QImageError) else QImageError(
            self.cancel_message() if exc is None else _describe(exc), task_id=self.task_id
        )
        self.generation = Generation(
            task_id=self.task_id,
            request=self.request,
            status="cancelled" if exc is None else "failed",
            error=error,
        )

    async def _tick(self) -> None:
        # Status changes arrive only when the server's answer changes; the ETA should still count down.
        while True:
            await asyncio.sleep(1.0)
            if self.state in ("submitting", "running"):
                self.render()

    async def on_update(self, update: Update) -> None:
        self.update = update
        if update.task_id:
            self.task_id = update.task_id
        if update.stage != "submitting" and self.state == "submitting":
            self.state = "running"
            self.panel._submit_settled(self)
        if update.images:
            self._set_slots(len(update.images))
        if update.new_image is not None and update.new_image < len(update.images):
            image = update.images[update.new_image]
            if image is not None:
                await self._fill(update.new_image, image)
        elif update.stage == "done":
            await self._fill_all([i for i in update.images if i is not None])
        if not update.done:
            self.render()

    async def _fill(self, index: int, image: Image.Image) -> None:
        from ._display import tile_for

        slot = self.slots[index]
        if slot.image is not None:
            return
        tile = await asyncio.to_thread(tile_for, image, thumb_px=_THUMB_PX)
        if tile.thumb is not None:
            slot.fill(image, tile.thumb, tile.mime, tile.tooltip)

    async def _fill_all(self, images: list[Image.Image]) -> None:
        self._set_slots(max(len(images), len(self.slots)) if images else len(self.slots))
        for index, image in enumerate(images):
            await self._fill(index, image)

    @property
    def images(self) -> list[Image.Image]:
        return list(self.generation.images) if self.generation is not None else []


# --- the panel -----------------------------------------------------------------------------------


class Panel:
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
        self.runs: list[_Run] = []
        self.references: list[_Ref] = []
        self._uploading: list[str] = []
        self._submitting: set[int] = set()
        self._selected: tuple[_Run, int] | None = None
        self._error_is_validation = False
        self._journal_loaded = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self._build(str(folder))
        self._refresh_controls()
        self._start_background(self._refresh_balance(), "balance")

    # -- construction --

    def _build(self, folder: str) -> None:
        from ._session import EMULATOR_BANNER

        self.banner = W.HTML(
            f'<div style="background:#fff3cd;color:#664d03;padding:6px 10px;border-radius:4px">'
            f"<b>EMULATOR</b> · {html.escape(EMULATOR_BANNER.removeprefix('EMULATOR: '))}</div>",
            layout=W.Layout(width="100%"),
        )
        self.banner.add_class("qimage-banner")
        self.banner.layout.display = None if self._using_emulator() else "none"

        self.title = W.HTML(
            '<div style="font-size:15px;font-weight:600">Qwen Image 2.0</div>', layout=W.Layout(flex="1 1 auto")
        )
        self.server = W.HTML(self._server_html())
        self.server.add_class("qimage-server")
        self.balance = W.HTML("")
        self.balance.add_class("qimage-balance")
        header = W.HBox([self.title, self.server, self.balance], layout=W.Layout(align_items="baseline", width="100%"))
        header.add_class("qimage-header")

        # prompt and negative prompt, each with a live count against its limit
        self.prompt = W.Textarea(
            placeholder="Describe the image: subject, style, light, text to render…",
            description="Prompt",
            style=_DESC,
            layout=W.Layout(width="100%", height="84px"),
        )
        self.prompt.add_class("qimage-prompt")
        self.prompt_count = W.HTML()
        self.prompt_count.add_class("qimage-count-chars")
        self.negative = W.Textarea(
            placeholder="Optional: what to avoid (blurry, watermark, extra fingers…)",
            description="Negative",
            style=_DESC,
            layout=W.Layout(width="100%", height="44px"),
        )
        self.negative.add_class("qimage-negative")
        self.negative_count = W.HTML()
        self.negative_count.add_class("qimage-count-chars")

        self.model = W.ToggleButtons(
            options=list(MODELS),
            value=MODELS[0],
            description="Model",
            tooltips=["standard", "better text rendering, finer realistic texture"],
            style={**_DESC, "button_width": "168px"},
        )
        _inline(self.model)
        self.model.add_class("qimage-model")
        self.ratio = W.ToggleButtons(
            options=list(RATIOS), value=RATIOS[0], description="Ratio", style={**_DESC, "button_width": "50px"},
        )
        _inline(self.ratio)
        self.ratio.add_class("qimage-size")
        self.resolution = W.ToggleButtons(
            options=list(RESOLUTIONS), value=RESOLUTIONS[0], description="Resolution",
            style={**_DESC, "button_width": "50px"},
        )
        _inline(self.resolution)
        self.resolution.add_class("qimage-resolution")
        self.pixels = W.HTML()
        self.pixels.add_class("qimage-pixels")
        self.count = W.ToggleButtons(
            options=list(range(N_MIN, N_MAX + 1)), value=1, description="Images",
            style={**_DESC, "button_width": "34px"},
        )
        _inline(self.count)
        self.count.add_class("qimage-count")

        # references: URL + Add, or local files through the provider's upload endpoint
        self.ref_url = W.Text(
            placeholder="https://… public image URL", description="References", style=_DESC,
            layout=W.Layout(width="auto", flex="1 1 auto"),
        )
        self.ref_url.add_class("qimage-ref-url")
        self.ref_add_button = W.Button(description="Add", icon="plus", layout=W.Layout(width="70px"))
        self.ref_add_button.add_class("qimage-ref-add")
        self.uploader = W.FileUpload(
            accept="image/png,image/jpeg,image/webp,image/gif", multiple=True, description="Upload",
            layout=W.Layout(width="124px", flex="0 0 auto"),
        )
        self.uploader.add_class("qimage-upload")
        self.refs_box = W.HBox([], layout=W.Layout(margin=f"2px 0 0 {_LABEL_W}", flex_flow="row wrap"))
        self.refs_box.add_class("qimage-refs")

        self.generate_button = W.Button(description="Generate", button_style="primary", icon="play",
                                        layout=W.Layout(width="130px"))
        self.generate_button.add_class("qimage-generate")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True, layout=W.Layout(width="110px"),
                                      tooltip="Stop waiting on the runs in flight (their task ids stay in the journal)")
        self.cancel_button.add_class("qimage-cancel")
        self.hint = W.HTML(layout=W.Layout(flex="1 1 auto", margin="0"))
        self.hint.add_class("qimage-hint")

        self.error = W.HTML(layout=W.Layout(width="100%", display="none"))
        self.error.add_class("qimage-error")

        def row(*children: W.Widget, **layout: Any) -> W.HBox:
            return W.HBox(list(children), layout=W.Layout(align_items="center", width="100%", **layout))

        def right(widget: W.Widget) -> W.HBox:
            return W.HBox([widget], layout=W.Layout(justify_content="flex-end", width="100%", margin="-4px 0 0 0"))

        self.controls = W.VBox(
            [
                self.prompt,
                right(self.prompt_count),
                self.negative,
                right(self.negative_count),
                self.model,
                self.ratio,
                row(self.resolution, self.pixels),
                self.count,
                row(self.ref_url, self.ref_add_button, self.uploader),
                self.refs_box,
                row(W.HTML(layout=W.Layout(width=_LABEL_W, min_width=_LABEL_W)), self.generate_button,
                    self.cancel_button, margin="6px 0 0 0"),
                row(W.HTML(layout=W.Layout(width=_LABEL_W, min_width=_LABEL_W)), self.hint),
            ],
            layout=W.Layout(flex="1 1 480px", min_width="440px"),
        )
        self.controls.add_class("qimage-controls")

        # preview of the selected image, with its actions
        self.preview_empty = W.HTML(
            f'<div style="color:{_MUTED};border:1px dashed #c7ccd3;border-radius:6px;padding:28px 12px;'
            'text-align:center">Click a thumbnail to preview it here, save it, reuse it as a reference, '
            "or copy the %%qimage cell that reproduces it.</div>"
        )
        self.preview = W.Image(format="jpeg", layout=W.Layout(display="none", max_width="100%", max_height="520px",
                                                               object_fit="contain", margin="0"))
        self.preview.add_class("qimage-preview")
        self.preview_caption = W.HTML()
        self.preview_caption.add_class("qimage-caption")
        self.folder = W.Text(value=folder, description="Folder", style={"description_width": "48px"},
                             layout=W.Layout(width="auto", flex="1 1 auto"))
        self.folder.add_class("qimage-folder")
        self.save_button = W.Button(description="Save PNG", icon="download", layout=W.Layout(width="110px"),
                                    tooltip="Copy the full-resolution PNG (with its provenance) into the folder")
        self.save_button.add_class("qimage-save")
        self.use_ref_button = W.Button(description="Use as reference", icon="share", layout=W.Layout(width="150px"),
                                       tooltip="Add this image's public URL to the references of the next run")
        self.use_ref_button.add_class("qimage-use-ref")
        self.action_note = W.HTML()
        self.action_note.add_class("qimage-note")
        self.cell_label = W.HTML(f'<span style="color:{_MUTED}">The %%qimage cell that reproduces it:</span>')
        self.cell = W.Textarea(layout=W.Layout(width="100%", height="96px"))
        self.cell.add_class("qimage-cell")
        self.preview_actions = W.VBox(
            [
                self.preview_caption,
                W.HBox([self.folder, self.save_button], layout=W.Layout(width="100%", align_items="center")),
                W.HBox([self.use_ref_button], layout=W.Layout(width="100%")),
                self.action_note,
                self.cell_label,
                self.cell,
            ],
            layout=W.Layout(display="none", width="100%"),
        )
        self.preview_pane = W.VBox(
            [self.preview_empty, self.preview, self.preview_actions],
            layout=W.Layout(flex="1 1 340px", min_width="300px", margin="0 0 0 16px"),
        )
        self.preview_pane.add_class("qimage-preview-pane")

        # this session's runs, newest first, then the journal's earlier entries
        self.history_title = W.HTML(f'<div style="font-weight:600;margin-top:6px">Runs <span style="color:{_MUTED};'
                                    'font-weight:400">newest first</span></div>')
        self.history = W.VBox([], layout=W.Layout(width="100%"))
        self.history.add_class("qimage-history")
        self.journal_list = W.VBox([], layout=W.Layout(width="100%"))
        self.journal_refresh = W.Button(description="Refresh", icon="refresh", layout=W.Layout(width="100px"))
        self.journal_refresh.add_class("qimage-journal-refresh")
        self.journal_note = W.HTML()
        self.journal = W.Accordion(
            [W.VBox([W.HBox([self.journal_refresh, self.journal_note], layout=W.Layout(align_items="center")),
                     self.journal_list])],
            selected_index=None,
        )
        self.journal.set_title(0, "Journal: earlier generations (kept on disk; resume without paying again)")
        self.journal.add_class("qimage-journal")

        self.root = W.VBox(
            [
                self.banner,
                header,
                W.Box([self.controls, self.preview_pane], layout=W.Layout(flex_flow="row wrap", width="100%",
                                                                          align_items="flex-start")),
                self.error,
                self.history_title,
                self.history,
                self.journal,
            ],
            layout=W.Layout(width="100%", max_width="1240px", padding="4px"),
        )
        self.root.add_class("qimage-panel")

        # every callback goes through _guard: a widget callback that raises is otherwise silent
        for widget in (self.prompt, self.negative, self.model, self.ratio, self.resolution, self.count):
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
    def in_flight(self) -> list[_Run]:
        return [r for r in self.runs if r.in_flight]

    async def wait(self) -> list[Generation]:
        """Wait until no run is in flight and the panel is idle (uploads, preview, balance).

        Runs started meanwhile are waited for too. Returns the Generations of the runs waited on.
        """
        waited: list[_Run] = []
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

    def _client(self) -> AsyncClient:
        if self._client_override is not None:
            return self._client_override
        from ._session import get_session

        return get_session().client()

    def _using_emulator(self) -> bool:
        from ._session import get_session

        session = get_session()
        if not session.using_emulator:
            return False
        if self._client_override is None:
            return True
        return getattr(self._client_override, "base_url", None) == session.base_url

    def _server_html(self) -> str:
        from urllib.parse import urlsplit

        from ._contract import PRODUCTION_BASE_URL

        try:
            base = self._client().base_url
        except QImageError as exc:
            return f'<span style="color:{_RED}">{html.escape(_describe(exc))}</span>'
        if base == PRODUCTION_BASE_URL:
            return ""
        host = urlsplit(base).netloc
        return f'<span style="color:{_MUTED};margin-right:12px">server {html.escape(host)}</span>'

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
                self._show_error(f"{action.capitalize()}: {_describe(exc)}")
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
                self._show_error(f"{action.capitalize()}: {_describe(exc)}")

        task = loop.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _show_error(self, message: str, *, validation: bool = False) -> None:
        self._error_is_validation = validation
        self.error.value = (
            f'<div style="color:{_RED};background:#fdecea;border-radius:4px;padding:5px 10px;margin:4px 0">'
            f"⚠ {html.escape(_one_line(message))}</div>"
        )
        self.error.layout.display = None

    def clear_error(self) -> None:
        self.error.value = ""
        self.error.layout.display = "none"
        self._error_is_validation = False

    def _note(self, message: str, *, ok: bool = True) -> None:
        color = "#1b6e3a" if ok else _MUTED
        self.action_note.value = f'<span style="color:{color}">{html.escape(_one_line(message))}</span>'

    # -- controls and validation --

    def _count_html(self, length: int, limit: int) -> str:
        if length > limit:
            return f'<span style="color:{_RED};font-size:11px">{length} / {limit} · {length - limit} over the limit</span>'
        return f'<span style="color:{_MUTED};font-size:11px">{length} / {limit}</span>'

    def _request(self) -> GenerationRequest:
        """The request the controls describe; raises ValidationError naming what is wrong."""
        prompt = self.prompt.value.strip()
        negative = self.negative.value.strip() or None
        return GenerationRequest.create(
            prompt,
            model=self.model.value,
            size=self.ratio.value,
            resolution=self.resolution.value,
            n=int(self.count.value),
            negative_prompt=negative,
            image_urls=[r.url for r in self.references] or None,
        )

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
        self.prompt_count.value = self._count_html(prompt_len, PROMPT_MAX)
        self.negative_count.value = self._count_html(len(self.negative.value.strip()), NEGATIVE_PROMPT_MAX)
        w, h = PIXEL_SIZES[(self.ratio.value, self.resolution.value)]
        n = int(self.count.value)
        self.pixels.value = f'<span style="color:{_MUTED};margin-left:10px">{w} × {h} px · {n} image{"s" if n > 1 else ""} per run</span>'
        reason, is_error = self._blocker()
        self.generate_button.disabled = reason is not None
        self.generate_button.description = "Submitting…" if self._submitting else "Generate"
        self.generate_button.tooltip = reason or "Start a run; the kernel stays free while it works"
        self.hint.value = (
            f'<span style="color:{_RED if is_error else _MUTED}">{html.escape(_one_line(reason))}</span>'
            if reason else
            f'<span style="color:{_MUTED}">Runs in the background: the kernel stays free for other cells.</span>'
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
        self.model.value = request.model
        self.ratio.value = request.size
        self.resolution.value = request.resolution
        self.count.value = request.n
        self.references = [_Ref(url) for url in request.image_urls]
        self._render_refs()
        self._refresh_controls()

    # -- references --

    def add_reference(self, url: str, *, thumb: bytes | None = None, name: str = "") -> None:
        """Add a public image URL to the next run's references (at most 3)."""
        url = (url or "").strip()
        if not url:
            raise ValidationError("image_urls", "type or paste a public http(s) image URL first")
        checked = check_reference_url(url, len(self.references))
        if any(r.url == checked for r in self.references):
            self._note("That reference is already in the list.", ok=False)
            return
        if len(self.references) + len(self._uploading) >= REFS_MAX:
            raise ValidationError("image_urls", f"the API takes at most {REFS_MAX} references: remove one first")
        self.references.append(_Ref(checked, thumb, name))
        if self.ref_url.value.strip() == url:
            self.ref_url.value = ""
        self._render_refs()
        self._refresh_controls()

    def remove_reference(self, index: int) -> None:
        if 0 <= index < len(self.references):
            del self.references[index]
        self._render_refs()
        self._refresh_controls()

    def _render_refs(self) -> None:
        chips: list[W.Widget] = []
        for index, ref in enumerate(self.references):
            if ref.thumb is not None:
                picture = W.Image(value=ref.thumb, format="jpeg")
            else:
                picture = W.Image(value=ref.url.encode("utf-8"), format="url")
            picture.layout = W.Layout(width=f"{_REF_PX}px", height=f"{_REF_PX}px", object_fit="cover", margin="0")
            picture.add_class("qimage-ref-img")
            remove = W.Button(description="Remove", icon="times", tooltip=ref.url, layout=W.Layout(width=f"{_REF_PX + 24}px", height="24px"))
            remove.add_class("qimage-ref-remove")
            remove.on_click(self._guard("remove reference", functools.partial(lambda i, _b: self.remove_reference(i), index)))
            chip = W.VBox([picture, remove], layout=W.Layout(align_items="center", margin="0 8px 0 0"))
            chip.add_class("qimage-ref")
            chips.append(chip)
        for name in self._uploading:
            pending = W.HTML(
                f'<div style="width:{_REF_PX}px;height:{_REF_PX}px;display:flex;align-items:center;justify-content:center;'
                f'background:#eef0f3;color:{_MUTED};border-radius:4px;font-size:10px;text-align:center">uploading<br>'
                f"{html.escape(_short(name, 14))}</div>"
            )
            pending.add_class("qimage-ref-uploading")
            chips.append(pending)
        self.refs_box.children = tuple(chips)

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
            url = await self._client().upload(data)
            try:
                thumb: bytes | None = await asyncio.to_thread(_thumb_bytes, data, _REF_PX * 2)
            except Exception:  # a thumbnail is a nicety; the URL is what matters
                thumb = None
        finally:
            self._uploading.remove(name)
            self._render_refs()
            self._refresh_controls()
        self.add_reference(url, thumb=thumb, name=name)

    # -- generate and cancel --

    def generate(self) -> _Run | None:
        """What the Generate button does: validate, then start a run in the background."""
        if self._submitting:
            self.hint.value = (
                f'<span style="color:{_MUTED}">Still submitting the previous run: '
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
            self._show_error(
                "No API key: set QIMAGE_API_KEY, or run %qimage login in a cell (the key stays in memory), "
                "or %qimage emulator to try everything offline"
            )
            return None
        self._loop()  # fail here, visibly, if there is no loop to run on
        self.clear_error()
        return self._start_run(request, client)

    def resume(self, task_id: str) -> _Run:
        """Re-attach to a journaled task (never submits again) and show it as a run."""
        client = self._client()
        job = client.store.get(task_id)
        request = job.request if job is not None else GenerationRequest(prompt="")
        return self._start_run(request, client, resume=task_id)

    def _start_run(self, request: GenerationRequest, client: AsyncClient, *, resume: str | None = None) -> _Run:
        run = _Run(self, len(self.runs) + 1, request, client, resume=resume)
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

    def _submit_settled(self, run: _Run) -> None:
        if run.number in self._submitting:
            self._submitting.discard(run.number)
            self._refresh_controls()

    def _run_finished(self, run: _Run) -> None:
        self._refresh_controls()
        if run.state == "done":
            self._start_background(self._refresh_balance(), "balance")

    # -- preview and per-image actions --

    def select(self, run: _Run, index: int) -> None:
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
            f"<br><span style='color:{_MUTED}'>task {html.escape(str(info.get('task_id') or run.task_id or ''))}</span>"
        )
        self.preview_caption.value = caption
        try:
            self.cell.value = reproduce_cell(run.request)
            self.cell_label.value = (
                f'<span style="color:{_MUTED}">The %%qimage cell that reproduces it (this image is '
                f"<code>qimages[{index}]</code>; unchanged, it is served from the journal for free):</span>"
            )
        except ValueError as exc:
            self.cell.value = ""
            self.cell_label.value = f'<span style="color:{_MUTED}">No %%qimage cell: {html.escape(str(exc))}.</span>'

        self.action_note.value = ""
        self.preview_empty.layout.display = "none"
        self.preview_actions.layout.display = None
        # Show the thumbnail at once, then swap in a sharper mid-size JPEG made in a worker thread.
        self.preview.value = slot.thumb or b""
        self.preview.layout.display = None
        source = info.get("path") or image
        self._start_background(self._sharpen_preview(run, index, source), "preview")

    async def _sharpen_preview(self, run: _Run, index: int, source: Any) -> None:
        data = await asyncio.to_thread(_thumb_bytes, Path(source) if isinstance(source, str) else source, _PREVIEW_PX)
        if self._selected == (run, index):
            self.preview.value = data

    def _selected_image(self) -> tuple[_Run, int, Image.Image]:
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
            self.balance.value = f'<span style="color:{_MUTED}">no API key set</span>'
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
        self.balance.value = f'<span style="color:{_MUTED}">{html.escape(text)}</span>'

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
        rows = [self._journal_row(entry) for entry in entries]
        self.journal_list.children = tuple(rows)
        self.journal_note.value = (
            f'<span style="color:{_MUTED};margin-left:8px">{len(rows)} earlier entr{"y" if len(rows) == 1 else "ies"}'
            f" in {html.escape(str(getattr(client.store, 'root', '') or 'the journal'))}</span>"
        )

    def _journal_row(self, entry: Any) -> W.Widget:
        request: GenerationRequest = entry.request
        status = str(getattr(entry, "status", "") or "")
        task_id = getattr(entry, "task_id", None)
        key = getattr(entry, "key", None)
        created = getattr(entry, "created_at", None)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else ""
        downloaded = bool(getattr(entry, "downloaded", False))
        bits = [when, status + (" · on disk" if downloaded else ""), request.model, f"{request.size} {request.resolution}",
                f"n={request.n}", str(task_id or "no task id yet")]
        error = getattr(entry, "error", None)
        prompt = f"“{html.escape(_short(request.prompt, 90))}”" if request.prompt else "<i>prompt unknown</i>"
        text = W.HTML(
            f'<div style="line-height:1.35"><span style="color:{_MUTED}">{html.escape(" · ".join(b for b in bits if b))}</span>'
            f"<br>{prompt}"
            + (f'<br><span style="color:{_RED}">{html.escape(_one_line(error, 160))}</span>' if error else "")
            + "</div>",
            layout=W.Layout(flex="1 1 auto"),
        )
        children: list[W.Widget] = [text]
        if status not in ("failed", "cancelled") and (task_id or key):
            label = "Show" if downloaded else "Resume"
            tip = ("Show these images from disk (no request)" if downloaded
                   else "Fetch this task's images without submitting again")
            button = W.Button(description=label, icon="eye" if downloaded else "download", tooltip=tip,
                              layout=W.Layout(width="100px"))
            button.add_class("qimage-resume")
            target = str(task_id or key)
            button.on_click(self._guard("resume", lambda _b: self.resume(target)))
            children.append(button)
        row = W.HBox(children, layout=W.Layout(align_items="center", width="100%",
                                               border_top="1px solid #eef0f3", padding="4px 0"))
        row.add_class("qimage-journal-entry")
        return row
