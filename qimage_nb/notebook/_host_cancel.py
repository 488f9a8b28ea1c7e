"""What stopping a wait does on a host that cancels (fal, Replicate), for both faces: the cell's
unfinished tasks cancelled at the host after an interrupt, a panel run's task after its Cancel,
each with the host's answer; and the line that says a request is several submits there.

Imports nothing of the faces, so the magic, the host grid and the panel can all use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core._client import AsyncClient

__all__ = ["cancel_at_host", "cancel_run_at_host", "cancel_stopped", "split_notes"]


def split_notes(client: AsyncClient, requests: list[Any]) -> list[str]:
    """A line for each request the host makes as several submits (fal: 4 images each, Replicate: 1)."""
    notes = []
    per = client.provider.capabilities.images_per_submit
    for request in requests:
        parts = client.provider.split(request)
        if len(parts) > 1:
            sizes = " + ".join(str(part.n) for part in parts)
            notes.append(f"{client.provider.title} makes at most {per} image{'s' if per > 1 else ''} per request: "
                         f"{request.n} images are {len(parts)} submits ({sizes}), each journaled and billed")
    return notes


def cancel_at_host(client: AsyncClient, since: float, label: str | None = None) -> None:
    """After an interrupt, cancel this cell's unfinished tasks at the host (fal, Replicate: a task
    cancelled while queued is never billed) and print the host's answer for each. This cell's: sent
    since it started, under its label (a split request's parts and --each items carry the cell's
    label first), so another notebook's tasks in the same journal are left alone."""
    from ..core._sync import run_sync

    def ours(entry: Any) -> bool:
        return entry.created_at >= since - 1 and bool(entry.task_id) and (
            label is None or (entry.label or "").startswith(label))

    try:
        task_ids = [e.task_id for e in client.pending() if ours(e)]
    except Exception:
        return
    for task_id in task_ids:
        try:
            status = run_sync(client.cancel(task_id))
            print(f"task {task_id}: {status.raw.get('cancel_note') or status.phase}")
        except Exception as exc:
            print(f"task {task_id}: the cancel at {client.provider.title} failed ({exc}); "
                  f"%qimage resume {task_id} fetches it if it finishes")


async def cancel_run_at_host(run: Any) -> None:
    """A panel run stopped by its Cancel: the task cancelled at the host too (where stopping a
    wait does that), the host's answer put on the run's status line when it comes."""
    try:
        status = await run.client.cancel(run.task_id)
        note = str(status.raw.get("cancel_note") or f"the task is {status.phase}")
    except Exception as exc:  # the run stays cancelled here; say what happened
        note = f"the cancel of task {run.task_id} failed: {exc}"
    run.host_cancel = f"cancelled at the host: {note}"
    run._record_unfinished(None)  # the run's Generation says it too
    run.render()


def cancel_stopped(client: AsyncClient, task_ids: list[str]) -> None:
    """After an interrupt, ask a host that can cancel (DashScope's asynchronous models, while
    queued) to cancel what was stopped; one printed line per task says what the host did."""
    from ..core._sync import run_sync
    from ._refs import cancel_on_host

    for task_id in task_ids:
        try:
            line = run_sync(cancel_on_host(client, task_id))
        except KeyboardInterrupt:
            print(f"task {task_id}: not cancelled (interrupted again); %qimage resume {task_id} fetches it")
            continue
        if line:
            print(f"task {task_id}: {line}")
