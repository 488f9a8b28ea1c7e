"""How a batch's progress is shown, and what the process has spent: hooks the faces read or fill.

The core imports no face. A face that can show a batch (the notebook: one display updated in
place) registers a factory here, and ``generate_many(progress=None)`` uses it when one is
registered (in a Jupyter kernel, ``qimage_nb.Client`` and ``%load_ext qimage_nb`` register the
notebook's). The ledger counts every billed generation this process made, whichever face made it,
so the session's cost covers Python's images too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .._contract import GenerationRequest
    from ._results import Generation, Update

__all__ = ["BatchObserver", "batch_display", "bill", "billed_count", "register_batch_display", "spent"]


class BatchObserver(Protocol):
    """One batch's display: told each update and each retry, then the results."""

    def on_update(self, update: Update, index: int | None = None) -> None: ...

    def retrying(self, what: str, failure: BaseException, retry: int, retries: int, delay: float) -> None: ...

    def finish(self, generations: Sequence[Generation | None]) -> None: ...


BatchDisplay = Callable[[Sequence["GenerationRequest"], Sequence["str | None"] | None], BatchObserver]

_display: list[BatchDisplay] = []


def register_batch_display(factory: BatchDisplay) -> None:
    """Show batches with ``factory(requests, labels)`` from now on (the last registered wins)."""
    _display[:] = [factory]


def batch_display() -> BatchDisplay | None:
    return _display[0] if _display else None


# --- what this process has spent -------------------------------------------------------------

_lock = threading.Lock()
_billed: dict[str, float] = {}  # task id -> the host's price (a task resumed twice counts once)


def bill(generation: Any) -> None:
    """Count a finished generation's price (not one served from the journal, not one unpriced)."""
    if generation.cached or generation.cost is None or not generation.task_id or generation.error is not None:
        return
    with _lock:
        _billed[generation.task_id] = float(generation.cost)


def spent(since: int = 0) -> tuple[float, int]:
    """(the sum of the prices the hosts gave, how many generations it covers) in this process,
    leaving out the first ``since`` generations billed (``billed_count()`` taken earlier)."""
    with _lock:
        prices = list(_billed.values())[since:]
    return sum(prices), len(prices)


def billed_count() -> int:
    with _lock:
        return len(_billed)
