"""When to ask about a task next.

A fixed poller either wastes requests (poll often) or notices late (poll rarely). This schedule uses
what the server says and keeps, per task, an interval ``[lo, hi]`` (seconds since submit) that must
contain the moment the task finishes:

- ``estimated_time`` (``E``) is overstated by providers, so on its own it only caps the finish.
- ``progress`` is a whole number (floored) that grows linearly while processing. One reading caps
  the finish (processing cannot have started before the submit); two readings give the rate, and
  with it the finish to within a few hundredths of a second.
- What the policy learned from this provider's finished tasks (:class:`Calibration`): how much it
  overstates ``E``, and when progress starts relative to the finish. With both, the first reading of
  a task already pins its finish down.

When the interval is narrow the next poll lands just after ``hi``, so that one poll sees the task
done. When it is wide the next poll is a probe inside it: sometimes it already sees the task done,
otherwise its progress reading pins the finish down for the poll after. Early polls are therefore
sparse, the ones near the finish are precise, and a task that runs past ``hi`` (the server's numbers
were wrong) is polled densely at first, then with a geometric back-off. Every gap between two polls
of a task stays within ``[floor, ceiling]``.

While a task waits between polls, :meth:`PollSchedule.revise` lets the waiting loop move the next
poll when another task of the same policy has just taught the calibration something: the first wave
of a batch learns from its own shortest tasks.

:func:`poll_updates` is that waiting loop, over any ``get_task`` coroutine function: the schedule,
the deadline, a server's ``Retry-After``, and which failed polls a wait survives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .._contract import TaskStatus
from .._exceptions import (
    GenerationTimeout,
    ProtocolError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TransportError,
    task_name,
)

__all__ = ["Calibration", "PollPolicy", "PollSchedule", "poll_updates"]

logger = logging.getLogger("qimage_nb")

_INF = math.inf


def _feasible_lines(
    boxes: Sequence[tuple[float, float, float]], lo: float, hi: float, steps: int = 24
) -> list[tuple[float, float, float]] | None:
    """Every line ``y = a x + b`` that passes through all samples ``(x, y_lo, y_hi)``.

    Returns a grid over the feasible slopes ``a`` in ``[lo, hi]`` as ``(a, b_min, b_max)``, or None
    when no line fits. For a slope ``a`` the intercept must lie in ``[max(y_lo - a x), min(y_hi - a x)]``;
    the gap ``g(a) = max(...) - min(...)`` is convex, so the feasible slopes form one interval, found
    by a golden-section search for the minimum of ``g`` and a bisection on each side of it.
    """

    def bounds(a: float) -> tuple[float, float]:
        return max(y0 - a * x for x, y0, _ in boxes), min(y1 - a * x for x, _, y1 in boxes)

    def gap(a: float) -> float:
        low, high = bounds(a)
        return low - high

    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(40):
        if gap(c) < gap(d):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    best = (a + b) / 2
    if gap(best) > 0:
        return None

    def edge(inside: float, outside: float) -> float:
        if gap(outside) <= 0:
            return outside
        for _ in range(30):
            middle = (inside + outside) / 2
            inside, outside = (middle, outside) if gap(middle) <= 0 else (inside, middle)
        return inside

    left, right = edge(best, lo), edge(best, hi)
    grid = [left + (right - left) * k / (steps - 1) for k in range(steps)] if right > left else [best]
    return [(slope, *bounds(slope)) for slope in grid]


# How far apart in time two tasks' starts may scatter around one model (the submit's own round
# trip, a server's scheduling) before a richer model is worth its extra freedom.
_NOISE_TOLERANCE = 0.03
# The layout of a saved timing file; another layout (an older or newer qimage_nb) is ignored.
_TIMING_FORMAT = 1
# Two models whose least scatter differs by less than this both stay: early samples, all from
# short tasks, rarely tell a fixed delay from a proportional one, and betting on the wrong one
# aims a long task's poll seconds off.
_TIE = _NOISE_TOLERANCE
# When the models that stay disagree, each one's finish must be known to within this (seconds)
# for a poll at the end of the earliest to be worth it.
_MODEL_SHARP = 1.0


def _proportional_noise(boxes: Sequence[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The least scatter ``eta`` with which ``start = share * finish`` (plus up to ``eta``) meets every
    sample; returns ``(eta, share_lo, share_hi)``."""

    def shares(eta: float) -> tuple[float, float]:
        return max((lo - eta) / f for f, lo, _ in boxes), min((hi + eta) / f for f, _, hi in boxes)

    low, high = 0.0, 1.0
    if shares(low)[0] <= shares(low)[1]:
        return (0.0, *shares(0.0))
    if shares(high)[0] > shares(high)[1]:
        return (_INF, 0.0, 0.0)  # no proportional pickup fits even with a second of scatter
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (low, middle) if shares(middle)[0] <= shares(middle)[1] else (middle, high)
    return (high, *shares(high))


