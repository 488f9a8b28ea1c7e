"""A batch in the notebook: ``%%qimage --each VAR`` (the cell body as a template over a list, a list
of dicts or a DataFrame), ``--dry-run``'s plan, and one progress display per batch.

``fill_prompts`` turns the template and the items into one prompt each, refusing (one UsageError
line) before anything is sent: a missing field names it and the fields there are. ``BatchGallery``
is the magic's live gallery for many generations: thumbnails fill one grid while a single line says
done/total, failed, spent and time left, updated in place (never a line per generation or update).
``show_batch_progress`` gives ``generate_many(progress=...)`` the same display from Python.
"""

from __future__ import annotations

import keyword
import math
import re
import time
from collections.abc import Mapping, Sequence
from string import Formatter
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..view._words import format_seconds
from ._display import LiveGallery, LiveSlot

if TYPE_CHECKING:
    from .._contract import GenerationRequest
    from ..core._estimate import Estimate

__all__ = [
    "BatchGallery", "Items", "cell_names", "dry_run_text", "fill_prompts", "items_of", "max_cost_of",
    "register_in_kernel", "show_batch_progress",
]  # fmt: skip

_SHOWN_FAILURES = 5  # failure lines drawn in red; past that, one line counts the rest


class Items:
    """What ``--each VAR`` names: its items as given, and the fields (keys, columns) they have."""

    def __init__(self, name: str, rows: list[Any], fields: list[str] | None) -> None:
        self.name = name
        self.rows = rows
        self.fields = fields  # None: the items are strings

    def __len__(self) -> int:
        return len(self.rows)

    def label(self, index: int) -> str:
        """How the grid names item ``index``: a string item itself, else its first field's value."""
        row = self.rows[index]
        if self.fields is None:
            return " ".join(str(row).split())
        first = next((row[f] for f in self.fields if f in row and _present(row[f])), None)
        return f"{index}: {first}" if first is not None else f"item {index}"


def _present(value: Any) -> bool:
    if value is None:
        return False
    return not (isinstance(value, float) and math.isnan(value))


def items_of(name: str, namespace: Mapping[str, Any]) -> Items:
    """The items of the notebook variable ``name``: a list/tuple of strings, a list/tuple of dicts,
    or a pandas DataFrame (read by duck typing: pandas is never imported here)."""
    if not name.isidentifier():
        raise UsageError(f"--each {name!r} is not a variable name; e.g. --each products")
    if name not in namespace:
        raise UsageError(f"--each {name}: no variable named {name} in the notebook; define it first")
    value = namespace[name]
    if hasattr(value, "columns") and hasattr(value, "to_dict"):  # a DataFrame
        rows = [{str(k): v for k, v in row.items()} for row in value.to_dict("records")]
        fields = [str(c) for c in value.columns]
        if not rows:
            raise UsageError(f"--each {name}: the DataFrame has no rows; nothing to generate")
        return Items(name, rows, fields)
    if not isinstance(value, (list, tuple)):
        raise UsageError(
            f"--each {name} is a {type(value).__name__}: pass a list or tuple of strings, a list of dicts, "
            "or a pandas DataFrame"
        )
    if not value:
        raise UsageError(f"--each {name} is empty; nothing to generate")
    if all(isinstance(item, str) for item in value):
        return Items(name, list(value), None)
    if all(isinstance(item, Mapping) for item in value):
        rows = [{str(k): v for k, v in item.items()} for item in value]
        fields = list(dict.fromkeys(k for row in rows for k in row))
        return Items(name, rows, fields)
    kinds = sorted({type(item).__name__ for item in value})
    raise UsageError(
        f"--each {name} mixes {', '.join(kinds)}: its items must all be strings, or all dicts (or pass a DataFrame)"
    )


def _template(text: str) -> list[tuple[str, str | None, str, str | None]]:
    try:
        parts = list(Formatter().parse(text))
    except ValueError as exc:
        raise UsageError(
            f"--each: the prompt template has a lone brace ({exc}); write {{{{ and }}}} for literal braces"
        ) from None
    for _, field, _, _ in parts:
        if field and not re.fullmatch(r"[^.\[\]{}]+", field):
            raise UsageError(
                f"--each: {{{field}}} is not a field name; the template takes {{}} or {{column}}, "
                "and evaluates nothing else"
            )
    return parts


