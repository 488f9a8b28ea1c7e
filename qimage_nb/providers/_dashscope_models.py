"""Alibaba Model Studio's (DashScope's) Qwen Image models: the one table, and each family's rules.

Checked 2026-12 against shared/PROVIDERS.md sections 1 and 5 (sources there: the official
Qwen Image generation and editing API reference, updated 2026-10-12, for the model list and 3.0's
size rule; Comfy's router schema and DashScope client for 3.0's parameters, medium confidence;
the qwen-image-edit page for reference-image limits). Where a rule is marked medium or low there,
it is kept loose: a rule we got wrong must cost one clear host error, never a local refusal of
something the host would have served. A model not in this table is sent as written, with one line
saying so (``dashscope.py``); the host's own answer then decides.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

__all__ = ["CHECKED", "FIXED_SIZES", "INLINE_LIMITS", "MODELS", "Rules", "rules_of", "suggest"]

CHECKED = "2026-12"  # when this table was last checked against the sources above


@dataclass(frozen=True)
class Rules:
    """What one model takes. Sizes: a free ``W*H`` bounded by total pixels, aspect and side, or
    one of :data:`FIXED_SIZES`; ``auto_size``: the request may carry no size (the model picks)."""

    family: str
    asynchronous: bool = False  # text2image/image-synthesis + task polling (else the sync call)
    n_max: int = 6
    edits: bool = True  # takes 1-3 reference images
    fixed_sizes: bool = False
    pixels_min: int = 512 * 512
    pixels_max: int = 2048 * 2048
    side_min: int = 512
    side_max: int = 2048
    aspect_max: float | None = None
    # 3.0's prompt rewriting modes (``prompt_extend_mode``); "agent" is text-to-image only.
    extend_modes: tuple[str, ...] = ()


# 2.0: each side 512..2048, 512^2..2048^2 pixels in all (AC H); n 1-6; editing with 1-3 images.
QWEN2 = Rules("2.0")
# 3.0: total pixels 512^2..2048^2 (QIGE H), aspect up to 8:1 and one side up to 2560 (Comfy's
# schema; 2560x1440 seen served, M); no size at all lets the model choose (QIGE H).
QWEN3 = Rules("3.0", side_min=1, side_max=2560, aspect_max=8.0, extend_modes=("direct", "agent"))
FIXED = Rules("fixed", n_max=1, edits=False, fixed_sizes=True)
FIXED_ASYNC = Rules("fixed", asynchronous=True, n_max=1, edits=False, fixed_sizes=True)

MODELS: dict[str, Rules] = {
    "qwen-image-3.0": QWEN3,
    "qwen-image-3.0-pro": QWEN3,
    "qwen-image-2.0": QWEN2,
    "qwen-image-2.0-pro": QWEN2,
    "qwen-image-2.0-2026-03-03": QWEN2,
    "qwen-image-2.0-pro-2026-03-03": QWEN2,
    # 2.1-pro edits with up to 10 references (QIGE H, not researched further): 2.0's rules here.
    "qwen-image-2.1-pro": QWEN2,
    "qwen-image-max": FIXED,
    "qwen-image-plus": FIXED_ASYNC,
    "qwen-image": FIXED_ASYNC,
}

# qwen-image, -plus and -max: the host's fixed sizes (1472*1140 and 1140*1472 also listed, M).
FIXED_SIZES = {"1:1": (1328, 1328), "16:9": (1664, 928), "9:16": (928, 1664), "4:3": (1472, 1104), "3:4": (1104, 1472)}
ALSO_FIXED = frozenset({(1472, 1140), (1140, 1472)})

# A reference sent as a data: URI (the editing page; Comfy's client for 3.0): at most 10 MB decoded,
# each side 384..3072 pixels; JPEG, PNG, BMP, TIFF, WEBP and GIF are read (3.0: PNG and JPEG
# confirmed), so PNG and JPEG go byte for byte and every other format is sent converted to PNG.
INLINE_LIMITS = {"max_bytes": 10 * 1024 * 1024, "side_min": 384, "side_max": 3072, "types": ("image/png", "image/jpeg")}


def rules_of(model: str) -> Rules | None:
    return MODELS.get(model)


def suggest(model: str) -> str:
    """ `` (did you mean 'X'?)`` for an id close to a known one, else ''."""
    close = difflib.get_close_matches(model, list(MODELS), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