def _simplest_start_models(
    boxes: Sequence[tuple[float, float, float]],
) -> list[list[tuple[float, float, float]]] | None:
    """The simplest model of when progress starts that fits every sample ``(finish, lo, hi)``.

    A first reading taken early amplifies any doubt about the start (by ``100 / progress - 1``),
    so a model with fewer free parameters predicts much more sharply, and the samples (from the
    shortest tasks first) rarely pin down a general line. Each model is allowed the least scatter
    ``eta`` that makes it meet every sample (the submit's round trip makes each task's clock start
    a little differently), and a prediction carries that scatter too, so one stray sample widens a
    model instead of throwing it out. In order: progress counts from the submit; a fixed queueing
    delay or a pickup proportional to the run (both kept when they fit about equally well); the
    general line ``start = share * finish + shift``. Returns the models that hold, each as its
    lines ``(share, shift_lo, shift_hi)``.
    """
    lows, highs = [lo for _, lo, _ in boxes], [hi for _, _, hi in boxes]
    zero = max(0.0, max(lows), -min(highs))
    if zero <= _NOISE_TOLERANCE:
        return [[(0.0, -zero, zero)]]
    shift = max(0.0, (max(lows) - min(highs)) / 2)
    share = _proportional_noise(boxes)
    best = min(shift, share[0])
    if best > _NOISE_TOLERANCE:
        lines = _feasible_lines(boxes, -0.5, 0.95)
        if lines is not None:
            return [lines]
    models: list[list[tuple[float, float, float]]] = []
    if shift <= best + _TIE:
        models.append([(0.0, max(lows) - 2 * shift, min(highs) + 2 * shift)])
    if share[0] <= best + _TIE:
        eta, share_lo, share_hi = share
        models.append([(share_lo, -eta, eta), (share_hi, -eta, eta)])
    return models


