"""Image handling: safety checks on downloads, PNG provenance, lazy opening, thumbnails, uploads.

Everything here works from headers and raw bytes first and decodes pixels only when a user (or a
thumbnail) actually needs them:

- ``inspect_image`` refuses a download that is not an image, is cut short, or declares more pixels
  than any contracted size, before a single pixel is decoded.
- ``add_png_text`` appends provenance as ``iTXt`` chunks before ``IEND``: the received bytes of the
  image are never re-encoded, so what the user paid for is kept bit for bit.
- ``open_lazy`` returns a PIL image that knows its size and provenance but holds no file descriptor
  and no pixels until it is used (a batch of thousands must not exhaust descriptors or memory).
- ``thumbnail`` takes Pillow's reducing paths (JPEG draft, ``reduce``) instead of a full-size resize,
  and can keep to a byte budget (``max_bytes``) by re-encoding the once-shrunk pixels.

Pillow's global ``Image.MAX_IMAGE_PIXELS`` is neither relied on nor changed: a user may have set it
to anything. Headers are read through the format plugins directly and checked against our own cap.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from PIL import Image, ImageFile

from .._contract import UPLOAD_CONTENT_TYPES, UPLOAD_MAX_BYTES
from .._exceptions import ImageError, ValidationError

__all__ = [
    "MAX_DOWNLOAD_BYTES",
    "MAX_PIXELS",
    "UPLOAD_MAX_BYTES",
    "ImageFacts",
    "UploadFile",
    "add_png_text",
    "inspect_image",
    "open_lazy",
    "png_with_text",
    "prepare_upload",
    "read_provenance",
    "sidecar_path",
    "thumbnail",
    "thumbnail_data_uri",
    "thumbnail_mime",
]

MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
# The contract's largest output is 2048x2048; a body declaring far more is hostile or broken.
MAX_PIXELS = 4096 * 4096
# Local files for upload are the user's own, so allow big photos, but bound what we decode to
# convert one (a 40 KB TIFF can declare gigapixels too).
UPLOAD_MAX_PIXELS = 12000 * 12000

# What a CDN may plausibly serve for a result. Anything else Pillow can read (EPS, ICO, ...) is
# refused: the contract says PNG, and exotic decoders are where the hostile files live.
DOWNLOAD_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"
SOFTWARE = "qimage_nb"

_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "GIF": ".gif"}


@dataclass(frozen=True)
class ImageFacts:
    """What the header of a checked image says."""

    format: str
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class UploadFile:
    """One file ready for ``POST /v1/uploads/images``."""

    filename: str
    data: bytes
    content_type: str

    def __repr__(self) -> str:  # never dump megabytes into a traceback
        return f"UploadFile(filename={self.filename!r}, bytes={len(self.data)}, content_type={self.content_type!r})"


# --- reading headers -------------------------------------------------------------------------


def _open_header(fp: IO[bytes], formats: tuple[str, ...] | None = None) -> ImageFile.ImageFile | None:
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


def _looks_like(head: bytes) -> str:
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
    if fp.read(12) == _IEND_CHUNK:
        return size - 12
    tail_start = max(0, size - (1 << 20))
    fp.seek(tail_start)
    found = fp.read().rfind(_IEND_CHUNK)
    return tail_start + found if found >= 0 else None


def _truncated(message: str, *, task_id: str | None, url: str | None) -> ImageError:
    error = ImageError(message, task_id=task_id, url=url)
    # The client retries a download that was cut short (and only that): it reads this flag.
    error.truncated = True  # type: ignore[attr-defined]
    return error


def _check_pixels(width: int, height: int, limit: int, what: str, **ids: Any) -> None:
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
            _check_pixels(*png, MAX_PIXELS, what, **ids)
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
            header = _open_header(fp)
        except Image.DecompressionBombError:
            raise ImageError(f"{what} declares a decompression-bomb size: refused before decoding", **ids) from None
        if header is None:
            raise ImageError(f"{what} is not an image: it looks like {_looks_like(head)}", **ids)
        if header.format not in DOWNLOAD_FORMATS:
            raise ImageError(
                f"{what} is a {header.format} file, not a web image format ({', '.join(DOWNLOAD_FORMATS)})",
                **ids,
            )
        width, height = header.size
        _check_pixels(width, height, MAX_PIXELS, what, **ids)
        return ImageFacts(format=header.format or "", width=width, height=height, bytes=size)


# --- provenance ------------------------------------------------------------------------------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _itxt(key: str, value: str) -> bytes:
    try:
        keyword = key.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"PNG text keys must be Latin-1, got {key!r}") from None
    if not 1 <= len(keyword) <= 79 or b"\x00" in keyword:
        raise ValueError(f"PNG text keys are 1 to 79 characters without NUL, got {key!r}")
    # iTXt, uncompressed, no language tag: UTF-8 text (prompts are often Chinese or carry emoji).
    return _chunk(b"iTXt", keyword + b"\x00\x00\x00" + b"\x00" + b"\x00" + str(value).encode("utf-8"))


def _with_software(meta: Mapping[str, str]) -> dict[str, str]:
    merged = {str(k): "" if v is None else str(v) for k, v in meta.items()}
    merged.setdefault("Software", SOFTWARE)
    return merged


def png_with_text(data: bytes, meta: Mapping[str, str]) -> bytes:
    """Return ``data`` with ``meta`` as ``iTXt`` chunks inserted just before ``IEND``.

    Every byte before ``IEND`` is kept as it was: the pixels are not decoded or re-encoded.
    Raises :class:`ValueError` if ``data`` is not a complete PNG.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG: provenance chunks can only be added to PNG data")
    end = data.rfind(_IEND_CHUNK)
    if end < 0:
        raise ValueError("the PNG has no IEND chunk (cut short?)")
    chunks = b"".join(_itxt(key, value) for key, value in _with_software(meta).items())
    return data[:end] + chunks + data[end:]


