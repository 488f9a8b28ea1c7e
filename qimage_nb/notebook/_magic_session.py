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

__all__ = ["NO_KEY", "SUBCOMMANDS", "no_key"]

# First what works with no key at all, then how to add one; one line, as a UsageError shows it.
NO_KEY = (
    "no API key yet: run %qimage emulator to try everything offline now, "
    "or %qimage login (or QIMAGE_API_KEY set before starting Jupyter) for the real API"
)


def no_key(provider: Any) -> str:
    """NO_KEY for ``provider``: its own variable, and ``--provider`` when it is not the one in use."""
    from ._session import get_session

    if provider.name == get_session().provider().name and provider.key_env == "QIMAGE_API_KEY":
        return NO_KEY
    option = "" if provider.name == get_session().provider().name else f" --provider {provider.name}"
    return (
        f"no API key yet for {provider.title}: run %qimage emulator{option} to try everything offline "
        f"now, or %qimage login{option} (or {provider.key_env} set before starting Jupyter) for the real API"
    )


def _key_state(session: Any, provider: str | None = None) -> str:
    source = session.key_source_for(provider)
    return f"set (from {source})" if source else "not set"


def _provider_option(func: Any) -> Any:
    return argument("--provider", metavar="P", default=None, help="apimart, dashscope, fal or replicate (default: the one in use)")(func)


@magic_arguments(name="qimage history")
@argument("-n", "--limit", type=int, default=20, help="how many entries, newest first (default 20)")
@argument("--pending", action="store_true", help="only tasks submitted but never downloaded")
@_provider_option
def history(magics: QImageMagics, line: str) -> None:
    """%qimage history [-n N] [--pending]: the journal of this machine's generations."""
    args = parse(history, line)
    if args.limit < 1:
        raise UsageError(f"-n {args.limit}: show at least 1 entry")
    from IPython.display import display

    from ..view._history import history_bundle
    from ._session import get_session

    client = get_session().client(args.provider)
    entries = client.pending()[: args.limit] if args.pending else client.history(args.limit)
    keys = client.provider.capabilities.idempotency_keys
    display(history_bundle(entries, pending_only=args.pending, keys_honoured=keys), raw=True)
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
@argument(
    "--provider", metavar="P", default=None,
    help="whose emulator: apimart (the APIMart API), dashscope (Alibaba Model Studio), fal or "
    "replicate; it becomes "
    "the provider in use (default: the one in use)",
)
def emulator(magics: QImageMagics, line: str) -> None:
    """%qimage emulator [--provider P] [--auto] [--stop] [--latency S]: a bundled offline emulator in this kernel."""
    args = parse(emulator, line)
    from ..providers import get_provider
    from ..view._words import emulator_name
    from ._session import emulator_banner, get_session

    session = get_session()
    provider = session.provider(args.provider)
    name = provider.name
    if args.stop:
        # The emulator of the provider in use, or of the one --provider names: never another.
        running = session.emulator_for(name)
        if running is None:
            others = [get_provider(other) for other in session._emulators if other != name]
            also = "".join(
                f"; {emulator_name(other.title)} is running (%qimage emulator --stop --provider {other.name} stops it)"
                for other in others
            )
            print(f"{emulator_name(provider.title)} is not running; using the API at {session.base_url_for(name)}{also}")
            return
        where = running.base_url
        session.stop_emulator(name)
        print(
            f"stopped {emulator_name(provider.title)} (was at {where}); using {provider.title} at "
            f"{session.base_url_for(name)} (key {_key_state(session, name)})"
        )
        return
    if args.latency is not None and not args.latency >= 0:
        raise UsageError(f"--latency {args.latency} must be zero or more seconds")
    if args.provider:
        session.choose(name)  # the emulator of a host is for using that host
    if args.auto and session.has_key_for(name) and session.emulator_for(name) is None:
        of = f" of {provider.title}" if name != "apimart" else ""
        print(f"using the real API{of} at {session.base_url_for(name)} (key from {session.key_source_for(name)})")
        return
    running = session.emulator_for(name)
    if running is not None:
        note = " (stop it first to change --latency)" if args.latency is not None else ""
        print(f"{emulator_name(provider.title)} is already running at {running.base_url}{note}")
        return
    options: dict[str, Any] = {}
    if args.latency is not None:
        options = {"latency": args.latency, "jitter": args.latency / 2}
    emu = session.start_emulator(name, **options)
    from IPython.display import display

    where = f"{provider.title} emulator running at {emu.base_url}" if name != "apimart" else f"emulator running at {emu.base_url}"
    stop = "%qimage emulator --stop" + (f" --provider {name}" if args.provider else "")
    banner_text = emulator_banner(provider)
    text = f"{banner_text}\n{where}; {stop} stops it"
    banner = (
        '<div class="qimage-banner" style="background:#fff3cd;color:#664d03;padding:4px 8px;border-radius:4px">'
        f"{html.escape(banner_text)}<br/><small>{html.escape(where)}; "
        f"<code>{html.escape(stop)}</code> stops it</small></div>"
    )
    display({"text/html": banner, "text/plain": text}, raw=True)


