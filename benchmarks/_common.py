"""Shared helpers for the benchmark scripts: a result row, percentiles, a private QIMAGE_HOME."""

from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    """One figure of the table: what we measured, what the simple baseline measured, the target."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    ok: bool | None = None  # None: informational

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def private_home(prefix: str) -> Path:
    """A throwaway QIMAGE_HOME so a benchmark never touches the user's journal."""
    home = Path(tempfile.mkdtemp(prefix=f"qimage-bench-{prefix}-"))
    os.environ["QIMAGE_HOME"] = str(home)
    return home


# socketserver's default listen backlog is 5: a batch that opens more connections at once gets its
# SYNs dropped and retried a second later, which measures the stdlib, not the client (production
# servers listen with 128 to 4096). The benchmarks raise it on the emulator they start.
LISTEN_BACKLOG = 128


def widen_backlog() -> None:
    from qimage_nb.emulator._server import OriginServer

    OriginServer.request_queue_size = LISTEN_BACKLOG


_SERVER = r"""
import sys
import qimage_nb.emulator
from qimage_nb.emulator._server import OriginServer
OriginServer.request_queue_size = int(sys.argv[1])
kind = getattr(qimage_nb.emulator, sys.argv[2])
kwargs = eval(sys.argv[3])  # a dict literal written by the parent
emu = kind(**kwargs).start()
print(emu.base_url, getattr(emu, "origin", emu.base_url), emu.api_key, flush=True)
sys.stdin.read()  # run until the parent closes our stdin
emu.stop()
"""


class EmulatorProcess:
    """The bundled emulator in its own process (a provider's server does not share the client's
    CPU); stops when the ``with`` block ends. ``kind``: ``"Emulator"`` (the seed's API) or
    ``"DashScopeEmulator"``; ``origin`` is where its control endpoints live (``/_emulator/...``)."""

    def __init__(self, kind: str = "Emulator", **kwargs: object) -> None:
        import subprocess
        import sys

        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(LISTEN_BACKLOG), kind, repr(kwargs)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self._proc.stdout is not None
        self.base_url, self.origin, self.api_key = self._proc.stdout.readline().split()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except Exception:
            self._proc.kill()
            self._proc.wait()