class Calibration:
    """What a policy has learned about a provider from finished tasks. Thread-safe.

    Two straight lines, each known only as the set of lines consistent with every sample (so a
    prediction is exactly as narrow as the samples allow, and samples from short tasks alone do not
    pretend to know about long ones):

    - ``estimated_time``: ``E = r * finish + c``, rounded up or down to whole seconds;
    - when progress leaves 0 (pickup, queueing): ``start = share * finish + shift``.

    A sample counts only if the task's finish was pinned down to within ``precision`` seconds. A
    provider whose numbers follow no line gets no help from here (no line is consistent), and the
    schedule falls back on each task's own readings. For the start, the simplest model that fits
    is used (see ``_simplest_start_models``).

    With a ``path``, what was learned outlives the process: it is read on first use (unless older
    than ``max_age`` seconds) and written back as samples arrive, so a restarted kernel polls its
    first batch as sparsely as its last. :meth:`shared` gives every client of one provider (and
    one data directory) in a process the same instance.
    """

    _registry: ClassVar[dict[tuple[str, str], Calibration]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        *,
        max_samples: int = 64,
        min_samples: int = 3,
        precision: float = 0.3,
        path: Path | None = None,
        max_age: float = 7 * 24 * 3600,
    ) -> None:
        self.precision = precision
        self.path = path
        self.max_age = max_age
        self._loaded = path is None
        self._min = min_samples
        self._finish: deque[tuple[float, float, float]] = deque(maxlen=max_samples)  # (E, finish, ±)
        self._start: deque[tuple[float, float, float]] = deque(maxlen=max_samples)  # (finish, lo, hi)
        self._lock = threading.Lock()
        self._estimate_lines: list[tuple[float, float, float]] | None = None
        self._start_models: list[list[tuple[float, float, float]]] | None = None
        self._step = 0  # gcd of the progress values seen
        self._readings = 0
        self.version = 0

    @classmethod
    def shared(cls, provider: str, path: Path | None = None) -> Calibration:
        """The one calibration of this process for ``provider`` (a base URL) kept at ``path``."""
        key = (provider, str(path))
        with cls._registry_lock:
            calibration = cls._registry.get(key)
            if calibration is None:
                calibration = cls._registry[key] = cls(path=path)
            return calibration

    def _ensure_loaded(self) -> None:
        """Read the saved samples once, before the first use (never at construction)."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            try:
                text = self.path.read_text(encoding="utf-8")  # type: ignore[union-attr]
            except FileNotFoundError:
                return
            except OSError as exc:
                logger.info("qimage_nb: cannot read the saved poll timing at %s (%s)", self.path, exc)
                return
            try:
                finish, start, step, readings = self._parse(text)
                self._finish.extend(finish)
                self._start.extend(start)
                self._step, self._readings = step, readings
                self._refit()
            except Exception as exc:  # a cache file: whatever is wrong with it, learn afresh
                logger.info("qimage_nb: ignoring the saved poll timing at %s (%s)", self.path, exc)
                self._finish.clear()
                self._start.clear()
                self._step = self._readings = 0
                self._estimate_lines = self._start_models = None
                return
            self.version += 1

    def _parse(self, text: str) -> tuple[list[tuple[float, float, float]], list[tuple[float, float, float]], int, int]:
        """The samples of a saved file, keeping only rows that could have been written by ``add``;
        nothing at all when the file is of another format or too old (or from the future)."""
        saved = json.loads(text)
        if not isinstance(saved, dict) or saved.get("format") != _TIMING_FORMAT:
            return [], [], 0, 0
        age = time.time() - float(saved["saved"])
        if not -60 <= age <= self.max_age:  # NaN fails this too
            return [], [], 0, 0

        def rows(key: str, valid: Callable[[tuple[float, float, float]], bool]) -> list[tuple[float, float, float]]:
            kept = []
            for row in saved[key][-self._finish.maxlen :]:  # type: ignore[misc]
                if isinstance(row, list) and len(row) == 3 and all(isinstance(v, (int, float)) for v in row):
                    values = (float(row[0]), float(row[1]), float(row[2]))
                    if all(math.isfinite(v) for v in values) and valid(values):
                        kept.append(values)
            return kept

        finish = rows("finish", lambda r: r[0] > 0 and r[1] > 0 and 0 <= r[2] <= self.precision)
        start = rows("start", lambda r: r[0] > 0 and r[1] <= r[2] < r[0])
        step, readings = saved["step"], saved["readings"]
        if not (isinstance(step, int) and isinstance(readings, int) and 0 <= step < 100 and readings >= 0):
            step = readings = 0
        return finish, start, step, readings

    def _save(self) -> None:
        """Write the samples back after each finished task (a few kilobytes, well under a millisecond)."""
        if self.path is None:
            return
        state = {"format": _TIMING_FORMAT, "saved": time.time(), "finish": list(self._finish),
                 "start": list(self._start), "step": self._step, "readings": self._readings}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            temporary.write_text(json.dumps(state), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError as exc:
            logger.info("qimage_nb: cannot save the poll timing to %s (%s)", self.path, exc)

    def __repr__(self) -> str:
        parts = [f"{len(self._finish)} samples"]
        starts = [line for model in self._start_models or [] for line in model]
        for name, lines in (("estimate/finish", self._estimate_lines), ("start/finish", starts)):
            if lines:
                parts.append(f"{name} in [{lines[0][0]:.3f}, {lines[-1][0]:.3f}]")
        return f"<Calibration {', '.join(parts)}>"

    def add(
        self, estimated: float, finish_lo: float, finish_hi: float, start: tuple[float, float] | None = None
    ) -> None:
        """Record a finished task: its ``estimated_time``, the interval its finish lies in, and the
        interval its progress started in (None when unknown)."""
        if not (estimated > 0 and 0 < finish_lo <= finish_hi < _INF) or finish_hi - finish_lo > self.precision:
            return  # a vague sample would only widen every later prediction
        finish, half = (finish_lo + finish_hi) / 2, (finish_hi - finish_lo) / 2
        self._ensure_loaded()
        with self._lock:
            self._finish.append((float(estimated), finish, half))
            if start is not None and start[0] <= start[1] < finish and start[1] - start[0] <= self.precision:
                self._start.append((finish, start[0] - half / 4, start[1] + half / 4))
            self._refit()
            self.version += 1
            self._save()

    def note_progress(self, progress: int) -> None:
        """Record a progress reading, to learn the provider's progress step (some report in 5s or 10s)."""
        if 0 < progress < 100:
            self._ensure_loaded()
            with self._lock:
                self._step = math.gcd(self._step, progress)
                self._readings += 1

    @property
    def quantum(self) -> int:
        """How far the true progress may lie above a reading: the provider's step once enough
        readings agree on one, else 1 (floored whole numbers)."""
        self._ensure_loaded()
        return self._step if self._readings >= 5 and self._step > 1 else 1

    def finish_from_estimate(self, estimated: float | None) -> tuple[float, float] | None:
        """Where a task with this ``estimated_time`` should finish, or None."""
        self._ensure_loaded()
        lines = self._estimate_lines
        if not lines or not estimated or estimated <= 0:
            return None
        # E - 1 < r f + c <= E for some c in [c_min, c_max] (whole seconds, any rounding).
        lows = [(estimated - 1 - c_max) / r for r, _, c_max in lines]
        highs = [(estimated - c_min) / r for r, c_min, _ in lines]
        return max(0.0, min(lows)), max(highs)

    def finish_from_progress(self, t: float, progress: int) -> tuple[float, float] | None:
        """Where a task that read ``progress`` at ``t`` (its only reading) should finish."""
        each = self.finishes_from_progress(t, progress)
        return (min(lo for lo, _ in each), max(hi for _, hi in each)) if each else None

    def finishes_from_progress(self, t: float, progress: int) -> list[tuple[float, float]]:
        """The same, once per model that still holds (empty when nothing was learned)."""
        self._ensure_loaded()
        models = self._start_models
        if not models or progress <= 0:
            return []
        each = []
        for lines in models:
            finishes = []
            for share, low, high in lines:
                for value in (progress, min(100, progress + self.quantum)):  # true progress in [p, p + q)
                    # 100 (t - s) = value (f - s) with s = share f + shift, solved for f.
                    denominator = value + (100 - value) * share
                    if denominator <= 0:
                        return []
                    finishes += [(100 * t - (100 - value) * shift) / denominator for shift in (low, high)]
            each.append((min(finishes), max(finishes)))
        return each

    def _refit(self) -> None:
        finish = list(self._finish)
        if len(finish) < self._min:
            return
        ratio = sorted(e / f for e, f, _ in finish)[len(finish) // 2]
        # Each sample: E - 1 < r f + c <= E, widened by what the finish's uncertainty moves.
        boxes = [(f, e - 1 - ratio * half, e + ratio * half) for e, f, half in finish]
        self._estimate_lines = _feasible_lines(boxes, 0.2, 10.0)
        starts = list(self._start)
        if len(starts) >= self._min:
            self._start_models = _simplest_start_models(starts)


@dataclass(frozen=True)
class PollPolicy:
    """Bounds and first guesses for the adaptive schedule.

    Parameters
    ----------
    floor:
        The shortest gap between two polls of one task.
    ceiling:
        The longest gap: a running task is never left unobserved for longer.
    first:
        The first poll after the submit answer, before the server has said anything about timing.
    margin:
        How far past a certain finish to aim, to absorb clock and rounding error.
    tight:
        When the finish is known to within this many seconds, aim past the end of the interval
        (one poll sees the task done); otherwise probe inside it.
    probe:
        Where inside a wide interval ``[lo, hi]`` to probe, ``lo + probe * (hi - lo)``, when ``lo`` is
        only the last time the task was seen running (the finish is then usually nearer ``lo``).
    probe_informed:
        The same when ``lo`` itself comes from the readings or the calibration.
    trust:
        A learned interval for the finish is used only when narrower than this share of it.
    recheck:
        While waiting on a wide interval, how often to look whether the calibration changed.
    learn:
        Learn from finished tasks how this provider's numbers relate to the real finish.
    """

    floor: float = 0.2
    ceiling: float = 10.0
    first: float = 1.5
    margin: float = 0.03
    tight: float = 0.35
    probe: float = 0.35
    probe_informed: float = 0.6
    trust: float = 0.2
    recheck: float = 0.5
    learn: bool = True
    calibration: Calibration = field(default_factory=Calibration, compare=False, repr=False)

    @classmethod
    def for_latency(cls, seconds: float) -> PollPolicy:
        """A policy for a server whose tasks take about ``seconds`` (the bundled emulator, a local
        test server).

        The defaults suit the real API, whose tasks take many seconds: against tasks of a tenth of
        a second their first poll at 1.5 s would be most of the wait. Each time bound shrinks in
        proportion to the latency, never above its default (a slow server gets the defaults) and
        never below a few hundredths of a second (a server with no latency is not hammered).
        ``%qimage emulator --latency S`` uses it; so does every test that drives an emulator.
        """
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"latency must be a number of seconds >= 0, got {seconds!r}")
        base = cls()

        def scaled(default: float, share: float, least: float) -> float:
            return min(default, max(least, share * seconds))

        return cls(
            floor=scaled(base.floor, 0.1, 0.01),
            ceiling=scaled(base.ceiling, 2.0, 0.2),
            first=scaled(base.first, 0.5, 0.02),
            margin=scaled(base.margin, 0.1, 0.005),
            tight=scaled(base.tight, 0.25, 0.02),
            recheck=scaled(base.recheck, 0.25, 0.02),
        )

    def schedule(self, *, fresh: bool = True, slack: float = 0.0) -> PollSchedule:
        """A schedule for one task. ``fresh``: the task was just submitted, so the elapsed times fed
        to it count from (about) its creation on the server; False for a task of unknown age (a
        resume), which then neither uses nor teaches the calibration. ``slack``: how long before
        that origin the server may have created the task (half the submit's round trip, when the
        origin is its middle)."""
        slack = max(0.0, slack)
        # A submit whose exchange took long (retries, a lost answer) leaves the task's creation
        # vague: its schedule may use what was learned but must not teach it.
        return PollSchedule(self, fresh=fresh, _pending_until=-slack, _teaches=slack <= self.calibration.precision)