def fill_prompts(template: str, items: Items) -> list[str]:
    """One prompt per item: ``{}`` is a string item, ``{field}`` a dict key or DataFrame column,
    ``{{``/``}}`` literal braces. Every prompt is filled (and every gap refused) before any is sent."""
    parts = _template(template)
    named = [f for _, f, _, _ in parts if f]
    whole = any(f == "" or (f is not None and f.isdigit()) for _, f, _, _ in parts)
    if items.fields is None and named and not all(f.isdigit() for f in named):
        bad = next(f for f in named if not f.isdigit())
        raise UsageError(f"--each {items.name} holds strings: {{}} is the whole item; it has no field {{{bad}}}")
    if items.fields is not None and whole:
        raise UsageError(
            f"--each {items.name} holds {'rows' if items.fields else 'dicts'}: name a field in the braces, "
            f"e.g. {{{items.fields[0] if items.fields else 'name'}}}; fields: {', '.join(items.fields)}"
        )
    if not named and not whole:
        raise UsageError(
            f"--each {items.name}: the prompt has no {{}} or {{field}}, so every item would get the same "
            "prompt; put the item's place in braces"
        )
    prompts = []
    for index, row in enumerate(items.rows):
        out = []
        for literal, field, spec, conversion in parts:
            out.append(literal)
            if field is None:
                continue
            if items.fields is None:
                value: Any = row
            else:
                if field not in row:
                    there = ", ".join(row) or "none"
                    raise UsageError(f"--each {items.name}: item {index} has no field {field!r}; its fields: {there}")
                value = row[field]
                if not _present(value):
                    raise UsageError(f"--each {items.name}: item {index}'s {field!r} is empty; fill it or drop the item")
            if conversion == "r":
                value = repr(value)
            elif conversion == "a":
                value = ascii(value)
            try:
                out.append(format(value, spec))
            except (ValueError, TypeError) as exc:
                raise UsageError(f"--each {items.name}: item {index}'s {field or 'value'} with :{spec}: {exc}") from None
        prompts.append("".join(out))
    return prompts


def max_cost_of(value: str | None) -> float | None:
    """--max-cost 0.50 (or $0.50): an amount of money, in the host's currency."""
    if value is None:
        return None
    try:
        amount = float(value.strip().lstrip("$"))
    except ValueError:
        amount = -1.0
    if not 0 <= amount < float("inf"):
        raise UsageError(f"--max-cost {value!r} is not an amount of money; e.g. --max-cost 0.50")
    return amount


def cell_names(client: Any, ids: list[str], default: str) -> list[str]:
    """The variable each task's cell bound its images to (its journal label, "%%qimage -o NAME")."""
    names = []
    for task_id in ids:
        entry = client.store.get(task_id)
        found = re.match(r"%%qimage -o ([A-Za-z_]\w*)", (entry.label or "") if entry is not None else "")
        names.append(found.group(1) if found and not keyword.iskeyword(found.group(1)) else default)
    return names


def dry_run_text(estimate: Estimate, requests: Sequence[GenerationRequest], labels: Sequence[str | None], name: str) -> str:
    """``--dry-run``'s plan: what would be sent, what it should cost; says that nothing was sent."""
    lines = [f"dry run, nothing sent: {estimate} -> {name}"]
    shown = 10
    for k, request in enumerate(requests[:shown]):
        label = f"[{labels[k]}] " if k < len(labels) and labels[k] else ""
        prompt = " ".join(request.prompt.split())
        prompt = prompt if len(prompt) <= 100 else prompt[:97] + "..."
        lines.append(f"  {k + 1}. {label}{request.model} {request.size} {request.resolution} x{request.n}: {prompt}")
    if len(requests) > shown:
        lines.append(f"  ... and {len(requests) - shown} more")
    lines.append("run the cell without --dry-run to send it (add --max-cost AMOUNT to cap what it may spend)")
    return "\n".join(lines)


