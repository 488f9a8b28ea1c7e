"""Submitting a journaled request, and what its outcome allows.

A submit is billed, so its rules are strict. It is resent automatically only where that provably
cannot bill twice: the request never left (a refused connection), the server refused it outright
(429, 408), or this origin honours the Idempotency-Key (API.md 7.1) and gets the same key and body.
Anywhere else a lost answer is journaled as 'outcome unknown' and reported once, with the way out
(``resend``): never resent behind the user's back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING

import httpx

from .._exceptions import (
    APIError,
    ProtocolError,
    QImageError,
    SubmitOutcomeUnknown,
    TransportError,
    ValidationError,
)
from ._http import NOT_SENT
from ._retry import RetryPolicy, is_retryable, note_retry, retry_log_level

if TYPE_CHECKING:
    from .._contract import GenerationRequest
    from ..providers import Submitted
    from ._http import Connection
    from ._journaling import Journal
    from ._waiting import SubmitTimes

__all__ = ["Submitter", "new_idempotency_key"]

logger = logging.getLogger("qimage_nb")

def new_idempotency_key() -> str:
    """One key per logical submit; every retry of that submit reuses it."""
    return str(uuid.uuid4())


def _bad_parameter(error: APIError, codes: frozenset[str]) -> bool:
    """A 5xx that is the host's way of refusing a parameter (API.md 7.3), not a fault."""
    return error.code in codes or error.type == "invalid_request_error" or bool(error.param)