@dataclass
class PollSchedule:
    """The per-task state of the adaptive schedule: feed it each status, ask for the next delay."""

    policy: PollPolicy
    fresh: bool = True
    _points: list[tuple[float, int]] = field(default_factory=list)  # (elapsed, progress), processing
    # The last time the task was seen pending (progress began later); before any such sighting,
    # the earliest the server may have created it.
    _pending_until: float = 0.0
    _estimated: float | None = None
    _last_poll: float | None = None
    _overdue_polls: int = 0
    _planned_with: int = -1  # the calibration version the current plan used
    _interval: tuple[float, float] = (0.0, _INF)
    _earliest_model_end: float | None = None  # when learned models disagree: where the earliest ends
    _teaches: bool = True  # False when the task's origin is too vague, or its progress went back
    _first_given: bool = False

    # -- the client's calls --

    def next_delay(self, status: TaskStatus | None, elapsed: float) -> float:
        """Seconds to sleep before the next poll, given the latest status and the time since submit."""
        if status is None:
            if self._first_given:  # the first poll failed: never hammer, whatever the clock says
                return self._clamp(self.policy.first)
            self._first_given = True  # ``first`` after the origin, however late the wait began
            return max(0.0, min(self.policy.ceiling, self.policy.first - elapsed))
        self._observe(status, elapsed)
        if status.terminal:
            return 0.0
        return self._plan(elapsed) - elapsed

    def finish(self, status: TaskStatus, elapsed: float) -> None:
        """The terminal status: a completed task whose finish is pinned down teaches the calibration."""
        self._observe(status, elapsed)

    def revise(self, elapsed: float) -> float | None:
        """While waiting: a new delay if the calibration changed since the plan was made, else None."""
        if not self.revisable or self._planned_with == self.policy.calibration.version:
            return None
        return max(0.0, self._plan(elapsed, replan=True) - elapsed)

    @property
    def revisable(self) -> bool:
        """Whether a wait is worth re-checking: only a probe in a wide interval can improve."""
        lo, hi = self._interval
        return (
            self._learns and self._last_poll is not None and not self._overdue_polls
            and hi - lo > self.policy.tight
        )

    @property
    def _learns(self) -> bool:
        return self.policy.learn and self.fresh

    # -- internals --

    def _observe(self, status: TaskStatus, elapsed: float) -> None:
        previous = self._last_poll
        self._last_poll = elapsed
        if status.estimated_time and status.estimated_time > 0:
            self._estimated = float(status.estimated_time)
        if status.status == "pending":
            self._pending_until = elapsed
        elif status.status == "processing":
            if self._points and status.progress < self._points[-1][1]:
                # Progress went back (a provider restarting the task, or noise): the earlier
                # readings no longer describe this run, and the task teaches nothing.
                self._points.clear()
                self._teaches = False
            if not self._points or self._points[-1][1] != status.progress:
                self._points.append((elapsed, status.progress))
                if self.policy.learn:
                    self.policy.calibration.note_progress(status.progress)
        elif (
            status.status == "completed" and self._learns and self._teaches and self._estimated
            and previous is not None
        ):
            # The finish lies after the previous poll (which saw the task running) and by this one.
            lo, hi = self._bounds(previous, learned=False)
            lo, hi = max(lo, previous), min(hi, elapsed)
            if lo <= hi:
                self.policy.calibration.add(self._estimated, lo, hi, self._start(lo, hi))

    def _start(self, finish_lo: float, finish_hi: float) -> tuple[float, float] | None:
        """The interval in which progress left 0, from the readings and the finish.

        With the finish ``f`` known, one reading ``(t, p)`` already bounds the start ``s``: the
        floored progress says ``p <= 100 (t - s) / (f - s) < p + q``. Solving each side for ``s``
        (it falls as ``p`` or ``f`` grows) and intersecting over the readings is far sharper than a
        rate from two readings.
        """
        lo, hi, q = self._pending_until, _INF, self.policy.calibration.quantum
        for t, p in self._points:
            if p >= 100:
                continue  # "processing" at 100 says nothing about when progress began
            hi = min(hi, (100 * t - p * finish_lo) / (100 - p))
            if p + q < 100:
                lo = max(lo, (100 * t - (p + q) * finish_hi) / (100 - p - q))
        return (lo, hi) if lo <= hi < _INF else None

    def _bounds(self, seen: float, *, learned: bool = True) -> tuple[float, float]:
        """The interval the finish must lie in, from everything seen (and learned); ``seen`` is the
        last time the task was seen running."""
        lo, hi = seen, _INF
        if self._estimated:
            # Overstated, so an upper bound on its own once its rounding to whole seconds is undone.
            hi = self._estimated + 1
        pts = self._points
        if pts:
            t1, p1 = pts[-1]
            start = self._pending_until
            if p1 > 0 and self.fresh:
                # Progress began at or after `start`, and at t1 it was at least p1 (floored), so
                # the finish is at most start + 100 (t1 - start) / p1.
                hi = min(hi, start + 100.0 * (t1 - start) / p1)
            if len(pts) >= 2:
                t0, p0 = pts[0]
                dt, dp, q = t1 - t0, p1 - p0, self.policy.calibration.quantum
                if dt > 0:
                    # Both readings are floored to a step q: the rate lies in ((dp-q)/dt, (dp+q)/dt)
                    # and the progress still to come in (100 - q - p1, 100 - p1].
                    if dp > q:
                        hi = min(hi, t1 + (100 - p1) * dt / (dp - q))
                    if dp + q > 0:
                        lo = max(lo, t1 + max(0, 100 - q - p1) * dt / (dp + q))
        if learned:
            self._earliest_model_end = None
        if learned and self._learns and len(pts) < 2:
            calibration = self.policy.calibration
            hints = [calibration.finish_from_estimate(self._estimated)]
            if pts:
                hints.append(calibration.finish_from_progress(*pts[-1]))
                each = calibration.finishes_from_progress(*pts[-1])
                if len(each) > 1 and all(end - start <= _MODEL_SHARP for start, end in each):
                    # Two models that each pin the finish but disagree: polling where the earlier
                    # one ends either sees the task done or reads progress late enough to pin it.
                    self._earliest_model_end = min(h for _, h in each)
            for hint in hints:
                # Trust what was learned only once it is sharp (a fit on the shortest tasks alone
                # bounds the others from one side only), and only where it agrees with this task.
                if hint is None or hint[1] - hint[0] > max(1.0, self.policy.trust * hint[1]):
                    continue
                if hint[1] > lo and hint[0] < hi:
                    lo, hi = max(lo, hint[0]), min(hi, hint[1])
        return lo, hi

    def _plan(self, elapsed: float, *, replan: bool = False) -> float:
        """The elapsed time of the next poll."""
        p = self.policy
        self._planned_with = p.calibration.version
        last = self._last_poll if self._last_poll is not None else elapsed
        lo, hi = self._bounds(last)
        self._interval = (lo, hi)
        if hi == _INF:
            # Nothing bounds the finish (no estimate, no progress): widen geometrically.
            target = elapsed + max(p.first, elapsed / 2)
        elif elapsed >= hi + p.margin and not replan:
            # Past the end of the interval: dense first (it was a little early), then back off.
            self._overdue_polls += 1
            target = elapsed + p.floor * (1.6 ** min(self._overdue_polls - 1, 30))  # ceiling caps it
        elif hi - lo <= p.tight:
            self._overdue_polls = 0
            target = hi + p.margin
        else:
            self._overdue_polls = 0
            target = lo + (p.probe_informed if lo > last else p.probe) * (hi - lo)
            end = self._earliest_model_end
            if end is not None and lo < end < hi:
                target = end + p.margin
        return min(max(target, last + p.floor), last + p.ceiling)

    def _clamp(self, delay: float) -> float:
        return max(self.policy.floor, min(self.policy.ceiling, delay))


