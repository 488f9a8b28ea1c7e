"""An emulator of fal's queue API serving the Qwen Image apps: ``FalEmulator``.

The official ``fal-client`` SDK, pointed at it, completes generations (tests/test_fal_sdk.py).
Names resolve on first use (PEP 562): importing the package starts nothing and loads no Pillow.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["FalEmulator"]

if TYPE_CHECKING:
    from ._emulator import FalEmulator


def __getattr__(name: str) -> Any:
    if name == "FalEmulator":
        value = import_module("._emulator", __name__).FalEmulator
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
