"""Coming back to a task: resume (re-attach without submitting again), resend (the user's explicit
choice for a submit whose outcome is unknown), and adopting a task this journal never saw.

A task lives on the server it was sent to: nothing here ever sends a journaled request to another.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .._contract import GenerationRequest
from .._exceptions import (
    BadRequestError,
    NotFoundError,
    TaskCancelledError,
    TaskFailedError,
    ValidationError,
    task_name,
)
from ._config import _check_task_id
from ._results import Generation, UpdateCallback, _Progress

if TYPE_CHECKING:
    from ..journal._store import JobRecord
    from ._http import Connection
    from ._journaling import Journal
    from ._pipeline import Pipeline
    from ._submit import Submitter

__all__ = ["Resumer"]


class Resumer:
    """Resume, resend and adopt, for one client's origin and journal."""

    def __init__(self, connection: Connection, journal: Journal, submitter: Submitter, pipeline: Pipeline) -> None:
        self._http = connection
        self._journal = journal
        self._submitter = submitter
        self._pipeline = pipeline

    async def resume(
        self, task_id: str, *, on_update: UpdateCallback | None = None, timeout: float | None = None
    ) -> Generation:
        """See ``AsyncClient.resume``."""
        store = self._journal.store
        task_id = _check_task_id(task_id, "resume")
        known = await self._journal(store.get, task_id)
        job = known or await self.adopt(task_id)
        progress = _Progress(job.request, on_update, job.label, None, time.monotonic())
        if job.downloaded:
            return await self._pipeline.from_disk(job, progress, cached=False)
        if job.status in ("failed", "cancelled"):
            raise (TaskCancelledError if job.status == "cancelled" else TaskFailedError)(
                f"{task_name(job.task_id or job.key)} {job.status}: {job.error or 'no reason given'}",
                task_id=job.task_id,
            )
        self.same_origin(job)
        try:
            return await self._pipeline.track(job, progress, timeout=timeout, immediate=True)
        except (NotFoundError, BadRequestError) as exc:
            if known is not None:
                raise
            # A task id neither the journal nor the server knows: the row adopted for it goes (a
            # failed row would stay in the history, and the next try would say something else).
            await self._journal(store.forget, job.key)
            if not isinstance(exc, NotFoundError):
                raise
            raise NotFoundError(
                f"{task_id} is not a task of {self._http.host} (unknown or expired task, HTTP {exc.status_code}) "
                "and not in the journal: nothing was resumed or recorded; %qimage pending (client.pending()) "
                "lists the tasks waiting here",
                status_code=exc.status_code, task_id=task_id, code=exc.code, error_type=exc.type,
            ) from None

    async def resend(
        self, key: str, *, on_update: UpdateCallback | None = None, timeout: float | None = None
    ) -> Generation:
        """See ``AsyncClient.resend``."""
        key = _check_task_id(key, "resend")
        job = await self._journal(self._journal.store.get, key)
        if job is None:
            raise ValidationError("key", f"no journal entry {key!r}: see %qimage pending for what can be resent")
        if job.task_id is not None:
            return await self.resume(job.task_id, on_update=on_update, timeout=timeout)
        if job.in_flight and not await self._submitter.keys_honoured():
            raise ValidationError(
                "key", f"{key} is still being submitted (since {time.strftime('%H:%M:%S', time.localtime(job.created_at))}): "
                "wait for its answer; only an entry whose outcome is unknown is resent",
            )
        self.same_origin(job)
        progress = _Progress(job.request, on_update, job.label, None, time.monotonic())
        return await self._pipeline.track(job, progress, timeout=timeout, immediate=False, force=True)

    def same_origin(self, job: JobRecord) -> None:
        """Refuse, in one line, an entry that was sent to another server than this client's."""
        base_url = self._http.base_url
        if job.origin is not None and job.origin != base_url:
            # Another server does not know this task; with no task id yet, resuming here would even
            # submit the request again and bill it twice.
            if job.scope is not None and job.scope != job.origin:
                # A server whose scope outlives its address (the in-kernel emulator): that address
                # held an emulator of a kernel since restarted, or of another kernel.
                raise ValidationError(
                    "task_id",
                    f"{job.task_id or job.key} belonged to the emulator at {job.origin}, which is gone "
                    "(its kernel was restarted or stopped, or it runs in another kernel): an emulator's "
                    "tasks end with it; run the cell again for new images",
                )
            raise ValidationError(
                "base_url",
                f"{job.task_id or job.key} was sent to {job.origin}, not {base_url}: resume it with "
                f"a client for that API (base_url={job.origin!r})",
            )

    async def adopt(self, task_id: str) -> JobRecord:
        """Journal a task this store never saw (submitted elsewhere) so it can be polled and kept."""
        store = self._journal.store
        # The prompt is unknown: an unvalidated request with an empty prompt keeps provenance honest
        # and can never match a real request's fingerprint in the cache.
        placeholder = GenerationRequest(prompt="")
        key = f"adopted:{task_id}"
        await self._journal(
            store.begin, placeholder, key, label="resumed by task id", origin=self._http.base_url,
            scope=self._pipeline.cache_scope,
        )
        await self._journal(store.set_task_id, key, task_id)
        job = await self._journal(store.get, key)
        assert job is not None
        return job
