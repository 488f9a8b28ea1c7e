"""The gallery renderer shared by both faces, and the words they use for progress.

A gallery is a list of :class:`Tile` objects: a small thumbnail (JPEG/WebP bytes, never the full
image) plus a caption made from the image's provenance. The magic draws tiles as static HTML with
``data:`` URIs (which survives nbconvert, GitHub and VS Code); the panel draws the same tiles as
``ipywidgets.Image`` widgets. Full-resolution bytes stay on disk.

What a saved notebook keeps per shown image is held to the larger of ``NOTEBOOK_SHARE`` (2 %) of
embedding the full image and ``NOTEBOOK_FLOOR_BYTES`` (16 KB): the thumbnail keeps the pixels it is
shown at and steps down in quality and format to fit (see ``_thumbnails.thumbnail``), its cell says only
what the gallery's heading does not, and styling is one ``<style>`` per output.

:func:`progress_status` is the one status/ETA line of a generation in flight, for both faces.
:class:`LiveGallery` is the magic's output area: one display, updated in place through its display
handle while tasks run, left behind as static HTML. :func:`history_bundle` draws the journal.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._contract import PHASE_WORDS, _short, parse_pixel_size

if TYPE_CHECKING:
    from PIL import Image

    from .._contract import GenerationRequest
    from ..core._client import Generation, Update

__all__ = [
    "DEFAULT_THUMB_PX", "NOTEBOOK_FLOOR_BYTES", "NOTEBOOK_SHARE", "LiveGallery", "LiveSlot", "Tile", "caption_for", "error_line", "format_cost", "format_seconds",
    "gallery_bundle", "gallery_html", "history_bundle", "notebook_budget", "progress_status", "resend_command", "stored_caption", "tile_for", "when",
]  # fmt: skip

DEFAULT_THUMB_PX = 256  # the thumbnails' longest side, everywhere one is made (magic, panel, display)
# The most a saved notebook may keep per shown image (thumbnail, its markup, its text fallback): a
# share of the base64 of the full image file (what ``display(Image(data=png))`` would store), or a
# fixed floor when that is larger. The share is what stops a notebook of photographs from bloating
# (a 1-3 MB PNG gets 27-80 KB); the floor is what keeps a small, flat picture crisp: 2 % of a 70 KB
# emulator PNG is under 2 KB, which only a blurred 128 px thumbnail fits, while a crisp 256 px JPEG
# of it is 6-11 KB.
NOTEBOOK_SHARE = 0.02
NOTEBOOK_FLOOR_BYTES = 16 * 1024
# What a tile's thumbnail budget leaves for the rest of the output when the caller does not say:
# about one plain-text line (a Generation's repr is ~100 bytes).
_TEXT_RESERVE = 100
# The models' short names, shown in captions and tables; --model and %config accept them (and
# "std") too, so the names people are shown are the names they can type.
SHORT_MODEL = {"qwen-image-2.0": "standard", "qwen-image-2.0-pro": "pro"}
MODEL_ALIASES = {**{short: model for model, short in SHORT_MODEL.items()}, "std": "qwen-image-2.0"}
_FINISHED = ("done", "failed", "error", "cancelled")


# --- words -----------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    """``42 s`` or ``2 min 05 s``."""
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


def format_cost(cost: float) -> str:
    """What the host said a task cost, as money: ``$0.006``, ``$0.05``, ``$1.20``."""
    if cost == 0 or (cost >= 0.01 and round(cost, 2) == round(cost, 6)):
        return f"${cost:,.2f}"
    return "$" + f"{cost:.6f}".rstrip("0").rstrip(".")


def when(timestamp: float | None) -> str:
    """A past moment as a date and how long ago: ``2024-05-01 10:12 (3 h ago)``."""
    if timestamp is None:
        return "earlier"
    ago = max(0.0, time.time() - timestamp)
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))
    if ago < 60:
        rel = "just now"
    elif ago < 3600:
        rel = f"{ago / 60:.0f} min ago"
    elif ago < 48 * 3600:
        rel = f"{ago / 3600:.0f} h ago"
    else:
        rel = f"{ago / 86400:.0f} days ago"
    return f"{stamp} ({rel})"


def estimate_left(stage: str, *, progress: int, elapsed: float, estimated_time: float | None) -> float | None:
    """Seconds left, the lower of the server's estimate and what progress so far implies; or None.

    The server's ``estimated_time`` is pessimistic (often 1.5x) and fixed at submit: alone, it says
    the same "about 3 s left" at 50 % and at 71 %. Progress is measured: at p % after ``elapsed``
    seconds, the rest takes about ``elapsed * (100 - p) / p`` (an upper bound when part of
    ``elapsed`` was spent queued).
    """
    guesses = []
    if estimated_time is not None:
        guesses.append(estimated_time - elapsed)
    if stage == "running" and 0 < progress < 100 and elapsed > 0:
        guesses.append(elapsed * (100 - progress) / progress)
    return max(0.0, min(guesses)) if guesses else None


def progress_status(
    stage: str,
    *,
    progress: int = 0,
    eta: float | None = None,
    task_id: str | None = None,
    have: int = 0,
    count: int = 0,
    position: int | None = None,
) -> str:
    """The status line of a generation in flight, the same words in both faces.

    ``eta`` is the seconds left by the server's estimate (or None); ``have``/``count`` are the
    images downloaded so far and expected.
    """
    task = f" · task {task_id}" if task_id else ""
    if eta is None:
        left = ""
    elif eta <= 0 or (stage == "running" and progress >= 90):
        # The server's estimate is pessimistic: near the end, progress says more than it does.
        left = " · almost done"
    else:
        left = f" · about {format_seconds(eta)} left"
    if stage == "waiting":
        return "waiting to start"
    if stage == "uploading":
        return "uploading references..."
    if stage == "submitting":
        return "submitting..."
    if stage == "queued":
        ahead = f" ({position} ahead)" if position else ""
        return f"queued{ahead}{left}{task}"
    if stage == "running":
        return f"running {progress}%{left}{task}"
    if stage in ("downloading", "completed"):
        return f"downloading {have} of {count}{task}"
    return f"{stage}{task}"


def error_line(
    exc: BaseException, *, host: str | None = None, retries: int = 0, setting: str = "QIMAGE_BASE_URL"
) -> tuple[str, str]:
    """(kind, message) for one readable line that says what to do.

    A timeout says how to get the images later; a network failure names ``host`` (the API's, when
    known), how many retries (``retries``) were made, and what to check (``setting``: the
    provider's base URL variable), said once.
    """
    from .._exceptions import GenerationTimeout, TransportError

    message = str(exc) or type(exc).__name__
    if isinstance(exc, GenerationTimeout):
        phase = PHASE_WORDS.get(exc.last_status or "", exc.last_status or "running")
        message = (
            f"task {exc.task_id} is still {phase} after the wait deadline; "
            f"it keeps running on the server. Get its images later with: %qimage resume {exc.task_id}"
        )
    elif isinstance(exc, TransportError) and host:
        tried = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
        if "check the network" in message:  # the client already said what to check
            message = f"cannot reach {host}{tried}: {message}"
        else:
            message = (
                f"cannot reach {host}{tried} ({message}). Check this machine's network connection, or "
                f"{setting} if the API is at another address"
            )
    return type(exc).__name__, message


@dataclass(frozen=True)
class Tile:
    """One gallery cell: a thumbnail (or a placeholder while it downloads) and its caption."""

    thumb: bytes | None
    mime: str
    caption: str
    tooltip: str
    width: int
    height: int
    label: str | None = None
    status: str | None = None  # placeholder text, e.g. "processing 40%"
    marker: bool = False  # a placeholder for an image that will not come: a small mark, not a box

    def data_uri(self) -> str:
        assert self.thumb is not None
        return f"data:{self.mime};base64,{base64.b64encode(self.thumb).decode('ascii')}"


def caption_for(info: dict[str, Any] | Any) -> tuple[str, str]:
    """(short caption, full tooltip) from an image's provenance ``info`` (the panel's words)."""
    short_prompt = _short(info.get("prompt", ""), 60)
    pixels = parse_pixel_size(str(info.get("size") or ""))
    size = info.get("size", "") if pixels else f"{info.get('size', '')} {info.get('resolution', '')}"
    if info.get("size") == "auto":
        size = f"{info.get('output_size') or 'its own size'} (the model's choice)"
    parts = [info.get("model", ""), str(size).strip()]
    caption = " · ".join(p for p in (short_prompt, *parts) if p)
    tooltip = "\n".join(
        f"{key}: {info[key]}"
        for key in ("prompt", "negative_prompt", "model", "size", "resolution", "task_id", "source_url", "path")
        if info.get(key)
    )
    return caption, tooltip


def stored_caption(info: dict[str, Any] | Any, heading: str = "") -> tuple[str, str]:
    """(caption, tooltip) for a tile kept in a saved notebook: only what ``heading`` does not say.

    ``heading`` is the text shown around the tile (the gallery's title and subtitle, its label): a
    prompt, model or size already there is not repeated under every image. The tooltip carries the
    full prompt when the caption had to cut it, the negative prompt and the task id. It leaves out
    the local file path and the CDN URL: in a shared notebook one names the author's home directory
    and the other is a signed link that expires within hours, and each costs 100+ bytes per image.
    """

    def said(text: str) -> bool:
        return bool(text) and re.search(rf"(?<![\w.-]){re.escape(text)}(?![\w.-])", heading) is not None

    prompt = " ".join(str(info.get("prompt") or "").split())
    negative = " ".join(str(info.get("negative_prompt") or "").split())
    model = str(info.get("model") or "")
    task_id = str(info.get("task_id") or "")
    short_prompt = "" if said(prompt) else _short(prompt, 60)
    # A grid's labels name the model by its short name ("pro · 16:9 · 1K").
    model_said = said(model) or said(SHORT_MODEL.get(model, ""))
    # A pixel size (DashScope's 1536x640) has no tier to name.
    keys = ("size",) if parse_pixel_size(str(info.get("size") or "")) else ("size", "resolution")
    if info.get("size") == "auto":
        keys = ()  # the model chose it; the tile's own pixel size is shown beside it
    size = " ".join(str(info.get(k) or "") for k in keys if not said(str(info.get(k) or "")))
    caption = " · ".join(p for p in (short_prompt, "" if model_said else model, size.strip()) if p)
    tips = []
    if short_prompt != prompt and not said(prompt):
        tips.append(f"prompt: {prompt}")
    if negative and not said(negative):
        tips.append(f"negative: {negative}")
    if task_id and not said(task_id):
        tips.append(f"task {task_id}")
    return caption, "\n".join(tips)


def tile_for(
    image: Image.Image,
    *,
    thumb_px: int = DEFAULT_THUMB_PX,
    fmt: str = "JPEG",
    label: str | None = None,
    stored: bool = False,
    heading: str = "",
    output_share: int | None = None,
) -> Tile:
    """A tile for one image: thumbnail made from the file on disk when there is one (cached there).

    ``stored=True`` is for a tile that goes into a notebook's saved output: its caption and tooltip
    leave out what ``heading`` says (:func:`stored_caption`), and the tile as stored (thumbnail as
    base64, its markup, its share of the gallery's markup and text) keeps to ``NOTEBOOK_SHARE`` of the
    base64 of the image file, or ``NOTEBOOK_FLOOR_BYTES`` when that is more (:func:`notebook_budget`).
    The thumbnail may then be WebP even if ``fmt`` is JPEG (``Tile.mime``
    says which). ``output_share`` is what the rest of the output (title, notes, plain-text fallback)
    stores per image; by default ``_TEXT_RESERVE``. Without ``stored`` (the panel's widgets) the
    thumbnail is ``fmt`` at full size and quality.
    """
    from ..journal._thumbnails import THUMB_FORMATS, thumbnail, thumbnail_mime

    info = dict(getattr(image, "info", {}) or {})
    source = info.get("path") or image
    if isinstance(source, str):
        source = Path(source)
    caption, tooltip = stored_caption(info, heading) if stored else caption_for(info)
    w, h = image.size
    tile = Tile(thumb=b"", mime=THUMB_FORMATS.get(fmt.upper(), "image/jpeg"), caption=caption, tooltip=tooltip,
                width=w, height=h, label=label)
    budget = _thumb_budget(tile, source, thumb_px, output_share) if stored else None
    thumb = thumbnail(source, max_side=thumb_px, fmt=fmt, max_bytes=budget)
    return dataclasses.replace(tile, thumb=thumb, mime=thumbnail_mime(thumb))


def _thumb_budget(tile: Tile, source: Any, thumb_px: int, output_share: int | None) -> int | None:
    """Thumbnail bytes allowed for ``tile`` (its text known, its thumbnail empty); None without a file.

    The tile is charged its own cell, all of a one-image gallery's wrapper and style (a tile never
    counts on sharing them) and ``output_share``; the rest of the share, base64-decoded, is the
    thumbnail's.
    """
    if not isinstance(source, Path):
        return None  # an image in memory only: there is no file it stands for
    try:
        size = source.stat().st_size
    except OSError:
        return None  # thumbnail() reports the missing file
    markup = len(gallery_html([tile], thumb_px=thumb_px).encode("utf-8"))
    rest = _TEXT_RESERVE if output_share is None else output_share
    room = notebook_budget(size) - markup - rest
    return max(0, room) // 4 * 3


def notebook_budget(file_size: int) -> int:
    """The bytes a saved notebook may keep for one shown image whose file has ``file_size`` bytes."""
    return max(int(NOTEBOOK_SHARE * 4 * -(-file_size // 3)), NOTEBOOK_FLOOR_BYTES)


def placeholder(text: str, *, label: str | None = None, width: int = 1, height: int = 1, marker: bool = False) -> Tile:
    return Tile(thumb=None, mime="", caption="", tooltip="", width=width, height=height, label=label, status=text,
                marker=marker)


# Styling shared by every tile of an output, sent once per output (not per tile) and scoped to the
# gallery (the panel uses some of these class names on its widgets). Only the rules in use are sent.
# The caption's width:0;min-width:100% makes it wrap at the image's width without widening the tile.
_CSS = {
    "thumb": ".qimage-gallery img{border-radius:6px}",
    "caption": ".qimage-gallery .qimage-caption{font-size:11px;color:#555;width:0;min-width:100%}",
    "label": ".qimage-gallery .qimage-label{font-weight:600}",
    "placeholder": ".qimage-gallery .qimage-placeholder{display:flex;align-items:center;justify-content:center;"
    "background:#eef0f3;color:#555;border-radius:6px}",
}


def _css(tiles: Sequence[Tile]) -> str:
    used = {
        "thumb": any(t.thumb is not None for t in tiles),
        "caption": any(t.caption for t in tiles),
        "label": any(t.label for t in tiles),
        "placeholder": any(t.thumb is None for t in tiles),
    }
    rules = "".join(rule for kind, rule in _CSS.items() if used[kind])
    return f"<style>{rules}</style>" if rules else ""


def _cell(tile: Tile, thumb_px: int) -> str:
    ratio = tile.width / tile.height if tile.height else 1.0
    w = thumb_px if ratio >= 1 else round(thumb_px * ratio)
    h = round(thumb_px / ratio) if ratio >= 1 else thumb_px
    label = f'<div class="qimage-label">{html.escape(tile.label)}</div>' if tile.label else ""
    if tile.thumb is None and tile.marker:
        # The image will not come (failed, not waited for): the reason is said once, elsewhere.
        body = f'<div class="qimage-placeholder qimage-marker" style="padding:2px 8px">{html.escape(tile.status or "")}</div>'
    elif tile.thumb is None:
        body = f'<div class="qimage-placeholder" style="width:{w}px;height:{h}px">{html.escape(tile.status or "")}</div>'
    else:
        # Shown at the gallery's size even when the picture itself is smaller than that (a steady
        # layout). alt is empty: the caption right below (or the gallery's heading) is the text.
        title = f' title="{html.escape(tile.tooltip)}"' if tile.tooltip else ""
        body = f'<img class="qimage-thumb" src="{tile.data_uri()}" width="{w}" height="{h}" alt=""{title}>'
    caption = f'<div class="qimage-caption">{html.escape(tile.caption)}</div>' if tile.caption else ""
    return f"<div>{label}{body}{caption}</div>"


def gallery_html(
    tiles: Sequence[Tile],
    *,
    thumb_px: int = DEFAULT_THUMB_PX,
    title: str | None = None,
    notes: Iterable[str] = (),
    banner: str | None = None,
    columns: int | None = None,
    errors: Iterable[str] = (),
) -> str:
    """Static HTML for a gallery: no scripts, no widgets, only data: URIs (renders everywhere).

    ``columns`` lays the tiles out as a fixed grid (a comparison grid keeps its rows aligned);
    ``errors`` are shown as red lines under the notes.
    """
    parts = ['<div class="qimage-gallery">']
    if banner:
        parts.append(
            f'<div class="qimage-banner" style="background:#fff3cd;color:#664d03;padding:4px 8px;'
            f'border-radius:4px;margin-bottom:4px">{html.escape(banner)}</div>'
        )
    if title:
        parts.append(f'<div class="qimage-title" style="font-weight:600">{html.escape(title)}</div>')
    for note in notes:
        parts.append(f'<div class="qimage-note" style="color:#555">{html.escape(note)}</div>')
    for error in errors:
        parts.append(f'<div class="qimage-error" style="color:#b00020">{html.escape(error)}</div>')
    parts.append(_css(tiles))
    if columns:
        parts.append(
            f'<div class="qimage-grid" style="display:grid;grid-template-columns:repeat({int(columns)},max-content);'
            'gap:8px;overflow-x:auto">'
        )
    else:
        parts.append('<div style="display:flex;flex-wrap:wrap;gap:8px">')
    parts.extend(_cell(tile, thumb_px) for tile in tiles)
    parts.append("</div></div>")
    return "".join(parts)


def gallery_bundle(generations: Sequence[Generation], *, thumb_px: int = DEFAULT_THUMB_PX) -> dict[str, Any]:
    """A rich output for generations: static HTML plus a plain-text fallback (one entry each, no
    separate image/* entry: the thumbnails live once, in the HTML)."""
    tiles = [
        # Each image carries its share of its generation's line in the plain-text fallback.
        tile_for(image, thumb_px=thumb_px, stored=True, output_share=len(repr(gen).encode("utf-8")) // len(gen.images) + 1)
        for gen in generations
        for image in gen.images
    ]
    text = "\n".join(repr(gen) for gen in generations)
    return {"text/html": gallery_html(tiles, thumb_px=thumb_px), "text/plain": text}


# --- the magic's live output area ------------------------------------------------------------


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

    def status(self) -> str:
        task = f" · task {self.task_id}" if self.task_id else ""
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
                    f"{resend_command(self.task_id)} sends the identical request with the same key "
                    "(a host that honours the key answers with the task it made)"
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
        heading = " ".join(filter(None, (self.title, self.subtitle, slot.label, slot.task_id and f"task {slot.task_id}")))
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
            (failures if failed else lines).append(prefix + slot.status())
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


# --- the journal -----------------------------------------------------------------------------


def resend_command(key: str) -> str:
    return f"%qimage resume --resend {key}"


def _resume_hints(pending: Sequence[Any]) -> list[str]:
    """The commands that fetch pending entries, with real ids in them (never a TASK_ID to fill in).

    An entry whose submit was never answered has no task id, only its journal key: the task may
    exist and may be billed, and only the user can decide to resend it (the same body with the same
    Idempotency-Key: a host that honours keys answers with the task it made; another may bill a
    second one). Each such entry gets its own exact resend command.
    """
    unanswered = [e for e in pending if not e.task_id]
    tasks = [e for e in pending if e.task_id]
    hints = []
    if len(tasks) == 1:
        hints.append(f"resume with: %qimage resume {tasks[0].task_id}")
    elif tasks:
        hints.append(f"resume one with: %qimage resume {tasks[0].task_id}; or all {len(tasks)} with: %qimage resume --all")
    for entry in unanswered:
        if getattr(entry, "in_flight", False):
            hints.append(f"{entry.key} is still being submitted: its answer is on its way")
            continue
        hints.append(
            f"outcome unknown (the submit got no answer; the task may exist and may be billed): "
            f"to resend the identical request with the same key, {resend_command(entry.key)}"
        )
    return hints


def _status_word(entry: Any) -> str:
    if getattr(entry, "in_flight", False):
        return "submitting"
    if getattr(entry, "outcome_unknown", False) or (not entry.task_id and getattr(entry, "status", "") == "submitting"):
        return "outcome unknown"
    return PHASE_WORDS.get(str(getattr(entry, "status", "")), str(getattr(entry, "status", "")))


def history_bundle(entries: Sequence[Any], *, pending_only: bool) -> dict[str, Any]:
    """The journal's entries as a table (HTML, and aligned plain text), newest first."""
    if not entries:
        text = "no pending tasks" if pending_only else "the journal is empty: no generations yet"
        return {"text/plain": text, "text/html": f"<div>{html.escape(text)}</div>"}
    header = ("time", "status", "task id", "prompt", "n", "model / size", "cost")
    rows = []
    for entry in entries:
        request = entry.request
        created = getattr(entry, "created_at", None)
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else ""
        model = request.model  # the name the API, the magic and the panel use
        cost = getattr(entry, "cost", None)
        rows.append(
            (
                stamp,
                _status_word(entry),
                entry.task_id or f"(no id; key {entry.key})",
                _short(request.prompt or "(unknown prompt)", 50),
                str(request.n),
                f"{model} · {request.size}" + ("" if parse_pixel_size(request.size) else f" {request.resolution}"),
                format_cost(cost) if cost is not None else "",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    text_lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    text_lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    pending = [e for e in entries if not getattr(e, "downloaded", True) and getattr(e, "status", "") not in ("failed", "cancelled")]
    hints = _resume_hints(pending)
    text_lines += hints
    cells = "".join(
        "<tr>" + "".join(f'<td style="text-align:left">{html.escape(c)}</td>' for c in row) + "</tr>" for row in rows
    )
    head = "".join(f'<th style="text-align:left">{html.escape(h)}</th>' for h in header)
    foot = "".join(f'<div style="color:#555">{html.escape(hint)}</div>' for hint in hints)
    table = f'<table class="qimage-history"><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>{foot}'
    return {"text/plain": "\n".join(text_lines), "text/html": table}
