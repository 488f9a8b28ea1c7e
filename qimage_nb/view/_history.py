"""The journal drawn as a table (HTML and aligned plain text), with the commands that fetch what is pending."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

from .._contract import PHASE_WORDS, _short, parse_pixel_size
from ._words import format_cost, resend_offer, when

__all__ = ["history_bundle"]


def _resume_hints(pending: Sequence[Any], *, keys_honoured: bool) -> list[str]:
    """The commands that fetch pending entries, with real ids in them (never a TASK_ID to fill in).

    An entry whose submit was never answered has no task id, only its journal key: the task may
    exist and may be billed, and only the user can decide to resend it (the same body with the same
    Idempotency-Key: a host that honours keys answers with the task it made; another may bill a
    second one). Each such entry gets its own exact resend command.
    """
    unanswered = [e for e in pending if not e.task_id]
    tasks = [e for e in pending if e.task_id]
    hints = []
    if len(tasks) == 1:
        hints.append(f"resume with: %qimage resume {tasks[0].task_id}")
    elif tasks:
        hints.append(f"resume one with: %qimage resume {tasks[0].task_id}; or all {len(tasks)} with: %qimage resume --all")
    for entry in unanswered:
        if getattr(entry, "in_flight", False):
            hints.append(f"{entry.key} is still being submitted: its answer is on its way")
            continue
        hints.append(
            "outcome unknown (the submit got no answer; the task may exist and may be billed): "
            + resend_offer(entry.key, keys_honoured=keys_honoured)
        )
    return hints


def _status_word(entry: Any) -> str:
    if getattr(entry, "in_flight", False):
        return "submitting"
    if getattr(entry, "outcome_unknown", False) or (not entry.task_id and getattr(entry, "status", "") == "submitting"):
        return "outcome unknown"
    return PHASE_WORDS.get(str(getattr(entry, "status", "")), str(getattr(entry, "status", "")))


def history_bundle(entries: Sequence[Any], *, pending_only: bool, keys_honoured: bool = False) -> dict[str, Any]:
    """The journal's entries as a table (HTML, and aligned plain text), newest first.

    ``keys_honoured``: the host honours idempotency keys, so a resend offer may promise no second bill.
    """
    if not entries:
        text = "no pending tasks" if pending_only else "the journal is empty: no generations yet"
        return {"text/plain": text, "text/html": f"<div>{html.escape(text)}</div>"}
    header = ("time", "status", "task id", "prompt", "n", "model / size", "cost")
    rows = []
    for entry in entries:
        request = entry.request
        created = getattr(entry, "created_at", None)
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else ""
        model = request.model  # the name the API, the magic and the panel use
        cost = getattr(entry, "cost", None)
        status = _status_word(entry)
        if pending_only and getattr(entry, "updated_at", None):
            # What the journal last heard, and when: a task may have finished on the server since.
            status = f"{status}, last seen {when(entry.updated_at)}"
        rows.append(
            (
                stamp,
                status,
                entry.task_id or f"(no id; key {entry.key})",
                _short(request.prompt or "(unknown prompt)", 50),
                str(request.n),
                f"{model} · {request.size}" + ("" if parse_pixel_size(request.size) else f" {request.resolution}"),
                format_cost(cost) if cost is not None else "",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    text_lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    text_lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    pending = [e for e in entries if not getattr(e, "downloaded", True) and getattr(e, "status", "") not in ("failed", "cancelled")]
    hints = _resume_hints(pending, keys_honoured=keys_honoured)
    text_lines += hints
    cells = "".join(
        "<tr>" + "".join(f'<td style="text-align:left">{html.escape(c)}</td>' for c in row) + "</tr>" for row in rows
    )
    head = "".join(f'<th style="text-align:left">{html.escape(h)}</th>' for h in header)
    foot = "".join(f'<div style="color:#555">{html.escape(hint)}</div>' for hint in hints)
    table = f'<table class="qimage-history"><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>{foot}'
    return {"text/plain": "\n".join(text_lines), "text/html": table}
