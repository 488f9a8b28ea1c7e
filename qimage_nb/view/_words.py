"""The words both faces use: durations, costs, moments, progress and error lines, model names."""

from __future__ import annotations

import html
import time

from .._contract import PHASE_WORDS
from .._exceptions import task_name

__all__ = [
    "MODEL_ALIASES",
    "SHORT_MODEL",
    "emulator_name",
    "error_line",
    "estimate_left",
    "format_cost",
    "format_seconds",
    "id_html",
    "progress_status",
    "resend_command",
    "resend_offer",
    "short_id",
    "when",
]  # fmt: skip

# The models' short names, shown in captions and tables; --model and %config accept them (and
# "std") too, so the names people are shown are the names they can type.
SHORT_MODEL = {"qwen-image-2.0": "standard", "qwen-image-2.0-pro": "pro"}
MODEL_ALIASES = {**{short: model for model, short in SHORT_MODEL.items()}, "std": "qwen-image-2.0"}


def format_seconds(seconds: float) -> str:
    """``42 s`` or ``2 min 05 s``."""
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


def format_cost(cost: float) -> str:
    """What the host said a task cost, as money: ``$0.006``, ``$0.05``, ``$1.20``."""
    if cost == 0 or (cost >= 0.01 and round(cost, 2) == round(cost, 6)):
        return f"${cost:,.2f}"
    return "$" + f"{cost:.6f}".rstrip("0").rstrip(".")


def when(timestamp: float | None) -> str:
    """A past moment as a date and how long ago: ``2024-05-01 10:12 (3 h ago)``."""
    if timestamp is None:
        return "earlier"
    ago = max(0.0, time.time() - timestamp)
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))
    if ago < 60:
        rel = "just now"
    elif ago < 3600:
        rel = f"{ago / 60:.0f} min ago"
    elif ago < 48 * 3600:
        rel = f"{ago / 3600:.0f} h ago"
    else:
        rel = f"{ago / 86400:.0f} days ago"
    return f"{stamp} ({rel})"


def estimate_left(stage: str, *, progress: int, elapsed: float, estimated_time: float | None) -> float | None:
    """Seconds left, the lower of the server's estimate and what progress so far implies; or None.

    The server's ``estimated_time`` is pessimistic (often 1.5x) and fixed at submit: alone, it says
    the same "about 3 s left" at 50 % and at 71 %. Progress is measured: at p % after ``elapsed``
    seconds, the rest takes about ``elapsed * (100 - p) / p`` (an upper bound when part of
    ``elapsed`` was spent queued).
    """
    guesses = []
    if estimated_time is not None:
        guesses.append(estimated_time - elapsed)
    if stage == "running" and 0 < progress < 100 and elapsed > 0:
        guesses.append(elapsed * (100 - progress) / progress)
    return max(0.0, min(guesses)) if guesses else None


def progress_status(
    stage: str,
    *,
    progress: int = 0,
    eta: float | None = None,
    task_id: str | None = None,
    have: int = 0,
    count: int = 0,
    position: int | None = None,
) -> str:
    """The status line of a generation in flight, the same words in both faces.

    ``eta`` is the seconds left by the server's estimate (or None); ``have``/``count`` are the
    images downloaded so far and expected.
    """
    task = f" · {task_name(task_id)}" if task_id else ""
    if eta is None:
        left = ""
    elif eta < 0.5 or (stage == "running" and progress >= 90):  # never "about 0 s left"
        # The server's estimate is pessimistic: near the end, progress says more than it does.
        left = " · almost done"
    else:
        left = f" · about {format_seconds(eta)} left"
    if stage == "waiting":
        return "waiting to start"
    if stage == "uploading":
        return "uploading references..."
    if stage == "submitting":
        return "submitting..."
    if stage == "queued":
        ahead = f" ({position} ahead)" if position else ""
        return f"queued{ahead}{left}{task}"
    if stage == "running":
        return f"running {progress}%{left}{task}"
    if stage in ("downloading", "completed"):
        return f"downloading {have} of {count}{task}"
    return f"{stage}{task}"


def error_line(
    exc: BaseException, *, host: str | None = None, retries: int = 0, setting: str = "QIMAGE_BASE_URL"
) -> tuple[str, str]:
    """(kind, message) for one readable line that says what to do.

    A timeout says how to get the images later; a network failure names ``host`` (the API's, when
    known), how many retries (``retries``) were made, and what to check (``setting``: the
    provider's base URL variable), said once.
    """
    from .._exceptions import GenerationTimeout, TransportError

    message = str(exc) or type(exc).__name__
    if isinstance(exc, GenerationTimeout):
        phase = PHASE_WORDS.get(exc.last_status or "", exc.last_status or "running")
        message = (
            f"{task_name(exc.task_id)} is still {phase} after the wait deadline; "
            f"it keeps running on the server. Get its images later with: %qimage resume {exc.task_id}"
        )
    elif isinstance(exc, TransportError) and host:
        tried = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
        if "check the network" in message:  # the client already said what to check
            message = f"cannot reach {host}{tried}: {message}"
        else:
            message = (
                f"cannot reach {host}{tried} ({message}). Check this machine's network connection, or "
                f"{setting} if the API is at another address"
            )
    return type(exc).__name__, message



def resend_command(key: str) -> str:
    return f"%qimage resume --resend {key}"


def resend_offer(key: str, *, keys_honoured: bool) -> str:
    """The offer to resend a submit whose outcome is unknown, saying what it risks on this host.

    ``keys_honoured``: the host honours an idempotency key (its provider's capability). Only then
    is a resend free of a second bill; on any other host it may make, and bill, a second task.
    """
    if keys_honoured:
        return f"{resend_command(key)} resends it (same key, no second bill)"
    return f"{resend_command(key)} resends it, and may bill again (this host has no idempotency key)"


def short_id(task_id: str) -> str:
    """A long task id shortened for a label (its head and tail, which tell ids apart); short ones whole."""
    return task_id if len(task_id) <= 20 else f"{task_id[:9]}…{task_id[-6:]}"


def id_html(task_id: str) -> str:
    """A task id in HTML: shortened, the whole id in its tooltip (and in ``data-task-id``)."""
    full = html.escape(task_id)
    # nowrap: the short id moves to the next line whole rather than breaking in two.
    return (
        f'<span data-task-id="{full}" title="task id: {full}" style="white-space:nowrap">'
        f"{html.escape(short_id(task_id))}</span>"
    )


def emulator_name(title: str) -> str:
    """``the APIMart API emulator``, ``the Alibaba Model Studio (DashScope) emulator``: a host's
    title with one "the" before it, whichever way the title starts."""
    return f"{title if title.lower().startswith('the ') else 'the ' + title} emulator"
