"""Provenance inside the image file: PNG text chunks, or a JSON sidecar for any other format.

``add_png_text`` appends provenance as ``iTXt`` chunks before ``IEND``: the received bytes of the
image are never re-encoded, so what the user paid for is kept bit for bit. Pure bytes: no Pillow.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

__all__ = ["IEND_CHUNK", "PNG_SIGNATURE", "add_png_text", "png_with_text", "read_provenance", "sidecar_path"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IEND_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"
SOFTWARE = "qimage_nb"


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
    end = data.rfind(IEND_CHUNK)
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
    if data.startswith(PNG_SIGNATURE) and IEND_CHUNK in data:
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
