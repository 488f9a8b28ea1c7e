"""``%%qimage --provider apimart,dashscope,fal,replicate``: the host as a grid axis.

The same prompt (and every other axis of the cell) on several hosts at once, in one labelled grid:
one column per host, each tile labelled with its host and, where the host's answers carry no
price, the price table's estimate; each generation's line says its time from submit to image and
what the host said it cost. Every request is checked against its host before anything is sent on
any host; each host's requests run through that host's client (its own journal entries, its own
retries and waiting), all hosts at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

if TYPE_CHECKING:
    from .._contract import GenerationRequest
    from ..core._client import AsyncClient
    from ..core._results import Generation, Update
    from ._magics import QImageMagics


def _estimate(provider: Any, request: GenerationRequest) -> str | None:
    """``est. $0.035/image`` from a host's price table, for hosts whose answers carry no price."""
    prices = getattr(provider, "prices", ()) or ()
    for model, resolution, price in prices:
        if model == request.model and resolution == request.resolution:
            return f"est. ${price:g}/image"
    return None


def run_host_grid(magics: QImageMagics, args: Any, prompt: str, hosts: list[str]) -> None:
    from ..core._sync import run_sync
    from ._display import LiveGallery, LiveSlot
    from ._host_cancel import cancel_at_host, split_notes
    from ._magic_session import no_key
    from ._session import get_session

    if args.ref:
        raise UsageError("--ref takes one host at a time: run the grid without references, or one cell per host")
    if args.background:
        raise UsageError("--background takes one host at a time: drop it for a grid of hosts")
    plan = magics._plan(args, prompt)
    thumb_px, fmt, concurrency = magics._checked_display_settings()
    cell = magics._build(plan, None)
    session = get_session()
    providers = []
    for name in hosts:
        try:
            provider = session.provider(name)
        except Exception as exc:
            raise UsageError(f"--provider {name}: {exc}") from None
        if provider.name in [p.name for p in providers]:
            continue
        if not session.has_key_for(provider.name):
            raise UsageError(no_key(provider))
        providers.append(provider)
    clients: list[AsyncClient] = [session.client(p.name) for p in providers]

    async def check_all() -> None:
        from .._exceptions import ValidationError

        for provider, client in zip(providers, clients, strict=True):
            for request in cell.requests:
                try:
                    await client.check(request)
                except ValidationError as exc:
                    raise UsageError(f"{provider.title}: {exc.message} (nothing was sent to any host)") from None

    run_sync(check_all())  # every request on every host, before anything is sent anywhere
    width = len(providers)
    slots, notes = [], []
    for request, label in zip(cell.requests, cell.labels, strict=True):
        for provider in providers:
            estimate = _estimate(provider, request)
            bits = [provider.title, *([label] if label else []), *([estimate] if estimate else [])]
            slots.append(LiveSlot(request=request, label=" · ".join(bits)))
    for client in clients:
        notes.extend(split_notes(client, cell.requests))
    emulated = [p.title for p in providers if session.emulator_for(p.name) is not None]
    subtitle = (f"{width} hosts x {len(cell.requests)} combination{'s' if len(cell.requests) > 1 else ''} "
                f"x {plan.n} -> {plan.name}")
    if emulated:
        subtitle += f" · from the emulator ({', '.join(emulated)})" if len(emulated) < width else " · from the emulators"
    from .._contract import _short

    live = LiveGallery(slots, title=_short(plan.prompt, 200), subtitle=subtitle, banner=None, thumb_px=thumb_px,
                       fmt=fmt, columns=width * plan.n)
    live.notes.extend(notes)
    live.show()

    label = f"%%qimage -o {plan.name}"  # the journal's label of this cell's tasks, on every host

    async def execute() -> list[Generation]:
        def relay(column: int) -> Any:
            def forward(update: Update) -> None:
                live.on_update(update, (update.batch_index or 0) * width + column)
            return forward

        per_host = await asyncio.gather(*(
            client.generate_many(cell.requests, concurrency=concurrency, on_update=relay(column),
                                 timeout=plan.timeout, cache=not plan.fresh, labels=[label] * len(cell.requests),
                                 progress=False)  # the cell's one grid shows every host's progress
            for column, client in enumerate(clients)
        ))
        return [per_host[column][combo] for combo in range(len(cell.requests)) for column in range(width)]

    started = time.time()
    try:
        generations = run_sync(execute())
    except KeyboardInterrupt:
        live.interrupted()
        for client in clients:
            if client.provider.capabilities.cancel_on_stop:
                cancel_at_host(client, started, label)
        return
    except BaseException as exc:
        raise magics._surface(exc, live) from None
    magics._conclude(plan.name, generations, live)
