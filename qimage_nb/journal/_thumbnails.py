"""Thumbnails: fast, small, and within a byte budget without losing pixels.

``thumbnail`` takes Pillow's reducing paths (JPEG draft, ``reduce``) instead of a full-size resize,
and can keep to a byte budget (``max_bytes``) by re-encoding the once-shrunk pixels.
"""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from PIL import Image

from ._images import MAX_PIXELS, LazyImage, check_pixels, not_an_image, open_header

__all__ = ["THUMB_FORMATS", "THUMB_PX", "thumbnail", "thumbnail_data_uri", "thumbnail_mime"]

THUMB_FORMATS = {"JPEG": "image/jpeg", "WEBP": "image/webp"}
# thumbnail()'s longest side when the caller does not say: the galleries' size. Defined here, not
# taken from view._gallery (whose DEFAULT_THUMB_PX it equals): an image module importing the
# renderer was an import cycle (view._gallery draws its tiles with this module).
THUMB_PX = 256

# A thumbnail squeezed into a byte budget keeps its pixels: it is shown at its own size, and fewer
# pixels stretched to that size blur the text a picture carries. Only quality and format give way,
# down to a floor per format: below ~35 JPEG's 8x8 blocks take over flat colours and text edges,
# while WebP's deblocking filter smooths them instead, so WebP at quality 20 still looks clean.
THUMB_FLOOR_QUALITY = {"JPEG": 35, "WEBP": 20}
_QUALITY_STEPS = (80, 65, 50, 35, 20)  # tried from the top, down to the format's floor

# Galleries redraw the same tiles often: keep recent thumbnails of files (keyed by the file's
# identity and mtime, so a replaced file is never served stale). ~512 x 15 KB at most.
_THUMB_CACHE: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
_THUMB_CACHE_MAX = 512
_THUMB_LOCK = threading.Lock()


def _flatten(image: Image.Image, fmt: str) -> Image.Image:
    """Modes the encoder takes: JPEG gets RGB/L on white; WebP keeps alpha."""
    if image.mode in ("RGB", "L") or (fmt == "WEBP" and image.mode == "RGBA"):
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if image.mode.startswith("I;16") or image.mode == "I":
        return image.convert("I").point(lambda v: v / 256).convert("L")
    if not has_alpha:
        return image.convert("L" if image.mode in ("1", "F") else "RGB")
    rgba = image.convert("RGBA")
    if fmt == "WEBP":
        return rgba
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    return white


def _shrink(image: Image.Image, max_side: int, fmt: str, *, own: bool) -> Image.Image:
    width, height = image.size
    scale = max_side / max(width, height)
    target = (max(1, round(width * scale)), max(1, round(height * scale))) if scale < 1 else image.size
    if own and image.format == "JPEG" and scale < 1:
        # DCT scaling decodes at 1/2, 1/4 or 1/8 size: most of a JPEG is never decoded at full size.
        image.draft("RGB" if image.mode not in ("L", "CMYK") else image.mode, (target[0] * 2, target[1] * 2))
    if image.mode in ("P", "PA", "1", "I", "I;16", "I;16B", "I;16L", "F", "CMYK", "YCbCr", "LAB", "HSV"):
        image = _flatten(image, fmt)  # reduce/resize need a continuous-tone mode
    if scale < 1:
        # reduce() is a cheap box filter straight to ~2x the target; the final resize then filters
        # only a small image (Pillow's own reducing_gap=2.0 idea, without mutating a caller's image).
        factor = int(min(image.size[0] / target[0], image.size[1] / target[1]) / 2)
        if factor > 1:
            image = image.reduce(factor)
        image = image.resize(target, Image.Resampling.BICUBIC)
    return _flatten(image, fmt)


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=quality)
    else:
        image.save(out, "WEBP", quality=quality, method=4)
    return out.getvalue()


def _best_quality(image: Image.Image, fmt: str, qualities: list[int], max_bytes: int) -> bytes | None:
    """The encoding at the highest of ``qualities`` (descending) within ``max_bytes``: a bisection,
    as bytes grow with quality."""
    best, low, high = None, 0, len(qualities) - 1
    while low <= high:
        middle = (low + high) // 2
        data = _encode(image, fmt, qualities[middle])
        if len(data) <= max_bytes:
            best, high = data, middle - 1
        else:
            low = middle + 1
    return best


