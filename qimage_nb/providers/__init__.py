"""The hosts qimage_nb speaks to, one module each, registered in one table.

Adding a host: write ``providers/NAME.py`` with a :class:`~._base.Provider` subclass (its wire, its
limits, its capabilities), add it to ``_MODULES`` below, give it an emulator under ``emulator/``
and a test file. Nothing else changes: the client, the journal and the faces are host-neutral.
"""

from __future__ import annotations

import logging
import os
import time
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

from .._exceptions import ValidationError
from ._base import Call, Capabilities, ErrorInfo, Provider, Submitted

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping
    from typing import Any

    from .._contract import GenerationRequest

__all__ = [
    "Call",
    "Capabilities",
    "ErrorInfo",
    "Provider",
    "Submitted",
    "all_providers",
    "check",
    "choose_provider",
    "get_provider",
]

# name -> module; the first is the default when nothing says otherwise.
_MODULES = {"apimart": "apimart", "dashscope": "dashscope", "fal": "fal", "replicate": "replicate"}
logger = logging.getLogger("qimage_nb")
_last_note: dict[str, float] = {}
ALIASES = {"alibaba": "dashscope", "modelstudio": "dashscope", "model-studio": "dashscope", "seed": "apimart"}


@cache
def get_provider(name: str) -> Provider:
    """The provider called ``name`` (``apimart``, ``dashscope``, ``fal``, ``replicate``); a
    ValidationError names the choices."""
    if isinstance(name, Provider):
        return name
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in _MODULES:
        raise ValidationError(
            "provider", f"unknown provider {name!r}; choose one of {', '.join(_MODULES)}"
        )
    module = import_module(f".{_MODULES[key]}", __name__)
    return module.PROVIDER


def all_providers() -> list[Provider]:
    return [get_provider(name) for name in _MODULES]


def choose_provider(explicit: str | Provider | None = None) -> Provider:
    """The provider to use: ``explicit``, else ``$QIMAGE_PROVIDER``, else the one provider whose
    key is set in the environment (fal's may be FAL_KEY_ID + FAL_KEY_SECRET), else the first (the
    seed's API): with several keys set, the seed's API too, unless ``$QIMAGE_PROVIDER`` says."""
    if isinstance(explicit, Provider):
        return explicit
    if explicit:
        return get_provider(explicit)
    configured = os.environ.get("QIMAGE_PROVIDER", "").strip()
    if configured:
        return get_provider(configured)
    with_keys = [p for p in all_providers() if p.key_from_env(os.environ)]
    if len(with_keys) == 1:
        return with_keys[0]
    return get_provider(next(iter(_MODULES)))


def check(
    provider: Provider, request: GenerationRequest, listed: Collection[str] = (),
    schema: Mapping[str, Any] | None = None,
) -> None:
    """Check a request against a provider: an option it does not take is one line naming the hosts
    that do; then the provider's own rules (models, sizes, counts). A request sent anyway with a
    note (a model not in the host's table) logs that note, one line, as a warning."""
    for option in ("seed", "prompt_extend", "watermark"):
        if getattr(request, option) is not None and option not in provider.capabilities.options:
            others = [p.name for p in all_providers() if option in p.capabilities.options]
            raise ValidationError(
                option,
                f"{provider.title} does not support {option}: remove it, or choose a provider that "
                f"does ({', '.join(others) or 'none does'})",
            )
    provider.check(request, listed, schema)
    for note in provider.notes(request):
        # One line per request sent: the faces check a cell's requests, then the client checks
        # each again as it sends it; the same note within seconds is that same request.
        now = time.monotonic()
        if _last_note.get(note, -60.0) < now - 10.0:
            logger.warning("qimage_nb: %s", note)
        _last_note[note] = now
