"""Waiting for a task: how a client learns its statuses until it ends.

``Waiting`` is the one interface; ``Polling`` (the adaptive schedule of ``_polling.poll_updates``)
is how every host waits today. A host that pushes its statuses (a server-sent-event stream) or
holds the request open until the result exists implements ``Waiting`` too, and the client picks
it by what the provider says (``waiting_for``); nothing above this module changes.

A task's statuses are a billed task's only way home: whatever waits, only the deadline
(``GenerationTimeout``) or a definite answer ends the wait, never a transient failure.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx

from .._contract import TaskStatus
from .._exceptions import ProtocolError, TaskCancelledError, TaskFailedError, task_name
from ._answers import with_result
from ._config import is_loopback_host
from ._polling import Calibration, PollPolicy, poll_updates
from ._stream import StreamUnavailable, stream_statuses

if TYPE_CHECKING:
    from ..journal._store import Store
    from ..providers import Call
    from ._http import Connection

__all__ = ["Polling", "Streaming", "SubmitTimes", "Waiting", "raise_for_terminal", "shared_timing", "waiting_for"]

logger = logging.getLogger("qimage_nb")

_ANSWERED_KEPT = 4096  # submit answer times kept for the schedules of tasks not yet waited on


class SubmitTimes:
    """Each recent fresh submit's exchange (sent, answered), by task id: the server created the task
    in between, and a wait's clock counts from then, not from when the caller starts waiting. With
    it, the task's model: a host that gives no hints is learned per model."""

    def __init__(self) -> None:
        self._times: OrderedDict[str, tuple[float, float, str | None]] = OrderedDict()

    def note(self, task_id: str, sent: float, answered: float, model: str | None = None) -> None:
        self._times[task_id] = (sent, answered, model)
        while len(self._times) > _ANSWERED_KEPT:
            self._times.popitem(last=False)

    def take(self, task_id: str) -> tuple[float, float, str | None] | None:
        """The exchange of ``task_id``, once: a second wait on the same task is of unknown age."""
        return self._times.pop(task_id, None)


class Waiting(abc.ABC):
    """How a client waits for one task: each status change, up to and including a terminal one."""

    @abc.abstractmethod
    def updates(
        self, task_id: str, *, timeout: float, immediate: bool, started: float
    ) -> AsyncIterator[TaskStatus]:
        """Yield each status change of ``task_id`` until a terminal status; raise
        ``GenerationTimeout`` (carrying the task id) past ``timeout`` seconds from ``started``.
        ``immediate``: the task is of unknown age (a resume), so ask at once."""


class Polling(Waiting):
    """Waiting by asking: ``get_task`` on the adaptive schedule of ``policy``."""

    def __init__(
        self,
        get_task: Callable[[str], Awaitable[TaskStatus]],
        policy: PollPolicy,
        submit_times: SubmitTimes,
    ) -> None:
        self._get_task = get_task
        self.policy = policy
        self._submit_times = submit_times

    async def updates(
        self, task_id: str, *, timeout: float, immediate: bool, started: float
    ) -> AsyncIterator[TaskStatus]:
        # The schedule's clock starts when the server created the task, which estimated_time and
        # progress count from: some time during this client's submit exchange, so its middle,
        # give or take half of it. Any other task (a resume, a second wait) is of unknown age: it
        # is polled at once ('immediate') and its schedule neither learns nor uses what was learned.
        exchange = self._submit_times.take(task_id)
        model = None
        if exchange is None:
            origin, slack = time.monotonic(), 0.0
        else:
            origin, slack = (exchange[0] + exchange[1]) / 2, (exchange[1] - exchange[0]) / 2
            model = exchange[2]
            immediate = False  # its age is known: the schedule places even the first poll
        updates = poll_updates(
            functools.partial(self._get_task, task_id), task_id, policy=self.policy, started=started,
            timeout=timeout, origin=origin, slack=slack, immediate=immediate, model=model,
        )
        async with contextlib.aclosing(updates):
            async for status in updates:
                yield status


