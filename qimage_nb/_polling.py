"""When to ask about a task next.

A fixed poller either wastes requests (poll often) or notices late (poll rarely). This schedule uses
what the server tells us: ``progress`` (fitted against our own clock to predict the finish),
``estimated_time`` (known to be overstated, so only an upper bound) and elapsed time. It polls
sparsely early, lands one poll just after the predicted finish, polls densely if that was a little
early, and backs off when the task is overdue. Every delay stays within ``[floor, ceiling]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._contract import TaskStatus


@dataclass(frozen=True)
class PollPolicy:
    """Bounds and first guesses for the adaptive schedule.

    Parameters
    ----------
    floor:
        The shortest gap between two polls of one task.
    ceiling:
        The longest gap (the provider suggests polling every 2 to 5 seconds).
    first:
        The first poll after the submit answer, before the server has said anything about timing.
    margin:
        How far past the predicted finish to aim, to absorb clock and rounding error.
    """

    floor: float = 0.2
    ceiling: float = 5.0
    first: float = 1.5
    margin: float = 0.05

    def schedule(self) -> PollSchedule:
        return PollSchedule(self)


@dataclass
class PollSchedule:
    """The per-task state of the adaptive schedule: feed it each status, ask for the next delay."""

    policy: PollPolicy
    _points: list[tuple[float, int]] = field(default_factory=list)
    _overdue_polls: int = 0

    def next_delay(self, status: TaskStatus | None, elapsed: float) -> float:
        """Seconds to sleep before the next poll, given the latest status and the time since submit."""
        p = self.policy
        if status is None:
            return self._clamp(p.first)
        predicted = self._predict_finish(status, elapsed)
        if predicted is None:
            # No usable progress yet (queued, or a provider that does not report it): use the
            # overstated estimate as an upper bound and close in on it geometrically.
            if status.estimated_time:
                remaining = status.estimated_time - elapsed
                return self._clamp(remaining / 2 if remaining > 0 else self._overdue())
            return self._clamp(max(p.first, elapsed / 2))
        remaining = predicted - elapsed
        if remaining > 0:
            self._overdue_polls = 0
            return self._clamp(remaining + p.margin)
        return self._clamp(self._overdue())

    def _predict_finish(self, status: TaskStatus, elapsed: float) -> float | None:
        """Elapsed time at which progress reaches 100, from the points seen so far."""
        if status.status != "processing" or status.progress <= 0:
            return None
        if not self._points or self._points[-1][1] != status.progress:
            self._points.append((elapsed, status.progress))
        pts = self._points
        if len(pts) >= 2:
            (t0, p0), (t1, p1) = pts[-2], pts[-1]
            if p1 > p0 and t1 > t0:
                # Progress is reported as a whole number (floored), so p1 + 1 bounds the true value
                # from above at t1: the faster rate would finish earlier; aim between the two.
                rate = (p1 - p0) / (t1 - t0)
                return t1 + (100 - p1) / rate
        t1, p1 = pts[-1]
        # One point: assume processing started at the submit. Floored progress means the true
        # progress was in [p1, p1 + 1): the finish lies in (100 t1/(p1+1), 100 t1/p1]; aim at the
        # far end so that one poll sees the task done.
        return 100.0 * t1 / p1

    def _overdue(self) -> float:
        # Dense first (the prediction was a little early), then back off geometrically.
        self._overdue_polls += 1
        return self.policy.floor * (1.6 ** (self._overdue_polls - 1))

    def _clamp(self, delay: float) -> float:
        return max(self.policy.floor, min(self.policy.ceiling, delay))
