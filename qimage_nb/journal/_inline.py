"""A local reference made ready to travel inside a request, as a ``data:`` URI.

For hosts that take references inline (a provider with ``inline_refs``) no upload service is
involved: the picture is read once, checked against the host's limits (format, bytes, pixels: the
provider says which), and kept as an :class:`~qimage_nb._contract.InlineImage`. The limits are checked here, before
anything is sent, so a reference the host would refuse costs a one-line refusal naming the limit,
not a paid request.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

from .._contract import InlineImage
from .._exceptions import ValidationError

__all__ = ["inline_image"]


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def inline_image(material: Any, limits: Mapping[str, Any], *, shown: str = "reference") -> InlineImage:
    """``material`` (a path, a PIL image, encoded bytes, or a ``data:`` URI) as an InlineImage
    within ``limits`` (``max_bytes``, ``side_min``, ``side_max``, ``types`` sent byte for byte;
    any other format Pillow reads is sent as PNG). Raises a one-line ValidationError."""
    from PIL import Image

    from ._uploads import _as_png, prepare_upload

    if isinstance(material, str) and material.strip()[:5].lower() == "data:":
        material = _decode_data_uri(material.strip(), shown)
    prepared = prepare_upload(material)
    data, content_type = prepared.data, prepared.content_type
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if content_type not in limits.get("types", ()):
            image.load()
            data, content_type = _as_png(image.convert("RGBA") if image.mode == "P" else image), "image/png"
    side_min, side_max = limits.get("side_min", 1), limits.get("side_max", 10**6)
    if not (side_min <= width <= side_max and side_min <= height <= side_max):
        raise ValidationError(
            "image_urls", f"{shown} is {width}x{height} pixels; the host takes references with each side "
            f"{side_min} to {side_max} pixels: resize it"
        )
    max_bytes = limits.get("max_bytes")
    if max_bytes is not None and len(data) > max_bytes:
        raise ValidationError(
            "image_urls", f"{shown} is {_mb(len(data))} as {content_type.split('/')[1].upper()}; the host takes "
            f"references up to {_mb(max_bytes)}: resize it or save it as JPEG"
        )
    return InlineImage(content_type, hashlib.sha256(data).hexdigest(), data=data, width=width, height=height)


def _decode_data_uri(uri: str, shown: str) -> bytes:
    import base64
    import binascii

    head, _, body = uri.partition(",")
    if not head.lower().endswith(";base64") or not head[5:].lower().startswith("image/"):
        raise ValidationError("image_urls", f"{shown} is a data: URI that is not data:image/...;base64,...")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("image_urls", f"{shown} is a data: URI whose base64 does not decode") from None


def inline_references(refs: Any, limits: Mapping[str, Any]) -> Any:
    """``image_urls`` as a caller gave them, with each local item (a path, a PIL image, bytes, a
    ``data:`` URI) made an InlineImage; URLs and anything unrecognisable are left for the
    request's own checks to accept or refuse."""
    import os

    from PIL import Image

    if isinstance(refs, (str, bytes)) or not isinstance(refs, (list, tuple)):
        return refs
    out = []
    for index, ref in enumerate(refs):
        shown = f"image_urls[{index}]"
        local = isinstance(ref, (Image.Image, bytes, bytearray, memoryview, os.PathLike)) or (
            isinstance(ref, str) and ref.strip()[:5].lower() == "data:"
        ) or (isinstance(ref, str) and "://" not in ref and ref.strip() != "" and os.path.isfile(os.path.expanduser(ref)))
        out.append(inline_image(ref, limits, shown=shown) if local else ref)
    return out
