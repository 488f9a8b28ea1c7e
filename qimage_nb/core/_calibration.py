"""What a poll policy learns from a provider's finished tasks (:class:`Calibration`).

The seed's API says how long a task will take (``estimated_time``, overstated) and how far it got
(``progress``). Neither says when it will finish on its own; the finished tasks do. This module
keeps, per provider, the set of straight lines consistent with every finished task: how much the
estimate overstates the finish, and when progress starts relative to it. The schedule
(``_schedule.py``) asks it where a task with this estimate, or this one reading, should end.

For a host that says neither (only queued / running / done), what is learned is the durations
themselves, per model: :class:`~qimage_nb.core._durations.Durations`, kept here beside the lines
so one file per provider holds everything learned about it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ._durations import Durations

__all__ = ["Calibration"]

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

    For a host whose tasks give neither (only queued / running / done), :attr:`durations` keeps
    how long its tasks of each model took (see ``_durations.py``).

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
        self._durations = Durations()
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
                finish, start, step, readings, durations = self._parse(text)
                self._finish.extend(finish)
                self._start.extend(start)
                self._step, self._readings = step, readings
                self._durations.load(durations)
                self._refit()
            except Exception as exc:  # a cache file: whatever is wrong with it, learn afresh
                logger.info("qimage_nb: ignoring the saved poll timing at %s (%s)", self.path, exc)
                self._finish.clear()
                self._start.clear()
                self._step = self._readings = 0
                self._estimate_lines = self._start_models = None
                self._durations = Durations()
                return
            self.version += 1

    def _parse(
        self, text: str
    ) -> tuple[list[tuple[float, float, float]], list[tuple[float, float, float]], int, int, Any]:
        """The samples of a saved file, keeping only rows that could have been written by ``add``
        (the durations are checked by ``Durations.load``); nothing at all when the file is of
        another format or too old (or from the future)."""
        saved = json.loads(text)
        if not isinstance(saved, dict) or saved.get("format") != _TIMING_FORMAT:
            return [], [], 0, 0, None
        age = time.time() - float(saved["saved"])
        if not -60 <= age <= self.max_age:  # NaN fails this too
            return [], [], 0, 0, None

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
        # An older file has no durations: what it has still holds.
        return finish, start, step, readings, saved.get("durations")

    def _save(self) -> None:
        """Write the samples back after each finished task (a few kilobytes, well under a millisecond)."""
        if self.path is None:
            return
        state = {"format": _TIMING_FORMAT, "saved": time.time(), "finish": list(self._finish),
                 "start": list(self._start), "step": self._step, "readings": self._readings,
                 "durations": self._durations.to_json()}
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

    @property
    def durations(self) -> Durations:
        """How long this provider's tasks of each model took, for tasks that give no hints."""
        self._ensure_loaded()
        return self._durations

    def add_duration(
        self,
        model: str,
        total: tuple[float, float],
        run: tuple[float, float] | None = None,
        queue: tuple[float, float] | None = None,
    ) -> None:
        """Record how long a task that gave no hints took (see :meth:`Durations.add`)."""
        if self.durations.add(model, total, run, queue):
            with self._lock:
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
