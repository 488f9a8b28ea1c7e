"""The waiting loop: :func:`poll_updates` polls any ``get_task`` coroutine function on a
:class:`PollPolicy`'s schedule (``_schedule.py``), and owns the deadline, a server's ``Retry-After``,
and which failed polls a wait survives.

The schedule's arithmetic lives in ``_schedule.py`` (when to poll one task), what is learned from
finished tasks in ``_calibration.py`` (estimates and progress) and ``_durations.py`` (durations, for
hosts that give no hints); their public names are re-exported here, where callers have always
found them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

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
from ._calibration import Calibration
from ._schedule import PollPolicy, PollSchedule

__all__ = ["Calibration", "PollPolicy", "PollSchedule", "poll_updates"]

logger = logging.getLogger("qimage_nb")

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
    model: str | None = None,
) -> AsyncIterator[TaskStatus]:
    """Poll ``get_task`` on ``policy``'s adaptive schedule; yield each status change until a
    terminal status.

    ``started`` and ``timeout``: the wait ends with ``GenerationTimeout`` at ``started + timeout``
    (monotonic seconds), after at least one poll, so a timeout never reports an unseen task.
    ``origin``: when the server created the task (the schedule's clock counts from it), give or
    take ``slack``. ``immediate``: a task of unknown age (a resume, a second wait), polled at once;
    its schedule neither learns nor uses what was learned. ``model``: the task's model (what a
    host that gives no hints is learned by).

    Transient failures (network, 5xx, 429, a garbled answer) do not end the wait: the task is
    already billed, so only the deadline or a definite answer does. A server's ``Retry-After``
    outranks the schedule; a failed poll is retried after ``policy.floor``.
    """
    deadline = started + timeout
    schedule = policy.schedule(fresh=not immediate, slack=slack, model=model)
    updates = _waiting(get_task, schedule, task_id, policy=policy, deadline=deadline, timeout=timeout,
                       origin=origin, immediate=immediate)
    try:
        async with contextlib.aclosing(updates):
            async for status in updates:
                yield status
    finally:
        schedule.close()  # its model's other tasks no longer count it as still running


async def _waiting(
    get_task: Callable[[], Awaitable[TaskStatus]],
    schedule: PollSchedule,
    task_id: str,
    *,
    policy: PollPolicy,
    deadline: float,
    timeout: float,
    origin: float,
    immediate: bool,
) -> AsyncIterator[TaskStatus]:
    """The loop of :func:`poll_updates` (which owns the schedule's end)."""
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
