"""Export: a batch's full-size PNGs, a manifest and a contact sheet in one folder (and a zip).

``export(items, directory)`` takes what a user holds after a run (a list of images, Generations, or
task ids and journal keys when the kernel has restarted) and writes:

- each image as a full-size PNG carrying its provenance chunks (the journal's file, byte for byte,
  plus the task's price when the file does not say it yet);
- ``manifest.csv``: one row per image (file, prompt, negative prompt, model, size, seed, host,
  task id, cost, created, ...);
- ``index.html``: a contact sheet that opens offline (no scripts, links to the files beside it);
- with ``zip=True``, ``<directory>.zip`` beside the folder holding the same files.

Nothing is overwritten silently: everything is built first, then a file already there with other
bytes stops the export before anything is written (``overwrite=True`` replaces it). A file already
there with the same bytes is left alone, so exporting the same run again is a no-op.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import os
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from .._exceptions import ValidationError

if TYPE_CHECKING:
    from PIL import Image

    from ._store import Store

__all__ = ["MANIFEST_COLUMNS", "Export", "export"]

MANIFEST = "manifest.csv"
INDEX = "index.html"
MANIFEST_COLUMNS = (
    "file", "prompt", "negative_prompt", "model", "size", "resolution", "width", "height", "seed",
    "host", "task_id", "cost", "created", "item",
)  # fmt: skip


@dataclass(frozen=True)
class Export:
    """What ``export`` wrote: the folder, its image files, manifest, contact sheet and archive."""

    directory: Path
    images: list[Path]
    manifest: Path
    index: Path
    archive: Path | None = None
    written: list[Path] = field(default_factory=list)  # new or replaced
    unchanged: list[Path] = field(default_factory=list)  # already there with the same bytes

    def __repr__(self) -> str:
        extra = f", {self.archive.name}" if self.archive else ""
        same = f"; {len(self.unchanged)} unchanged" if self.unchanged else ""
        return f"<Export {len(self.images)} images -> {self.directory} (manifest.csv, index.html{extra}){same}>"


@dataclass
class _Picture:
    """One image to export: where its bytes are, what it says, and what its task cost."""

    source: Path | None
    image: Image.Image | None
    info: dict[str, str]
    task_cost: float | None = None


def export(
    items: Any = None,
    directory: str | os.PathLike[str] = ".",
    *,
    zip: bool = False,
    last: int | None = None,
    overwrite: bool = False,
    store: Store | None = None,
) -> Export:
    """Write full-size PNGs, ``manifest.csv`` and ``index.html`` for ``items`` into ``directory``.

    Parameters
    ----------
    items:
        Images (a ``%%qimage`` variable, ``gen.images``), Generations, task ids or journal keys,
        or a list mixing them (nested lists are flattened). Task ids are read from the journal,
        so a run can be exported after a kernel restart.
    directory:
        The folder, created if needed.
    zip:
        Also write ``<directory>.zip`` beside it, holding the folder's files.
    last:
        Export the journal's ``last`` newest generations whose images are on disk (oldest first),
        after ``items``.
    overwrite:
        Replace files already there with other bytes (by default that refuses the whole export,
        and nothing is written).
    store:
        The journal for task ids, ``last`` and missing prices (default: ``Store.default()``,
        opened only when needed).
    """
    pictures = _gather(items, last, store)
    if not pictures:
        raise ValidationError(
            "items", "nothing to export: pass images, Generations or task ids, or last=N for the journal's newest"
        )
    folder = Path(directory).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ValidationError("directory", f"{folder} is a file, not a folder: pass a folder to export into")
    _fill_costs(pictures, store)
    names = _file_names(pictures)
    planned: dict[Path, bytes] = {}
    for name, picture in _pairs(names, pictures):
        planned[folder / name] = _png_bytes(picture)
    rows = [_row(name, picture) for name, picture in _pairs(names, pictures)]
    planned[folder / MANIFEST] = _manifest(rows)
    planned[folder / INDEX] = _contact_sheet(rows, title=folder.name)
    archive = folder.with_name(folder.name + ".zip") if zip else None
    if archive is not None:
        planned[archive] = _archive(folder.name, {path.name: data for path, data in planned.items()})
    unchanged = [path for path, data in planned.items() if path.is_file() and path.read_bytes() == data]
    clashes = [path for path in planned if path.exists() and path not in unchanged]
    if clashes and not overwrite:
        shown = ", ".join(str(p.name) for p in clashes[:3]) + (f" and {len(clashes) - 3} more" if len(clashes) > 3 else "")
        raise ValidationError(
            "directory",
            f"{folder} already holds other files named {shown}: nothing was written; "
            "export into a new folder, or pass overwrite=True (%qimage export --overwrite)",
        )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path, data in planned.items():
        if path not in unchanged:
            _write(path, data)
            written.append(path)
    return Export(
        directory=folder,
        images=[folder / name for name in names],
        manifest=folder / MANIFEST,
        index=folder / INDEX,
        archive=archive,
        written=written,
        unchanged=unchanged,
    )


def _pairs(names: list[str], pictures: list[_Picture]) -> Iterator[tuple[str, _Picture]]:
    return zip(names, pictures, strict=True)


# --- what to export ----------------------------------------------------------------------------


def _flatten(items: Any) -> Iterator[Any]:
    if items is None:
        return
    if isinstance(items, (str, os.PathLike)) or hasattr(items, "images") or _is_image(items):
        yield items
        return
    if isinstance(items, Iterable):
        for item in items:
            yield from _flatten(item)
        return
    raise ValidationError(
        "items", f"cannot export a {type(items).__name__}: pass images, Generations, task ids, or lists of them"
    )


def _is_image(obj: Any) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)


def _gather(items: Any, last: int | None, store: Store | None) -> list[_Picture]:
    from ._png_text import read_provenance

    pictures: list[_Picture] = []
    seen: set[Path] = set()

    def add(picture: _Picture) -> None:
        if picture.source is not None:
            if picture.source in seen:
                return  # the same image twice (a list and its generation): one file
            seen.add(picture.source)
        pictures.append(picture)

    journal: list[Any] = []
    for item in _flatten(items):
        if hasattr(item, "images") and hasattr(item, "request"):  # a Generation
            if item.error is not None:
                continue  # a failed generation has no images; its reason was shown when it ran
            for image in item.images:
                add(_from_image(image, item.cost))
        elif _is_image(item):
            add(_from_image(item, None))
        elif isinstance(item, os.PathLike):
            path = Path(item)
            if not path.is_file():
                raise ValidationError("items", f"{path} is not a file: pass an image file, an image or a task id")
            add(_Picture(source=path, image=None, info=read_provenance(path)))
        else:
            journal.append(_journal_entry(_store(store), str(item).strip()))
    if last is not None:
        if isinstance(last, bool) or not isinstance(last, int) or last < 1:
            raise ValidationError("last", f"last must be a whole number >= 1, got {last!r}")
        journal += _newest(_store(store), last)
    for entry in journal:
        for path in entry.image_paths:
            if path is not None and Path(path).exists():
                add(_Picture(source=Path(path), image=None, info=read_provenance(path), task_cost=entry.cost))
    return pictures


def _from_image(image: Image.Image, cost: float | None) -> _Picture:
    info = {k: v for k, v in (getattr(image, "info", None) or {}).items() if isinstance(v, str)}
    path = info.get("path")
    source = Path(path) if path and Path(path).is_file() else None
    return _Picture(source=source, image=None if source else image, info=info, task_cost=cost)


def _store(store: Store | None) -> Store:
    if store is not None:
        return store
    from ._store import Store

    return Store.default()


def _journal_entry(store: Store, ident: str) -> Any:
    entry = store.get(ident) if ident else None
    if entry is None:
        raise ValidationError(
            "items", f"no journal entry {ident!r}: pass a task id or key from %qimage history, or the images themselves"
        )
    if not any(path is not None and Path(path).exists() for path in entry.image_paths):
        raise ValidationError(
            "items", f"{ident} has no images on disk ({entry.status}): %qimage resume {ident} fetches them first"
        )
    return entry


def _newest(store: Store, count: int) -> list[Any]:
    found: list[Any] = []
    # Completed entries with images on disk, newest first, then put back in the order they were made.
    for entry in store.history(max(50, count * 4)):
        if entry.downloaded:
            found.append(entry)
            if len(found) == count:
                break
    return list(reversed(found))


def _fill_costs(pictures: list[_Picture], store: Store | None) -> None:
    """A task's price from the file, else the journal (a file written before prices were kept)."""
    for picture in pictures:
        if picture.task_cost is None and picture.info.get("cost"):
            with contextlib.suppress(ValueError):
                picture.task_cost = float(picture.info["cost"])
        if picture.task_cost is None and picture.info.get("task_id") and (store is not None or picture.source):
            entry = _store(store).get(picture.info["task_id"])
            picture.task_cost = entry.cost if entry is not None else None


