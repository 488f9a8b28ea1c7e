"""An emulator of Alibaba Model Studio (DashScope) serving Qwen Image: ``DashScopeEmulator``.

The official ``dashscope`` SDK, pointed at it, completes generations (tests/test_dashscope_sdk.py).
Names resolve on first use (PEP 562): importing the package starts nothing and loads no Pillow.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["DashScopeEmulator"]

if TYPE_CHECKING:
    from ._emulator import DashScopeEmulator


def __getattr__(name: str) -> Any:
    if name == "DashScopeEmulator":
        value = import_module("._emulator", __name__).DashScopeEmulator
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
