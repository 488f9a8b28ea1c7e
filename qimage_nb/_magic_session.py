"""The ``%qimage`` subcommands that manage the session: login, logout, config, emulator, history,
pending, panel.

Each is a function of the magics object and the rest of the line, dispatched by
``QImageMagics.qimage_line`` (which also turns a ValidationError into one UsageError line). Imported
on the first ``%qimage`` line, not when the extension loads. ``resume`` lives with the cell magic,
whose live gallery and ending it shares.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ._magic_args import parse

if TYPE_CHECKING:
    from ._magics import QImageMagics

__all__ = ["NO_KEY", "SUBCOMMANDS"]

# First what works with no key at all, then how to add one; one line, as a UsageError shows it.
NO_KEY = (
    "no API key yet: run %qimage emulator to try everything offline now, "
    "or %qimage login (or QIMAGE_API_KEY set before starting Jupyter) for the real API"
)


def _key_state(session: Any) -> str:
    return f"set (from {session.key_source})" if session.has_key else "not set"


@magic_arguments(name="qimage history")
@argument("-n", "--limit", type=int, default=20, help="how many entries, newest first (default 20)")
@argument("--pending", action="store_true", help="only tasks submitted but never downloaded")
def history(magics: QImageMagics, line: str) -> None:
    """%qimage history [-n N] [--pending]: the journal of this machine's generations."""
    args = parse(history, line)
    if args.limit < 1:
        raise UsageError(f"-n {args.limit}: show at least 1 entry")
    from IPython.display import display

    from ._display import history_bundle
    from ._session import get_session

    client = get_session().client()
    entries = client.pending()[: args.limit] if args.pending else client.history(args.limit)
    display(history_bundle(entries, pending_only=args.pending), raw=True)
    if args.pending and client.cache_scope != client.base_url:
        # The in-kernel emulator: tasks left unfinished by an earlier kernel's emulator (or another
        # kernel's) share its scope but not its address, and no emulator here knows them.
        gone = [e for e in client.store.pending(scope=client.cache_scope) if e.origin != client.base_url]
        if gone:
            ids = ", ".join(e.task_id or e.key for e in gone[:5]) + (", ..." if len(gone) > 5 else "")
            print(
                f"not listed: {len(gone)} task{'s' if len(gone) != 1 else ''} of an emulator that is gone "
                f"({ids}): each belonged to the emulator of a kernel since restarted or stopped, or of "
                "another kernel; an emulator's tasks end with it, so run their cells again"
            )


def pending(magics: QImageMagics, line: str) -> None:
    """%qimage pending: tasks submitted but never downloaded (same as history --pending)."""
    history(magics, ("--pending " + line).strip())


@magic_arguments(name="qimage emulator")
@argument("--auto", action="store_true", help="start it only when no API key is configured")
@argument("--stop", action="store_true", help="stop the emulator and go back to the configured API")
@argument(
    "--latency", type=float, default=None, metavar="S", help="seconds a task takes (default 2)"
)
def emulator(magics: QImageMagics, line: str) -> None:
    """%qimage emulator [--auto] [--stop] [--latency S]: the bundled offline emulator in this kernel."""
    args = parse(emulator, line)
    from ._session import EMULATOR_BANNER, get_session

    session = get_session()
    if args.stop:
        if not session.using_emulator:
            print(f"the emulator is not running; using the API at {session.base_url}")
            return
        session.stop_emulator()
        print(f"emulator stopped; using the API at {session.base_url} (key {_key_state(session)})")
        return
    if args.latency is not None and not args.latency >= 0:
        raise UsageError(f"--latency {args.latency} must be zero or more seconds")
    if args.auto and session.has_key and not session.using_emulator:
        print(f"using the real API at {session.base_url} (key from {session.key_source})")
        return
    if session.using_emulator:
        emu = session.emulator
        assert emu is not None
        note = " (stop it first to change --latency)" if args.latency is not None else ""
        print(f"the emulator is already running at {emu.base_url}{note}")
        return
    options: dict[str, Any] = {}
    if args.latency is not None:
        options = {"latency": args.latency, "jitter": args.latency / 2}
    emu = session.start_emulator(**options)
    from IPython.display import display

    text = f"{EMULATOR_BANNER}\nemulator running at {emu.base_url}; %qimage emulator --stop stops it"
    banner = (
        '<div class="qimage-banner" style="background:#fff3cd;color:#664d03;padding:4px 8px;border-radius:4px">'
        f"{html.escape(EMULATOR_BANNER)}<br/><small>emulator running at {html.escape(emu.base_url)}; "
        "<code>%qimage emulator --stop</code> stops it</small></div>"
    )
    display({"text/html": banner, "text/plain": text}, raw=True)


