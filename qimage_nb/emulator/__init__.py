"""The bundled emulator of the Qwen Image 2.0 task API: ``Emulator`` and its ``Faults`` switches;
``DashScopeEmulator``, ``FalEmulator`` and ``ReplicateEmulator`` stand in for Alibaba Model Studio
(DashScope), fal's queue and Replicate the same way.

Names resolve on first use (PEP 562): importing the package starts nothing and loads no Pillow.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# provider name -> (package, class): the one list of hosts' emulators. A new host's emulator is one
# line here (its package under emulator/, named as its provider module in qimage_nb/providers/).
HOSTS = {
    "apimart": (".apimart", "Emulator"),
    "dashscope": (".dashscope", "DashScopeEmulator"),
    "fal": (".fal", "FalEmulator"),
    "replicate": (".replicate", "ReplicateEmulator"),
}
_EXPORTS = {cls: package for package, cls in HOSTS.values()} | {"Faults": "._faults"}

__all__ = ["DashScopeEmulator", "Emulator", "FalEmulator", "Faults", "ReplicateEmulator"]

if TYPE_CHECKING:
    from ._faults import Faults
    from ._host import HostEmulator
    from .apimart import Emulator
    from .dashscope import DashScopeEmulator
    from .fal import FalEmulator
    from .replicate import ReplicateEmulator


def emulator_class(provider: str) -> type[HostEmulator]:
    """The emulator class of a provider (``apimart``, ``dashscope``, ...); KeyError for another."""
    package, name = HOSTS[provider]
    return getattr(import_module(package, __name__), name)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