def sidecar_path(path: Path) -> Path:
    """Where provenance lives for a non-PNG image: ``<file>.json`` next to it."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temp, "wb") as sink:
            sink.write(data)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def add_png_text(path: Path, meta: Mapping[str, str]) -> None:
    """Record provenance for the image at ``path``: PNG text chunks, or a JSON sidecar.

    A PNG gets ``iTXt`` chunks (readable with ``PIL.Image.open(path).text``); any other body (a CDN
    may send JPEG or WebP) is left byte for byte and gets ``<file>.json``. The file is replaced
    atomically, so a crash leaves either the old or the new file, never half of one.
    """
    path = Path(path)
    data = path.read_bytes()
    if data.startswith(PNG_SIGNATURE) and _IEND_CHUNK in data:
        _write_atomic(path, png_with_text(data, meta))
    else:
        text = json.dumps(_with_software(meta), ensure_ascii=False, indent=1, sort_keys=True)
        _write_atomic(sidecar_path(path), text.encode("utf-8"))


def _png_text_chunks(fp: IO[bytes]) -> Iterator[tuple[str, str]]:
    """Walk a PNG's chunks and yield (key, text) for tEXt, zTXt and iTXt, without decoding pixels."""
    fp.seek(len(PNG_SIGNATURE))
    while True:
        header = fp.read(8)
        if len(header) < 8:
            return
        length, kind = struct.unpack(">I", header[:4])[0], header[4:]
        if kind == b"IEND":
            return
        if kind not in (b"tEXt", b"zTXt", b"iTXt") or length > (8 << 20):
            fp.seek(length + 4, os.SEEK_CUR)
            continue
        payload = fp.read(length)
        fp.seek(4, os.SEEK_CUR)
        key, _, rest = payload.partition(b"\x00")
        try:
            if kind == b"tEXt":
                text = rest.decode("latin-1")
            elif kind == b"zTXt":
                text = zlib.decompressobj().decompress(rest[1:], 1 << 20).decode("latin-1")
            else:
                compressed, _method, rest = rest[0], rest[1], rest[2:]
                _lang, _, rest = rest.partition(b"\x00")
                _translated, _, body = rest.partition(b"\x00")
                if compressed:
                    body = zlib.decompressobj().decompress(body, 1 << 20)
                text = body.decode("utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError):
            continue  # one damaged chunk must not hide the others
        yield key.decode("latin-1"), text


def read_provenance(path: Path) -> dict[str, str]:
    """Provenance of an image: its PNG text chunks, else its JSON sidecar; ``{}`` when there is none."""
    path = Path(path)
    found: dict[str, str] = {}
    with open(path, "rb") as fp:
        if fp.read(8) == PNG_SIGNATURE:
            found.update(_png_text_chunks(fp))  # later chunks win, as in Pillow
    side = sidecar_path(path)
    if not found and side.exists():
        loaded = json.loads(side.read_text("utf-8"))
        if isinstance(loaded, dict):
            found.update({str(k): str(v) for k, v in loaded.items()})
    return found


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

    def load(self) -> Any:
        if self._im is None:
            with self._decode_lock:
                if self._im is None:
                    self._decode()
        return super().load()

    def _decode(self) -> None:
        with open(self._path, "rb") as fp:
            source = _open_header(fp)
            if source is None:
                raise ImageError(f"{self._path} is no longer a readable image")
            _check_pixels(*source.size, MAX_PIXELS, str(self._path))
            source.load()
        self._mode, self._size = source.mode, source.size
        self.palette = source.palette
        for key, value in source.info.items():  # text chunks after the pixels appear only now
            self.info.setdefault(key, value)
        self.im = source.im


def _not_an_image(path: Path, fp: IO[bytes]) -> ImageError:
    fp.seek(0)
    return ImageError(f"{path} is not an image: it looks like {_looks_like(fp.read(512))}")


def open_lazy(path: Path, info: Mapping[str, str]) -> Image.Image:
    """Open ``path`` as a PIL image carrying ``info`` (provenance) without decoding or holding it open.

    ``info`` is merged over the header's own info and ``path`` is added. Raises :class:`ImageError`
    if the file is not an image or declares more than ``MAX_PIXELS``.
    """
    path = Path(path)
    with open(path, "rb") as fp:
        header = _open_header(fp)
        if header is None:
            raise _not_an_image(path, fp)
        _check_pixels(*header.size, MAX_PIXELS, str(path))
        return LazyImage(path, header, {**info, "path": str(path)})


# --- thumbnails ------------------------------------------------------------------------------

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
        header = _open_header(fp)
        if header is None:
            raise _not_an_image(path, fp)
        _check_pixels(*header.size, MAX_PIXELS, str(path))
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


# --- uploads ---------------------------------------------------------------------------------

_MB = 1024 * 1024  # the API's "20 MB" is 20 MiB (UPLOAD_MAX_BYTES)
_REF_HINT = "pass an existing image file, a public http(s) URL, or a PIL image"


def _too_big(name: str, size: int, *, converted: bool) -> ValidationError:
    how = "the PNG it converts to is" if converted else "it is"
    return ValidationError(
        "image",
        f"reference {name!r}: {how} {size / _MB:.1f} MB, over the upload limit of "
        f"{UPLOAD_MAX_BYTES / _MB:.0f} MB: resize it or save it as JPEG first",
    )


def _as_png(image: Image.Image) -> bytes:
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=6)
    return out.getvalue()