# --- the waiting loop ------------------------------------------------------------------------

# How many consecutive contract breaches (unknown status, odd envelope) a wait tolerates before it
# gives up loudly: one garbled answer from a proxy should not cost the user a paid task.
MAX_PROTOCOL_ERRORS = 3


def _scheduled(call: Callable[..., Any], *args: Any, fallback: Any = None) -> Any:
    """A call into the poll schedule. Its arithmetic only decides *when* to poll: a bug there
    (or a provider's numbers it never anticipated) must not end the wait on a task already paid
    for, so it falls back to polling every ``fallback`` seconds."""
    try:
        return call(*args)
    except Exception:
        logger.warning("qimage_nb: the poll schedule failed; polling at a fixed pace", exc_info=True)
        return fallback


async def poll_updates(
    get_task: Callable[[], Awaitable[TaskStatus]],
    task_id: str,
    *,
    policy: PollPolicy,
    started: float,
    timeout: float,
    origin: float,
    slack: float = 0.0,
    immediate: bool = False,
) -> AsyncIterator[TaskStatus]:
    """Poll ``get_task`` on ``policy``'s adaptive schedule; yield each status change until a
    terminal status.

    ``started`` and ``timeout``: the wait ends with ``GenerationTimeout`` at ``started + timeout``
    (monotonic seconds), after at least one poll, so a timeout never reports an unseen task.
    ``origin``: when the server created the task (the schedule's clock counts from it), give or
    take ``slack``. ``immediate``: a task of unknown age (a resume, a second wait), polled at once;
    its schedule neither learns nor uses what was learned.

    Transient failures (network, 5xx, 429, a garbled answer) do not end the wait: the task is
    already billed, so only the deadline or a definite answer does. A server's ``Retry-After``
    outranks the schedule; a failed poll is retried after ``policy.floor``.
    """
    deadline = started + timeout
    schedule = policy.schedule(fresh=not immediate, slack=slack)
    status: TaskStatus | None = None
    last_seen: tuple[str, int] | None = None
    protocol_errors = 0
    hold = 0.0  # a server's Retry-After outranks our schedule
    polled = False
    first = True
    failed = False  # the last poll got no answer: nothing new to feed the schedule

    def timed_out() -> GenerationTimeout:
        return GenerationTimeout(
            f"{task_name(task_id)} still {status.phase if status else 'unconfirmed'} after {timeout:.0f} s; "
            f"fetch it later with resume({task_id!r})",
            task_id=task_id,
            last_status=status.status if status else None,
        )

    while True:
        if failed:
            delay = policy.floor
        elif first and immediate:
            delay = 0.0
        else:
            delay = _scheduled(schedule.next_delay, status, time.monotonic() - origin, fallback=1.0)
        delay, hold, first = max(delay, hold), 0.0, False
        wake = time.monotonic() + delay
        if not polled and wake > deadline:
            wake = deadline  # ask once before giving up
        while (now := time.monotonic()) < wake:
            if wake > deadline:
                await asyncio.sleep(max(0.0, deadline - now))
                raise timed_out()
            # A probe may move when another task of this policy teaches it something meanwhile.
            revisable = not failed and schedule.revisable
            await asyncio.sleep(min(wake - now, policy.recheck) if revisable else wake - now)
            revised = _scheduled(schedule.revise, time.monotonic() - origin) if revisable else None
            if revised is not None:
                wake = time.monotonic() + revised
        if polled and time.monotonic() >= deadline:
            raise timed_out()
        polled = True
        failed = True
        try:
            fresh = await get_task()
        except ProtocolError as exc:
            protocol_errors += 1
            if protocol_errors >= MAX_PROTOCOL_ERRORS:
                raise
            logger.warning("qimage_nb: %s; polling on", exc)
            continue
        except (TransportError, ServerError, RateLimitError, RequestTimeoutError) as exc:
            hold = getattr(exc, "retry_after", None) or 0.0
            logger.warning("qimage_nb: %s; polling on until the deadline", exc)
            continue
        failed = False
        protocol_errors = 0
        status = fresh
        if status.terminal:  # before the yield: a caller may stop iterating at the last status
            _scheduled(schedule.finish, status, time.monotonic() - origin)
        if (status.status, status.progress) != last_seen:
            last_seen = (status.status, status.progress)
            yield status
        if status.terminal:
            return
