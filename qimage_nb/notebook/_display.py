"""The magic's live output area: one display, updated in place through its display handle while
tasks run, left behind as static HTML (drawn by ``view._gallery``).

The words (``view._words``), tiles and gallery markup (``view._gallery``) and the journal's table
(``view._history``) need neither IPython nor ipywidgets and live in ``qimage_nb/view/``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._contract import _short
from .._exceptions import task_name
from ..view._gallery import Tile, gallery_html, placeholder, stored_caption, tile_for
from ..view._words import (
    error_line,
    estimate_left,
    format_cost,
    progress_status,
    resend_offer,
    when,
)

if TYPE_CHECKING:
    from .._contract import GenerationRequest
    from ..core._results import Generation, Update

__all__ = ["LiveGallery", "LiveSlot", "host_of"]

_FINISHED = ("done", "failed", "error", "cancelled")


def host_of(client: Any) -> str | None:
    """The API's host (``host:port``) a live gallery names when the network fails."""
    from urllib.parse import urlsplit

    return urlsplit(getattr(client, "base_url", "") or "").netloc or None


@dataclass
class LiveSlot:
    """One generation in a live gallery (one per cell of a comparison grid)."""

    request: GenerationRequest | None
    label: str | None = None
    stage: str = "waiting"
    task_id: str | None = None
    progress: int = 0
    eta: float | None = None
    elapsed: float = 0.0
    tiles: list[Tile | None] = field(default_factory=list)
    count: int = 0
    error: str | None = None
    cached: bool = False
    cached_at: float | None = None
    reattached: bool = False  # waiting on an earlier, already paid-for run of the same request
    unconfirmed: bool = False  # task_id is a journal key: the submit's answer never arrived
    retry: str | None = None  # the request being retried now, and why
    deadline: float | None = None  # monotonic time the estimate says it ends; only ever moves earlier
    cost: float | None = None  # what the host said the task cost, when it said
    queue_position: int | None = None  # requests ahead in the host's queue, where it says

    def __post_init__(self) -> None:
        if self.request is not None and not self.tiles:
            self.count = self.request.n
            self.tiles = [None] * self.count

    def status(self, *, keys_honoured: bool = False) -> str:
        """The slot's line; ``keys_honoured``: its host honours idempotency keys (what a resend risks)."""
        task = f" · {task_name(self.task_id)}" if self.task_id else ""
        if self.stage == "done":
            if self.cached:
                return f"from cache, {when(self.cached_at)}; --new for fresh images{task}"
            cost = f" · {format_cost(self.cost)}" if self.cost is not None else ""
            if self.reattached:
                return f"done: the earlier, unfinished run of this request (not billed again){cost}{task}"
            return f"done in {self.elapsed:.0f} s{cost}{task}"
        if self.stage == "interrupted":
            if self.task_id and self.unconfirmed:
                return (
                    "interrupted while submitting: the API may or may not have this task (it may be billed). "
                    + resend_offer(self.task_id, keys_honoured=keys_honoured)
                )
            if self.task_id:
                return (
                    f"stopped waiting. Task {self.task_id} keeps running on the server; "
                    f"get its images later with %qimage resume {self.task_id}"
                )
            return "stopped waiting before the API answered with a task id; %qimage pending lists what was submitted"
        if self.stage in ("failed", "error", "cancelled"):
            return f"{self.stage}: {self.error or 'no reason given'}"
        have = sum(t is not None for t in self.tiles)
        line = progress_status(
            self.stage, progress=self.progress, eta=self.eta, task_id=self.task_id, have=have, count=self.count,
            position=self.queue_position,
        )
        if self.retry and self.stage in ("waiting", "submitting", "queued", "running", "downloading"):
            line += f" · {self.retry}"
        return f"re-attached to the earlier, unfinished run of this request · {line}" if self.reattached else line

    def gone(self) -> bool:
        """Its images will not come from this cell (failed, cancelled, not waited for)."""
        return self.stage in ("failed", "error", "cancelled", "interrupted")

    def placeholder_text(self) -> str:
        if self.stage == "running":
            return f"{self.progress}%"
        if self.stage in ("failed", "error", "cancelled"):
            return f"✕ {self.stage}"
        if self.stage == "interrupted":
            return "not waited for"
        return {"waiting": "waiting", "uploading": "uploading", "submitting": "submitting",
                "queued": "queued", "downloading": "downloading", "completed": "downloading", "done": ""}.get(self.stage, self.stage)  # fmt: skip


