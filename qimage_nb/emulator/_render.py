"""The picture: a deterministic PNG of exactly the contracted size that nobody mistakes for a real one.

Speed matters (every test downloads these): the background is painted small and resized, text is
drawn once at full size, and PNG is written with ``compress_level=1``. A 2K image takes well under
0.1 s on a laptop. Also the hostile CDN bodies (bomb, huge, not-an-image) used by fault switches.
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .._contract import PIXEL_SIZES
from ._messages import Response

_BANNER = "EMULATOR"
_SUBTITLE = "offline stand-in from qimage_nb - not a generated image"


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        # Pillow without FreeType (or < 10.1): the small bitmap font still says what it must.
        return ImageFont.load_default()


def _colours(seed: bytes) -> list[tuple[int, int, int]]:
    digest = hashlib.sha256(seed).digest()
    return [tuple(digest[i : i + 3]) for i in range(0, 30, 3)]  # type: ignore[misc]


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: float, max_lines: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        # Words longer than a line (URLs, CJK runs) are cut hard rather than overflowing.
        while draw.textlength(word, font=font) > width and len(word) > 1:
            cut = max(1, int(len(word) * width / draw.textlength(word, font=font)) - 1)
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:cut])
            word = word[cut:]
        candidate = f"{current} {word}".strip()
        if draw.textlength(candidate, font=font) <= width:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1][:-3].rstrip() + "..."]
    return lines or [""]


def render_png(
    *,
    prompt: str,
    index: int,
    n: int,
    size: str,
    resolution: str,
    model: str,
    references: Sequence[bytes | None] = (),
    pixels: tuple[int, int] | None = None,
) -> bytes:
    """Render image ``index`` (0-based) of ``n`` for a task; ``references`` are the reference images'
    bytes when they are this emulator's own uploads, else ``None`` per reference. ``pixels`` is the
    size for a model outside the contract's table (default: the table's size for ratio x tier)."""
    width, height = pixels or PIXEL_SIZES[(size, resolution)]
    palette = _colours(f"{prompt}\x00{index}".encode())

    # Paint small, then one resize: a smooth gradient with a few shapes costs almost nothing.
    small_w, small_h = max(32, width // 8), max(32, height // 8)
    top = Image.new("RGB", (small_w, small_h), palette[0])
    bottom = Image.new("RGB", (small_w, small_h), palette[1])
    mask = Image.linear_gradient("L").resize((small_w, small_h))
    small = Image.composite(bottom, top, mask)
    shapes = ImageDraw.Draw(small)
    for k in range(3):
        a, b, c = palette[2 + k]
        x, y, r = a * small_w // 255, b * small_h // 255, 4 + c * min(small_w, small_h) // 600
        shapes.ellipse((x - r, y - r, x + r, y + r), fill=palette[5 + k])
    image = small.resize((width, height), Image.Resampling.BILINEAR)

    draw = ImageDraw.Draw(image)
    unit = min(width, height)
    margin = unit // 24
    banner_font = _font(max(10, unit // 9))
    small_font = _font(max(8, unit // 36))
    text_font = _font(max(8, unit // 24))

    banner_h = unit // 9 + unit // 36 + 3 * margin
    draw.rectangle((0, 0, width, banner_h), fill=(0, 0, 0))
    draw.text((margin, margin // 2), _BANNER, font=banner_font, fill=(255, 215, 0))
    draw.text((margin, banner_h - margin - unit // 36), _SUBTITLE, font=small_font, fill=(230, 230, 230))

    line_h = int(unit / 24 * 1.3)
    footer_h = line_h * 2 + margin
    box_top = banner_h + margin
    max_lines = max(1, (height - box_top - footer_h - 2 * margin) // line_h)
    lines = _wrap(draw, prompt, text_font, width - 4 * margin, min(max_lines, 14))
    box_bottom = box_top + len(lines) * line_h + margin
    draw.rectangle((margin, box_top, width - margin, box_bottom), fill=(255, 255, 255))
    for row, line in enumerate(lines):
        draw.text((2 * margin, box_top + margin // 2 + row * line_h), line, font=text_font, fill=(0, 0, 0))

    footer = f"image {index + 1}/{n}   {size}   {resolution}   {width}x{height}   {model}"
    refs = [ref for ref in references if ref is not None]
    if references:
        footer_refs = f"edited from {len(references)} reference(s)"
        draw.text((margin, height - footer_h), footer_refs, font=text_font, fill=(255, 255, 255),
                  stroke_width=2, stroke_fill=(0, 0, 0))
    draw.text((margin, height - line_h - margin // 2), footer, font=text_font, fill=(255, 255, 255),
              stroke_width=2, stroke_fill=(0, 0, 0))
    _paste_references(image, refs, unit, margin, footer_h)

    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _paste_references(image: Image.Image, refs: Sequence[bytes], unit: int, margin: int, footer_h: int) -> None:
    thumb = unit // 5
    x = image.width - margin
    for data in refs:
        try:
            with Image.open(io.BytesIO(data)) as ref:
                ref.draft("RGB", (thumb, thumb))  # JPEG decodes at a fraction of its size
                small = ref.convert("RGB")
                small.thumbnail((thumb, thumb))
        except Exception:  # an upload is only checked by magic bytes: a broken one is just skipped
            continue
        x -= small.width
        image.paste(small, (x, image.height - footer_h - margin - small.height))
        x -= margin // 2


# --- hostile CDN bodies ------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=1)
def bomb_png() -> bytes:
    """A few-kilobyte PNG whose header declares 60000x60000 pixels (3.6 gigapixels).

    Only a few rows of data follow: a client must refuse it from the header, before decoding.
    """
    width = height = 60000
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\x00" * (width + 1) * 8, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


@functools.lru_cache(maxsize=1)
def huge_png() -> bytes:
    """A real, decodable 6000x6000 PNG: far larger than any contracted size, yet under Pillow's
    own bomb limit, so only the client's size check can catch it."""
    image = Image.new("L", (6000, 6000), 90)
    ImageDraw.Draw(image).rectangle((1000, 1000, 5000, 5000), fill=200)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


