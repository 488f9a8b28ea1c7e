"""Many generations (or resumes) at once: at most ``concurrency`` in flight, results in input order,
one failure never stopping the others (its ``Generation.error`` says what happened)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._contract import GenerationRequest
from .._exceptions import QImageError, ValidationError
from ._config import _check_count, _check_seconds, _check_task_id
from ._parts import run_split
from ._requests import coerce_request
from ._results import Generation, Update, UpdateCallback
from ._submit import new_idempotency_key

if TYPE_CHECKING:
    from ._account import Account
    from ._http import Connection
    from ._journaling import Journal
    from ._pipeline import Pipeline
    from ._resume import Resumer

__all__ = ["Batches"]


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

    async def generate_many(
        self,
        requests: Iterable[GenerationRequest | Mapping[str, Any] | str],
        *,
        concurrency: int,
        on_update: UpdateCallback | None,
        timeout: float | None,
        cache: bool,
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
        self._http.auth()
        for index, request in enumerate(batch):
            try:
                await self._account.check(request)
            except ValidationError as exc:
                raise ValidationError(exc.field, f"request {index}: {exc.message}") from None
        gate = asyncio.Semaphore(limit)

        async def one(index: int, request: GenerationRequest) -> Generation:
            # A slot is a task on the server: it is handed on as soon as the task is over there, so
            # the next submit overlaps this one's downloads (bounded on their own, per client).
            await gate.acquire()
            held = True

            def settled() -> None:
                nonlocal held
                if held:
                    held = False
                    gate.release()

            key = new_idempotency_key()
            try:
                if len(self._http.provider.split(request)) > 1:
                    return await run_split(self._pipeline.run, self._http.provider, request, on_update=on_update,
                                           timeout=timeout, cache=cache, batch_index=index)
                return await self._pipeline.run(
                    request, on_update=on_update, timeout=timeout, cache=cache, batch_index=index, key=key,
                    settled=settled,
                )
            except QImageError as exc:
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

        return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(batch))))

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
