"""One request the host cannot make in one submit (``capabilities.images_per_submit``), made as
several submits at once and handed back as one generation.

Each part is its own journaled job (its own key, task id and bill), so a lost answer or an
interrupt affects one part only, and a re-run finds each part in the cache. The progress of the
parts is relayed as one stream of updates for the whole request: one slot per image, in order.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._exceptions import QImageError
from ._results import Generation, Update, UpdateCallback

if TYPE_CHECKING:
    from .._contract import GenerationRequest

__all__ = ["run_parts", "run_split"]

# How far a stage is from done: the whole request is as far as its least advanced part.
_RANK = {"submitting": 0, "queued": 1, "running": 2, "completed": 3, "downloading": 4, "done": 5}


async def run_parts(
    request: GenerationRequest,
    parts: list[GenerationRequest],
    run: Callable[[GenerationRequest, UpdateCallback | None, str | None], Awaitable[Generation]],
    *,
    on_update: UpdateCallback | None,
    label: str | None,
) -> Generation:
    """Run every part with ``run(part, on_update, label)`` concurrently; one :class:`Generation`
    with all images in order. A part that fails raises its error once the others have ended
    (their images are journaled and served from the cache by a re-run)."""
    latest: list[Update | None] = [None] * len(parts)
    offsets = [sum(part.n for part in parts[:k]) for k in range(len(parts))]

    def relay(index: int) -> UpdateCallback | None:
        if on_update is None:
            return None

        async def forward(update: Update) -> None:
            latest[index] = update
            images: list[Any] = []
            for part, seen in zip(parts, latest, strict=True):
                images.extend(seen.images if seen is not None and len(seen.images) == part.n else [None] * part.n)
            stages = [seen.stage if seen is not None else "submitting" for seen in latest]
            stage = update.stage if update.stage not in _RANK else min(stages, key=lambda s: _RANK.get(s, 0))
            ids = [seen.task_id for seen in latest if seen is not None and seen.task_id]
            combined = replace(
                update, request=request, stage=stage, images=tuple(images), task_id=ids[0] if ids else None,
                new_image=None if update.new_image is None else offsets[index] + update.new_image,
                progress=min((seen.progress if seen else 0) for seen in latest),
            )
            result = on_update(combined)
            if inspect.isawaitable(result):
                await result

        return forward

    count = len(parts)
    results = await asyncio.gather(
        *(run(part, relay(k), f"{label + ' ' if label else ''}part {k + 1}/{count}") for k, part in enumerate(parts)),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # an interrupt: each part's journal entry keeps what it reached
    failures = [result for result in results if isinstance(result, Exception)]
    if failures:
        first = failures[0]
        if isinstance(first, QImageError) and count > 1:
            done = count - len(failures)
            first.message = (f"{first.message} ({done} of {count} submits of this request finished; "
                             "their images are kept in the journal)")
        raise first
    generations = [result for result in results if isinstance(result, Generation)]
    costs = [g.cost for g in generations]
    head = generations[0]
    return Generation(
        task_id=head.task_id, request=request,
        urls=[url for g in generations for url in g.urls],
        images=[image for g in generations for image in g.images],
        paths=[path for g in generations for path in g.paths],
        cached=all(g.cached for g in generations), created_at=head.created_at,
        completed_at=max((g.completed_at or 0.0) for g in generations) or None,
        idempotency_key=head.idempotency_key, label=label,
        cost=sum(c for c in costs if c is not None) if all(c is not None for c in costs) else None,
        actual_prompt=head.actual_prompt, seed=head.seed,
        task_ids=[g.task_id for g in generations if g.task_id],
    )


async def run_split(
    run: Callable[..., Awaitable[Generation]],
    provider: Any,
    request: GenerationRequest,
    *,
    on_update: UpdateCallback | None,
    label: str | None = None,
    **options: Any,
) -> Generation:
    """``run(request, ...)``, or, where the host makes fewer images per submit than asked
    (``provider.split``), every part run at once and handed back as one generation."""
    parts = provider.split(request)
    if len(parts) == 1:
        return await run(request, on_update=on_update, label=label, **options)

    def one(part: GenerationRequest, relay: UpdateCallback | None, part_label: str | None) -> Awaitable[Generation]:
        return run(part, on_update=relay, label=part_label, **options)

    return await run_parts(request, parts, one, on_update=on_update, label=label)
