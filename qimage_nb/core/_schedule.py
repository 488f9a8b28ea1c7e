"""When to ask about a task next: :class:`PollPolicy` (bounds, first guesses, what was learned) and
:class:`PollSchedule` (one task's state).

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

A task that gives no hints (no estimate, no progress: some hosts' asynchronous models) is polled
instead on a plan drawn from how long this host's tasks of its model took (``_durations.py``):
where the host stamps when a task started, from that start; else from its creation. With nothing
learned yet it is polled on the host SDK's own instants (``sleeps``), so it is never seen later than the SDK
would see it, with fewer polls, until the first tasks of its batch to finish have taught enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .._contract import TaskStatus
from ._calibration import Calibration
from ._durations import DEFAULT_SLEEPS, backoff, cold_poll, next_planned

__all__ = ["PollPolicy", "PollSchedule"]

_INF = math.inf
# When the models that stay disagree, each one's finish must be known to within this (seconds)
# for a poll at the end of the earliest to be worth it.
_MODEL_SHARP = 1.0
# A task of a model with nothing learned when it began is taught mid-wait by its own batch: from
# then on it may spend 0.75x the polls the SDK would still spend, plus a quarter of the poll it
# saved by skipping the SDK's poll at once (more let a long-tailed batch, whose tail the mirror
# underestimates, cost more polls than the SDK in simulations); and it is never polled later than
# the SDK would poll it.
_TAUGHT_BUDGET, _TAUGHT_EXTRA = 0.75, 0.25


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
    sleeps:
        For a task that gives no hints: how the host's SDK waits, its sleeps between polls after
        a first poll at once, the last repeated (the client takes its provider's ``sdk_sleeps``).
        With nothing learned of the model, its polls come on those instants (all but the first),
        and what a learned plan may spend is measured against them.
    budget:
        For a task that gives no hints: the share of the polls the host's SDK would spend on
        the learned durations that a learned plan may spend.
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
    sleeps: tuple[float, ...] = DEFAULT_SLEEPS
    budget: float = 0.75
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
            sleeps=tuple(sleep * scaled(1.0, 1 / 3, 0.01) for sleep in base.sleeps),
        )

    def schedule(self, *, fresh: bool = True, slack: float = 0.0, model: str | None = None) -> PollSchedule:
        """A schedule for one task. ``fresh``: the task was just submitted, so the elapsed times fed
        to it count from (about) its creation on the server; False for a task of unknown age (a
        resume), which then neither uses nor teaches the calibration. ``slack``: how long before
        that origin the server may have created the task (half the submit's round trip, when the
        origin is its middle). ``model``: the task's model, whose durations a task that gives no
        hints learns from and teaches."""
        slack = max(0.0, slack)
        # A submit whose exchange took long (retries, a lost answer) leaves the task's creation
        # vague: its schedule may use what was learned but must not teach it.
        schedule = PollSchedule(self, fresh=fresh, model=model, _pending_until=-slack, _slack=slack,
                                _teaches=slack <= self.calibration.precision)
        if fresh and self.learn and model is not None:
            durations = self.calibration.durations
            # The plan when the task began, if the model's durations were known then; else the
            # task is polled on the SDK's instants until its own batch has taught enough.
            schedule._plans = {kind: durations.plan(model, kind, floor=self.floor, sleeps=self.sleeps,
                                                    budget=self.budget) for kind in ("total", "run")}
            schedule._token = durations.begin(model)
        return schedule


@dataclass
class PollSchedule:
    """The per-task state of the adaptive schedule: feed it each status, ask for the next delay."""

    policy: PollPolicy
    fresh: bool = True
    model: str | None = None
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
    _slack: float = 0.0
    # For a task that gives no hints: whether it ever gave one, the host's stamps of its creation
    # and start (its own clock), and the learned plans (instants since creation, since start).
    _hinted: bool = False
    _created: float | None = None
    _started: float | None = None
    _plans: dict[str, tuple[float, ...] | None] = field(default_factory=dict)
    _token: int | None = None  # its entry among the model's tasks still running
    _aimed: float | None = None  # when the poll now awaited was due
    _rtt: float | None = None  # how late answers come after their poll was due (averaged)

    # -- the client's calls --

    def next_delay(self, status: TaskStatus | None, elapsed: float) -> float:
        """Seconds to sleep before the next poll, given the latest status and the time since submit."""
        if status is None:
            if self._first_given:  # the first poll failed: never hammer, whatever the clock says
                return self._clamp(self.policy.first)
            self._first_given = True  # ``first`` after the origin, however late the wait began
            plan = self._plans.get("total")
            first = (next_planned(plan, elapsed - self.policy.floor, self.policy.floor) if plan else None) or self.policy.first
            self._aimed = max(first, elapsed)
            return max(0.0, min(self.policy.ceiling, first - elapsed))
        if self._aimed is not None and 0.0 <= elapsed - self._aimed < 2.0:
            # How late an answer comes after its poll was due: the round trip, and a busy loop's lag.
            self._rtt = elapsed - self._aimed if self._rtt is None else (self._rtt + elapsed - self._aimed) / 2
        self._observe(status, elapsed)
        if status.terminal:
            return 0.0
        target = self._plan(elapsed)
        self._aimed = max(target, elapsed)
        return target - elapsed

    def finish(self, status: TaskStatus, elapsed: float) -> None:
        """The terminal status: a completed task whose finish is pinned down teaches the calibration."""
        self._observe(status, elapsed)

    def close(self) -> None:
        """Nobody waits for the task any more (it ended, the wait timed out or was cancelled)."""
        if self._token is not None:
            self.policy.calibration.durations.end(self._token)
            self._token = None

    def revise(self, elapsed: float) -> float | None:
        """While waiting: a new delay if the calibration changed since the plan was made, else None."""
        if not self.revisable or self._planned_with == self.policy.calibration.version:
            return None
        target = self._plan(elapsed, replan=True)
        self._aimed = max(target, elapsed)
        return max(0.0, target - elapsed)

    @property
    def revisable(self) -> bool:
        """Whether a wait is worth re-checking: only a probe in a wide interval can improve, or a
        task that gave no hints and began with nothing learned (its batch may teach it)."""
        lo, hi = self._interval
        if not self._hinted:
            return self._learns and self._last_poll is not None and not self._plans.get("total")
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
            self._hinted = True
        if status.status == "processing" and 0 < status.progress < 100:
            self._hinted = True
        self._created = status.created if status.created is not None else self._created
        self._started = status.started if status.started is not None else self._started
        if status.status == "completed" and not self._hinted:
            self._teach_duration(status, previous, elapsed)
        if self._hinted or status.terminal:
            self.close()  # what it says of its length is not a duration to weigh others by
        elif self._token is not None:
            queue = self._started - self._created if self._started is not None and self._created is not None else None
            self.policy.calibration.durations.seen(self._token, elapsed, queue)
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

    def _teach_duration(self, status: TaskStatus, previous: float | None, elapsed: float) -> None:
        """A task that gave no hints finished: how long it took, from the host's own stamps where
        it sent them (exact, whatever the clocks' offset; queue apart from run), else from the
        two polls around its finish."""
        if not self.policy.learn or self.model is None:
            return
        created, started, ended = self._created, self._started, status.completed
        run = queue = None
        if created is not None and ended is not None and created <= ended:
            # Whole seconds on both (a host stamping to the second) leave a second's doubt.
            doubt = 1.0 if float(created).is_integer() and float(ended).is_integer() else 0.002

            def box(span: float) -> tuple[float, float]:
                return max(0.0, span - doubt), span + doubt

            total = box(ended - created)
            if started is not None and created <= started <= ended:
                run, queue = box(ended - started), box(started - created)
        elif self._learns and self._teaches and previous is not None:
            total = (max(0.0, previous - self._slack), elapsed + self._slack)
        else:
            return
        self.policy.calibration.add_duration(self.model, total, run, queue)

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
        if not self._hinted:
            return self._plan_hintless(elapsed)
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

    def _plan_hintless(self, elapsed: float) -> float:
        """The next poll of a task that gave no hints: on the learned plan from its start (where
        the host stamped it) or from its creation; past it, a back-off; with nothing learned, on
        the host SDK's instants."""
        p = self.policy
        self._planned_with = p.calibration.version
        last = self._last_poll if self._last_poll is not None else elapsed
        self._interval = (last, _INF)
        ways = [("total", 0.0)]  # (plan, when the clock it counts on began)
        if self._created is not None and self._started is not None:
            ways.insert(0, ("run", self._started - self._created))
        elif self._pending_until >= last:
            ways.insert(0, ("run", last))  # still queued: it cannot end before a whole run from now
        plan, offset, kept = None, 0.0, False
        for kind, offset in ways:
            plan, kept = self._plans.get(kind), True
            if not plan and self._learns and self.model is not None:
                # Nothing known when it began: what the tasks that finished since have taught.
                plan, kept = p.calibration.durations.plan(
                    self.model, kind, floor=p.floor, sleeps=p.sleeps, budget=_TAUGHT_BUDGET,
                    extra=_TAUGHT_EXTRA, after=last - offset), False
            if plan is not None:
                break
        # The SDK's instants count from its submit's answer, half the exchange after our origin.
        sdk = cold_poll(last, p.floor, p.sleeps, answered=self._slack, rtt=self._rtt or 0.0)
        if plan is None:
            target = sdk
        elif (planned := next_planned(plan, last - offset, p.floor)) is not None:
            target = offset + planned if kept else min(offset + planned, sdk)
        elif kept:  # slower than every task seen
            self._overdue_polls += 1
            target = last + backoff(plan, self._overdue_polls, p.floor, p.sleeps)
        else:  # slower than its batch's mirror: back on the SDK's instants
            target = sdk
        return min(max(target, last + p.floor), last + p.ceiling)

    def _clamp(self, delay: float) -> float:
        return max(self.policy.floor, min(self.policy.ceiling, delay))