# --- the files -----------------------------------------------------------------------------------


def _slug(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    slug = ""
    for word in words:
        if len(slug) + len(word) + 1 > 40:
            break
        slug = f"{slug}-{word}" if slug else word
    return slug or "image"


def _file_names(pictures: list[_Picture]) -> list[str]:
    width = max(3, len(str(len(pictures))))
    return [f"{i:0{width}d}-{_slug(p.info.get('prompt', ''))}.png" for i, p in enumerate(pictures, 1)]


def _png_bytes(picture: _Picture) -> bytes:
    """The image as a PNG with its provenance chunks: the journal's PNG unchanged, plus its price
    when the file does not say it; any other format (or an image in memory) encoded once as PNG."""
    from PIL import Image

    from ._png_text import PNG_SIGNATURE, png_with_text

    meta = {k: v for k, v in picture.info.items() if k != "path"}
    if picture.source is not None:
        data = picture.source.read_bytes()
        if data.startswith(PNG_SIGNATURE):
            if picture.task_cost is not None and "cost" not in picture.info:
                data = png_with_text(data, {"cost": repr(float(picture.task_cost))})
            return data
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = opened.copy()
    else:
        assert picture.image is not None
        image = picture.image
    if picture.task_cost is not None:
        meta.setdefault("cost", repr(float(picture.task_cost)))
    buffer = io.BytesIO()
    if image.mode not in ("1", "L", "LA", "I", "P", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    image.save(buffer, "PNG")
    return png_with_text(buffer.getvalue(), meta)


def _share(picture: _Picture) -> str:
    """This image's part of its task's price (a task of n images costs n shares)."""
    if picture.task_cost is None:
        return ""
    try:
        count = max(1, int(picture.info.get("n") or 1))
    except ValueError:
        count = 1
    return f"{picture.task_cost / count:.6g}"


def _row(name: str, picture: _Picture) -> dict[str, str]:
    from PIL import Image

    info = picture.info
    if picture.source is not None:
        with Image.open(picture.source) as opened:
            width, height = opened.size
    else:
        assert picture.image is not None
        width, height = picture.image.size
    origin = info.get("origin", "")
    host = info.get("provider", "") or ""
    if origin:
        host = f"{host} ({urlsplit(origin).netloc})" if host else urlsplit(origin).netloc
    return {
        "file": name,
        "prompt": info.get("prompt", ""),
        "negative_prompt": info.get("negative_prompt", ""),
        "model": info.get("model", ""),
        "size": info.get("size", ""),
        "resolution": info.get("resolution", ""),
        "width": str(width),
        "height": str(height),
        "seed": info.get("seed", ""),
        "host": host,
        "task_id": info.get("task_id", ""),
        "cost": _share(picture),
        "created": info.get("created", ""),
        "item": info.get("item", ""),
    }


def _manifest(rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


_SHEET_CSS = (
    "body{font-family:system-ui,sans-serif;margin:16px;color:#222}"
    ".grid{display:flex;flex-wrap:wrap;gap:16px}"
    "figure{margin:0;width:256px}figure img{width:256px;height:auto;border-radius:6px;display:block}"
    "figcaption{font-size:12px;margin-top:4px;overflow-wrap:anywhere}"
    "dl{font-size:11px;color:#555;margin:4px 0 0;display:grid;grid-template-columns:max-content 1fr;gap:0 6px}"
    "dd{margin:0;overflow-wrap:anywhere}"
)
_SHEET_FIELDS = ("negative_prompt", "model", "size", "resolution", "seed", "host", "task_id", "cost", "created", "item")


def _contact_sheet(rows: list[dict[str, str]], *, title: str) -> bytes:
    """A page that opens offline: no scripts, each picture linked to its full-size file beside it."""
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}: {len(rows)} images</title><style>{_SHEET_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{len(rows)} images · <a href=\"{MANIFEST}\">{MANIFEST}</a></p>",
        '<div class="grid">',
    ]
    for row in rows:
        href = quote(row["file"])
        details = "".join(
            f"<dt>{html.escape(key.replace('_', ' '))}</dt><dd>{html.escape(row[key])}</dd>"
            for key in _SHEET_FIELDS
            if row.get(key)
        )
        pixels = f"<dt>pixels</dt><dd>{row['width']}x{row['height']}</dd>"
        parts.append(
            f'<figure><a href="{href}"><img src="{href}" alt="{html.escape(row["prompt"])}" loading="lazy"></a>'
            f'<figcaption>{html.escape(row["prompt"])}</figcaption><dl>{pixels}{details}</dl>'
            f'<a href="{href}">{html.escape(row["file"])}</a></figure>'
        )
    parts.append("</div></body></html>\n")
    return "".join(parts).encode("utf-8")


def _archive(folder: str, files: dict[str, bytes]) -> bytes:
    """One zip of the folder's files under ``folder/``; fixed timestamps, so the same export makes
    the same bytes (and exporting again finds it unchanged)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            entry = zipfile.ZipInfo(f"{folder}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            # PNGs are compressed already; the text files are not.
            entry.compress_type = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
