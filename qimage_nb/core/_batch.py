"""Many generations (or resumes) at once: at most ``concurrency`` in flight, results in input order,
one failure never stopping the others (its ``Generation.error`` says what happened)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._contract import GenerationRequest
from .._exceptions import QImageError, SubmitOutcomeUnknown, ValidationError
from ._config import _check_count, _check_seconds, _check_task_id
from ._estimate import Budget, Estimate, check_max_cost, estimate_requests, money
from ._observe import batch_display
from ._parts import run_split
from ._requests import coerce_request
from ._results import Batch, Generation, Update, UpdateCallback, retries_as_updates
from ._retry import chain_observers, retry_observer
from ._submit import new_idempotency_key

if TYPE_CHECKING:
    from ._account import Account
    from ._http import Connection
    from ._journaling import Journal
    from ._pipeline import Pipeline
    from ._resume import Resumer

__all__ = ["Batches"]

logger = logging.getLogger("qimage_nb")


class Batches:
    """``generate_many`` and ``resume_many`` over one client's parts."""

    def __init__(
        self, connection: Connection, journal: Journal, account: Account, pipeline: Pipeline, resumer: Resumer
    ) -> None:
        self._http = connection
        self._journal = journal
        self._account = account
        self._pipeline = pipeline
        self._resumer = resumer

    async def estimate(self, requests: Any, *, cache: bool) -> Estimate:
        """See ``AsyncClient.estimate``."""
        if isinstance(requests, (str, Mapping, GenerationRequest)):
            requests = [requests]
        default_model = self._http.provider.default_model
        inline = self._http.provider.capabilities.inline_refs
        batch = [coerce_request(item, i, default_model, inline) for i, item in enumerate(requests)]
        hits = [cache and await self._journal(self._pipeline.find_cached, r) is not None for r in batch]
        return await self._journal(
            estimate_requests, batch, provider=self._http.provider, store=self._journal.store,
            scope=self._pipeline.cache_scope, cached=hits,
        )

    async def _budget(self, batch: list[GenerationRequest], max_cost: float | None, cache: bool) -> Budget | None:
        """The batch's cap, or None; refuses (nothing sent) when the estimate is over it or unknown."""
        if max_cost is None:
            return None
        plan = await self.estimate(batch, cache=cache)
        refused = plan.refusal(max_cost)
        if refused is not None:
            raise ValidationError("max_cost", refused)
        return Budget(plan, max_cost)

    async def generate_many(
        self,
        requests: Iterable[GenerationRequest | Mapping[str, Any] | str],
        *,
        concurrency: int,
        on_update: UpdateCallback | None,
        timeout: float | None,
        cache: bool,
        max_cost: float | None = None,
        labels: Sequence[str | None] | None = None,
        progress: bool | None = None,
    ) -> list[Generation]:
        limit = _check_count("concurrency", concurrency)
        _check_seconds("timeout", timeout, allow_none=True)
        if isinstance(requests, (str, bytes, Mapping, GenerationRequest)) or not isinstance(requests, Iterable):
            # A bare prompt is iterable too: one image per character would be billed.
            raise ValidationError(
                "requests",
                f"generate_many takes a list of requests, got a {type(requests).__name__}; "
                "wrap one prompt in a list, or call generate()",
            )
        default_model = self._http.provider.default_model
        inline = self._http.provider.capabilities.inline_refs
        batch = [coerce_request(item, i, default_model, inline) for i, item in enumerate(requests)]
        names = list(labels) if labels is not None else [None] * len(batch)
        if len(names) != len(batch):
            raise ValidationError("labels", f"{len(names)} labels for {len(batch)} requests: give one per request")
        self._http.auth()
        for index, request in enumerate(batch):
            try:
                await self._account.check(request)
            except ValidationError as exc:
                raise ValidationError(exc.field, f"request {index}: {exc.message}") from None
        budget = await self._budget(batch, check_max_cost(max_cost), cache)
        shown = batch_display() if progress is not False else None
        display = shown(batch, labels) if shown is not None else None
        token = None
        if display is not None:
            on_update = _also(display.on_update, on_update)
            token = retry_observer.set(display.retrying)  # retries show on the batch's line
        gate = asyncio.Semaphore(limit)

        async def one(index: int, request: GenerationRequest) -> Generation:
            # A slot is a task on the server: it is handed on as soon as the task is over there, so
            # the next submit overlaps this one's downloads (bounded on their own, per client).
            await gate.acquire()
            held = True
            refused = budget.reserve(index) if budget is not None else None
            if refused is not None:
                gate.release()
                return Generation(task_id=None, request=request, status="not sent",
                                  error=ValidationError("max_cost", refused))

            def settled() -> None:
                nonlocal held
                if held:
                    held = False
                    gate.release()

            key = new_idempotency_key()
            report = on_update if budget is None else _counting(budget, index, on_update)
            if report is not None:  # this one's retries reach on_update (each one() is its own task)
                report, retried = retries_as_updates(request, report, index)
                retry_observer.set(chain_observers(retry_observer.get(), retried))
            try:
                if len(self._http.provider.split(request)) > 1:
                    done = await run_split(self._pipeline.run, self._http.provider, request, on_update=report,
                                           timeout=timeout, cache=cache, batch_index=index, label=names[index])
                else:
                    done = await self._pipeline.run(
                        request, on_update=report, timeout=timeout, cache=cache, batch_index=index, key=key,
                        settled=settled, label=names[index],
                    )
                if budget is not None:
                    budget.settle(index, done.cost, billed=not done.cached)
                return done
            except QImageError as exc:
                if budget is not None:
                    # Spent, as far as the cap knows: a lost answer may be billed; a host that bills
                    # what it refuses billed a task it had an id for; a request made as
                    # several submits may have had some parts billed. A task failed elsewhere is not.
                    provider = self._http.provider
                    billed = (isinstance(exc, SubmitOutcomeUnknown)
                              or (provider.capabilities.bills_refusals and exc.task_id is not None)
                              or len(provider.split(request)) > 1)
                    budget.settle(index, None, billed=billed)
                job = await self._journal(self._journal.store.get, key)
                return Generation(
                    task_id=exc.task_id or (job.task_id if job else None),
                    request=request,
                    status="failed",
                    idempotency_key=key,
                    error=exc,
                )
            finally:
                settled()

        try:
            results = Batch(await asyncio.gather(*(one(i, r) for i, r in enumerate(batch))))
        finally:
            if token is not None:
                retry_observer.reset(token)
        if display is not None:
            with contextlib.suppress(Exception):  # a display must never cost the results
                display.finish(results)
            results.shown_live = True
        if budget is not None and budget.stopped:
            logger.warning(
                "qimage_nb: stopped at max_cost %s: %d of %d generations not sent (%s spent)",
                money(budget.max_cost), budget.stopped, len(batch), money(budget.spent),
            )
        return results

    async def resume_many(
        self,
        task_ids: Iterable[str],
        *,
        concurrency: int,
        on_update: Callable[[int, Update], Awaitable[None] | None] | None,
        timeout: float | None,
        resend: bool,
    ) -> list[Generation]:
        limit = _check_count("concurrency", concurrency)
        _check_seconds("timeout", timeout, allow_none=True)
        if isinstance(task_ids, str) or not isinstance(task_ids, Iterable):
            raise ValidationError("task_ids", "resume_many takes a list of task ids; call resume() for one")
        ids = [_check_task_id(task_id, "resume_many") for task_id in task_ids]
        gate = asyncio.Semaphore(limit)
        step = self._resumer.resend if resend else self._resumer.resume

        async def one(index: int, task_id: str) -> Generation:
            def report(update: Update) -> Awaitable[None] | None:
                return on_update(index, update) if on_update is not None else None

            async with gate:
                try:
                    return await step(task_id, on_update=report, timeout=timeout)
                except QImageError as exc:
                    return Generation(
                        task_id=exc.task_id or task_id, request=GenerationRequest(prompt=""),
                        status="failed", error=exc,
                    )

        return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(ids))))


def _counting(budget: Budget, index: int, on_update: UpdateCallback | None) -> UpdateCallback:
    """``on_update`` with the batch's budget told each price as the host gives it."""

    def report(update: Update) -> Awaitable[None] | None:
        budget.on_update(index, update)
        return on_update(update) if on_update is not None else None

    return report


def _also(show: Callable[[Update], None], on_update: UpdateCallback | None) -> UpdateCallback:
    """The batch display told first, then the caller's ``on_update``."""

    def report(update: Update) -> Awaitable[None] | None:
        with contextlib.suppress(Exception):  # a display must never cost a paid image
            show(update)
        return on_update(update) if on_update is not None else None

    return report