def _login_provider(line: str) -> str | None:
    """The provider named by ``--provider P`` (the only argument logout takes); None when absent.

    Anything else is refused without being echoed: it may be the key itself, pasted in the cell.
    """
    named, region, workspace = _login_words(line)
    if region or workspace:
        raise UsageError("%qimage logout takes no region: %qimage logout [--provider P]")
    return named


_LOGIN_REFUSED = (
    "%qimage login takes no arguments but a provider and its region (%qimage login dashscope [REGION] "
    "[--workspace ID], or --provider P): run it and paste the key at the hidden prompt, so the key never lands in the "
    "notebook (delete anything else from this cell)"
)


def _login_words(line: str) -> tuple[str | None, str | None, str | None]:
    """(provider, region, workspace) from ``[--provider] P [REGION | --region R] [--workspace ID]``.
    Nothing is echoed on a refusal: a pasted key must not reach the output."""
    from ..providers import ALIASES, all_providers

    words = line.replace("=", " ").split()
    named = region = workspace = None
    names = {p.name for p in all_providers()} | set(ALIASES)
    while words:
        word = words.pop(0)
        if word in ("--provider", "--region", "--workspace") and words:
            value = words.pop(0)
            if word == "--provider":
                named = value
            elif word == "--region":
                region = value
            else:
                workspace = value
        elif named is None and word.lower() in names:
            named = word
        elif named is not None and region is None and not word.startswith("-") and len(word) <= 40:
            region = word
        else:
            raise UsageError(_LOGIN_REFUSED)
    return named, region, workspace


def login(magics: QImageMagics, line: str) -> None:
    """%qimage login [--provider] [P] [REGION] [--workspace ID]: type the provider's API key at a
    hidden prompt; kept in this kernel's memory only. With a provider, that provider becomes the one
    in use; with a region (DashScope: singapore, beijing, ap-southeast-1, us-east-1 + --workspace,
    ...), its keys' region is used in this kernel."""
    import getpass

    from .._exceptions import ValidationError
    from ._session import get_session

    session = get_session()
    named, region, workspace = _login_words(line.strip())
    provider = session.provider(named)
    url = None
    if region or workspace:
        try:
            url = provider.region_url(region or "", workspace or "")
        except ValidationError as exc:
            raise UsageError(f"%qimage login: {exc.message}") from None
    key = getpass.getpass(f"{provider.title} API key (kept in this kernel's memory only): ")
    try:
        session.login(key, provider.name)  # a bad key is a ValidationError that never echoes it
    finally:
        del key
    if named:
        session.choose(provider.name)
    if url is not None:
        why = f"%qimage login {region or ''}".rstrip() + (f" --workspace {workspace}" if workspace else "")
        session.set_base_url(url, provider.name, why=why)
    stopped = ""
    if session.emulator_for(provider.name) is not None:
        session.stop_emulator(provider.name)
        from ..view._words import emulator_name

        stopped = f"stopped {emulator_name(provider.title)}; "
    print(
        f"key set for this kernel (memory only, never saved); {stopped}using {provider.title} at "
        f"{session.base_url_for(provider.name)}"
    )


def logout(magics: QImageMagics, line: str) -> None:
    """%qimage logout [--provider P]: forget the key typed with %qimage login."""
    from ._session import get_session

    session = get_session()
    provider = session.provider(_login_provider(line.strip()))
    session.logout(provider.name)
    print(f"forgot the key for {provider.title} typed with %qimage login; key now {_key_state(session, provider.name)}")


@magic_arguments(name="qimage models")
@_provider_option
def models(magics: QImageMagics, line: str) -> None:
    """%qimage models [--provider P]: the model ids the API in use lists (the documented ones marked)."""
    args = parse(models, line)
    from ..core._sync import run_sync
    from ._session import get_session

    session = get_session()
    provider = session.provider(args.provider)
    if not provider.capabilities.list_models:
        print(
            f"{provider.title} has no model listing; the Qwen Image models it serves: {', '.join(provider.models)}"
            + (f" (qimage_nb's table, checked {provider.models_checked}; another id is sent as written)"
               if provider.models_checked else "")
            + (f"; its own ids, accepted as written: {', '.join(provider.host_ids)}" if getattr(provider, "host_ids", ()) else "")
        )
        return
    if not session.has_key_for(provider.name):
        raise UsageError(no_key(provider))
    client = session.client(provider.name)
    try:
        listed = run_sync(client.models())
    except KeyboardInterrupt:
        print("interrupted")
        return
    documented = set(provider.models)
    where = "the emulator of " if session.emulator_for(provider.name) is not None else ""
    lines = [f"models listed by {where}{provider.title} ({client.base_url}); * = documented, checked exactly:"]
    lines += [f"  {'*' if model in documented else ' '} {model}" for model in listed]
    lines.append(
        "others are sent with the universal checks only (the host decides their sizes): "
        "%%qimage --model ID"
    )
    print("\n".join(lines))


