"""Provenance read back typed: a PNG's text chunks hold text, a user wants numbers.

The file keeps what it was given as text (``image.info``, ``PIL.Image.open(path).text``); an image
of this package also carries a typed copy (``image.provenance``), and the export's manifest writes
from it. Kept apart from ``_images`` and ``_provenance`` so both may use it without a cycle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

__all__ = ["typed_provenance"]


# PNG text is text: these keys read back as numbers (and flags) in the typed copy an image carries.
_INTS = ("n", "index", "seed", "expires_at", "item")
_FLOATS = ("cost",)
_FLAGS = ("prompt_extend", "watermark")


def typed_provenance(info: Mapping[str, Any], pixels: tuple[int, int] | None = None) -> dict[str, Any]:
    """The provenance in ``info`` with its numbers as numbers: seed, n, index, item, expires_at as
    ``int``, cost as ``float``, prompt_extend/watermark as ``bool``, and ``width``/``height`` from
    ``pixels`` (the image's size). A value that does not parse stays as it was written."""
    out: dict[str, Any] = {key: value for key, value in info.items() if isinstance(key, str) and isinstance(value, str)}
    for key in _INTS:
        if key in out:
            with contextlib.suppress(ValueError):
                out[key] = int(out[key])
    for key in _FLOATS:
        if key in out:
            with contextlib.suppress(ValueError):
                out[key] = float(out[key])
    for key in _FLAGS:
        if out.get(key) in ("true", "false"):
            out[key] = out[key] == "true"
    if pixels is not None:
        out["width"], out["height"] = int(pixels[0]), int(pixels[1])
    return out