def login(magics: QImageMagics, line: str) -> None:
    """%qimage login: type the API key at a hidden prompt; kept in this kernel's memory only."""
    if line.strip():
        # Never echo what was typed: it may be the key itself, which now sits in the cell.
        raise UsageError(
            "%qimage login takes no arguments: run it alone and paste the key at the hidden prompt, "
            "so the key never lands in the notebook (delete it from this cell)"
        )
    import getpass

    from ._session import get_session

    key = getpass.getpass("Qwen Image API key (kept in this kernel's memory only): ")
    session = get_session()
    try:
        session.login(key)  # a bad key is a ValidationError that never echoes it
    finally:
        del key
    stopped = ""
    if session.using_emulator:
        session.stop_emulator()
        stopped = "emulator stopped; "
    print(
        f"key set for this kernel (memory only, never saved); {stopped}using the API at {session.base_url}"
    )


def logout(magics: QImageMagics, line: str) -> None:
    """%qimage logout: forget the key typed with %qimage login."""
    from ._session import get_session

    session = get_session()
    session.logout()
    print(f"forgot the key typed with %qimage login; key now {_key_state(session)}")


def config(magics: QImageMagics, line: str) -> None:
    """%qimage config: the effective settings (never the key) and, with a key, the balance."""
    from ._display import error_line
    from ._session import get_session
    from ._sync import run_sync

    session = get_session()
    described = session.describe()
    lines = ["qimage_nb settings:"]
    lines.append(f"  API:         {described['base_url']}")
    lines.append(f"  key:         {described['key']}")
    lines.append(f"  emulator:    {described['emulator']}")
    client = session.client()
    if session.has_key:
        try:
            balance = run_sync(client.balance())
        except KeyboardInterrupt:
            lines.append("  balance:     (interrupted)")
        except Exception as exc:
            lines.append(f"  balance:     unavailable ({error_line(exc)[1]})")
        else:
            if balance.unlimited_quota:
                lines.append("  balance:     unlimited quota")
            else:
                credits = (
                    f" ({balance.remain_credits:g} credits)"
                    if balance.remain_credits is not None
                    else ""
                )
                amount = (
                    f"{balance.remain_balance:g}"
                    if balance.remain_balance is not None
                    else "unknown"
                )
                lines.append(f"  balance:     {amount}{credits}")
    else:
        lines.append("  balance:     (no key) " + NO_KEY)
    with contextlib.suppress(Exception):
        # Where the journal and the full-size images live (QIMAGE_HOME): what "Where are my files?" asks.
        lines.append(f"  data folder: {Path(client.store.root)} (journal and full-size images; QIMAGE_HOME)")
    lines.append("  %%qimage defaults (%config QImageMagics.<name> = value):")
    for name in (
        "model",
        "size",
        "resolution",
        "n",
        "output",
        "timeout",
        "concurrency",
        "thumb_px",
        "thumb_format",
    ):
        lines.append(f"    {name} = {getattr(magics, name)!r}")
    print("\n".join(lines))


def panel(magics: QImageMagics, line: str) -> None:
    """%qimage panel: the interactive panel (ipywidgets) that shares this kernel's session."""
    from IPython.display import display

    try:
        from ._panel import Panel
    except ImportError as exc:
        raise UsageError(f"the panel is unavailable: {exc}") from None
    display(Panel())


SUBCOMMANDS: dict[str, Callable[[QImageMagics, str], None]] = {
    "login": login, "logout": logout, "config": config, "emulator": emulator,
    "history": history, "pending": pending, "panel": panel,
}  # fmt: skip