# How long %qimage config waits for the balance: with the rest, it answers in under 3 s.
BALANCE_WAIT = 2.5


def config(magics: QImageMagics, line: str) -> None:
    """%qimage config: the effective settings (never the key), the balance where the host has one,
    and what this session's generations cost."""
    import asyncio
    from urllib.parse import urlsplit

    from ..core._sync import run_sync
    from ..view._words import error_line, format_cost
    from ._session import get_session

    if line.strip():
        raise UsageError("%qimage config takes no arguments")
    session = get_session()
    provider = session.provider()
    described = session.describe()
    lines = ["qimage_nb settings:"]
    lines.append(f"  provider:    {described['provider']}{_provider_why(session)}")
    lines.append(f"  API:         {described['base_url']} ({described['base_url_source']})")
    lines.append(f"  key:         {described['key']}")
    lines.append(f"  emulator:    {described['emulator']}")
    others = [name for name in session._emulators if name != provider.name]
    if others:
        lines.append(f"               (also running: the emulator of {', '.join(others)})")
    client = session.client()
    if not session.has_key:
        lines.append("  balance:     (no key) " + no_key(provider))
    elif not provider.capabilities.balance:
        lines.append(f"  balance:     {provider.title} has no balance endpoint (see its console)")
    else:
        try:
            # Bounded: settings are shown at once whatever the server does (a host that never
            # answered held this command for 11.5 s, through the client's own timeouts and retries).
            balance = run_sync(asyncio.wait_for(client.balance(), BALANCE_WAIT))
        except KeyboardInterrupt:
            lines.append("  balance:     (interrupted)")
        except TimeoutError:
            host = urlsplit(client.base_url).netloc or client.base_url
            lines.append(f"  balance:     no answer from {host} in {BALANCE_WAIT:g} s")
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
    total, count = session.spent
    if count:
        lines.append(
            f"  this session: {format_cost(total)} for {count} generation{'s' if count != 1 else ''} "
            "(as the hosts priced them; cached re-runs cost nothing)"
        )
    else:
        lines.append("  this session: no priced generations yet (a host that gives no price is not counted)")
    with contextlib.suppress(Exception):
        # Where the journal and the full-size images live (QIMAGE_HOME): what "Where are my files?" asks.
        lines.append(f"  data folder: {Path(client.store.root)} (journal and full-size images; QIMAGE_HOME)")
    lines.append("  %%qimage defaults (%config QImageMagics.<name> = value):")
    for name in (
        "provider",
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


def _provider_why(session: Any) -> str:
    """Why this provider is the one in use."""
    import os

    if session.chosen:
        return " (chosen in this kernel)"
    if os.environ.get("QIMAGE_PROVIDER", "").strip():
        return " (from $QIMAGE_PROVIDER)"
    from ..providers import all_providers

    provider = session.provider()
    with_keys = [p for p in all_providers() if p.key_from_env(os.environ)]
    if with_keys == [provider]:
        return f" (the only provider whose key is set: ${provider.key_env})"
    if len(with_keys) > 1:
        # The documented rule: several keys set and nothing chosen means the default host.
        names = ", ".join(f"{p.name} (${p.key_env})" for p in with_keys)
        return (f" (the default: keys are set for {names}, so none is picked over another; "
                "--provider, %config QImageMagics.provider or $QIMAGE_PROVIDER choose one)")
    return " (the default; --provider, %config QImageMagics.provider or $QIMAGE_PROVIDER choose another)"


def panel(magics: QImageMagics, line: str) -> None:
    """%qimage panel: the interactive panel (ipywidgets) that shares this kernel's session."""
    from IPython.display import display

    try:
        from ._panel import Panel
    except ImportError as exc:
        raise UsageError(f"the panel is unavailable: {exc}") from None
    display(Panel())


def export(magics: QImageMagics, line: str) -> None:
    """%qimage export: see ``_magic_export`` (imported only when used)."""
    from ._magic_export import export_command

    export_command(magics, line)


SUBCOMMANDS: dict[str, Callable[[QImageMagics, str], None]] = {
    "login": login, "logout": logout, "config": config, "emulator": emulator, "models": models,
    "history": history, "pending": pending, "panel": panel, "export": export,
}  # fmt: skip
