"""The normalised answers every provider reads a host's wire into: a task's status and why it
failed, an uploaded reference, a key's balance. Split from ``_contract`` (which re-exports them),
which keeps the requests; like it, this module does no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
# How a face names each phase (API.md 7.2: submitted/queued/pending are "queued").
PHASE_WORDS = {"pending": "queued", "processing": "running"}


@dataclass(frozen=True)
class TaskFailure:
    """Why a task failed, as the host said it: ``code`` kept as given (an int or a string)."""

    message: str
    code: int | str | None = None
    type: str | None = None
    param: str | None = None


@dataclass(frozen=True)
class TaskStatus:
    """One answer about a task, normalised across hosts and envelope variants.

    ``status`` is one of :data:`STATUSES`; ``raw_status`` is the host's own word for it.
    """

    task_id: str
    status: str
    progress: int = 0
    urls: tuple[str, ...] = ()
    created: float | None = None
    # When the host began running it (DashScope's scheduled_time), like created and completed in
    # epoch seconds of the host's clock: differences between them are exact, whatever the skew.
    started: float | None = None
    completed: float | None = None
    estimated_time: float | None = None
    actual_time: float | None = None
    cost: float | None = None
    expires_at: float | None = None
    error: TaskFailure | None = None
    raw_status: str | None = None
    credits_cost: float | None = None
    # What the host says it did with the request (DashScope: the rewritten prompt, the seed used).
    actual_prompt: str | None = None
    seed: int | None = None
    # The (width, height) the host says it made: a size the model chose itself is read here.
    output_size: tuple[int, int] | None = None
    # Requests ahead of this one in the host's queue, where the host says (fal's queue_position).
    queue_position: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def phase(self) -> str:
        """What a person is shown: queued, running, completed, failed or cancelled."""
        return PHASE_WORDS.get(self.status, self.status)


@dataclass(frozen=True)
class UploadedImage:
    """An uploaded reference: a public URL usable in ``image_urls``."""

    url: str
    filename: str | None = None
    content_type: str | None = None
    bytes: int | None = None
    created_at: float | None = None


@dataclass(frozen=True)
class Balance:
    """The key's balance. ``unlimited_quota`` True means no limit (``remain_balance`` is then None)."""

    remain_balance: float | None
    remain_credits: float | None = None
    used_balance: float | None = None
    used_credits: float | None = None
    unlimited_quota: bool = False


def number(value: Any) -> float | None:
    """A finite number from a JSON value (int, float or numeric string), else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None