class BatchGallery(LiveGallery):
    """The live gallery of a batch: one grid of thumbnails and one progress line for all of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.monotonic()

    def on_update(self, update: Any, index: int | None = None) -> None:
        i = update.batch_index if index is None else index
        slot = self.slots[i or 0]
        if update.cost is not None and not update.cached:
            slot.cost = update.cost
        super().on_update(update, index)

    def summary(self) -> str:
        from ..core._estimate import money

        total = len(self.slots)
        done = [s for s in self.slots if s.stage == "done"]
        ended = [s for s in self.slots if s.stage in ("failed", "error", "cancelled")]
        capped = [s for s in ended if _capped(s)]
        failed = [s for s in ended if not _capped(s)]
        stopped = [s for s in self.slots if s.stage == "interrupted"]
        cached = sum(1 for s in done if s.cached)
        spent = sum(s.cost for s in self.slots if s.cost is not None and not s.cached)
        bits = [f"{len(done)} of {total} done"]
        if cached:
            bits[0] += f" ({cached} from the journal; --new for fresh images)"
        if failed:
            bits.append(f"{len(failed)} failed")
        priced = any(s.cost is not None for s in self.slots)
        if priced:
            bits.append(f"{money(spent)} spent")
        if capped:
            cap = re.search(r"max_cost (\$[\d.]+)", capped[0].error or "")
            bits.append(f"{len(capped)} not sent: the cost cap{' of ' + cap.group(1) if cap else ''} was reached")
        if stopped:
            running = [s.task_id for s in stopped if s.task_id]
            bits.append(
                f"stopped waiting: {len(running)} task{'s' if len(running) != 1 else ''} keep running; "
                "%qimage resume --all fetches them"
            )
            return " · ".join(bits)
        left = self._left(len(done) + len(ended), total)
        if left is not None:
            bits.append(f"about {format_seconds(left)} left" if left >= 1 else "finishing")
        retrying = next((s.retry for s in self.slots if s.retry and s.stage not in ("done", "failed", "error")), None)
        if retrying:
            bits.append(f"retrying: {retrying}")
        return " · ".join(bits)

    def _left(self, finished: int, total: int) -> float | None:
        if finished >= total:
            return None
        if finished:
            # Measured throughput, concurrency included: the batch so far says how long the rest takes.
            return (time.monotonic() - self.started) / finished * (total - finished)
        if any(s.stage in ("waiting", "submitting") for s in self.slots):
            return None  # some not started yet, none finished: nothing measured says how long they take
        etas = [s.eta for s in self.slots if s.eta is not None]
        return max(etas) if etas else None

    def status_lines(self) -> tuple[list[str], list[str]]:
        failures = []
        for slot in self.slots:
            if slot.stage in ("failed", "error", "cancelled") and not self.reason_below and not _capped(slot):
                prefix = f"{slot.label}: " if slot.label else ""
                failures.append(prefix + slot.status())
        if len(failures) > _SHOWN_FAILURES:
            failures = [*failures[:_SHOWN_FAILURES], f"... and {len(failures) - _SHOWN_FAILURES} more failed"]
        return [self.summary()], failures


def _capped(slot: LiveSlot) -> bool:
    """Not sent because the batch's cost cap was reached (said once, on the progress line)."""
    return bool(slot.error and slot.error.startswith("not sent:"))


def show_batch_progress(requests: Sequence[GenerationRequest], labels: Sequence[str | None] | None = None) -> BatchGallery:
    """A batch's display for ``generate_many(progress=True)``: shown now, updated in place."""
    from ..view._gallery import DEFAULT_THUMB_PX

    labels = list(labels) if labels is not None else [" ".join(r.prompt.split())[:60] for r in requests]
    slots = [LiveSlot(request=r, label=label) for r, label in zip(requests, labels, strict=True)]
    gallery = BatchGallery(
        slots, title=f"generate_many: {len(requests)} generations", subtitle=None, banner=None,
        thumb_px=DEFAULT_THUMB_PX, fmt="JPEG",
    )
    gallery.show()
    return gallery


def register_in_kernel() -> None:
    """In a Jupyter kernel, ``generate_many`` shows its batches here by default. Not in a terminal
    IPython: there each update of a display would print again, a line per update."""
    import sys

    if "ipykernel" in sys.modules:
        from ..core._observe import register_batch_display

        register_batch_display(show_batch_progress)
