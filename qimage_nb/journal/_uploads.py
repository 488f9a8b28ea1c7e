"""Preparing a local reference image for a host's upload endpoint: checked, converted to a web
format only where it must be, refused in one line where it cannot be sent."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from .._contract import UPLOAD_CONTENT_TYPES, UPLOAD_MAX_BYTES
from .._exceptions import ValidationError
from ._images import LazyImage, looks_like, open_header
from ._png_text import PNG_SIGNATURE

__all__ = ["UploadFile", "prepare_upload"]

# Local files for upload are the user's own, so allow big photos, but bound what we decode to
# convert one (a 40 KB TIFF can declare gigapixels too).
UPLOAD_MAX_PIXELS = 12000 * 12000

_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "GIF": ".gif"}


@dataclass(frozen=True)
class UploadFile:
    """One file ready for a host's upload endpoint."""

    filename: str
    data: bytes
    content_type: str

    def __repr__(self) -> str:  # never dump megabytes into a traceback
        return f"UploadFile(filename={self.filename!r}, bytes={len(self.data)}, content_type={self.content_type!r})"


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
        header = open_header(fp)
    except Image.DecompressionBombError:
        header = None
    if header is None:
        raise ValidationError("image", f"reference {name!r} is not an image: it looks like {looks_like(data[:512])}")
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
