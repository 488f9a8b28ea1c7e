"""qimage_nb: Qwen Image 2.0 from Jupyter.

Nothing happens at import time: each public name below is imported on first use (PEP 562), so
``import qimage_nb`` and ``%load_ext qimage_nb`` stay light.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

# public name -> private module that defines it
_EXPORTS = {
    "APIError": "_exceptions",
    "AsyncClient": "core._client",
    "AuthenticationError": "_exceptions",
    "BadRequestError": "_exceptions",
    "Balance": "_contract",
    "Client": "core._sync",
    "Generation": "core._results",
    "GenerationRequest": "_contract",
    "GenerationTimeout": "_exceptions",
    "ImageError": "_exceptions",
    "InsufficientBalanceError": "_exceptions",
    "JobRecord": "journal._store",
    "NotFoundError": "_exceptions",
    "Panel": "notebook._panel",
    "PayloadTooLargeError": "_exceptions",
    "PermissionDeniedError": "_exceptions",
    "PollPolicy": "core._polling",
    "ProtocolError": "_exceptions",
    "QImageError": "_exceptions",
    "QImageWarning": "_exceptions",
    "RateLimitError": "_exceptions",
    "RequestTimeoutError": "_exceptions",
    "RetryPolicy": "core._retry",
    "ServerError": "_exceptions",
    "Store": "journal._store",
    "SubmitOutcomeUnknown": "_exceptions",
    "TaskCancelledError": "_exceptions",
    "TaskError": "_exceptions",
    "TaskFailedError": "_exceptions",
    "TaskStatus": "_contract",
    "TransportError": "_exceptions",
    "Update": "core._results",
    "ValidationError": "_exceptions",
    "current_client": "notebook._session",
    "export": "journal._export",
    "grid": "view._grid",
}

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Balance",
    "Client",
    "Generation",
    "GenerationRequest",
    "GenerationTimeout",
    "ImageError",
    "InsufficientBalanceError",
    "JobRecord",
    "NotFoundError",
    "Panel",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PollPolicy",
    "ProtocolError",
    "QImageError",
    "QImageWarning",
    "RateLimitError",
    "RequestTimeoutError",
    "RetryPolicy",
    "ServerError",
    "Store",
    "SubmitOutcomeUnknown",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskStatus",
    "TransportError",
    "Update",
    "ValidationError",
    "current_client",
    "export",
    "grid",
    "load_ipython_extension",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ._contract import Balance, GenerationRequest, TaskStatus
    from ._exceptions import (
        APIError,
        AuthenticationError,
        BadRequestError,
        GenerationTimeout,
        ImageError,
        InsufficientBalanceError,
        NotFoundError,
        PayloadTooLargeError,
        PermissionDeniedError,
        ProtocolError,
        QImageError,
        QImageWarning,
        RateLimitError,
        RequestTimeoutError,
        ServerError,
        SubmitOutcomeUnknown,
        TaskCancelledError,
        TaskError,
        TaskFailedError,
        TransportError,
        ValidationError,
    )
    from .core._client import AsyncClient
    from .core._polling import PollPolicy
    from .core._results import Generation, Update
    from .core._retry import RetryPolicy
    from .core._sync import Client
    from .journal._export import export
    from .journal._store import JobRecord, Store
    from .notebook._panel import Panel
    from .notebook._session import current_client
    from .view._grid import grid


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qimage_nb' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    if name in ("AsyncClient", "Client") and "ipykernel" in sys.modules:
        # In a Jupyter kernel, generate_many shows one progress display per batch by default.
        from .notebook._batch import register_in_kernel

        register_in_kernel()
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext qimage_nb``: register ``%%qimage`` and ``%qimage``. No network, no output."""
    from .notebook._batch import register_in_kernel
    from .notebook._magics import QImageMagics

    ipython.register_magics(QImageMagics)
    register_in_kernel()


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext qimage_nb``: nothing to undo beyond IPython's own bookkeeping."""
