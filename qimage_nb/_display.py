"""The gallery renderer shared by both faces.

A gallery is a list of :class:`Tile` objects: a small thumbnail (JPEG/WebP bytes, never the full
image) plus a caption made from the image's provenance. The magic draws tiles as static HTML with
``data:`` URIs (which survives nbconvert, GitHub and VS Code, and costs tens of kilobytes per
image); the panel draws the same tiles as ``ipywidgets.Image`` widgets. Full-resolution bytes stay
on disk.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from ._client import Generation

__all__ = ["DEFAULT_THUMB_PX", "Tile", "caption_for", "gallery_bundle", "gallery_html", "tile_for"]

DEFAULT_THUMB_PX = 256


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

    def data_uri(self) -> str:
        assert self.thumb is not None
        return f"data:{self.mime};base64,{base64.b64encode(self.thumb).decode('ascii')}"


def caption_for(info: dict[str, Any] | Any) -> tuple[str, str]:
    """(short caption, full tooltip) from an image's provenance ``info``."""
    prompt = str(info.get("prompt", ""))
    short_prompt = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    parts = [info.get("model", ""), f"{info.get('size', '')} {info.get('resolution', '')}".strip()]
    caption = " · ".join(p for p in (short_prompt, *parts) if p)
    tooltip = "\n".join(
        f"{key}: {info[key]}"
        for key in ("prompt", "negative_prompt", "model", "size", "resolution", "task_id", "source_url", "path")
        if info.get(key)
    )
    return caption, tooltip


def tile_for(image: Image.Image, *, thumb_px: int = DEFAULT_THUMB_PX, fmt: str = "JPEG", label: str | None = None) -> Tile:
    """A tile for one image: thumbnail made from the file on disk when there is one (cached there)."""
    from ._images import thumbnail

    info = dict(getattr(image, "info", {}) or {})
    source = info.get("path") or image
    from pathlib import Path

    thumb = thumbnail(Path(source) if isinstance(source, str) else source, max_side=thumb_px, fmt=fmt)
    caption, tooltip = caption_for(info)
    w, h = image.size
    return Tile(
        thumb=thumb,
        mime="image/webp" if fmt.upper() == "WEBP" else "image/jpeg",
        caption=caption,
        tooltip=tooltip,
        width=w,
        height=h,
        label=label,
    )


def placeholder(text: str, *, label: str | None = None, width: int = 1, height: int = 1) -> Tile:
    return Tile(thumb=None, mime="", caption="", tooltip="", width=width, height=height, label=label, status=text)


def _cell(tile: Tile, thumb_px: int) -> str:
    ratio = tile.width / tile.height if tile.height else 1.0
    w = thumb_px if ratio >= 1 else round(thumb_px * ratio)
    h = round(thumb_px / ratio) if ratio >= 1 else thumb_px
    label = f'<div class="qimage-label" style="font-weight:600">{html.escape(tile.label)}</div>' if tile.label else ""
    if tile.thumb is None:
        body = (
            f'<div class="qimage-placeholder" style="width:{w}px;height:{h}px;display:flex;align-items:center;'
            f'justify-content:center;background:#eef0f3;color:#555;border-radius:6px">{html.escape(tile.status or "")}</div>'
        )
    else:
        body = (
            f'<img class="qimage-thumb" src="{tile.data_uri()}" width="{w}" height="{h}" '
            f'title="{html.escape(tile.tooltip)}" alt="{html.escape(tile.caption)}" style="border-radius:6px"/>'
        )
    caption = f'<div class="qimage-caption" style="font-size:11px;color:#555;max-width:{w}px">{html.escape(tile.caption)}</div>' if tile.caption else ""
    return f'<figure style="margin:4px;display:inline-block;vertical-align:top">{label}{body}{caption}</figure>'


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
    if columns:
        parts.append(
            f'<div class="qimage-grid" style="display:grid;grid-template-columns:repeat({int(columns)},max-content);'
            'overflow-x:auto">'
        )
    else:
        parts.append('<div style="display:flex;flex-wrap:wrap">')
    parts.extend(_cell(tile, thumb_px) for tile in tiles)
    parts.append("</div></div>")
    return "".join(parts)


def gallery_bundle(generations: Sequence[Generation], *, thumb_px: int = DEFAULT_THUMB_PX) -> dict[str, Any]:
    """A rich output for generations: static HTML plus a plain-text fallback."""
    tiles = [tile_for(image, thumb_px=thumb_px) for gen in generations for image in gen.images]
    text = "\n".join(repr(gen) for gen in generations)
    return {"text/html": gallery_html(tiles, thumb_px=thumb_px), "text/plain": text}
