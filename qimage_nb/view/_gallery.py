"""The gallery renderer shared by both faces and by ``Generation``'s rich output.

A gallery is a list of :class:`Tile` objects: a small thumbnail (JPEG/WebP bytes, never the full
image) plus a caption made from the image's provenance. The magic draws tiles as static HTML with
``data:`` URIs (which survives nbconvert, GitHub and VS Code); the panel draws the same tiles as
``ipywidgets.Image`` widgets. Full-resolution bytes stay on disk.

What a saved notebook keeps per shown image is held to the larger of ``NOTEBOOK_SHARE`` (2 %) of
embedding the full image and ``NOTEBOOK_FLOOR_BYTES`` (16 KB): the thumbnail keeps the pixels it is
shown at and steps down in quality and format to fit (see ``_thumbnails.thumbnail``), its cell says only
what the gallery's heading does not, and styling is one ``<style>`` per output.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._contract import _short, parse_pixel_size
from .._exceptions import task_name
from ._words import SHORT_MODEL

if TYPE_CHECKING:
    from PIL import Image

    from ..core._results import Generation

__all__ = [
    "DEFAULT_THUMB_PX", "NOTEBOOK_FLOOR_BYTES", "NOTEBOOK_SHARE", "Tile", "caption_for", "gallery_bundle", "gallery_html",
    "notebook_budget", "placeholder", "stored_caption", "tile_for",
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
        tips.append(task_name(task_id))
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

