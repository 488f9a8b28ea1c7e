"""What a host answers beyond a status: a completed task's images fetched from where the host keeps
them (a result URL, when its status says only that the task is done), and a cancel's answer in the
host's own words with whether the task may still be billed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._exceptions import BadRequestError, NotFoundError
from ..providers import ErrorInfo

if TYPE_CHECKING:
    from .._contract import TaskStatus
    from ..providers import Call
    from ._http import Connection

__all__ = ["cancel_at_host", "cancel_note", "with_result"]


async def with_result(connection: Connection, status: TaskStatus) -> TaskStatus:
    """``status``, or, for a completed status whose answer lists no images, the status completed
    from the host's result; a result the host refuses (an input refused there) is the task's failure."""
    provider = connection.provider
    call = provider.result(status.task_id) if status.status == "completed" and not status.urls else None
    if call is None:
        return status
    try:
        payload = await connection.call(call, what=f"result of {status.task_id}", task_id=status.task_id)
    except (BadRequestError, NotFoundError) as error:
        info = ErrorInfo(message=error.detail, code=error.code, type=error.type, param=error.param)
        return provider.failed_result(status, info)
    return provider.read_result(payload, status)


async def cancel_at_host(connection: Connection, call: Call, task_id: str) -> tuple[str, bool]:
    """(the host's answer, whether it accepted) for a cancel. Where the host words a refusal as an
    answer (``provider.cancel_refused``: "already completed") it is said beside the task's
    status; any other refusal is raised as it is (a task no longer queued, say)."""
    try:
        payload: Any = await connection.call(call, what=f"cancel of {task_id}", task_id=task_id)
    except (BadRequestError, NotFoundError) as error:
        answer = connection.provider.cancel_refused(error.code)
        if answer is None:
            raise
        return answer, False
    return connection.provider.read_cancel(200, payload), True


def cancel_note(host: str, answer: str, accepted: bool, before: TaskStatus | None, after: TaskStatus) -> str:
    """One line on a cancel: what the host answered, and whether the task may still be billed."""
    said = f"{host} answered {answer}"
    if after.status == "completed":
        return f"{said}: the task had already finished (billed); its images can still be fetched"
    if before is not None and before.status == "pending" and after.status == "cancelled":
        return f"{said}: the task never started, so it is not billed"
    if after.status == "cancelled":
        return f"{said}: the task was running when cancelled, so the host may still bill it"
    if not accepted:
        return f"{said}: the cancel was refused; the task goes on and will be billed if it finishes"
    return f"{said}: the task is still {after.phase}; it may finish (and be billed) before it stops"
