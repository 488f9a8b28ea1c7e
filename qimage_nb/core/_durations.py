"""Learned durations, for a host whose tasks say nothing of when they will end.

Some hosts answer a poll with only queued / running / done: no estimate, no progress (an
asynchronous model, or any task past a host's synchronous window). Their own SDKs poll on a fixed
back-off (a provider gives its host's as ``sdk_sleeps``, e.g. sleeps of 1, 1, 2, 2, 2, 4, 4, 4,
then 5 s for ever), which is blind to where tasks really end. What the client can know is how long this host's tasks of one
model took: :class:`Durations` keeps that, per model, from the host's own timestamps where it
sends them (exact, and queue apart from run) or else from the two polls around each finish.

From those samples :func:`plan_polls` places one fixed set of poll instants, greedily: each poll
goes where it removes the most expected waiting per expected poll it costs (a poll at ``x`` inside
``(p, q]`` saves ``(q - x)`` for the tasks that end in ``(p, x]`` and is paid by every task still
running at ``x``), until the polls cost as many as the host's SDK would spend on the same durations
(times ``budget``). So polls crowd where tasks end and thin out where few do, and none are spent
before the shortest task seen. Past everything seen the plan backs off geometrically.

With nothing learned yet (a new model or host), the schedule falls back on the SDK's own instants,
so a cold start is never behind it: :func:`cold_poll`. The tasks still running count as well
(:meth:`Durations.begin`): each finished duration is weighed against how long the others have run
so far (Kaplan-Meier), so the first tasks of a batch to finish, its shortest, do not pass for the
whole batch; once half of it finished, the rest are expected above the median as the first were
below it, and the tasks still waiting are polled on that (:func:`_with_open_tasks`).
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["DEFAULT_SLEEPS", "Durations", "backoff", "cold_poll", "next_planned", "plan_polls", "sdk_polls"]

# The sleeps between polls of a task that gives no hints, the last repeated for ever, when the
# provider names no SDK of its own (``Provider.sdk_sleeps``): a common SDK back-off.
DEFAULT_SLEEPS = (1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 4.0, 4.0, 5.0)
# A plan needs this many finished tasks of one model: fewer say little about the next ones.
MIN_SAMPLES = 5
# How many samples each model keeps (the newest): enough for a steady host, short enough to follow
# a host that got slower or faster.
MAX_SAMPLES = 64
# How many candidate instants a plan chooses among: fine enough (tens of milliseconds on tasks of
# seconds) and a few milliseconds of arithmetic per plan.
_GRID = 240
# Past the plan, each gap grows by this factor (the back-off for a task slower than any seen).
_BACKOFF = 1.5
# A running task is polled at least every 10 s (the policy's ceiling): one unheard of for longer
# was dropped without a word (a wait abandoned mid-way) and no longer counts as running.
_FORGOTTEN = 120.0


def sdk_polls(sleeps: Sequence[float] = DEFAULT_SLEEPS) -> Iterable[float]:
    """The SDK's poll instants after its submit's answer, without end: one at once, then one after
    each of ``sleeps``, the last repeated."""
    t = 0.0
    yield t
    for sleep in sleeps:
        t += sleep
        yield t
    while True:
        t += sleeps[-1]
        yield t


def cold_poll(
    last: float, floor: float, sleeps: Sequence[float] = DEFAULT_SLEEPS, *, answered: float = 0.0, rtt: float = 0.0
) -> float:
    """The first of the SDK's instants at least ``floor`` after ``last``: with nothing learned, a
    hintless task is polled no later, and no more often, than the host's own SDK would.

    The SDK counts from its submit's answer (``answered``, on the same clock as ``last``) and
    sleeps after each poll's answer, so each of its polls comes one round trip (``rtt``) later
    than the one before: matching that phase keeps a burst's shared instants (8 s, 12 s) on the
    same side of the tasks ending near them as the SDK's.
    """
    for k, t in enumerate(sdk_polls(sleeps)):
        instant = answered + t + k * rtt
        if t > 0 and instant >= last + floor:
            return instant
    raise AssertionError("unreachable")  # pragma: no cover


class _Mixture:
    """The learned distribution: each sample's interval widened by a kernel, as a uniform
    spread; its CDF is piecewise linear, so it is cheap to evaluate anywhere. ``weights``: each
    sample's share (equal by default). ``after``: conditioned on the duration exceeding it."""

    def __init__(
        self,
        boxes: Sequence[tuple[float, float]],
        shift: float = 0.0,
        weights: Sequence[float] | None = None,
        after: float = 0.0,
    ) -> None:
        mids = sorted((lo + hi) / 2 for lo, hi in boxes)
        n = len(mids)
        spread = statistics.pstdev(mids) if n > 1 else 0.0
        iqr = mids[(3 * n) // 4] - mids[n // 4] if n > 3 else spread
        scale = min(spread, iqr / 1.34) if iqr > 0 else spread
        # Silverman's rule of thumb for the kernel's width: narrow enough to keep where tasks
        # bunch, wide enough that the next batch's draws between this batch's are not missed.
        width = max(0.05, 0.9 * scale * n ** -0.2)
        self.boxes = [(max(0.0, lo + shift - width), hi + shift + width) for lo, hi in boxes]
        self.weights = list(weights) if weights is not None else [1.0] * len(self.boxes)
        self.total = sum(self.weights)
        self.after, self.below = 0.0, 0.0
        self.start = max(after, min(lo for lo, _ in self.boxes))
        self.end = max(hi for _, hi in self.boxes)
        self.below = self._raw(after)  # the mass at or before ``after``, conditioned away
        self.after = after

    def _raw(self, t: float) -> float:
        total = 0.0
        for (lo, hi), weight in zip(self.boxes, self.weights, strict=True):
            if t >= hi:
                total += weight
            elif t > lo:
                total += weight * (t - lo) / (hi - lo)
        return total / self.total

    @property
    def empty(self) -> bool:
        """Whether no mass is left after ``after`` (every sample ended before it)."""
        return self.below >= 1.0 - 1e-9 or self.end <= self.after

    def cdf(self, t: float) -> float:
        if t <= self.after:
            return 0.0
        return max(0.0, (self._raw(t) - self.below) / (1.0 - self.below))


def _expected_polls(mixture: _Mixture, instants: Iterable[float]) -> float:
    """How many polls a task drawn from ``mixture`` costs on these instants (those after its
    ``after`` only): the poll at ``t_k`` is made by every task not seen done at ``t_(k-1)``."""
    expected, previous = 0.0, None
    for t in instants:
        if t < mixture.after or 0 < mixture.after == t:  # made already (the SDK's poll at once counts)
            continue
        expected += 1.0 if previous is None else 1.0 - mixture.cdf(previous)
        if t >= mixture.end:
            return expected
        previous = t
    return expected  # pragma: no cover - instants never end


def plan_polls(
    boxes: Sequence[tuple[float, float]],
    *,
    floor: float,
    sleeps: Sequence[float] = DEFAULT_SLEEPS,
    budget: float = 0.75,
    shift: float = 0.0,
    weights: Sequence[float] | None = None,
    after: float = 0.0,
    extra: float = 0.0,
) -> tuple[float, ...]:
    """Poll instants (seconds since the clock's origin) for tasks whose durations were ``boxes``
    (each ``(lo, hi)``: the duration lies in it; ``lo == hi`` when exact), plus ``shift``;
    with ``after``, for a task still running then (empty when none of the samples is).

    Greedy: start with one poll where the last task ends, then add the poll that removes the
    most expected waiting per expected poll, while the expected polls stay within ``budget``
    times what the SDK's instants (``sleeps``) cost on the same distribution (its
    instants after ``after`` only), plus ``extra``. No two polls are closer than ``floor``.
    """
    mixture = _Mixture(boxes, shift, weights, after)
    if mixture.empty:
        return ()
    allowed = budget * _expected_polls(mixture, sdk_polls(sleeps)) + extra
    lo, hi = mixture.start, mixture.end
    step = max((hi - lo) / _GRID, floor / 4, 1e-3)
    grid = [lo + step * k for k in range(1, math.ceil((hi - lo) / step))] + [hi]
    cdf = [mixture.cdf(t) for t in grid]
    chosen = [len(grid) - 1]  # indices into grid, sorted; the last covers every sample
    spent = 1.0
    while True:
        best: tuple[float, int, float] | None = None  # (gain per poll, index, cost)
        previous = -1
        for index in chosen:
            p_time, p_cdf = (after, 0.0) if previous < 0 else (grid[previous], cdf[previous])
            q_time = grid[index]
            for x in range(previous + 1, index):
                x_time = grid[x]
                # Tasks ending in (p, x] are seen at x, with as many polls as before; every task
                # still running at x pays one poll more.
                cost = max(1.0 - cdf[x], 1e-6)
                if x_time - p_time < floor or q_time - x_time < floor or spent + cost > allowed:
                    continue
                gain = (q_time - x_time) * (cdf[x] - p_cdf) / cost
                if best is None or gain > best[0]:
                    best = (gain, x, cost)
            previous = index
        if best is None or best[0] <= 0:
            break
        bisect.insort(chosen, best[1])
        spent += best[2]
    return tuple(grid[i] for i in chosen)


def next_planned(plan: Sequence[float], last: float, floor: float) -> float | None:
    """The plan's first instant at least ``floor`` after ``last``; None past the plan."""
    index = bisect.bisect_left(plan, last + floor)
    return plan[index] if index < len(plan) else None


def backoff(plan: Sequence[float], overdue: int, floor: float, sleeps: Sequence[float] = DEFAULT_SLEEPS) -> float:
    """The gap before the ``overdue``-th poll (1, 2, ...) of a task running past every instant of
    ``plan``: the plan's typical gap, growing geometrically, never beyond the SDK's longest gap
    (a task slower than any seen is not seen later than the SDK would see it)."""
    typical = (plan[-1] - plan[0]) / (len(plan) - 1) if len(plan) > 1 else sleeps[-1]
    return min(sleeps[-1], max(floor, typical) * _BACKOFF ** (overdue - 1))


def _with_open_tasks(
    done: Sequence[tuple[float, float]], running: Sequence[float]
) -> tuple[list[tuple[float, float]], list[float]] | None:
    """The distribution of durations from the tasks that finished (``done``) and those still
    running (each at least as long as its entry in ``running``): their Kaplan-Meier weights, so
    the tasks of a batch that finished first (its shortest) do not pass for the whole batch.

    While some tasks run past every finished one, the share of them is not yet known: once at
    least half of all tasks finished (the median is known), the rest are taken to spread above it
    as the first ones spread below it (a mirror); before that, None.
    """
    events = sorted(done, key=lambda box: box[0] + box[1])
    order = sorted([((lo + hi) / 2, 0, i) for i, (lo, hi) in enumerate(events)] + [(c, 1, -1) for c in running])
    at_risk, survival = len(order), 1.0
    weights = [0.0] * len(events)
    median = None
    for _, censored, index in order:
        if not censored:
            weights[index] = survival / at_risk
            survival -= weights[index]
            if median is None and survival <= 0.5 + 1e-9:
                median = (events[index][0] + events[index][1]) / 2
        at_risk -= 1
    if survival <= 1e-9:
        return events, weights
    if median is None:
        return None  # most tasks still run: where they end is anyone's guess
    last = max((lo + hi) / 2 for lo, hi in events)
    boxes, shares, left = list(events), list(weights), survival
    for (lo, hi), weight in zip(events, weights, strict=True):
        if left <= 1e-9:
            break
        share = min(weight, left)
        boxes.append((max(last, 2 * median - hi), max(last, 2 * median - lo)))
        shares.append(share)
        left -= share
    return boxes, shares


class Durations:
    """How long one host's tasks took, per model: a poll plan for tasks that give no hints.

    Thread-safe; owned by the host's :class:`~qimage_nb.core._calibration.Calibration`, which
    shares it between a process's clients and saves it with the rest of what it learned. Each
    model keeps up to ``MAX_SAMPLES`` of three kinds: ``total`` (creation to end), and where the
    host stamps its tasks, ``run`` (start to end) and ``queue`` (creation to start). It also
    knows the tasks still running (:meth:`begin`, :meth:`seen`, :meth:`end`): how long each has
    run so far weighs the finished ones, so a plan made while a batch runs is not the plan of
    its shortest tasks, and once half a batch finished, the first to finish teach the others.
    """

    KINDS = ("total", "run", "queue")

    def __init__(self, *, min_samples: int = MIN_SAMPLES, max_samples: int = MAX_SAMPLES) -> None:
        self._min = min_samples
        self._max = max_samples
        self._samples: dict[str, dict[str, deque[tuple[float, float]]]] = {}
        self._plans: dict[tuple[Any, ...], tuple[float, ...] | None] = {}
        # Tasks still running: token -> (model, how long it has run (seen running), its queue,
        # when this was heard on time.monotonic()).
        self._running: dict[int, tuple[str, float, float | None, float]] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self.version = 0

    def __repr__(self) -> str:
        counts = ", ".join(f"{m}: {len(s['total'])}" for m, s in sorted(self._samples.items()))
        return f"<Durations {counts or 'none'}>"

    def _model(self, model: str) -> dict[str, deque[tuple[float, float]]]:
        samples = self._samples.get(model)
        if samples is None:
            samples = self._samples[model] = {kind: deque(maxlen=self._max) for kind in self.KINDS}
        return samples

    def known(self, model: str | None) -> bool:
        """Whether tasks of ``model`` finished here without hints: a plan can place the first poll."""
        return model is not None and len(self._samples.get(model, {}).get("total", ())) >= self._min

    def add(
        self,
        model: str,
        total: tuple[float, float],
        run: tuple[float, float] | None = None,
        queue: tuple[float, float] | None = None,
    ) -> bool:
        """Record a finished task: each argument the interval its duration lies in (seconds).
        Returns whether the sample was kept (a negative or vague one is not)."""
        if not _valid(total) or (run is not None and not _valid(run)) or (queue is not None and not _valid(queue)):
            return False
        with self._lock:
            samples = self._model(model)
            samples["total"].append(total)
            if run is not None and queue is not None:
                samples["run"].append(run)
                samples["queue"].append(queue)
            self._plans.clear()
            self.version += 1
        return True

    # -- the tasks still running --

    def begin(self, model: str) -> int:
        """A task of ``model`` started waiting; returns its token for :meth:`seen` and :meth:`end`."""
        with self._lock:
            token = next(self._tokens)
            self._running[token] = (model, 0.0, None, time.monotonic())
            return token

    def seen(self, token: int, elapsed: float, queue: float | None = None) -> None:
        """The task was seen still running ``elapsed`` s after its creation (queued ``queue`` s)."""
        with self._lock:
            if token in self._running:
                model = self._running[token][0]
                self._running[token] = (model, elapsed, queue, time.monotonic())
                self._plans.clear()

    def end(self, token: int) -> None:
        """The task finished, or nobody waits for it any more."""
        with self._lock:
            if self._running.pop(token, None) is not None:
                self._plans.clear()

    # -- plans --

    def plan(self, model: str | None, kind: str = "total", *, floor: float, sleeps: Sequence[float] = DEFAULT_SLEEPS,
             budget: float = 0.75, after: float = 0.0, extra: float = 0.0) -> tuple[float, ...] | None:
        """The poll instants for a task of ``model``: since its creation (``total``), or since it
        started running (``run``); with ``after``, for a task still running then. None until
        ``min_samples`` tasks of that kind finished and at least half of those begun did (see
        ``_with_open_tasks``); empty when the task outlived them all."""
        if model is None:
            return None
        # Tasks polled together ask with (nearly) the same ``after``: one plan serves them all.
        after = math.floor(max(0.0, after) / 0.05) * 0.05
        key = (model, kind, floor, tuple(sleeps), budget, after, extra)
        with self._lock:
            if key in self._plans:
                return self._plans[key]
            samples = self._samples.get(model, {})
            boxes = list(samples.get(kind, ()))
            queues = sorted((lo + hi) / 2 for lo, hi in samples.get("queue", ()))
            now = time.monotonic()
            for token in [k for k, entry in self._running.items() if now - entry[3] > _FORGOTTEN]:
                del self._running[token]
            running = [
                ran if kind == "total" else ran - queue
                for name, ran, queue, _ in self._running.values()
                if name == model and (kind == "total" or queue is not None)
            ]
        plan = None
        known = _with_open_tasks(boxes, running) if len(boxes) >= self._min else None
        if known is not None:
            # A run plan is paid for like the whole wait: the SDK's instants count from the submit.
            shift = queues[len(queues) // 2] if kind == "run" and queues else 0.0
            plan = plan_polls(known[0], weights=known[1], floor=floor, sleeps=sleeps, budget=budget,
                              shift=shift, after=after + shift, extra=extra)
            plan = tuple(t - shift for t in plan)
        with self._lock:
            self._plans[key] = plan
        return plan

    # -- persistence (through the Calibration's file) --

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {model: {kind: [list(box) for box in rows] for kind, rows in samples.items()}
                    for model, samples in self._samples.items()}

    def load(self, saved: Any) -> None:
        """Add the samples of a saved file, keeping only rows ``add`` could have written."""
        if not isinstance(saved, dict):
            return
        with self._lock:
            for model, samples in list(saved.items())[:256]:
                if not isinstance(model, str) or not isinstance(samples, dict):
                    continue
                for kind in self.KINDS:
                    rows = samples.get(kind)
                    if not isinstance(rows, list):
                        continue
                    for row in rows[-self._max:]:
                        if (isinstance(row, list) and len(row) == 2
                                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)
                                and _valid((float(row[0]), float(row[1])))):
                            self._model(model)[kind].append((float(row[0]), float(row[1])))
            self._plans.clear()
            self.version += 1


def _valid(box: tuple[float, float]) -> bool:
    lo, hi = box
    # A day is far beyond any image generation: a bigger number is a broken clock.
    return math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi <= 86400 and hi - lo <= 30
