"""``%qimage resume``: a journaled task's images fetched without submitting again, or, with
``--resend``, a submit whose outcome is unknown sent again (only when the user says so).

Shown in the cell magic's live gallery and ended the way a ``%%qimage`` cell ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ._magic_args import DEFAULT_OUTPUT, parse

if TYPE_CHECKING:
    from ..core._client import Generation
    from ._magics import QImageMagics

__all__ = ["resume"]


@magic_arguments(name="qimage resume")
@argument("task_id", nargs="?", help="the task id (or journal key) to re-attach to")
@argument("--all", action="store_true", help="every task that was submitted but never downloaded")
@argument(
    "--resend", metavar="KEY", default=None,
    help="send a submit whose outcome is unknown again: the identical request with the same "
    "Idempotency-Key (a host that honours keys answers with the task it made; another may bill a "
    "second one)",
)
@argument("--provider", metavar="P", default=None, help="the provider the task belongs to (default: the one in use)")
@argument("-o", "--output", metavar="NAME", default=None, help=f"variable for the images (default {DEFAULT_OUTPUT})")
def resume(magics: QImageMagics, line: str) -> None:
    """%qimage resume [TASK_ID | --all | --resend KEY] [-o NAME]: fetch a task's images without
    submitting again (or, with --resend, send a submit whose outcome is unknown again)."""
    args = parse(resume, line)
    if sum(map(bool, (args.task_id, args.all, args.resend))) > 1:
        raise UsageError("pass one of a task id, --all or --resend KEY, not both")
    name = magics._checked_name(args.output)
    thumb_px, fmt, concurrency = magics._checked_display_settings()

    from .._exceptions import ValidationError
    from ..core._sync import run_sync
    from ._session import get_session

    session = get_session()
    provider = session.provider(args.provider)
    client = session.client(provider.name)
    if args.resend:
        ids = [args.resend.strip()]
    elif args.task_id:
        ids = [args.task_id.strip()]
    else:
        pending = client.pending()
        # A submit that got no answer is resent only when the user says so (--resend KEY).
        unanswered = [entry for entry in pending if not entry.task_id]
        ids = [entry.task_id for entry in pending if entry.task_id]
        if unanswered:
            print(
                f"not resumed: {len(unanswered)} submit{'s' if len(unanswered) != 1 else ''} whose outcome "
                "is unknown (no task id); %qimage pending shows the command that resends each"
            )
        if not ids:
            if not unanswered:
                print("nothing to resume: every task in the journal has its images (%qimage history lists them)")
            return
        if not args.all and len(ids) > 1:
            raise UsageError(
                f"{len(ids)} tasks are pending ({', '.join(ids)}); pass one task id, or --all"
            )
    # Without -o, each task's images go back to the name its cell chose (-o storm), else the default.
    from ._batch import cell_names
    from ._display import LiveGallery, LiveSlot, host_of

    names = [name] * len(ids) if args.output is not None else cell_names(client, ids, name)
    name = names[0]

    slots = [LiveSlot(request=None, label=task_id if len(ids) > 1 else None, task_id=task_id) for task_id in ids]
    what = "resending" if args.resend else "resuming"
    live = LiveGallery(
        slots,
        title=f"{what} {', '.join(ids)}",
        subtitle=f"-> {', '.join(dict.fromkeys(names))}" + (" · from the emulator" if session.emulator_for(provider.name) else ""),
        banner=None,
        thumb_px=thumb_px,
        fmt=fmt,
    )
    live.host = host_of(client)
    live.setting = provider.base_url_env
    live.keys_honoured = provider.capabilities.idempotency_keys
    if args.resend and not provider.capabilities.idempotency_keys:
        # The user's call, made knowingly: this host cannot tell a resend from a new request.
        live.notes.append(f"{provider.title} has no idempotency key: if the first submit did reach it, "
                          "this resend is a second task and may bill twice")
    live.show()

    async def resume_all() -> list[Generation]:
        from ..core._retry import retry_observer

        retry_observer.set(live.retrying)
        return await client.resume_many(
            ids, concurrency=concurrency, on_update=lambda index, update: live.on_update(update, index),
            timeout=magics.timeout, resend=args.resend,
        )

    try:
        generations = run_sync(resume_all())
    except KeyboardInterrupt:
        live.interrupted()  # each task's line says how to resume it again
        return
    except BaseException as exc:
        raise magics._surface(exc, live) from None
    for gen in generations:
        if isinstance(gen.error, ValidationError):
            live.fail(gen.error, said_below=True)
            raise UsageError(gen.error.message)
    if len(set(names)) == 1:
        magics._conclude(name, generations, live)
        return
    try:
        magics._conclude(name, generations, live)
    finally:
        said = []
        for each in dict.fromkeys(names):
            images = [im for gen, nm in zip(generations, names, strict=True) if nm == each and gen.error is None
                      for im in gen.images]
            if images:
                magics.shell.user_ns[each] = images
                said.append(f"{each}: {len(images)} image{'s' if len(images) != 1 else ''}")
        live.footer = " · ".join(said) or None
        live.refresh()