def _upload_from_bytes(data: bytes, name: str) -> UploadFile:
    fp = io.BytesIO(data)
    try:
        header = _open_header(fp)
    except Image.DecompressionBombError:
        header = None
    if header is None:
        raise ValidationError("image", f"reference {name!r} is not an image: it looks like {_looks_like(data[:512])}")
    fmt = "JPEG" if header.format == "MPO" else header.format or ""
    if fmt in UPLOAD_CONTENT_TYPES:
        if len(data) > UPLOAD_MAX_BYTES:
            raise _too_big(name, len(data), converted=False)
        stem, ext = os.path.splitext(name)
        if ext.lower() not in (_EXTENSIONS[fmt], ".jpeg" if fmt == "JPEG" else _EXTENSIONS[fmt]):
            name = stem + _EXTENSIONS[fmt]  # the server trusts the name's extension
        return UploadFile(name, data, UPLOAD_CONTENT_TYPES[fmt])
    # BMP, TIFF and friends: the upload endpoint takes only web formats, so convert to PNG.
    width, height = header.size
    if width * height > UPLOAD_MAX_PIXELS:
        raise ValidationError(
            "image", f"reference {name!r} is {width}x{height} pixels, too large to convert: resize it first"
        )
    try:
        header.load()
    except (OSError, ValueError) as exc:
        raise ValidationError("image", f"reference {name!r} could not be decoded: {exc}") from None
    png = _as_png(header)
    if len(png) > UPLOAD_MAX_BYTES:
        raise _too_big(name, len(png), converted=True)
    return UploadFile(os.path.splitext(name)[0] + ".png", png, UPLOAD_CONTENT_TYPES["PNG"])


def prepare_upload(obj: str | os.PathLike[str] | bytes | Image.Image) -> UploadFile:
    """Turn a local reference image into the file the upload endpoint accepts.

    JPEG, PNG, WebP and GIF are sent byte for byte; other formats Pillow reads, and PIL images, are
    encoded as PNG. Raises :class:`ValidationError` (one line, saying what to do) for a missing path,
    something that is not an image, or a result over ``UPLOAD_MAX_BYTES``.
    """
    if isinstance(obj, Image.Image):
        if isinstance(obj, LazyImage) and obj._im is None:
            return prepare_upload(obj._path)
        name = Path(obj.filename).stem + ".png" if getattr(obj, "filename", "") else "image.png"
        png = _as_png(obj)
        if len(png) > UPLOAD_MAX_BYTES:
            raise _too_big(name, len(png), converted=True)
        return UploadFile(name, png, UPLOAD_CONTENT_TYPES["PNG"])
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _upload_from_bytes(bytes(obj), "image")
    if isinstance(obj, str) and urlsplit(obj.strip()).scheme.lower() in ("http", "https"):
        raise ValidationError(
            "image", f"reference {obj!r} is already a URL: pass it in image_urls directly, no upload needed"
        )
    if not isinstance(obj, (str, os.PathLike)):
        raise ValidationError("image", f"reference of type {type(obj).__name__} is not usable: {_REF_HINT}")
    path = Path(obj).expanduser()
    if not path.exists():
        raise ValidationError("image", f"reference {str(obj)!r} does not exist: {_REF_HINT}")
    if not path.is_file():
        raise ValidationError("image", f"reference {str(obj)!r} is not a file: {_REF_HINT}")
    size = path.stat().st_size
    with open(path, "rb") as fp:
        head = fp.read(512)
    # A native format over the limit is refused without reading it all; others may shrink as PNG.
    if size > UPLOAD_MAX_BYTES and _sniff_native(head):
        raise _too_big(path.name, size, converted=False)
    if size > 4 * UPLOAD_MAX_BYTES:
        raise _too_big(path.name, size, converted=False)
    return _upload_from_bytes(path.read_bytes(), path.name)


def _sniff_native(head: bytes) -> bool:
    return (
        head.startswith((PNG_SIGNATURE, b"\xff\xd8\xff", b"GIF87a", b"GIF89a"))
        or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")
    )
