"""One task at the host, by its id: a status poll, a cancel with what it means for the bill, and a
completed task's images.

These are the client's single-task operations; a whole generation (submit, wait, download, each
step journaled) is ``_pipeline.Pipeline``'s job, and coming back to a task is ``_resume.Resumer``'s.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from .._contract import TaskStatus
from .._exceptions import ProtocolError, QImageError, ValidationError
from ._answers import cancel_at_host, cancel_note, with_result
from ._config import _check_task_id
from ._results import _Progress
from ._waiting import raise_for_terminal

if TYPE_CHECKING:
    from PIL import Image

    from ._download import Downloads
    from ._http import Connection
    from ._journaling import Journal
    from ._resume import Resumer

__all__ = ["Tasks"]


class Tasks:
    """Status, cancel and download of one task on one client's host."""

    def __init__(self, connection: Connection, journal: Journal, downloads: Downloads, resumer: Resumer) -> None:
        self._http = connection
        self._journal = journal
        self._downloads = downloads
        self._resumer = resumer

    async def get(self, task_id: str) -> TaskStatus:
        task_id = _check_task_id(task_id, "get_task")
        payload = await self._http.call(self._http.provider.poll(task_id), what=f"status of {task_id}", task_id=task_id)
        try:
            return await with_result(self._http, self._http.provider.read_task(payload, task_id))
        except ProtocolError as exc:
            exc.task_id = exc.task_id or task_id
            raise

    async def cancel(self, task_id: str) -> TaskStatus:
        task_id = _check_task_id(task_id, "cancel")
        provider, store = self._http.provider, self._journal.store
        call = provider.cancel(task_id)
        if call is None:
            raise ValidationError(
                "task_id", f"{provider.title} has no way to cancel a task: it runs to its end "
                "(a failed task is not billed); stop waiting instead, and resume it later"
            )
        try:
            before: TaskStatus | None = await self.get(task_id)  # whether it had started, for the note
        except QImageError:
            before = None
        answer, accepted = await cancel_at_host(self._http, call, task_id)
        status = await self.get(task_id)
        job = await self._journal(store.get, task_id)
        if job is not None and status.terminal:
            await self._journal(store.record_status, job.key, status.status, status.progress)
        note = cancel_note(provider.title, answer, accepted, before, status)
        return dataclasses.replace(status, raw={**status.raw, "cancel_answer": answer, "cancel_note": note})

    async def download(self, task: TaskStatus | str) -> list[Image.Image]:
        status = task if isinstance(task, TaskStatus) else await self.get(task)
        raise_for_terminal(status)
        job = await self._journal(self._journal.store.get, status.task_id)
        if job is None:
            job = await self._resumer.adopt(status.task_id)
        progress = _Progress(job.request, None, job.label, None, time.monotonic())
        images, _ = await self._downloads.fetch_all(job, status, progress)
        return images
