"""Which models a deployment lists and accepts, and the pixel sizes of the models outside the contract.

The contract's two models keep their strict rules and pixel table (API.md section 1). The others
(section 7.7: the same endpoints serve other image models, ``qwen-image-3.0`` among them) are
accepted with the universal checks only and render at sizes that are deliberately NOT in the 2.0
table, so a client that insists on that table is caught.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..._contract import (
    MODELS,
    N_MAX,
    NEGATIVE_PROMPT_MAX,
    PROMPT_MAX,
    RATIOS,
    REFS_MAX,
    RESOLUTIONS,
)
from .._faults import Faults

# What the wild dialect lists beyond the contract: a newer Qwen model and one from another family.
WILD_MODELS = ("qwen-image-3.0", "gpt-image-1")

# Qwen-Image's own native sizes (about 1328 x 1328 pixels of area), none of them in the 2.0 table.
FREE_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1328, 1328),
    "16:9": (1664, 928),
    "9:16": (928, 1664),
    "4:3": (1472, 1140),
    "3:4": (1140, 1472),
    "3:2": (1584, 1056),
    "2:3": (1056, 1584),
}
_RATIO = re.compile(r"^([1-9][0-9]{0,2}):([1-9][0-9]{0,2})$")
_MAX_ASPECT = 4


# Qwen Image 3.0 as the seed's reseller lists it (PROVIDERS.md 5): a ratio, 1K or 2K, 1 to 4 images.
# Served with these rules where a deployment lists it by name (extra_models); the wild dialect
# lists it too, but loose, like every model outside the contract there.
QWEN3 = "qwen-image-3.0"
QWEN3_N_MAX = 4


def is_qwen3(model: str, faults: Faults) -> bool:
    """3.0 with its own rules: listed, and not under the wild dialect's universal checks."""
    return model == QWEN3 and faults.dialect != "wild" and model in listed_models(faults)


def qwen3_pixels(size: str, resolution: str) -> tuple[int, int] | None:
    base = FREE_SIZES.get(size)
    if base is None or resolution not in RESOLUTIONS:
        return None
    scale = 1.5 if resolution == "2K" else 1.0
    return round(base[0] * scale / 16) * 16, round(base[1] * scale / 16) * 16


def model_schema(model: str, faults: Faults) -> dict[str, Any] | None:
    """``GET /v1/model-schema`` (API.md 7.7): the listed model's input schema, as this emulator
    validates it; None for a model it does not list."""
    if model not in listed_models(faults):
        return None
    strict = model in MODELS or is_qwen3(model, faults)
    text = {"type": "string", "maxLength": PROMPT_MAX}
    properties: dict[str, Any] = {
        "model": {"type": "string", "enum": [model]},
        "prompt": text,
        "negative_prompt": {"type": "string", "maxLength": NEGATIVE_PROMPT_MAX} if strict else {"type": "string"},
        "size": {"type": "string", "enum": list(RATIOS), "default": RATIOS[0]} if strict
        else {"type": "string", "pattern": "^[1-9][0-9]{0,2}:[1-9][0-9]{0,2}$"},
        "resolution": {"type": "string", "enum": list(RESOLUTIONS), "default": RESOLUTIONS[0]} if strict
        else {"type": "string"},
        "n": {"type": "integer", "minimum": 1, "maximum": QWEN3_N_MAX if is_qwen3(model, faults) else N_MAX},
        "image_urls": {"type": "array", "maxItems": REFS_MAX, "items": {"type": "string", "format": "uri"}},
    }
    return {"type": "object", "required": ["model", "prompt"], "properties": properties,
            "additionalProperties": False}


def listed_models(faults: Faults) -> tuple[str, ...]:
    """The ids ``GET /v1/models`` lists, contract models first, without repeats."""
    extras = WILD_MODELS if faults.dialect == "wild" else ()
    return tuple(dict.fromkeys((*MODELS, *extras, *faults.extra_models)))


def is_free_model(model: str, faults: Faults) -> bool:
    """A listed model outside the contract: accepted with the universal checks only."""
    return model not in MODELS and model in listed_models(faults)


def free_pixels(size: str) -> tuple[int, int] | None:
    """The rendered size for a ratio ``W:H`` on a model outside the contract; None if not a ratio."""
    if size in FREE_SIZES:
        return FREE_SIZES[size]
    match = _RATIO.match(size)
    if not match:
        return None
    w, h = int(match.group(1)), int(match.group(2))
    if max(w, h) > _MAX_ASPECT * min(w, h):
        return None
    area = FREE_SIZES["1:1"][0] ** 2
    return round(math.sqrt(area * w / h) / 16) * 16, round(math.sqrt(area * h / w) / 16) * 16