class Submitter:
    """Sends journaled submits through one connection and journals what comes back."""

    def __init__(self, connection: Connection, journal: Journal, retry: RetryPolicy, submit_times: SubmitTimes) -> None:
        self._http = connection
        self._journal = journal
        self._retry = retry
        self._submit_times = submit_times

    @property
    def _origin(self) -> str:
        return self._http.base_url

    async def keys_honoured(self) -> bool:
        """Whether this origin has shown that it honours the Idempotency-Key (API.md 7.1), in this
        process or an earlier one: the journal remembers it per origin."""
        return self._http.provider.capabilities.idempotency_keys and await self._journal(
            self._journal.store.idempotency_confirmed, self._origin
        )

    async def _confirm_keys(self) -> None:
        await self._journal(self._journal.store.confirm_idempotency, self._origin)

    async def unknown(self, key: str, reason: str) -> SubmitOutcomeUnknown:
        """Journal a submit with no answer as 'outcome unknown' and say so, once, with the way out."""
        await self._journal(self._journal.store.mark_outcome_unknown, key, reason)
        keys = self._http.provider.capabilities.idempotency_keys
        if not keys:
            why = ("nothing was resent, because this host has no idempotency key, so a resend may "
                   "bill twice")
        elif await self.keys_honoured():
            why = "nothing more was resent"
        else:
            why = "nothing was resent, because this host has not shown that it honours Idempotency-Key"
        return SubmitOutcomeUnknown(
            f"submit to {self._http.host}: {reason}; the task may exist and may be billed ({why}). "
            f"To resend the identical request{' with the same key' if keys else ' (this may bill twice)'}: "
            f"%qimage resume --resend {key} (Python: client.resend({key!r}))",
            idempotency_key=key,
        )

    async def submit(self, request: GenerationRequest, key: str, *, label: str | None, scope: str) -> Submitted:
        """Journal ``request`` under ``key`` (unless that key is journaled already: the same intent
        sent again), then send it. More images than the host makes per submit are refused first:
        one such POST would be refused, and billed where the host bills refusals."""
        provider, store = self._http.provider, self._journal.store
        per = provider.capabilities.images_per_submit
        if request.n > per:
            raise ValidationError(
                "n", f"{provider.title} makes at most {per} image{'s' if per > 1 else ''} per submit: "
                f"use generate() or generate_many(), which send {request.n} images as several submits",
            )
        fresh = await self._journal(store.get, key) is None
        if fresh:
            await self._journal(store.begin, request, key, label=label, origin=self._origin, scope=scope)
        return await self.send(request, key, fresh=fresh)

    async def send(self, request: GenerationRequest, key: str, *, fresh: bool, force: bool = False) -> Submitted:
        """POST a journaled request and journal the answer (see the module's rules).

        ``force``: the user asked for this resend. ``fresh``: the key was never sent before, so the
        task is created during this exchange (a replayed key returns a task of unknown age).
        """
        http, store, host = self._http, self._journal.store, self._http.host
        capabilities = http.provider.capabilities
        auth = http.auth()
        call = http.provider.submit(request, key)
        what = "submit"
        started = time.monotonic()
        may_exist = False  # some attempt may have created the task without our knowing
        failure: QImageError | None = None
        for attempt in range(self._retry.max_attempts):
            # The user's resend is one send: a further one, after its answer too is lost, is made
            # only where the origin honours keys, as for any submit.
            safe = await self.keys_honoured()
            if force and attempt == 0:
                safe = True
            retry_after: float | None = None
            sent = time.monotonic()
            try:
                response = await http.send(call, auth=auth)
            except NOT_SENT as exc:  # no connection, so nothing was sent: no task can exist
                failure = TransportError(f"{what}: {http.network_failure(exc)}")
                failure.unreachable = True  # type: ignore[attr-defined]
            except httpx.TransportError as exc:
                may_exist = True
                reason = (
                    f"no answer from {host} in time ({type(exc).__name__})"
                    if isinstance(exc, httpx.TimeoutException)
                    else f"the connection to {host} broke before the answer ({type(exc).__name__})"
                )
                if not safe:
                    raise await self.unknown(key, reason) from None
                failure = TransportError(f"{what}: {reason}")
            else:
                answered = time.monotonic()
                if http.provider.confirms_idempotency(response.headers):
                    await self._confirm_keys()
                try:
                    if not response.is_success:
                        raise http.error_of(response, what, None)
                    payload = http.decoded(response, what, None)
                    submitted = http.provider.read_submit(payload, response.headers)
                except ProtocolError as exc:
                    may_exist = True  # an answer we cannot read may still stand for a task
                    if not safe:
                        raise await self.unknown(key, f"its answer could not be read ({exc})") from None
                    failure = exc
                except APIError as error:
                    keyed = capabilities.idempotency_codes.get(error.code or "")
                    if keyed:
                        await self._confirm_keys()  # only a host that honours keys answers these
                    if keyed == "reused":
                        await self._journal(store.record_status, key, "failed", 0, error=str(error))
                        raise
                    if keyed == "indeterminate":
                        raise await self.unknown(key, f"{host} cannot tell whether it created the task") from None
                    if keyed in ("in_progress", "unavailable"):
                        # in progress: the first request with this key is being processed, so the
                        # task may well exist; unavailable: nothing was done yet.
                        may_exist = may_exist or keyed == "in_progress"
                        failure, retry_after = error, error.retry_after if error.retry_after is not None else 1.0
                    elif error.status_code in (408, 429) and is_retryable(error.status_code, error.type):
                        if not self._retry.honours(error.retry_after):
                            await self._settle_refused(key, error, may_exist)
                            raise
                        failure, retry_after = error, error.retry_after  # refused outright: nothing exists
                    elif error.status_code in (502, 503, 504) and is_retryable(error.status_code, error.type):
                        may_exist = True
                        if not safe:
                            raise await self.unknown(key, f"{host} answered HTTP {error.status_code}: {error.detail}") from None
                        failure, retry_after = error, error.retry_after
                    elif error.status_code >= 500 and not _bad_parameter(error, capabilities.parameter_refusal_codes):
                        # API.md 7.1/7.3: a 5xx after the body was sent leaves the outcome unknown;
                        # a 500 is never resent on its own (the provider also uses it for bad
                        # parameters). The server's message is in the one line the user gets.
                        raise await self.unknown(
                            key, f"{host} answered HTTP {error.status_code}: {error.detail}"
                        ) from None
                    else:
                        # A definite answer (a host's 500 for a bad parameter among them):
                        # shown at once, never resent.
                        await self._settle_refused(key, error, may_exist)
                        raise
                else:
                    await self._journal_submitted(key, submitted, fresh=fresh, sent=sent, answered=answered,
                                                  model=request.model)
                    return submitted
            if may_exist and not await self.keys_honoured():
                # The user's one resend got no definite answer either: report, never send again.
                raise await self.unknown(key, f"the resend got no definite answer ({failure})") from None
            if attempt + 1 < self._retry.max_attempts:
                delay = self._retry.backoff(attempt, retry_after)
                logger.log(retry_log_level(), "qimage_nb: %s failed (%s); retry %d of %d with the same key in %.1f s",
                           what, failure, attempt + 1, self._retry.max_attempts - 1, delay)
                note_retry(what, failure, attempt + 1, self._retry.max_attempts - 1, delay)
                await asyncio.sleep(delay)
        assert failure is not None
        if may_exist:
            raise await self.unknown(
                key, f"no definite answer after {self._retry.max_attempts} attempts ({failure})"
            ) from None
        failure = http.unreachable(failure, self._retry.max_attempts, started)
        await self._journal(store.record_status, key, "failed", 0, error=str(failure))
        raise failure

    def abandoned(self, key: str) -> None:
        """An interrupt or a cancelled wait before the submit's answer: nobody waits for it now,
        so it is not "in flight" any more; its outcome is unknown until the user resends it.
        (Synchronous on purpose: this runs while the task is being cancelled.)"""
        store = self._journal.store
        job = store.get(key)
        if job is not None and job.task_id is None and job.status == "submitting" and not job.outcome_unknown:
            store.mark_outcome_unknown(key, "the wait was interrupted before the submit's answer")

    async def _settle_refused(self, key: str, error: APIError, may_exist: bool) -> None:
        """A definite refusal. After an attempt that may have created the task, the refusal does
        not prove nothing exists: the entry stays open ('outcome unknown') for the user to decide."""
        store = self._journal.store
        if may_exist:
            await self._journal(store.mark_outcome_unknown, key, f"a later attempt was refused ({error.message})")
        else:
            await self._journal(store.record_status, key, "failed", 0, error=str(error))

    async def _journal_submitted(
        self, key: str, submitted: Submitted, *, fresh: bool, sent: float, answered: float, model: str
    ) -> None:
        if fresh and not submitted.replayed:
            self._submit_times.note(submitted.task_id, sent, answered, model)
        await self._journal(self._journal.store.set_task_id, key, submitted.task_id)
        await self._journal(self._journal.store.record_status, key, "pending", 0)