def _within(small: Image.Image, fmt: str, quality: int, max_bytes: int) -> bytes:
    """Encode ``small`` (decoded and shrunk once) in at most ``max_bytes``, never with fewer pixels.

    Order: the asked format and quality first. On a miss, the same quality in the other of
    JPEG/WebP, and whichever is smaller is kept from then on (on flat pictures WebP is about half
    the bytes of JPEG). Then a bisection of the qualities down to the format's floor. If even the
    floor misses, the floor is returned: the least we are willing to show. Only encoding repeats,
    a few milliseconds each.
    """
    data = _encode(small, fmt, quality)
    if len(data) <= max_bytes:
        return data
    other = "WEBP" if fmt == "JPEG" else "JPEG"
    other_image = _flatten(small, other)
    other_data = _encode(other_image, other, quality)
    if len(other_data) < len(data):
        fmt, small, data = other, other_image, other_data
        if len(data) <= max_bytes:
            return data
    floor_quality = min(quality, THUMB_FLOOR_QUALITY[fmt])
    above_floor = sorted({q for q in _QUALITY_STEPS if floor_quality < q < quality}, reverse=True)
    lowest = _encode(small, fmt, floor_quality)
    if len(lowest) > max_bytes:
        return lowest
    return _best_quality(small, fmt, above_floor, max_bytes) or lowest


def thumbnail_mime(data: bytes) -> str:
    """The MIME type of thumbnail bytes (under a byte budget the format can differ from the asked one)."""
    return THUMB_FORMATS["WEBP"] if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else THUMB_FORMATS["JPEG"]


def thumbnail(
    source: Path | str | Image.Image,
    *,
    max_side: int = THUMB_PX,
    fmt: str = "JPEG",
    quality: int = 80,
    max_bytes: int | None = None,
) -> bytes:
    """Encoded thumbnail bytes (``fmt`` "JPEG" or "WEBP") whose longer side is at most ``max_side``.

    A path is read with Pillow's reducing paths (JPEG draft, ``reduce``) and the result cached in
    memory by file identity; a PIL image is never modified. Transparency is flattened onto white
    for JPEG and kept for WebP. Images are never enlarged.

    ``max_bytes`` is a budget for the encoded bytes: over it, the thumbnail may switch to the other
    of JPEG/WebP when that is smaller, then steps down in quality (to ``THUMB_FLOOR_QUALITY``); if
    even that floor is over budget, the floor is returned. It never loses pixels to a budget. The
    pixels are decoded and shrunk once; only the encoding repeats. Use :func:`thumbnail_mime` for
    the format of the result.
    """
    fmt = fmt.upper()
    if fmt not in THUMB_FORMATS:
        raise ValueError(f"thumbnail format {fmt!r} is not supported; use JPEG or WEBP")
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise ValueError(f"max_side must be a positive whole number, got {max_side!r}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)):
        raise ValueError(f"max_bytes must be a whole number of bytes or None, got {max_bytes!r}")

    def encode(small: Image.Image) -> bytes:
        return _encode(small, fmt, quality) if max_bytes is None else _within(small, fmt, quality, max_bytes)

    if isinstance(source, LazyImage) and source._im is None:
        source = source._path  # not decoded yet: the file route can draft and cache
    if isinstance(source, Image.Image):
        return encode(_shrink(source, max_side, fmt, own=False))
    path = Path(source)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, max_side, fmt, quality, max_bytes)
    with _THUMB_LOCK:
        cached = _THUMB_CACHE.get(key)
        if cached is not None:
            _THUMB_CACHE.move_to_end(key)
            return cached
    with open(path, "rb") as fp:
        header = open_header(fp)
        if header is None:
            raise not_an_image(path, fp)
        check_pixels(*header.size, MAX_PIXELS, str(path))
        data = encode(_shrink(header, max_side, fmt, own=True))
    with _THUMB_LOCK:
        _THUMB_CACHE[key] = data
        while len(_THUMB_CACHE) > _THUMB_CACHE_MAX:
            _THUMB_CACHE.popitem(last=False)
    return data


def thumbnail_data_uri(source: Path | str | Image.Image, **options: Any) -> str:
    """``thumbnail(...)`` as a ``data:`` URI for HTML."""
    data = thumbnail(source, **options)
    return f"data:{thumbnail_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"
