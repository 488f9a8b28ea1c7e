"""The public surface is pinned: a name added or dropped here is a deliberate API change."""

from __future__ import annotations

import subprocess
import sys

import qimage_nb

PUBLIC = [
    "APIError", "AsyncClient", "AuthenticationError", "BadRequestError", "Balance", "Client",
    "Generation", "GenerationRequest", "GenerationTimeout", "ImageError", "InsufficientBalanceError",
    "JobRecord", "NotFoundError", "Panel", "PayloadTooLargeError", "PermissionDeniedError",
    "PollPolicy", "ProtocolError", "QImageError", "QImageWarning", "RateLimitError",
    "RequestTimeoutError", "RetryPolicy", "ServerError", "Store", "SubmitOutcomeUnknown", "TaskCancelledError", "TaskError",
    "TaskFailedError", "TaskStatus", "TransportError", "Update", "ValidationError", "current_client", "export", "grid",
    "load_ipython_extension",
]  # fmt: skip


def test_all_is_pinned_and_sorted():
    assert qimage_nb.__all__ == sorted(PUBLIC)


def test_every_public_name_resolves():
    for name in qimage_nb.__all__:
        assert getattr(qimage_nb, name) is not None, name
    assert issubclass(qimage_nb.ValidationError, ValueError)


def test_import_is_light_and_does_nothing():
    code = (
        "import sys, qimage_nb; "
        "heavy = [m for m in ('PIL', 'httpx', 'ipywidgets', 'sqlite3', 'qimage_nb.core._client') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]" and out.stderr == ""
