"""The panel's parts: constants, small widget factories, and the rows it redraws (reference chips,
journal entries, the emulator tag, the character counts). No callbacks and no panel state here.
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from .._contract import PIXEL_SIZES, GenerationRequest, _short, parse_pixel_size
from .._exceptions import QImageError
from ._widgets import layout

if TYPE_CHECKING:
    from ._refs import Ref

__all__ = [
    "LINE", "MUTED", "PREVIEW_PX", "RED", "REF_PX", "banner_html", "count_html", "describe", "image_format",
    "journal_row", "ref_chips", "thumb_bytes", "tile_size", "walk_widgets",
]  # fmt: skip

LINE = 360  # longest one-line message
LABEL_W = "92px"
DESC = {"description_width": LABEL_W}
_THUMB_AREA = 176 * 176  # gallery tiles keep the same area whatever the ratio
PREVIEW_PX = 768  # longest side of the preview JPEG (never the full-resolution file)
REF_PX = 64
MUTED = "#5f6b7a"
RED = "#b3261e"


def tile_size(size: str) -> tuple[int, int]:
    """Display size of a gallery tile: equal area for every ratio (or WIDTHxHEIGHT), so grids look balanced."""
    w, h = parse_pixel_size(size) or PIXEL_SIZES.get((size, "1K"), (1, 1))
    r = w / h
    return round(math.sqrt(_THUMB_AREA * r)), round(math.sqrt(_THUMB_AREA / r))


def image_format(mime: str) -> str:
    return "webp" if "webp" in mime else "jpeg"


def describe(exc: BaseException) -> str:
    """One readable line for any failure: our errors speak for themselves; others get their type."""
    if isinstance(exc, QImageError):
        return _short(str(exc), LINE)
    return _short(
        f"unexpected {type(exc).__name__}: {exc}"
        if str(exc)
        else f"unexpected {type(exc).__name__}",
        LINE,
    )


def thumb_bytes(source: Any, max_side: int) -> bytes:
    """JPEG thumbnail bytes of a path, PIL image or encoded bytes (runs in a worker thread)."""
    from ..journal._thumbnails import thumbnail

    if isinstance(source, (bytes, bytearray, memoryview)):
        import io

        from PIL import Image as PILImage

        source = PILImage.open(io.BytesIO(bytes(source)))
    return thumbnail(source, max_side=max_side, fmt="JPEG")


def walk_widgets(root: W.Widget) -> Any:
    """Every widget reachable from ``root``: children, layouts, styles, nested widgets (depth first)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        yield widget
        for name in widget.keys:
            value = getattr(widget, name, None)
            items = value if isinstance(value, (list, tuple)) else (value,)
            stack.extend(v for v in items if isinstance(v, W.Widget))


def inline(widget: W.Widget) -> W.Widget:
    # ToggleButtons lack ipywidgets' own "inline row" class, so their description sits above the
    # buttons, left-aligned; with it, the label lines up right-aligned like every other control's.
    widget.add_class("jupyter-widget-inline-hbox")
    widget.add_class("widget-inline-hbox")  # the label's right alignment still keys on the old name
    return widget


def counted_text(description: str, placeholder: str, height: str, css: str) -> tuple[W.Textarea, W.HTML]:
    """A labelled text box and the count beside it (the panel fills the count as the text changes)."""
    # No side margins: a widget's own 2 px each side made a 100 % wide box 4 px wider than its column.
    text = W.Textarea(
        placeholder=placeholder, description=description, style=DESC,
        layout=W.Layout(width="100%", height=height, margin="2px 0"),
    )
    text.add_class(css)
    count = W.HTML()
    count.add_class("qimage-count-chars")
    return text, count


def toggles(
    options: list[Any], description: str, width: str, css: str, tooltips: list[str] | None = None
) -> W.ToggleButtons:
    """One row of choices, labelled and aligned like the other controls, first option selected."""
    widget = W.ToggleButtons(
        options=options,
        value=options[0],
        description=description,
        tooltips=tooltips or [],
        style={**DESC, "button_width": width},
        layout=W.Layout(flex="0 0 auto"),  # never shrunk: its buttons stay on one line
    )
    inline(widget)
    widget.add_class(css)
    return widget



def banner_html(text: str) -> str:
    """The emulator tag: what it is and how to leave it, on one short line (the whole sentence
    is its tooltip, and the %qimage emulator output)."""
    login = re.search(r"%qimage login[^.]*?(?= switches)", text)
    leave = f" · {login.group(0)} for the real API" if login else ""
    return (
        f'<span title="{html.escape(text)}" style="background:#fff3cd;color:#664d03;padding:2px 8px;'
        f'border-radius:4px;font-size:12px">'
        f"<b>EMULATOR</b> · placeholder pictures{html.escape(leave)}</span>"
    )

def count_html(length: int, limit: int) -> str:
    if length > limit:
        return f'<span style="color:{RED};font-size:11px">{length} / {limit} · {length - limit} over the limit</span>'
    return f'<span style="color:{MUTED};font-size:11px">{length} / {limit}</span>'

