"""An emulator of Replicate's predictions API serving the Qwen Image models: ``ReplicateEmulator``.

The official ``replicate`` SDK, pointed at it, completes predictions (tests/test_replicate_sdk.py).
Names resolve on first use (PEP 562): importing the package starts nothing and loads no Pillow.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["ReplicateEmulator"]

if TYPE_CHECKING:
    from ._emulator import ReplicateEmulator


def __getattr__(name: str) -> Any:
    if name == "ReplicateEmulator":
        value = import_module("._emulator", __name__).ReplicateEmulator
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
