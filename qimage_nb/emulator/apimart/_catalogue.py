"""Which models a deployment lists and accepts, and the pixel sizes of the models outside the contract.

The contract's two models keep their strict rules and pixel table (API.md section 1). The others
(section 7.7: the same endpoints serve other image models, ``qwen-image-3.0`` among them) are
accepted with the universal checks only and render at sizes that are deliberately NOT in the 2.0
table, so a client that insists on that table is caught.
"""

from __future__ import annotations

import math
import re

from ..._contract import MODELS
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
