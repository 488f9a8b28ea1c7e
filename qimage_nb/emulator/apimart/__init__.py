"""The emulator of the seed's host, APIMart's task API (``shared/API.md`` sections 1-7): its
submit endpoint and idempotency modes, validation, wire dialects, model catalogue and uploads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["Emulator"]


def __getattr__(name: str) -> Any:
    if name == "Emulator":
        from ._emulator import Emulator

        return Emulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
