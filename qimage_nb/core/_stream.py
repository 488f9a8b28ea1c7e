"""Waiting on a host's status stream (server-sent events) instead of polling: a host's
status stream says each change as it happens, so completion is seen within milliseconds and
with one request rather than one per poll.

The stream is an optimisation, never the only way: anything that goes wrong before a terminal
status (a refused or dropped connection, an answer that is not an event stream, garbled events,
a stream that ends early) raises :class:`StreamUnavailable`, and the caller polls instead. Only
the deadline ends the wait (``GenerationTimeout``, as when polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import httpx

from .._exceptions import GenerationTimeout, ProtocolError

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from .._contract import TaskStatus

__all__ = ["StreamUnavailable", "next_within", "sse_data", "stream_statuses"]


class StreamUnavailable(Exception):
    """The status stream could not be used (the caller falls back to polling)."""


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines); comments such
    as keepalives and other fields are skipped (the WHATWG event-stream rules, reduced to data)."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # a comment: a keepalive
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


async def next_within(items: AsyncIterator[str], seconds: float) -> str:
    """The next item, or ``asyncio.TimeoutError`` after ``seconds``.

    Not ``asyncio.wait_for``: before Python 3.12 it returns the item when a cancel lands as the
    item arrives, so a user's Cancel (the panel's, an interrupt) was lost and a task they had
    stopped ran on to its end, billed (1 run in 12 of a test that cancels a queued task). Here a
    cancel always ends the wait."""
    step = asyncio.ensure_future(items.__anext__())
    try:
        done, _ = await asyncio.wait({step}, timeout=seconds)
    except BaseException:
        step.cancel()
        with contextlib.suppress(BaseException):
            await step  # let the stream see its cancel before it is closed
        raise
    if not done:
        step.cancel()
        with contextlib.suppress(BaseException):
            await step
        raise asyncio.TimeoutError
    return step.result()


async def stream_statuses(
    open_stream: Callable[[], AbstractAsyncContextManager[httpx.Response]],
    read_event: Callable[[str], TaskStatus | None],
    task_id: str,
    *,
    deadline: float,
    timeout: float,
) -> AsyncIterator[TaskStatus]:
    """Each status the stream announces, up to and including the first terminal one.

    ``deadline`` (monotonic seconds) ends the wait with ``GenerationTimeout``; ``timeout`` is the
    whole wait's length, for the message."""
    last: TaskStatus | None = None

    def timed_out() -> GenerationTimeout:
        return GenerationTimeout(
            f"task {task_id} still {last.phase if last else 'unconfirmed'} after {timeout:.0f} s; "
            f"fetch it later with resume({task_id!r})",
            task_id=task_id, last_status=last.status if last else None,
        )

    try:
        async with open_stream() as response:
            kind = response.headers.get("content-type", "")
            if response.status_code != 200 or "text/event-stream" not in kind:
                raise StreamUnavailable(f"HTTP {response.status_code} {kind or 'without a content type'}")
            events = sse_data(response.aiter_lines())
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise timed_out()
                    try:
                        data = await next_within(events, left)
                    except asyncio.TimeoutError:
                        raise timed_out() from None
                    except StopAsyncIteration:
                        raise StreamUnavailable("the stream ended before the task did") from None
                    try:
                        status = read_event(data)
                    except ProtocolError as exc:
                        raise StreamUnavailable(f"a garbled event ({exc})") from None
                    if status is None:
                        continue
                    last = status
                    yield status
                    if status.terminal:
                        return
            finally:
                with contextlib.suppress(Exception):
                    await events.aclose()
    except httpx.HTTPError as exc:
        raise StreamUnavailable(f"{type(exc).__name__}: {exc}") from None
