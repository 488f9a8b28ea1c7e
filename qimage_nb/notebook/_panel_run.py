"""One run of the panel: its task on the kernel's loop, its row in the history, its results.

A :class:`Run` is one Generate (or resume): it submits through the client, follows ``on_update``
into a status line, a progress bar and a gallery of :class:`RunSlot` tiles, and ends done, failed
or cancelled, never silently. Cancel stops *waiting* only: the journal keeps the task id, and the
status line says how to fetch the images without paying again.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from typing import TYPE_CHECKING

import ipywidgets as W

from .._contract import GenerationRequest, _short, parse_pixel_size
from .._exceptions import QImageError, TaskError, task_name
from ..view._gallery import DEFAULT_THUMB_PX as THUMB_PX
from ..view._words import (
    error_line,
    estimate_left,
    format_cost,
    format_seconds,
    id_html,
    progress_status,
    resend_offer,
)
from ._host_cancel import cancel_run_at_host
from ._panel_parts import LINE, MUTED, RED, describe, tile_size
from ._panel_slot import RunHost, RunSlot
from ._widgets import layout

if TYPE_CHECKING:

    from PIL import Image

    from ..core._client import AsyncClient, Generation, Update

__all__ = ["Run", "RunHost", "RunSlot"]

logger = logging.getLogger("qimage_nb")


class Run:
    """One Generate (or resume) of the panel: its task, its row in the history, its results."""

    def __init__(
        self,
        panel: RunHost,
        number: int,
        request: GenerationRequest,
        client: AsyncClient,
        *,
        resume: str | None = None,
        resend: bool = False,
    ) -> None:
        self.panel = panel
        self.number = number
        self.request = request
        self.client = client
        self.resume_id = resume
        self.resend = resend  # resume_id is a journal key whose submit is sent again (the user said so)
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
        self._host_note: str | None = None  # what the host did when Cancel asked it to cancel
        self.host_cancel: str | None = None  # a cancel at the host (fal, Replicate): its answer, when in
        self._host_task: asyncio.Task[None] | None = None
        self.slots: list[RunSlot] = []
        self._deadline: float | None = None  # when the estimate says it ends; only ever moves earlier
        self.retry_note: str | None = None  # a request being retried now, and why
        self.retries = 0

        self.header = W.HTML(self._header_html())
        self.header.add_class("qimage-run-header")
        # Basis 0: the status takes what the bar and the buttons leave and wraps there, rather
        # than pushing the buttons out of a narrow column.
        self.status = W.HTML(self._status_html("starting…"), layout=W.Layout(flex="1 1 0", min_width="0"))
        self.status.add_class("qimage-status")
        self.progress = W.IntProgress(
            value=0, min=0, max=100, layout=W.Layout(width="120px", flex="0 0 120px")
        )
        self.progress.add_class("qimage-progress")
        self.stop_button = W.Button(
            description="Stop",
            icon="stop",
            tooltip="Stop waiting on this run (the task id stays in the journal)",
            layout=W.Layout(width="80px", flex="0 0 auto"),
        )
        self.stop_button.add_class("qimage-run-cancel")
        self.stop_button.on_click(panel.guard("stop", lambda _b: self.cancel()))
        self.reuse_button = W.Button(
            description="Reuse settings",
            icon="undo",
            tooltip="Put this run's prompt and settings back in the controls",
            layout=W.Layout(width="140px", flex="0 0 auto"),
        )
        self.reuse_button.add_class("qimage-reuse")
        self.reuse_button.on_click(
            panel.guard("reuse settings", lambda _b: panel.load_request(self.request))
        )
        w, _h = tile_size(request.size)
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
                W.HBox(
                    [self.progress, self.status, self.stop_button, self.reuse_button],
                    layout=W.Layout(align_items="center", width="100%"),
                ),
                self.gallery,
            ],
            layout=layout(border_top="1px solid #dde1e6", padding="6px 0 8px 0", width="100%"),
        )
        self.box.add_class("qimage-run")

    # -- display --

    def _header_html(self) -> str:
        r = self.request
        when = time.strftime("%H:%M:%S", time.localtime(self.started_wall))
        bits = [f"<b>#{self.number}</b>", when]
        if self.resume_id:
            bits.append(f"{'resent' if self.resend else 'resumed'} {id_html(self.resume_id)}")
        if self.client.provider.name != "apimart":
            bits.append(html.escape(self.client.provider.title))
        pixels = r.pixel_size
        size = r.size if parse_pixel_size(r.size) else f"{r.size} {r.resolution}"
        bits += [
            html.escape(r.model),
            html.escape(size) + (f" ({pixels[0]}×{pixels[1]})" if pixels and not parse_pixel_size(r.size) else ""),
            f"{r.n} image{'s' if r.n > 1 else ''}",
        ]
        if r.seed is not None:
            bits.append(f"seed {r.seed}")
        if r.prompt_extend is not None:
            bits.append("prompt rewriting on" if r.prompt_extend else "prompt as written")
        if r.watermark:
            bits.append("watermark")
        if r.image_urls:
            bits.append(f"{len(r.image_urls)} reference{'s' if len(r.image_urls) > 1 else ''}")
        prompt = f"“{html.escape(_short(r.prompt, 90))}”" if r.prompt else "<i>prompt unknown</i>"
        neg = (
            f' <span style="color:{MUTED}">not: {html.escape(_short(r.negative_prompt, 40))}</span>'
            if r.negative_prompt
            else ""
        )
        return (
            f'<div style="line-height:1.4"><span style="color:{MUTED}">{" · ".join(bits)}</span><br>'
            f"{prompt}{neg}</div>"
        )

    def _status_html(self, text: str, *, color: str = MUTED, label_id: bool = False) -> str:
        body = html.escape(_short(text, LINE))
        if label_id and self.task_id:
            # The id as a label, shortened with the whole id in its tooltip (a command keeps it whole).
            body = body.replace(html.escape(self.task_id), id_html(self.task_id))
        return (
            # A block with a tight line height: a reason that wraps in the narrow column beside
            # the preview takes two short lines, not two of the widget's 28 px ones.
            f'<div style="color:{color};padding-left:8px;line-height:1.35;overflow-wrap:anywhere">{body}</div>'
        )

    def _set_slots(self, count: int) -> None:
        if count == len(self.slots):
            return
        self.slots = [RunSlot(self, i) for i in range(count)]
        self.gallery.children = tuple(s.box for s in self.slots)

    def _running_text(self) -> str:
        u = self.update
        if u is None:
            text = progress_status("submitting")
            return f"{text} · {self.retry_note}" if self.retry_note else text
        # A deadline, so the ticker makes it count down between server answers.
        eta = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        have = sum(1 for i in u.images if i is not None)
        text = progress_status(
            u.stage,
            progress=u.progress,
            eta=eta,
            task_id=self.task_id,
            have=have,
            count=len(u.images), position=u.queue_position,
        )
        return f"{text} · {self.retry_note}" if self.retry_note else text

    def render(self) -> None:
        running = self.state in ("starting", "submitting", "running")
        self.stop_button.layout.display = None if running else "none"
        # A run that ended without images gives its bar's room to the line that says why.
        self.progress.layout.display = None if running or self.state == "done" else "none"
        if running:
            self.status.value = self._status_html(self._running_text(), label_id=True)
            if self.update is not None:
                self.progress.value = self.update.progress
            return
        # Placeholders of images that will not come are dropped; any image that did land stays.
        self.gallery.children = tuple(
            s.box for s in self.slots if s.image is not None or self.state == "done"
        )
        if self.state == "done":
            gen = self.generation
            assert gen is not None
            took = (self.finished_at or time.monotonic()) - self.started
            source = "from the journal (no request)" if gen.cached else f"in {format_seconds(took)}"
            n = len(gen.images)
            cost = f" · {format_cost(gen.cost)}" if gen.cost is not None and not gen.cached else ""
            self.status.value = self._status_html(
                f"done · {n} image{'s' if n != 1 else ''} {source}{cost} · {gen.task_id}", color="#1b6e3a",
                label_id=True,
            )
            self.progress.value = 100
            self.progress.bar_style = "success"
        elif self.state == "failed":
            self.status.value = self._status_html(
                f"failed: {self._reason()}" if self.error else "failed", color=RED, label_id=isinstance(self.error, TaskError)
            )
            self.progress.bar_style = "danger"
        elif self.state == "cancelled":
            self.status.value = self._status_html(self.cancel_message(), color="#8a5a00")
            self.progress.bar_style = "warning"

    def _reason(self) -> str:
        """Why it failed, in one line; a network failure names the API's host and what to check."""
        from urllib.parse import urlsplit

        if not isinstance(self.error, QImageError):
            return describe(self.error) if self.error else ""
        if isinstance(self.error, TaskError) and self.error.task_id:
            # The host's reason first and short (the run's line is narrow); the task id after it.
            reason = self.error.message.removeprefix(f"{task_name(self.error.task_id)} failed: ")
            reason = reason.replace("(failed tasks are not billed)", "(not billed)")
            return _short(f"{reason} · {self.error.task_id}", LINE)
        host = urlsplit(getattr(self.client, "base_url", "") or "").netloc or None
        setting = self.client.provider.base_url_env
        return _short(error_line(self.error, host=host, retries=self.retries, setting=setting)[1], LINE)

    def _retrying(self, what: str, failure: BaseException, retry: int, retries: int, delay: float) -> None:
        self.retries += 1
        self.retry_note = f"{_short(str(failure), 120)}; retry {retry} of {retries} in {delay:.1f} s"
        self.render()

    def cancel_message(self) -> str:
        if self._host_note:
            return self._host_note
        if self.task_id and self.client.provider.capabilities.cancel_on_stop:
            return self.host_cancel or f"cancelled: asking {self.client.provider.title} to cancel task {self.task_id}..."
        if self.task_id:
            return (
                f"cancelled: stopped waiting for task {self.task_id}. It may still finish on the server; "
                f"the journal keeps the task id, so %qimage resume {self.task_id} (or the Journal below) "
                "fetches its images without paying again"
            )
        key = self.idempotency_key()
        keys = self.client.provider.capabilities.idempotency_keys
        resend = f"; {resend_offer(key, keys_honoured=keys)}" if key else ""
        return (
            "cancelled before the server confirmed the task: it may or may not exist (and be billed). "
            f"The journal kept the request and its idempotency key{resend}"
        )

    def idempotency_key(self) -> str | None:
        """This run's journal key, for a run stopped before the server named its task."""
        import contextlib

        with contextlib.suppress(Exception):
            for entry in self.client.pending():
                if entry.task_id is None and entry.label == f"panel #{self.number}" and entry.request == self.request:
                    return entry.key
        return None

    # -- work --

    @property
    def in_flight(self) -> bool:
        # By state, not task.done(): the run's own epilogue (which refreshes the buttons) runs
        # inside the task, after the outcome is known.
        return (
            self.task is not None
            and not self.task.done()
            and self.state in ("starting", "submitting", "running")
        )

    def start(self) -> None:
        self.task = self.panel.loop().create_task(self.main())

    def cancel(self) -> None:
        if self.in_flight:
            self._cancel_requested = True
            assert self.task is not None
            self.task.cancel()

    async def main(self) -> None:
        from ..core._retry import retry_observer

        panel = self.panel
        retry_observer.set(self._retrying)  # this run's retries show on its status line
        ticker = asyncio.ensure_future(self._tick())
        try:
            self.state = "submitting"
            self.render()
            if self.resume_id and self.resend:
                gen = await self.client.resend(self.resume_id, on_update=self.on_update)
            elif self.resume_id:
                gen = await self.client.resume(self.resume_id, on_update=self.on_update)
            else:
                gen = await self.client.generate(
                    self.request,  # the one request the controls described, sent as is
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
            on_stop = self.client.provider.capabilities.cancel_on_stop
            if self._cancel_requested and not on_stop:  # DashScope: a queued task, asked and answered
                from ._refs import cancel_on_host

                self._host_note = await cancel_on_host(self.client, self.task_id)
            self._record_unfinished(None)
            if not self._cancel_requested:
                raise  # the loop itself is going away: do not swallow that
            if self.task_id and on_stop:  # fal, Replicate: the host's answer comes in its own task
                self._host_task = self.panel.loop().create_task(cancel_run_at_host(self))
        except Exception as exc:
            self.state = "failed"
            self.error = exc
            self.task_id = getattr(exc, "task_id", None) or self.task_id
            if not isinstance(exc, QImageError):
                logger.exception("qimage_nb: panel run #%d failed", self.number)
            self._record_unfinished(exc)
            # The run's own status line says why, in red, where the user looks for this run: the
            # panel's error line is for what belongs to no run (settings, uploads, a bad prompt).
        finally:
            ticker.cancel()
            self.finished_at = time.monotonic()
            panel.submit_settled(self)
            try:
                self.render()
                panel.run_finished(self)
            except Exception as exc:  # the display must never hide the outcome of a paid run
                logger.exception("qimage_nb: panel display failed")
                panel.show_error(f"Run #{self.number}: display failed: {describe(exc)}")

    def _record_unfinished(self, exc: BaseException | None) -> None:
        from ..core._client import Generation

        error = (
            exc
            if isinstance(exc, QImageError)
            else QImageError(
                self.cancel_message() if exc is None else describe(exc), task_id=self.task_id
            )
        )
        self.generation = Generation(
            task_id=self.task_id,
            request=self.request,
            status="cancelled" if exc is None else "failed",
            idempotency_key=getattr(exc, "idempotency_key", None),
            error=error,
        )

    async def _tick(self) -> None:
        # Status changes arrive only when the server's answer changes; the ETA should still count down.
        while True:
            await asyncio.sleep(1.0)
            if self.state in ("submitting", "running"):
                self.render()

    async def on_update(self, update: Update) -> None:
        if self.update is None or (update.stage, update.progress) != (self.update.stage, self.update.progress):
            self.retry_note = None  # an answer came: whatever was retried got through
        self.update = update
        left = None if update.done else estimate_left(
            update.stage, progress=update.progress, elapsed=update.elapsed, estimated_time=update.estimated_time
        )
        if left is not None:
            deadline = time.monotonic() + left
            self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
        if update.task_id:
            self.task_id = update.task_id
        if update.stage != "submitting" and self.state == "submitting":
            self.state = "running"
            self.panel.submit_settled(self)
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
        from ..view._gallery import tile_for

        slot = self.slots[index]
        if slot.image is not None:
            return
        tile = await asyncio.to_thread(tile_for, image, thumb_px=THUMB_PX)
        if tile.thumb is not None:
            slot.fill(image, tile.thumb, tile.mime, tile.tooltip)

    async def _fill_all(self, images: list[Image.Image]) -> None:
        self._set_slots(max(len(images), len(self.slots)) if images else len(self.slots))
        for index, image in enumerate(images):
            await self._fill(index, image)

    @property
    def images(self) -> list[Image.Image]:
        return list(self.generation.images) if self.generation is not None else []
