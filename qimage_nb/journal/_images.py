"""Image safety and lazy opening: what a download must pass before it is kept, and images that
decode only when used.

Everything here works from headers and raw bytes first and decodes pixels only when a user (or a
thumbnail) actually needs them:

- ``inspect_image`` refuses a download that is not an image, is cut short, or declares more pixels
  than any contracted size, before a single pixel is decoded.
- ``open_lazy`` returns a PIL image that knows its size and provenance but holds no file descriptor
  and no pixels until it is used (a batch of thousands must not exhaust descriptors or memory).

Provenance in the file is ``_png_text``; thumbnails ``_thumbnails``; upload preparation ``_uploads``.

Pillow's global ``Image.MAX_IMAGE_PIXELS`` is neither relied on nor changed: a user may have set it
to anything. Headers are read through the format plugins directly and checked against our own cap.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from PIL import Image, ImageFile

from .._exceptions import ImageError
from ._png_text import IEND_CHUNK, PNG_SIGNATURE

__all__ = [
    "MAX_DOWNLOAD_BYTES",
    "MAX_PIXELS",
    "ImageFacts",
    "LazyImage",
    "inspect_image",
    "open_lazy",
]

MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
# The contract's largest output is 2048x2048; a body declaring far more is hostile or broken.
MAX_PIXELS = 4096 * 4096

# What a CDN may plausibly serve for a result. Anything else Pillow can read (EPS, ICO, ...) is
# refused: the contract says PNG, and exotic decoders are where the hostile files live.
DOWNLOAD_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF")


@dataclass(frozen=True)
class ImageFacts:
    """What the header of a checked image says."""

    format: str
    width: int
    height: int
    bytes: int


# --- reading headers -------------------------------------------------------------------------


def open_header(fp: IO[bytes], formats: tuple[str, ...] | None = None) -> ImageFile.ImageFile | None:
    """Image.open without its global decompression-bomb check: parse the header only.

    This mirrors ``Image.open``'s plugin loop; the caller checks the declared size against its own
    cap, so a user's ``Image.MAX_IMAGE_PIXELS`` setting can neither weaken nor break our checks.
    """
    fp.seek(0)
    prefix = fp.read(16)
    tried: set[str] = set()
    for loader in (Image.preinit, Image.init):
        loader()
        for fmt in list(Image.ID):
            if fmt in tried or (formats is not None and fmt not in formats):
                continue
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            try:
                verdict = accept(prefix) if accept else True
                if isinstance(verdict, str) or not verdict:
                    continue
                fp.seek(0)
                return factory(fp, "")
            except (SyntaxError, IndexError, TypeError, struct.error, ValueError, EOFError, OSError):
                continue  # not this format (Image.open's own list, plus what odd plugins raise)
            except Image.DecompressionBombError:
                raise  # a plugin that checks on its own; callers turn it into their message
    return None


def looks_like(head: bytes) -> str:
    """Name what a non-image body looks like, for a message a user can act on."""
    text = head.lstrip().lower()
    if not head:
        return "an empty file"
    if text.startswith((b"<!doctype html", b"<html")) or b"<body" in text[:512]:
        title = ""
        start, end = text.find(b"<title>"), text.find(b"</title>")
        if 0 <= start < end:
            title = head.lstrip()[start + 7 : end].decode("utf-8", "replace").strip()[:60]
        return f"an HTML page{f' ({title!r})' if title else ''}"
    if text.startswith(b"<?xml") or text.startswith(b"<error"):
        return "an XML document (often a storage error such as an expired link)"
    if text.startswith(b"<svg") or b"<svg" in text[:256]:
        return "an SVG drawing (vector images are not supported)"
    if text.startswith((b"{", b"[")):
        return f"JSON text ({' '.join(head.decode('utf-8', 'replace').split())[:60]!r})"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    try:
        sample = head[:256].decode("utf-8")
    except UnicodeDecodeError:
        return f"unrecognised binary data (starts {head[:8].hex(' ')})"
    if sample.isprintable() or all(c.isprintable() or c.isspace() for c in sample):
        return f"plain text ({' '.join(sample.split())[:60]!r})"
    return f"unrecognised binary data (starts {head[:8].hex(' ')})"


def _where(url: str | None) -> str:
    host = urlsplit(url).hostname if url else None
    return f"the image from {host}" if host else "the image"


def _png_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR, which the format requires to come first."""
    if len(head) >= 24 and head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    return None


def _png_end(fp: IO[bytes], size: int) -> int | None:
    """Offset of the IEND chunk, or None when the file was cut short.

    The fast case is IEND as the last 12 bytes. Some encoders leave trailing bytes after it; then
    look for it in the tail, so a complete image with junk after its end is not thrown away.
    """
    fp.seek(max(0, size - 12))
    if fp.read(12) == IEND_CHUNK:
        return size - 12
    tail_start = max(0, size - (1 << 20))
    fp.seek(tail_start)
    found = fp.read().rfind(IEND_CHUNK)
    return tail_start + found if found >= 0 else None


def _truncated(message: str, *, task_id: str | None, url: str | None) -> ImageError:
    error = ImageError(message, task_id=task_id, url=url)
    # The client retries a download that was cut short (and only that): it reads this flag.
    error.truncated = True  # type: ignore[attr-defined]
    return error