class LiveGallery:
    """A gallery shown once and then ``update``-d in place (display_id) while its tasks run."""

    def __init__(
        self,
        slots: list[LiveSlot],
        *,
        title: str | None,
        subtitle: str | None,
        banner: str | None,
        thumb_px: int,
        fmt: str,
        columns: int | None = None,
    ) -> None:
        self.slots = slots
        self.title = title
        self.subtitle = subtitle
        self.banner = banner
        self.thumb_px = thumb_px
        self.fmt = fmt
        self.columns = columns
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.footer: str | None = None
        self.host: str | None = None  # the API's host, named when the network fails
        self.setting = "QIMAGE_BASE_URL"  # the provider's base URL variable, named with it
        self.keys_honoured = False  # the host honours idempotency keys: a resend cannot bill twice
        self.retries = 0
        # The cell raises the failure: its one red line is the reason, so the gallery does not
        # say it again (a status line and an error line would repeat it above the traceback).
        self.reason_below = False
        self._handle: Any = None
        self._lock = threading.Lock()

    # -- state --

    def show(self) -> None:
        from IPython.display import display

        self._handle = display(self.bundle(), raw=True, display_id=True)

    def refresh(self) -> None:
        if self._handle is None:
            return
        with self._lock:
            self._handle.update(self.bundle(), raw=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.refresh()

    def on_update(self, update: Update, index: int | None = None) -> None:
        i = update.batch_index if index is None else index
        slot = self.slots[i or 0]
        if slot.request is None or not slot.request.prompt:
            slot.request = update.request  # resume learns the request from the journal
        if update.stage != slot.stage or update.progress != slot.progress:
            slot.retry = None  # an answer came: whatever was retried got through
        slot.stage = update.stage
        slot.task_id = update.task_id or slot.task_id
        slot.progress = update.progress
        left = None if update.done else estimate_left(
            update.stage, progress=update.progress, elapsed=update.elapsed, estimated_time=update.estimated_time
        )
        if left is not None:
            now = time.monotonic()
            slot.deadline = min(slot.deadline, now + left) if slot.deadline is not None else now + left
            left = max(0.0, slot.deadline - now)
        slot.eta = left
        slot.elapsed = update.elapsed
        slot.cached = update.cached
        slot.cached_at = update.cached_at
        slot.reattached = update.reattached
        slot.queue_position = update.queue_position
        if update.error is not None:
            slot.error = error_line(update.error, host=self.host, retries=self.retries, setting=self.setting)[1]
        count = len(update.images) or slot.count or update.request.n
        if count != len(slot.tiles):
            slot.tiles = (slot.tiles + [None] * count)[:count]
        slot.count = count
        for k, image in enumerate(update.images):
            if image is not None and slot.tiles[k] is None:
                slot.tiles[k] = self._tile(image, slot)
        self.refresh()

    def retrying(self, what: str, failure: BaseException, retry: int, retries: int, delay: float) -> None:
        """A request is retried (from the client's retry observer): say so on its generation's line."""
        self.retries += 1
        text = f"{_short(str(failure), 140)}; retry {retry} of {retries} in {delay:.1f} s"
        waiting = [s for s in self.slots if s.stage not in _FINISHED and s.stage != "interrupted"]
        if what == "submit":
            mine = [s for s in waiting if not s.task_id]
        else:  # a status poll or a download names its task; an upload concerns them all
            mine = [s for s in waiting if s.task_id and s.task_id in what] or waiting
        for slot in mine or waiting[:1]:
            slot.retry = text
        self.refresh()

    def _tile(self, image: Any, slot: LiveSlot) -> Tile | None:
        # The title, subtitle, label and status line already name the prompt, model, size and task.
        heading = " ".join(filter(None, (self.title, self.subtitle, slot.label, slot.task_id and task_name(slot.task_id))))
        try:
            share = self._output_share(image, slot, heading)
            return tile_for(image, thumb_px=self.thumb_px, fmt=self.fmt, label=slot.label, stored=True,
                            heading=heading, output_share=share)
        except Exception:  # a thumbnail that cannot be made must not cost the image itself
            return None

    def finish(self, generations: Sequence[Generation | None]) -> None:
        for slot, gen in zip(self.slots, generations, strict=False):
            if gen is None:
                continue
            if gen.error is not None:
                slot.stage = "failed" if gen.status == "failed" else "error"
                slot.error = error_line(gen.error, host=self.host, retries=self.retries, setting=self.setting)[1]
                slot.task_id = gen.task_id or slot.task_id
                continue
            slot.request = gen.request
            slot.task_id = gen.task_id
            slot.stage = "done"
            slot.cached = gen.cached
            slot.cost = None if gen.cached else gen.cost
            if gen.cached:
                slot.cached_at = gen.completed_at
            slot.count = len(gen.images)
            slot.tiles = (slot.tiles + [None] * slot.count)[: slot.count]
            for k, image in enumerate(gen.images):
                if slot.tiles[k] is None:
                    slot.tiles[k] = self._tile(image, slot)
        self.refresh()

    def interrupted(self) -> list[str]:
        """Mark every unfinished slot as no longer waited on; the task ids that keep running."""
        ids = []
        for slot in self.slots:
            if slot.stage not in _FINISHED:
                slot.stage = "interrupted"
            if slot.task_id and slot.stage == "interrupted":
                ids.append(slot.task_id)
        self.refresh()
        return ids

    def fail(self, exc: BaseException, *, said_below: bool = False) -> None:
        """Draw a failure that ended the run: on the generations it ended, or as an error line.

        ``said_below``: the cell raises it, and its red line is the one place the reason is said;
        the gallery keeps only a small mark where the images would have been.
        """
        kind, message = error_line(exc, host=self.host, retries=self.retries, setting=self.setting)
        task_id = getattr(exc, "task_id", None)
        absorbed = False
        for slot in self.slots:
            if task_id is not None and slot.task_id not in (None, task_id):
                continue
            if slot.stage not in _FINISHED:
                slot.stage = "failed" if kind == "TaskFailedError" else "error"
                slot.error = message
                absorbed = True
            elif slot.stage != "done" and slot.error:
                absorbed = True  # its line already says this failure (it came as an update)
        if said_below:
            self.reason_below = True
        elif not absorbed:
            self.errors.append(f"{kind}: {message}")
        self.refresh()

    # -- rendering --

    def tiles(self) -> list[Tile]:
        out = []
        for slot in self.slots:
            # A size the model chooses (3.0 with none asked) or a host's own word: a square placeholder.
            known = slot.request.pixel_size if slot.request is not None and slot.request.prompt else None
            w, h = known or (1, 1)
            tiles = slot.tiles or [None]
            if slot.gone() and not any(tiles):
                tiles = [None]  # one mark for the generation, not one per image that will not come
            for tile in tiles:
                out.append(tile or placeholder(slot.placeholder_text(), label=slot.label, width=w, height=h,
                                               marker=slot.gone()))
        return out

    def status_lines(self) -> tuple[list[str], list[str]]:
        """(progress lines, failure lines): one line per generation, failures drawn in red."""
        lines, failures = [], []
        for slot in self.slots:
            prefix = f"{slot.label}: " if slot.label else ""
            failed = slot.stage in ("failed", "error", "cancelled")
            if failed and self.reason_below:
                continue  # the cell's own error line says it
            (failures if failed else lines).append(prefix + slot.status(keys_honoured=self.keys_honoured))
        return lines, failures

    def bundle(self) -> dict[str, Any]:
        return self._bundle(self.tiles())

    def _bundle(self, tiles: list[Tile], *, tile_lines: bool = True) -> dict[str, Any]:
        lines, failures = self.status_lines()
        notes = [*self.notes, *lines]
        if self.footer:
            notes.append(self.footer)
        errors = [*failures, *self.errors]
        body = gallery_html(
            tiles,
            thumb_px=self.thumb_px,
            title=self.title,
            notes=([self.subtitle] if self.subtitle else []) + notes,
            banner=self.banner,
            columns=self.columns,
            errors=errors,
        )
        return {"text/html": body, "text/plain": self.text(notes, errors, tile_lines=tile_lines)}

    def _output_share(self, image: Any, slot: LiveSlot, heading: str) -> int:
        """What this output stores besides its tiles (title, notes, status lines, the plain-text
        fallback), per image it shows, plus the image's own plain-text line: the bytes a tile's
        thumbnail budget gives up to them. Status lines are taken as they are now ("downloading 1 of
        2" later reads "done in 12 s"): close enough for a budget."""
        rest = self._bundle([], tile_lines=False)
        size = len(rest["text/html"].encode("utf-8")) - len(gallery_html([]).encode("utf-8"))
        size += len(rest["text/plain"].encode("utf-8"))
        count = max(1, sum(max(s.count, len(s.tiles)) for s in self.slots))
        caption, _ = stored_caption(dict(getattr(image, "info", {}) or {}), heading)
        width, height = image.size
        label = f"{slot.label} " if slot.label else ""
        return size // count + len(f"\n  {label}[0] {width}x{height} {caption}".rstrip().encode("utf-8"))

    def text(self, notes: list[str], errors: list[str], *, tile_lines: bool = True) -> str:
        lines = []
        if self.banner:
            lines.append(f"[{self.banner}]")
        if self.title:
            lines.append(self.title)
        if self.subtitle:
            lines.append(self.subtitle)
        lines.extend(notes)
        lines.extend(errors)
        for slot in self.slots if tile_lines else ():
            for k, tile in enumerate(slot.tiles):
                if tile is not None:
                    label = f"{slot.label} " if slot.label else ""
                    lines.append(f"  {label}[{k}] {tile.width}x{tile.height} {tile.caption}".rstrip())
        return "\n".join(lines)

