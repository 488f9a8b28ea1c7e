"""What a generation hands back: ``Update`` (each step, for progress displays) and ``Generation``
(the result), plus ``_Progress``, which builds one generation's stream of updates.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._contract import GenerationRequest, TaskStatus
from .._exceptions import QImageError
from ._retry import chain_observers, retry_observer

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Batch", "Generation", "Update", "UpdateCallback"]

logger = logging.getLogger("qimage_nb")

UpdateCallback = Callable[["Update"], "Awaitable[None] | None"]


@dataclass(frozen=True)
class Update:
    """One step of a generation, for progress displays (``on_update``).

    ``stage`` is one of ``"submitting"``, ``"queued"`` (the host's submitted, queued or pending),
    ``"running"`` (its processing or in_progress), ``"completed"``, ``"downloading"`` (an image
    arrived), ``"done"``, ``"failed"``, ``"cancelled"`` or ``"error"``. ``images`` has one slot
    per expected image, in the API's order: ``None`` until that image has downloaded.
    """

    request: GenerationRequest
    stage: str
    task_id: str | None = None
    progress: int = 0
    elapsed: float = 0.0
    estimated_time: float | None = None
    images: tuple[Image.Image | None, ...] = ()
    new_image: int | None = None
    error: QImageError | None = None
    cached: bool = False
    cached_at: float | None = None
    label: str | None = None
    batch_index: int | None = None
    reattached: bool = False  # waiting on an earlier, unfinished run of the same request
    queue_position: int | None = None  # requests ahead in the host's queue, where it says
    cost: float | None = None  # what the host says the task costs, once it says
    retry: str | None = None  # a request being retried now, and why ("... ; retry 2 of 5 in 1.5 s")

    @property
    def done(self) -> bool:
        return self.stage in ("done", "failed", "cancelled", "error")

    @property
    def eta(self) -> float | None:
        """Seconds left by the server's (usually pessimistic) estimate, or None."""
        if self.estimated_time is None or self.done:
            return None
        return max(0.0, self.estimated_time - self.elapsed)


@dataclass
class Generation:
    """The result of one generation request.

    ``images`` are PIL images in the order the API returned them, opened lazily from the files on
    disk (``paths``); each carries its provenance in ``.info`` (prompt, model, size, resolution,
    task_id, source_url, ...). In a batch, a failed request has ``error`` set and no images.
    """

    task_id: str | None
    request: GenerationRequest
    urls: list[str] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    status: str = "completed"
    cached: bool = False
    created_at: float | None = None
    completed_at: float | None = None
    idempotency_key: str | None = None
    label: str | None = None
    error: QImageError | None = None
    # What the host said: the price of the task, the prompt it really used (after its rewriting),
    # the seed it used. None where it did not say.
    cost: float | None = None
    actual_prompt: str | None = None
    seed: int | None = None
    # Every task that made these images, when the host needed several submits for them (it makes
    # fewer images per submit than asked); ``task_id`` is the first.
    task_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == "completed"

    def __repr__(self) -> str:
        prompt = self.request.prompt
        short = prompt if len(prompt) <= 40 else prompt[:37] + "..."
        pixels = self.images[0].size if self.images else self.request.pixel_size
        size = f" {pixels[0]}x{pixels[1]}" if pixels else ""
        state = f"error={type(self.error).__name__}" if self.error else f"{len(self.images)} images{size}"
        cached = " cached" if self.cached else ""
        return f"<Generation {self.task_id} {state}{cached} {self.request.model} prompt={short!r}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from ..view._gallery import gallery_bundle

        return gallery_bundle([self])


class Batch(list):  # type: ignore[type-arg]
    """``generate_many``'s results: a plain list of :class:`Generation` in input order, which a
    notebook shows as one labelled grid (``qimage_nb.grid``) instead of a gallery per item."""

    # Set when a live progress display already drew this batch's grid: the cell's own result then
    # shows as text once, not as a second grid of the same pictures.
    shown_live = False

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from ..view._grid import grid

        if self.shown_live:
            self.shown_live = False
            return {"text/plain": "\n".join(repr(gen) for gen in self)}
        failed = [gen for gen in self if getattr(gen, "error", None) is not None]
        title = f"{len(self)} generations" + (f", {len(failed)} failed" if failed else "")
        bundle = grid([gen for gen in self if getattr(gen, "error", None) is None], title=title)._repr_mimebundle_()
        bundle["text/plain"] = "\n".join(repr(gen) for gen in self)
        return bundle


def retries_as_updates(
    request: GenerationRequest, on_update: UpdateCallback, batch_index: int | None = None
) -> tuple[UpdateCallback, Callable[..., None]]:
    """(``on_update`` that remembers the last update, a retry observer that tells ``on_update``
    each retry as that update with ``retry`` set): retries reach a caller's callback as they happen."""
    import asyncio

    last: list[Update] = []
    pending: set[Any] = set()  # callbacks scheduled from a retry, kept until they ran

    def report(update: Update) -> Awaitable[None] | None:
        last[:] = [update]
        return on_update(update)

    def retried(what: str, failure: BaseException, retry: int, retries: int, delay: float) -> None:
        base = last[0] if last else Update(request=request, stage="submitting", batch_index=batch_index)
        text = f"{failure}; retry {retry} of {retries} in {delay:.1f} s"
        try:
            result = on_update(replace(base, retry=text))
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                pending.add(task)
                task.add_done_callback(pending.discard)
        except Exception:  # a broken progress display must never cost the user a paid image
            logger.exception("qimage_nb: on_update callback failed")

    return report, retried


@contextlib.contextmanager
def reporting_retries(request: GenerationRequest, on_update: UpdateCallback | None) -> Iterator[UpdateCallback | None]:
    """Within the block, ``on_update`` (as yielded) also hears each retry as it happens (an
    ``Update`` with ``retry`` set), beside whoever else observes retries."""
    if on_update is None:
        yield None
        return
    report, retried = retries_as_updates(request, on_update)
    token = retry_observer.set(chain_observers(retry_observer.get(), retried))
    try:
        yield report
    finally:
        retry_observer.reset(token)


class _Progress:
    """Builds the ``Update`` stream of one generation and shields it from callback failures."""

    def __init__(
        self,
        request: GenerationRequest,
        callback: UpdateCallback | None,
        label: str | None,
        batch_index: int | None,
        started: float,
    ) -> None:
        self.request = request
        self.callback = callback
        self.label = label
        self.batch_index = batch_index
        self.started = started
        self.images: list[Image.Image | None] = [None] * request.n
        self.reattached = False
        self._last: Update | None = None

    def reset(self, count: int) -> None:
        if count != len(self.images):
            self.images = [None] * count

    async def emit(
        self,
        stage: str,
        *,
        task_id: str | None = None,
        status: TaskStatus | None = None,
        new_image: int | None = None,
        error: QImageError | None = None,
        cached: bool = False,
        cached_at: float | None = None,
    ) -> None:
        base = self._last or Update(request=self.request, stage=stage, label=self.label, batch_index=self.batch_index)
        update = replace(
            base,
            stage=stage,
            task_id=task_id or base.task_id,
            progress=status.progress if status else (100 if stage == "done" else base.progress),
            elapsed=time.monotonic() - self.started,
            estimated_time=status.estimated_time if status and status.estimated_time else base.estimated_time,
            queue_position=status.queue_position if status else None,
            images=tuple(self.images),
            new_image=new_image,
            error=error,
            cached=cached,
            cached_at=cached_at,
            reattached=self.reattached,
            cost=status.cost if status is not None and status.cost is not None else base.cost,
            retry=None,
        )
        self._last = update
        if self.callback is None:
            return
        try:
            result = self.callback(update)
            if inspect.isawaitable(result):
                await result
        except Exception:  # a broken progress display must never cost the user a paid image
            logger.exception("qimage_nb: on_update callback failed")