NOT_AN_IMAGE = (
    b"<!DOCTYPE html><html><head><title>Welcome</title></head>"
    b"<body><h1>This CDN answered a web page, not a PNG</h1></body></html>"
)


def render_ahead(clock: Callable[[], float], task: Any, render: Callable[[], object]) -> None:
    """Draw a task's pictures while it runs (from its pickup), in a daemon thread: a real host's
    file exists when its task does, so the first download must not wait for the drawing (nor a
    detection benchmark measure it), and the drawing does not hold the emulator's GIL at the very
    moment the task completes. Skipped for a task that will not complete."""

    def draw() -> None:
        if task.outcome == "completed":
            render()

    timer = threading.Timer(max(0.0, task.pickup_end - clock()), draw)
    timer.daemon = True
    timer.start()


def cdn_image(
    variant: str,
    picture: Callable[[], bytes],
    *,
    headers: Sequence[tuple[str, str]] = (),
    delay: float = 0.0,
    bytes_per_second: float | None = None,
    truncate: bool = False,
) -> Response:
    """A CDN answer for a finished picture, as the fault switches shape it: the picture itself, or
    a decompression bomb, a huge image, an HTML page; slow, dripping or cut in half."""
    if variant == "not-image":
        response = Response(200, [("Content-Type", "text/html; charset=utf-8")], NOT_AN_IMAGE)
    else:
        body = {"bomb": bomb_png, "huge": huge_png}.get(variant, picture)()
        response = Response(200, [("Content-Type", "image/png"), *headers], body)
    response.delay = delay
    response.bytes_per_second = bytes_per_second
    if truncate:
        response.truncate_at = len(response.body) // 2
    return response