def check_pixels(width: int, height: int, limit: int, what: str, **ids: Any) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{what} declares an empty size {width}x{height}", **ids)
    if width * height > limit:
        raise ImageError(
            f"{what} declares {width}x{height} pixels ({width * height / 1e6:.1f} Mpx), over the "
            f"{limit / 1e6:.1f} Mpx cap: refused before decoding (a decompression bomb or not a result)",
            **ids,
        )


def inspect_image(path: Path, *, url: str | None = None, task_id: str | None = None) -> ImageFacts:
    """Check a downloaded file from its header and size alone; raise :class:`ImageError` if unsafe.

    Refuses: over ``MAX_DOWNLOAD_BYTES``; not an image (the message says what it looked like);
    more than ``MAX_PIXELS`` declared; a PNG with no ``IEND`` (a download cut short: the error has
    ``truncated = True``); a WebP shorter than its RIFF header says.
    """
    ids: dict[str, Any] = {"task_id": task_id, "url": url}
    what = _where(url)
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"{what} was not saved: {path} is missing ({exc.strerror})", **ids) from None
    if size > MAX_DOWNLOAD_BYTES:
        raise ImageError(f"{what} is {size} bytes, over the {MAX_DOWNLOAD_BYTES} byte cap", **ids)
    with open(path, "rb") as fp:
        head = fp.read(512)
        png = _png_size(head)
        if png is not None:
            # Checked from IHDR before Pillow sees the file at all.
            check_pixels(*png, MAX_PIXELS, what, **ids)
            if _png_end(fp, size) is None:
                raise _truncated(
                    f"{what} is a PNG cut short ({size} bytes, no IEND chunk): the download was incomplete",
                    **ids,
                )
        elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            declared = struct.unpack("<I", head[4:8])[0] + 8
            if size < declared:
                raise _truncated(
                    f"{what} is a WebP cut short ({size} of {declared} bytes): the download was incomplete",
                    **ids,
                )
        try:
            header = open_header(fp)
        except Image.DecompressionBombError:
            raise ImageError(f"{what} declares a decompression-bomb size: refused before decoding", **ids) from None
        if header is None:
            raise ImageError(f"{what} is not an image: it looks like {looks_like(head)}", **ids)
        if header.format not in DOWNLOAD_FORMATS:
            raise ImageError(
                f"{what} is a {header.format} file, not a web image format ({', '.join(DOWNLOAD_FORMATS)})",
                **ids,
            )
        width, height = header.size
        check_pixels(width, height, MAX_PIXELS, what, **ids)
        return ImageFacts(format=header.format or "", width=width, height=height, bytes=size)


# --- lazy opening ----------------------------------------------------------------------------


class LazyImage(Image.Image):
    """A PIL image backed by a file that is opened only to decode, and closed straight after.

    Size, mode, format and ``info`` come from the header at construction; pixels are decoded on the
    first ``load()``, which every pixel operation of ``PIL.Image.Image`` calls first. No file
    descriptor is held in between, unlike ``Image.open``, which keeps one until load.
    """

    def __init__(self, path: Path, header: ImageFile.ImageFile, info: Mapping[str, Any]) -> None:
        super().__init__()
        self._path = Path(path)
        self._mode = header.mode
        self._size = header.size
        self.format = header.format
        self.format_description = header.format_description
        self.filename = str(self._path)
        self.info = {**header.info, **info}
        self._decode_lock = threading.Lock()

    @property
    def provenance(self) -> dict[str, Any]:
        """What the file says, typed: ``info`` keeps the PNG's text as text, while here seed, n,
        index and expires_at are ints, cost a float, and width/height the picture's pixels."""
        from ._typed import typed_provenance

        return typed_provenance(self.info, self.size)

    def load(self) -> Any:
        if self._im is None:
            with self._decode_lock:
                if self._im is None:
                    self._decode()
        return super().load()

    def _decode(self) -> None:
        with open(self._path, "rb") as fp:
            source = open_header(fp)
            if source is None:
                raise ImageError(f"{self._path} is no longer a readable image")
            check_pixels(*source.size, MAX_PIXELS, str(self._path))
            source.load()
        self._mode, self._size = source.mode, source.size
        self.palette = source.palette
        for key, value in source.info.items():  # text chunks after the pixels appear only now
            self.info.setdefault(key, value)
        self.im = source.im


def not_an_image(path: Path, fp: IO[bytes]) -> ImageError:
    fp.seek(0)
    return ImageError(f"{path} is not an image: it looks like {looks_like(fp.read(512))}")


def open_lazy(path: Path, info: Mapping[str, str]) -> Image.Image:
    """Open ``path`` as a PIL image carrying ``info`` (provenance) without decoding or holding it open.

    ``info`` is merged over the header's own info and ``path`` is added. Raises :class:`ImageError`
    if the file is not an image or declares more than ``MAX_PIXELS``.
    """
    path = Path(path)
    with open(path, "rb") as fp:
        header = open_header(fp)
        if header is None:
            raise not_an_image(path, fp)
        check_pixels(*header.size, MAX_PIXELS, str(path))
        return LazyImage(path, header, {**info, "path": str(path)})
