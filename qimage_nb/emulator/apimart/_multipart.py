"""A small multipart/form-data parser (``cgi`` is deprecated, and the ``email`` parser is not
byte-exact for binary parts) plus image-format sniffing by magic bytes, as the upload endpoint
trusts the bytes, never the client's declared type."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


class MultipartError(ValueError):
    pass


def _params(header_name: str, value: str) -> Message:
    # email.message parses RFC 2231 / quoted header parameters correctly; reuse it for headers only.
    message = Message()
    message[header_name] = value
    return message


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    header = _params("content-type", content_type)
    if header.get_content_type() != "multipart/form-data":
        raise MultipartError("the request is not multipart/form-data")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise MultipartError("the multipart request has no boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)
    parts: list[Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            return parts  # the closing delimiter
        if not chunk.startswith(b"\r\n"):
            raise MultipartError("malformed multipart delimiter")
        head, sep, data = chunk[2:].partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("a multipart part has no header/body separator")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        disposition = _params("content-disposition", headers.get("content-disposition", ""))
        name = disposition.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise MultipartError("a multipart part has no field name")
        parts.append(Part(name, disposition.get_filename(), headers.get("content-type"), data))
    raise MultipartError("the multipart body has no closing delimiter")


def sniff_image(data: bytes) -> str | None:
    """The MIME type of a JPEG, PNG, WebP or GIF by its first bytes, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def safe_filename(name: str | None, content_type: str) -> str:
    """A name that is safe inside a URL path; keeps the extension a human would expect."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", (name or "").replace("\\", "/").rsplit("/", 1)[-1])
    base = base.strip("._")[:80]
    return base or "upload." + content_type.rsplit("/", 1)[-1].replace("jpeg", "jpg")
