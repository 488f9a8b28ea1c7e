"""One labelled grid for many images: ``qimage_nb.grid(items, cols=..., label=...)``.

A list of Generations (``generate_many``'s results) or of images (a ``%%qimage`` variable) shows as
one grid instead of a gallery per item. The output is static HTML (thumbnails as ``data:`` URIs, no
script) with a plain-text fallback, so it survives nbconvert, GitHub and a reopened notebook. Where
the front end keeps the grid's ``<style>`` (JupyterLab, Notebook 7, VS Code), a click on a thumbnail
enlarges it in place (CSS ``:focus``) and a click elsewhere shrinks it back; elsewhere (GitHub strips
styles) the thumbnails show at their own size.

What a saved notebook keeps per image follows the galleries' rule: at most 2 % of the full image
file as base64, or 16 KB when that is more (``thumbnail``'s byte budget).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Grid", "grid"]

GRID_THUMB_PX = 256  # the thumbnails' pixels: what an enlarged tile shows
GRID_SHOWN_PX = 160  # how wide a tile is drawn in the grid until clicked
_SHARE, _FLOOR = 0.02, 16 * 1024  # the galleries' per-image budget in a saved notebook
_MARKUP = 400  # what one tile's markup and its text line take of that budget

Label = str | Callable[[Any], Any] | Sequence[Any] | None


@dataclass(frozen=True)
class _Item:
    image: Any
    label: str
    tooltip: str


class Grid:
    """Images drawn as one labelled grid; shown by Jupyter through ``_repr_mimebundle_``."""

    def __init__(self, items: list[_Item], *, cols: int | None, title: str | None) -> None:
        self.items = items
        self.cols = cols
        self.title = title

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        lines = [f"<Grid of {len(self.items)} image{'s' if len(self.items) != 1 else ''}>"]
        lines += [f"  {i}. {item.label}" for i, item in enumerate(self.items, 1)]
        return "\n".join(lines)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/html": self.html(), "text/plain": repr(self)}

    def html(self) -> str:
        """The grid as static HTML (``data:`` URIs, no script)."""
        shown = GRID_SHOWN_PX
        css = (
            f"<style>.qimage-grid figure{{margin:0;width:{shown}px}}"
            f".qimage-grid img{{width:{shown}px;height:auto;border-radius:6px;display:block;cursor:zoom-in;"
            "transition:transform .15s;transform-origin:top left;outline:none}"
            f".qimage-grid img:focus{{transform:scale({GRID_THUMB_PX / shown:.3f});position:relative;z-index:10;"
            "cursor:zoom-out;box-shadow:0 4px 16px rgba(0,0,0,.35)}"
            ".qimage-grid figcaption{font-size:11px;color:#444;overflow-wrap:anywhere;line-height:1.25}</style>"
        )
        if self.cols:
            layout = f"display:grid;grid-template-columns:repeat({int(self.cols)},{shown}px);gap:8px"
        else:
            layout = "display:flex;flex-wrap:wrap;gap:8px"
        parts = ['<div class="qimage-grid">', css]
        if self.title:
            parts.append(f'<div style="font-weight:600;margin-bottom:4px">{html.escape(self.title)}</div>')
        parts.append(f'<div style="{layout}">')
        for item in self.items:
            parts.append(_figure(item, shown))
        parts.append("</div></div>")
        return "".join(parts)


def _figure(item: _Item, shown: int) -> str:
    import base64

    from ..journal._thumbnails import thumbnail, thumbnail_mime

    source = _source(item.image)
    data = thumbnail(source, max_side=GRID_THUMB_PX, fmt="JPEG", max_bytes=_budget(source))
    uri = f"data:{thumbnail_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"
    width, height = item.image.size
    tall = round(shown * height / width) if width else shown
    title = f' title="{html.escape(item.tooltip)}"' if item.tooltip else ""
    # tabindex makes the picture focusable, so a click enlarges it with CSS alone (no script).
    return (
        f'<figure><img src="{uri}" width="{shown}" height="{tall}" tabindex="0" alt="{html.escape(item.label)}"{title}>'
        f"<figcaption>{html.escape(item.label)}</figcaption></figure>"
    )


def _source(image: Any) -> Any:
    path = (getattr(image, "info", None) or {}).get("path")
    if isinstance(path, str) and Path(path).is_file():
        return Path(path)
    return image


def _budget(source: Any) -> int | None:
    if not isinstance(source, Path):
        return None
    size = source.stat().st_size
    allowed = max(int(_SHARE * 4 * -(-size // 3)), _FLOOR) - _MARKUP
    return max(0, allowed) // 4 * 3


# --- what the grid holds -----------------------------------------------------------------------


def _is_image(obj: Any) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)


def _entries(items: Any) -> list[tuple[Any, Any]]:
    """(image, the Generation it came from or None), flattening lists and Generations in order."""
    if _is_image(items) or hasattr(items, "images"):
        items = [items]
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise TypeError(f"grid() takes images or Generations (or a list of them), not a {type(items).__name__}")
    found: list[tuple[Any, Any]] = []
    for item in items:
        if hasattr(item, "images") and hasattr(item, "request"):
            found.extend((image, item) for image in item.images)
        elif _is_image(item):
            found.append((item, None))
        elif isinstance(item, (list, tuple)):
            found.extend(_entries(item))
        else:
            raise TypeError(f"grid() takes images or Generations, not a {type(item).__name__}")
    return found


def _default_label(image: Any, generation: Any) -> str:
    info = getattr(image, "info", None) or {}
    prompt = str(info.get("prompt") or (generation.request.prompt if generation is not None else "") or "")
    return " ".join(prompt.split())


def _label_of(label: Label, index: int, image: Any, generation: Any) -> str:
    if label is None:
        text = _default_label(image, generation)
    elif isinstance(label, str):
        text = (getattr(image, "info", None) or {}).get(label, "")
    elif callable(label):
        text = label(image)
    else:
        text = label[index]
    return "" if text is None else str(text)


def grid(items: Any, *, cols: int | None = None, label: Label = None, title: str | None = None) -> Grid:
    """One labelled grid of many images, as static HTML that survives nbconvert and GitHub.

    Parameters
    ----------
    items:
        Images (a ``%%qimage`` variable), Generations (``generate_many``'s results), or a list
        mixing them; a Generation contributes each of its images.
    cols:
        Columns of the grid; default: as many as fit the width.
    label:
        Under each picture: by default its prompt; a provenance key (``"seed"``, ``"model"``,
        ``"item"``); a function of the image; or a list with one label per image.
    title:
        A line above the grid.
    """
    if cols is not None and (isinstance(cols, bool) or not isinstance(cols, int) or not 1 <= cols <= 24):
        raise ValueError(f"cols must be a whole number from 1 to 24, got {cols!r}")
    entries = _entries(items)
    if label is not None and not isinstance(label, str) and not callable(label) and len(label) != len(entries):
        raise ValueError(f"label has {len(label)} entries for {len(entries)} images: give one per image")
    made = []
    for index, (image, generation) in enumerate(entries):
        text = _label_of(label, index, image, generation)
        info = getattr(image, "info", None) or {}
        tips = [f"prompt: {info['prompt']}"] if info.get("prompt") and info.get("prompt") != text else []
        tips += [f"{key}: {info[key]}" for key in ("model", "size", "seed", "task_id") if info.get(key)]
        made.append(_Item(image=image, label=text, tooltip="\n".join(tips)))
    return Grid(made, cols=cols, title=title)