def waiting_for(
    connection: Connection,
    get_task: Callable[[str], Awaitable[TaskStatus]],
    policy: PollPolicy,
    submit_times: SubmitTimes,
) -> Waiting:
    """How to wait on the tasks of ``connection``'s provider: a host that streams its statuses
    (``capabilities.status_stream``) is read through ``connection``'s stream, with polling as
    the fallback; every other host is polled (one branch on what the provider declares, never on
    its name). A host that holds its submit until the result exists (an HTTP ``Prefer: wait``)
    needs no waiting at all when it does: the submit's answer is the result."""
    polling = Polling(get_task, policy, submit_times)
    if connection.provider.capabilities.status_stream:
        return Streaming(connection, polling)
    return polling


class Streaming(Waiting):
    """Waiting on the host's status stream (server-sent events): each change as it happens, one
    request in all; any failure before the end hands over to ``fallback`` (polling)."""

    def __init__(self, connection: Connection, fallback: Waiting) -> None:
        self._http = connection
        self._fallback = fallback

    async def updates(
        self, task_id: str, *, timeout: float, immediate: bool, started: float
    ) -> AsyncIterator[TaskStatus]:
        call = self._http.provider.stream(task_id)
        if call is not None:
            try:
                async for status in self._streamed(call, task_id, deadline=started + timeout, timeout=timeout):
                    yield status
                    if status.terminal:
                        return
            except StreamUnavailable as exc:
                logger.info("qimage_nb: the status stream of %s failed (%s); polling instead", task_id, exc)
                immediate = True  # what the stream said is unknown: ask at once
        updates = self._fallback.updates(task_id, timeout=timeout, immediate=immediate, started=started)
        async with contextlib.aclosing(updates):
            async for status in updates:
                yield status

    async def _streamed(self, call: Call, task_id: str, *, deadline: float, timeout: float) -> AsyncIterator[TaskStatus]:
        http, auth = self._http.pool()[0], self._http.auth()
        provider = self._http.provider

        def open_stream() -> Any:
            return http.stream(call.method, self._http.base_url + call.path,
                               headers={"Accept": "text/event-stream", **call.headers}, auth=auth)

        statuses = stream_statuses(open_stream, lambda data: provider.read_event(self._http.redact(data), task_id),
                                   task_id, deadline=deadline, timeout=timeout)
        async with contextlib.aclosing(statuses):
            async for status in statuses:
                # The last event says COMPLETED; the images are at the host's result (provider.result).
                yield await with_result(self._http, status) if status.terminal else status


def shared_timing(base_url: str, store: Store | None) -> Calibration:
    """What this process (and earlier ones, via the data directory) learned of this provider's
    timing: every default-policy client of one provider shares it.

    Only a provider's HTTPS origin is remembered across processes: plain-http origins are the
    emulator and local test servers, set up per run (often on a random port), whose files would
    only pile up and whose timing the next run need not share.
    """
    url = httpx.URL(base_url)
    if url.scheme != "https" or is_loopback_host(url.host):
        return Calibration.shared(base_url)
    from ..journal._store import _default_root

    root = store.root if store is not None else _default_root()
    name = hashlib.sha256(base_url.encode()).hexdigest()[:16]
    return Calibration.shared(base_url, root / "timing" / f"{name}.json")


async def one_status(status: TaskStatus) -> AsyncIterator[TaskStatus]:
    """A result the submit answered with, in the shape of a wait that saw it at once."""
    yield status


def raise_for_terminal(status: TaskStatus) -> None:
    """Nothing for a completed task; the error a failed, cancelled or unfinished one stands for."""
    if status.status == "failed":
        failure = status.error
        reason = failure.message if failure else "no reason given"
        billing = "the host bills a request it refuses" if status.raw.get("billed") else "failed tasks are not billed"
        raise TaskFailedError(
            f"{task_name(status.task_id)} failed: {reason} ({billing})",
            task_id=status.task_id,
            code=failure.code if failure else None,
            error_type=failure.type if failure else None,
            param=failure.param if failure else None,
        )
    if status.status == "cancelled":
        raise TaskCancelledError(f"{task_name(status.task_id)} was cancelled", task_id=status.task_id)
    if status.status != "completed":
        raise ProtocolError(f"{task_name(status.task_id)} is {status.status}, not completed", task_id=status.task_id)
