"""When to retry, and how long to wait first.

Status polls and downloads are idempotent GETs: they retry on connection errors, 408, 429 and 5xx.
The submit POST is retried on the same failures *only* because every attempt carries the same
Idempotency-Key, so the server answers a retry with the task it already created instead of billing a
second one. ``Retry-After`` wins over our own backoff, in both of its forms (seconds, HTTP date).

:func:`retrying` is the one loop that runs the attempts of an API call or a download: each caller
decides what is worth another attempt (by raising :class:`TryAgain`); the loop does the accounting
(attempts, backoff, ``Retry-After``) and tells the faces through :func:`note_retry`. The submit keeps
its own loop (resending a submit is a question of billing, not of transience) but uses the same
backoff and ``note_retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .._contract import RETRYABLE_STATUS

T = TypeVar("T")
logger = logging.getLogger("qimage_nb")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date. None if absent."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def is_retryable(status_code: int, error_type: str | None = None) -> bool:
    """Whether an HTTP error status is worth another attempt (API.md section 3)."""
    if error_type == "model_not_found":
        return False  # a 503 that will never heal: the model name is wrong
    return status_code in RETRYABLE_STATUS


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter.

    Parameters
    ----------
    max_attempts:
        Attempts per request, the first included.
    backoff_base, backoff_cap:
        Attempt ``k`` (0-based) waits a random time in ``[d/2, d]`` with ``d = min(cap, base * 2**k)``:
        jitter spreads many clients' retries apart, the lower half keeps a retry from firing at once.
    max_retry_after:
        A server asking us to wait longer than this is not waited for: the error is raised with the
        hint, so a notebook never hangs for an hour on one 429.
    """

    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_retry_after: float = 120.0

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        ceiling = min(self.backoff_cap, self.backoff_base * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)

    def honours(self, retry_after: float | None) -> bool:
        """False when the server's hint is too long to wait for here."""
        return retry_after is None or retry_after <= self.max_retry_after


# Whoever shows a request's progress (the magic's output area, a panel run) sets this inside its own
# coroutine, so it sees each retry while it waits rather than a silent pause: (what, the failure,
# retry number, retries allowed, seconds until it). Tasks started from that coroutine inherit it.
RetryObserver = Callable[[str, BaseException, int, int, float], None]
retry_observer: contextvars.ContextVar[RetryObserver | None] = contextvars.ContextVar("qimage_retry_observer", default=None)


def retry_log_level() -> int:
    """A retry nobody shows (no face observing) is a warning, so Python users see it happen; one a
    face shows on its progress line is only info (said once, there)."""
    return logging.INFO if retry_observer.get() is not None else logging.WARNING


def chain_observers(first: RetryObserver | None, second: RetryObserver) -> RetryObserver:
    """An observer that tells ``first`` (if any), then ``second``."""

    def both(what: str, failure: BaseException, retry: int, retries: int, delay: float) -> None:
        if first is not None:
            with contextlib.suppress(Exception):
                first(what, failure, retry, retries, delay)
        second(what, failure, retry, retries, delay)

    return both


def note_retry(what: str, failure: BaseException, retry: int, retries: int, delay: float) -> None:
    """Tell the current observer, if any, that ``what`` is retried; an observer's own failure is not ours."""
    observer = retry_observer.get()
    if observer is not None:
        with contextlib.suppress(Exception):  # a display must never break a paid request
            observer(what, failure, retry, retries, delay)


class TryAgain(Exception):
    """Raised by one attempt of :func:`retrying`: ``failure`` is worth another attempt, after the
    server's ``retry_after`` when it gave one (else our backoff). The last one's failure is raised."""

    def __init__(self, failure: Exception, retry_after: float | None = None) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.retry_after = retry_after


async def retrying(attempt: Callable[[], Awaitable[T]], *, policy: RetryPolicy, what: str, attempts: int | None = None) -> T:
    """Await ``attempt()`` until it returns, at most ``attempts`` times (default
    ``policy.max_attempts``). An attempt that raises :class:`TryAgain` is retried after
    ``policy.backoff`` (the server's ``Retry-After`` when it gave one), logged and shown to the
    current retry observer; any other exception ends the loop at once. ``what`` names the request
    in both (a poll or a download names its task id there, so a face can tell whose it is)."""
    attempts = policy.max_attempts if attempts is None else attempts
    failure: Exception | None = None
    for number in range(attempts):
        try:
            return await attempt()
        except TryAgain as again:
            failure = again.failure
            retry_after = again.retry_after
        if number + 1 < attempts:
            delay = policy.backoff(number, retry_after)
            logger.log(retry_log_level(), "qimage_nb: %s failed (%s); retry %d of %d in %.1f s",
                       what, failure, number + 1, attempts - 1, delay)
            note_retry(what, failure, number + 1, attempts - 1, delay)
            await asyncio.sleep(delay)
    assert failure is not None
    raise failure
