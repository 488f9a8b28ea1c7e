"""One generation's steps, from a checked request to its images: the journal's cache, the submit,
the wait, the downloads, each journaled before and after it happens.

The journal is written so that a kernel that dies at any moment loses nothing it paid for: the
Idempotency-Key before the POST (``Store.begin``), the task id as soon as it is known, every status
change, and every image as soon as its bytes are on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from .._contract import GenerationRequest, TaskStatus
from .._exceptions import (
    APIError,
    BadRequestError,
    NotFoundError,
    QImageError,
    SubmitOutcomeUnknown,
    TaskCancelledError,
    TaskFailedError,
)
from ..journal._provenance import open_stored
from ._observe import bill
from ._results import Generation, UpdateCallback, _Progress
from ._submit import new_idempotency_key
from ._waiting import one_status, raise_for_terminal

if TYPE_CHECKING:
    from ..journal._store import JobRecord
    from ._download import Downloads
    from ._http import Connection
    from ._journaling import Journal
    from ._submit import Submitter

__all__ = ["Pipeline", "task_is_gone"]

logger = logging.getLogger("qimage_nb")

# (task_id, timeout=, immediate=, started=) -> the task's statuses: the client's wait.
Updates = Callable[..., AsyncIterator[TaskStatus]]


def task_is_gone(error: APIError) -> bool:
    """The host says it no longer has this task (API.md 7.3: 404, or a 400 "task does not exist or
    has expired" on some deployments), as opposed to any other refusal."""
    if isinstance(error, NotFoundError):
        return True
    words = error.message.lower()
    return any(phrase in words for phrase in ("not exist", "expired", "invalid task", "not found"))


class Pipeline:
    """Runs generations for one client: its connection, journal, submits, wait and downloads."""

    def __init__(
        self,
        *,
        connection: Connection,
        journal: Journal,
        submitter: Submitter,
        updates: Updates,
        downloads: Downloads,
        cache_scope: str,
    ) -> None:
        self._http = connection
        self._journal = journal
        self._submitter = submitter
        self._updates = updates
        self._downloads = downloads
        self.cache_scope = cache_scope

    def find_cached(self, request: GenerationRequest) -> JobRecord | None:
        """The journal entry that would serve ``request`` from the cache (no request sent), or None."""
        return self._journal.store.find_cached(request.fingerprint(), scope=self.cache_scope)

    async def run(
        self,
        request: GenerationRequest,
        *,
        on_update: UpdateCallback | None,
        timeout: float | None,
        cache: bool,
        label: str | None = None,
        batch_index: int | None = None,
        key: str | None = None,
        settled: Callable[[], None] | None = None,
    ) -> Generation:
        """A checked request to its images: from the cache, by waiting on an identical unfinished
        entry (``cache``), or journaled under ``key`` (a fresh one by default) and submitted."""
        store, origin = self._journal.store, self._http.base_url
        progress = _Progress(request, on_update, label, batch_index, time.monotonic())
        if cache:
            hit = await self._journal(self.find_cached, request)
            if hit is not None:
                return await self.from_disk(hit, progress, cached=True)
            unfinished = await self._journal(store.find_unfinished, request.fingerprint(), origin=origin)
            if unfinished is not None:
                # The same request was already paid for (an interrupt, a timeout, a dead kernel):
                # a re-run waits for that task instead of buying another.
                self._http.auth()
                progress.reattached = True
                try:
                    return await self.track(unfinished, progress, timeout=timeout, immediate=True, settled=settled)
                except (NotFoundError, BadRequestError) as exc:
                    if not task_is_gone(exc):
                        raise  # the paid task is not shown to be gone: never abandon it for another
                    await self._journal(store.record_status, unfinished.key, "failed", 0, error=str(exc))
                    logger.warning("qimage_nb: %s; submitting afresh", exc)
                    progress = _Progress(request, on_update, label, batch_index, time.monotonic())
        self._http.auth()
        key = key or new_idempotency_key()
        fresh = await self._journal(store.get, key) is None
        job = await self._journal(store.begin, request, key, label=label, origin=origin, scope=self.cache_scope)
        try:
            await progress.emit("submitting")
            submitted = await self._submitter.send(request, key, fresh=fresh)
        except QImageError as exc:
            await progress.emit("error", error=exc)
            raise
        except BaseException:
            self._submitter.abandoned(key)
            raise
        # Tell the display the task id now, not at the first poll: a user who stops waiting in
        # between must be told which task to resume.
        await progress.emit("queued", task_id=submitted.task_id)
        job = await self._journal(store.get, key)
        assert job is not None
        return await self.track(
            job, progress, timeout=timeout, immediate=False, settled=settled, result=submitted.result
        )

    async def track(
        self,
        job: JobRecord,
        progress: _Progress,
        *,
        timeout: float | None,
        immediate: bool,
        settled: Callable[[], None] | None = None,
        result: TaskStatus | None = None,
        force: bool = False,
    ) -> Generation:
        """From a journaled job to its images: wait (unless the submit answered with the result),
        download. A job whose submit never got an answer is resent only where that is safe (the
        host honours keys) or asked for (``force``); otherwise it is reported, never resent."""
        store = self._journal.store
        try:
            task_id = job.task_id
            if task_id is None:
                if not force and job.in_flight and not await self._submitter.keys_honoured():
                    # Another wait (this kernel's or another's) is still sending it: neither
                    # resend nor mark it, or its own answer would be taken for a lost one.
                    raise SubmitOutcomeUnknown(
                        f"an identical request ({job.key}) is still being submitted; its answer is not "
                        "in yet: wait for it (%qimage pending shows it), or use --new for a separate one",
                        idempotency_key=job.key,
                    )
                if not (force or await self._submitter.keys_honoured()):
                    raise await self._submitter.unknown(job.key, "its submit never got an answer")
                try:
                    submitted = await self._submitter.send(job.request, job.key, fresh=False, force=force)
                except QImageError:
                    raise
                except BaseException:
                    self._submitter.abandoned(job.key)
                    raise
                task_id, result = submitted.task_id, submitted.result
                await progress.emit("queued", task_id=task_id)
            if result is None and job.status == "completed" and job.urls:
                # The host already said it is done, with these URLs (a result answered at once has
                # no task to poll; a finished task need not be asked again): fetch them.
                result = TaskStatus(task_id=task_id, status="completed", progress=100, urls=tuple(job.urls),
                                    cost=job.cost, raw_status="completed")
            last: TaskStatus | None = result
            updates = (
                one_status(result)
                if result is not None
                else self._updates(task_id, timeout=timeout, immediate=immediate, started=progress.started)
            )
            async for last in updates:
                await self._journal(
                    store.record_status, job.key, last.status, last.progress, urls=last.urls,
                    error=last.error.message if last.error else None, cost=last.cost,
                )
                await progress.emit(last.phase, task_id=task_id, status=last)
            assert last is not None
            if settled is not None:
                settled()  # the task is over on the server: its batch slot can take the next one
            raise_for_terminal(last)
            images, paths = await self._downloads.fetch_all(job, last, progress)
        except QImageError as exc:
            stage = {TaskFailedError: "failed", TaskCancelledError: "cancelled"}.get(type(exc), "error")
            await progress.emit(stage, task_id=exc.task_id or job.task_id, error=exc)
            raise
        generation = Generation(
            task_id=task_id,
            request=job.request,
            urls=list(last.urls),
            images=images,
            paths=paths,
            created_at=job.created_at,
            completed_at=time.time(),
            idempotency_key=job.key,
            label=job.label,
            cost=last.cost,
            actual_prompt=last.actual_prompt,
            seed=last.seed,
        )
        bill(generation)  # the process's spend, whichever face asked
        await progress.emit("done", task_id=task_id, status=last)
        return generation

    async def from_disk(self, job: JobRecord, progress: _Progress, *, cached: bool) -> Generation:
        """A downloaded entry's images from the journal's files, with no request at all."""
        # What each file records: when it was made, when its URL expires, where from.
        images = await self._journal(lambda: [open_stored(path) for path in job.image_paths if path is not None])
        progress.reset(len(images))
        for index, image in enumerate(images):
            progress.images[index] = image
        await progress.emit("done", task_id=job.task_id, cached=cached, cached_at=job.completed_at)
        return Generation(
            task_id=job.task_id,
            request=job.request,
            urls=list(job.urls),
            images=images,
            paths=[p for p in job.image_paths if p is not None],
            cached=cached,
            created_at=job.created_at,
            completed_at=job.completed_at,
            idempotency_key=job.key,
            label=job.label,
        )