def ref_chips(references: list[Ref], uploading: list[str], on_remove: Callable[[int], Any]) -> tuple[W.Widget, ...]:
    """The reference chips: each picture with its Remove button, then one tile per upload in flight."""
    chips: list[W.Widget] = []
    for index, ref in enumerate(references):
        inline = ref.url is not None and not isinstance(ref.url, str)  # sent inside the request
        if ref.thumb is not None:
            picture = W.Image(value=ref.thumb, format="jpeg")
        elif inline:
            picture = W.Image(value=ref.url.raw(), format=ref.url.content_type.split("/")[1])
        else:
            picture = W.Image(value=(ref.url or "").encode("utf-8"), format="url")
        # The whole picture, letterboxed: "cover" cropped a 16:9 image to the middle of its words.
        picture.layout = W.Layout(
            width=f"{REF_PX}px", height=f"{REF_PX}px", object_fit="contain", margin="0"
        )
        picture.add_class("qimage-ref-img")
        remove = W.Button(
            description="Remove",
            icon="times",
            tooltip=f"{ref.shown} (sent inside the request)" if inline else ref.url or "",
            layout=W.Layout(width=f"{REF_PX + 24}px", height="24px"),
        )
        remove.add_class("qimage-ref-remove")
        remove.on_click(on_remove(index))
        chip = W.VBox(
            [picture, remove], layout=W.Layout(align_items="center", margin="0 8px 0 0")
        )
        chip.add_class("qimage-ref")
        chips.append(chip)
    for name in uploading:
        pending = W.HTML(
            f'<div style="width:{REF_PX}px;height:{REF_PX}px;display:flex;align-items:center;justify-content:center;'
            f'background:#eef0f3;color:{MUTED};border-radius:4px;font-size:10px;text-align:center">uploading<br>'
            f"{html.escape(_short(name, 14))}</div>"
        )
        pending.add_class("qimage-ref-uploading")
        chips.append(pending)
    return tuple(chips)


def journal_row(
    entry: Any,
    on_resume: Callable[[str], Any],
    on_resend: Callable[[str], Any] | None = None,
    *,
    keys_honoured: bool = False,
) -> W.Widget:
    """One earlier journal entry: what it was, and the button (or the cell) that gets its images.

    An entry whose submit got no answer offers a resend that says what it risks on this host
    (``keys_honoured``: the host honours idempotency keys); ``on_resend`` is the panel's, which
    asks first where a resend may bill again.
    """
    from .._contract import PHASE_WORDS
    from ..view._words import format_cost, id_html, resend_offer

    request: GenerationRequest = entry.request
    status = str(getattr(entry, "status", "") or "")
    task_id = getattr(entry, "task_id", None)
    key = getattr(entry, "key", None)
    created = getattr(entry, "created_at", None)
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else ""
    downloaded = bool(getattr(entry, "downloaded", False))
    unknown = not getattr(entry, "in_flight", False) and (
        getattr(entry, "outcome_unknown", False) or (not task_id and status == "submitting")
    )
    cost = getattr(entry, "cost", None)
    bits = [
        when,
        "outcome unknown" if unknown else PHASE_WORDS.get(status, status) + (" · on disk" if downloaded else ""),
        request.model,
        request.size if parse_pixel_size(request.size) else f"{request.size} {request.resolution}",
        f"n={request.n}",
        format_cost(cost) if cost is not None else "",
    ]
    # The id shortened, whole in its tooltip: a 36-character id wrapped over four lines here.
    shown_id = id_html(str(task_id)) if task_id else "no task id"
    error = getattr(entry, "error", None)
    prompt = (
        f"“{html.escape(_short(request.prompt, 90))}”"
        if request.prompt
        else "<i>prompt unknown</i>"
    )
    text = W.HTML(
        f'<div style="line-height:1.35;overflow-wrap:anywhere"><span style="color:{MUTED}">'
        f'{html.escape(" · ".join(b for b in bits if b))} · {shown_id}</span>'
        f"<br>{prompt}"
        + (
            f'<br><span style="color:{RED}">{html.escape(_short(error, 160))}</span>'
            if error
            else ""
        )
        + "</div>",
        layout=W.Layout(flex="1 1 0", min_width="0"),
    )
    children: list[W.Widget] = [text]
    if unknown:
        hint = W.HTML(
            f'<div style="color:{MUTED};line-height:1.35;overflow-wrap:anywhere">'
            f"{html.escape(resend_offer(str(key), keys_honoured=keys_honoured))}</div>",
            layout=W.Layout(flex="1 1 0", min_width="0"),
        )
        hint.add_class("qimage-resend-hint")
        children.append(hint)
        if on_resend is not None:
            resend = W.Button(
                description="Resend…",
                icon="redo",
                tooltip=(
                    "Send the identical request again with the same key: this host honours it, no second bill"
                    if keys_honoured else
                    "Send the identical request again: this host has no idempotency key, so it may bill "
                    "again (the panel asks first)"
                ),
                layout=W.Layout(width="auto", min_width="100px", flex="0 0 auto"),
            )
            resend.add_class("qimage-resend")
            resend.on_click(on_resend(str(key)))
            children.append(resend)
    elif status not in ("failed", "cancelled") and (task_id or key):
        label = "Show" if downloaded else "Resume"
        tip = (
            "Show these images from disk (no request)"
            if downloaded
            else "Fetch this task's images without submitting again"
        )
        button = W.Button(
            description=label,
            icon="eye" if downloaded else "download",
            tooltip=tip,
            # Never shrunk by the row's text: squeezed, "Show" read as an icon and an ellipsis.
            layout=W.Layout(width="auto", min_width="100px", flex="0 0 auto"),
        )
        button.add_class("qimage-resume")
        button.on_click(on_resume(str(task_id or key)))
        children.append(button)
    row = W.HBox(
        children,
        layout=layout(
            align_items="center", width="100%", border_top="1px solid #eef0f3", padding="4px 0"
        ),
    )
    row.add_class("qimage-journal-entry")
    return row
