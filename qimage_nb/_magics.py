"""``%%qimage`` and ``%qimage``: the notebook's fastest way to an image.

``%load_ext qimage_nb`` registers :class:`QImageMagics`. Loading imports IPython and traitlets only
(both already loaded in any shell); the client, httpx, Pillow and ipywidgets load on first use.

The cell magic validates everything (arguments, ``%config`` defaults, reference files) before a
single request is sent, shows one output area that is updated in place while the task runs, and
leaves static HTML behind (small thumbnails as ``data:`` URIs plus a plain-text fallback), so a
saved notebook renders anywhere and grows by kilobytes per image, not megabytes.
"""

from __future__ import annotations

import contextlib
import html
import keyword
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Float, Int, Unicode

if TYPE_CHECKING:
    from ._client import AsyncClient, Generation, Update
    from ._contract import GenerationRequest
    from ._display import Tile

__all__ = ["QImageCellError", "QImageMagics"]

DEFAULT_OUTPUT = "qimages"
MODEL_ALIASES = {
    "pro": "qwen-image-2.0-pro",
    "standard": "qwen-image-2.0",
    "std": "qwen-image-2.0",
}
SHORT_MODEL = {"qwen-image-2.0": "standard", "qwen-image-2.0-pro": "pro"}
THUMB_FORMATS = ("JPEG", "WEBP")
# A URI scheme of two letters or more (one letter is a Windows drive, C:\\...).
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
# Provider upload URLs live 72 h; reuse ours for less than that so a re-run sends the same URL
# (and so hits the cache) without ever handing the API a URL about to expire.
UPLOAD_REUSE_SECONDS = 48 * 3600

NO_KEY = (
    "no API key is set: set QIMAGE_API_KEY in the environment before starting Jupyter, or run "
    "%qimage login (asks for the key, keeps it in this kernel's memory only). "
    "To try everything offline, run %qimage emulator: it starts the bundled emulator in this kernel "
    "and points the session at it (its pictures carry a banner)."
)


class QImageCellError(Exception):
    """A generation ended without images; IPython shows it as one line, not a traceback."""

    def __init__(self, message: str, kind: str = "QImageError", task_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.task_id = task_id

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31m{self.kind}\x1b[0m: {self.message}"]


# --- small helpers ---------------------------------------------------------------------------


def _unquote(value: Any) -> Any:
    """Drop one pair of surrounding quotes: IPython's argument splitter keeps them on the value."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    if isinstance(value, list):
        return [_unquote(item) for item in value]
    return value


def _parse(func: Any, line: str) -> Any:
    """``parse_argstring`` (UsageError on bad input, generated help) with quotes removed from values."""
    args = parse_argstring(func, line)
    for name, value in vars(args).items():
        setattr(args, name, _unquote(value))
    return args


def _split_values(values: list[str] | None) -> list[str]:
    """``--size 1:1,16:9`` (or repeated options) -> ``["1:1", "16:9"]``, order kept, no duplicates."""
    out: list[str] = []
    for value in values or []:
        for part in value.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def _when(timestamp: float | None) -> str:
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


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_line(exc: BaseException) -> tuple[str, str]:
    """(kind, message) for one readable line; a timeout says how to get the images later."""
    from ._exceptions import GenerationTimeout

    message = str(exc) or type(exc).__name__
    if isinstance(exc, GenerationTimeout):
        message = (
            f"task {exc.task_id} is still {exc.last_status or 'running'} after the wait deadline; "
            f"it keeps running on the server. Get its images later with: %qimage resume {exc.task_id}"
        )
    return type(exc).__name__, message


def _resume_hint(task_ids: list[str]) -> str:
    if not task_ids:
        return (
            "interrupted before the API answered with a task id; %qimage history lists the journal, "
            "%qimage resume --all fetches whatever was submitted"
        )
    if len(task_ids) == 1:
        return (
            f"interrupted: stopped waiting. Task {task_ids[0]} keeps running on the server; "
            f"get its images later with: %qimage resume {task_ids[0]}"
        )
    return (
        f"interrupted: stopped waiting. Tasks {', '.join(task_ids)} keep running on the server; "
        "get their images later with: %qimage resume --all"
    )


# --- the live output area --------------------------------------------------------------------


@dataclass
class _Slot:
    """One generation in the output area (one per cell of a comparison grid)."""

    request: GenerationRequest | None
    label: str | None = None
    stage: str = "waiting"
    task_id: str | None = None
    progress: int = 0
    eta: float | None = None
    elapsed: float = 0.0
    tiles: list[Tile | None] = field(default_factory=list)
    count: int = 0
    error: str | None = None
    cached: bool = False
    cached_at: float | None = None
    unconfirmed: bool = False  # task_id is a journal key: the submit's answer never arrived

    def __post_init__(self) -> None:
        if self.request is not None and not self.tiles:
            self.count = self.request.n
            self.tiles = [None] * self.count

    def status(self) -> str:
        task = f" · task {self.task_id}" if self.task_id else ""
        if self.stage == "waiting":
            return "waiting to start"
        if self.stage == "uploading":
            return "uploading references..."
        if self.stage == "submitting":
            return "submitting..."
        if self.stage == "pending":
            return f"queued{task}"
        if self.stage == "processing":
            # The server's estimate is pessimistic: near the end, progress says more than it does.
            eta = " · almost done" if self.progress >= 90 else f" · about {self.eta:.0f} s left" if self.eta else ""
            return f"processing {self.progress}%{eta}{task}"
        if self.stage in ("downloading", "completed"):
            have = sum(t is not None for t in self.tiles)
            return f"downloading {have} of {self.count}{task}"
        if self.stage == "done":
            if self.cached:
                return f"from cache, {_when(self.cached_at)}; --new for fresh images{task}"
            return f"done in {self.elapsed:.0f} s{task}"
        if self.stage == "interrupted":
            if self.task_id:
                return f"stopped waiting; get the images later with %qimage resume {self.task_id}"
            return "stopped waiting before the task id arrived; see %qimage history"
        return f"{self.stage}: {self.error or 'no reason given'}"

    def placeholder_text(self) -> str:
        if self.stage == "processing":
            return f"{self.progress}%"
        if self.stage in ("failed", "error", "cancelled"):
            return self.stage
        if self.stage == "interrupted":
            return "not waiting"
        return {"waiting": "waiting", "uploading": "uploading", "submitting": "submitting",
                "pending": "queued", "downloading": "downloading", "completed": "downloading", "done": ""}.get(self.stage, self.stage)


class _Live:
    """The cell's one output area: created once, then ``update``-d in place (display_id)."""

    def __init__(
        self,
        slots: list[_Slot],
        *,
        title: str | None,
        subtitle: str | None,
        banner: str | None,
        thumb_px: int,
        fmt: str,
        columns: int | None = None,
    ) -> None:
        self.slots = slots
        self.title = title
        self.subtitle = subtitle
        self.banner = banner
        self.thumb_px = thumb_px
        self.fmt = fmt
        self.columns = columns
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.footer: str | None = None
        self._handle: Any = None
        self._lock = threading.Lock()

    # -- state --

    def show(self) -> None:
        from IPython.display import display

        self._handle = display(self.bundle(), raw=True, display_id=True)

    def refresh(self) -> None:
        if self._handle is None:
            return
        with self._lock:
            self._handle.update(self.bundle(), raw=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.refresh()

    def on_update(self, update: Update, index: int | None = None) -> None:
        i = update.batch_index if index is None else index
        slot = self.slots[i or 0]
        if slot.request is None or not slot.request.prompt:
            slot.request = update.request  # resume learns the request from the journal
        slot.stage = update.stage
        slot.task_id = update.task_id or slot.task_id
        slot.progress = update.progress
        slot.eta = update.eta
        slot.elapsed = update.elapsed
        slot.cached = update.cached
        slot.cached_at = update.cached_at
        if update.error is not None:
            slot.error = _error_line(update.error)[1]
        count = len(update.images) or slot.count or update.request.n
        if count != len(slot.tiles):
            slot.tiles = (slot.tiles + [None] * count)[:count]
        slot.count = count
        for k, image in enumerate(update.images):
            if image is not None and slot.tiles[k] is None:
                slot.tiles[k] = self._tile(image, slot.label)
        self.refresh()

    def _tile(self, image: Any, label: str | None) -> Tile | None:
        from ._display import tile_for

        try:
            return tile_for(image, thumb_px=self.thumb_px, fmt=self.fmt, label=label)
        except Exception:  # a thumbnail that cannot be made must not cost the image itself
            return None

    def finish(self, generations: list[Generation | None]) -> None:
        for slot, gen in zip(self.slots, generations, strict=False):
            if gen is None:
                continue
            if gen.error is not None:
                slot.stage = "failed" if gen.status == "failed" else "error"
                slot.error = _error_line(gen.error)[1]
                slot.task_id = gen.task_id or slot.task_id
                continue
            slot.request = gen.request
            slot.task_id = gen.task_id
            slot.stage = "done"
            slot.cached = gen.cached
            if gen.cached:
                slot.cached_at = gen.completed_at
            slot.count = len(gen.images)
            slot.tiles = (slot.tiles + [None] * slot.count)[: slot.count]
            for k, image in enumerate(gen.images):
                if slot.tiles[k] is None:
                    slot.tiles[k] = self._tile(image, slot.label)
        self.refresh()

    def interrupted(self) -> list[str]:
        ids = []
        for slot in self.slots:
            if slot.stage not in ("done", "failed", "error", "cancelled"):
                slot.stage = "interrupted"
            if slot.task_id and slot.stage == "interrupted":
                ids.append(slot.task_id)
        self.refresh()
        return ids

    def fail(self, exc: BaseException) -> None:
        kind, message = _error_line(exc)
        task_id = getattr(exc, "task_id", None)
        absorbed = False
        for slot in self.slots:
            if slot.stage not in ("done", "failed", "error", "cancelled") and (
                task_id is None or slot.task_id in (None, task_id)
            ):
                slot.stage = "failed" if kind == "TaskFailedError" else "error"
                slot.error = message
                absorbed = True
        if not absorbed:
            self.errors.append(f"{kind}: {message}")
        self.refresh()

    # -- rendering --

    def tiles(self) -> list[Tile]:
        from ._display import placeholder

        out = []
        for slot in self.slots:
            w, h = slot.request.pixel_size if slot.request is not None and slot.request.prompt else (1, 1)
            for tile in slot.tiles or [None]:
                out.append(tile or placeholder(slot.placeholder_text(), label=slot.label, width=w, height=h))
        return out

    def status_lines(self) -> tuple[list[str], list[str]]:
        """(progress lines, failure lines): one line per generation, failures drawn in red."""
        lines, failures = [], []
        for slot in self.slots:
            prefix = f"{slot.label}: " if slot.label else ""
            failed = slot.stage in ("failed", "error", "cancelled")
            (failures if failed else lines).append(prefix + slot.status())
        return lines, failures

    def bundle(self) -> dict[str, Any]:
        from ._display import gallery_html

        lines, failures = self.status_lines()
        notes = [*self.notes, *lines]
        if self.footer:
            notes.append(self.footer)
        errors = [*failures, *self.errors]
        body = gallery_html(
            self.tiles(),
            thumb_px=self.thumb_px,
            title=self.title,
            notes=([self.subtitle] if self.subtitle else []) + notes,
            banner=self.banner,
            columns=self.columns,
            errors=errors,
        )
        return {"text/html": body, "text/plain": self.text(notes, errors)}

    def text(self, notes: list[str], errors: list[str]) -> str:
        lines = []
        if self.banner:
            lines.append(f"[{self.banner}]")
        if self.title:
            lines.append(self.title)
        if self.subtitle:
            lines.append(self.subtitle)
        lines.extend(notes)
        lines.extend(errors)
        for slot in self.slots:
            for k, tile in enumerate(slot.tiles):
                if tile is not None:
                    label = f"{slot.label} " if slot.label else ""
                    lines.append(f"  {label}[{k}] {tile.width}x{tile.height} {tile.caption}")
        return "\n".join(lines)


# --- references ------------------------------------------------------------------------------


@dataclass
class _Ref:
    """One ``--ref``: a URL ready to send, or local material to upload first."""

    shown: str  # how the user named it, for messages
    url: str | None = None
    local: Any = None  # a path or a PIL image
    digest: str | None = None


class _UploadCache:
    """Upload URLs by content hash, so re-running a cell sends the same URL (and hits the cache)."""

    def __init__(self, home: Path) -> None:
        self.path = home / "magic-uploads.json"

    def _read(self) -> dict[str, Any]:
        import json

        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, base_url: str, digest: str) -> tuple[str, float] | None:
        entry = self._read().get(f"{base_url} {digest}")
        if not isinstance(entry, dict):
            return None
        url, at = entry.get("url"), entry.get("at")
        if isinstance(url, str) and isinstance(at, (int, float)) and time.time() - at < UPLOAD_REUSE_SECONDS:
            return url, float(at)
        return None

    def put(self, base_url: str, digest: str, url: str) -> None:
        import json

        data = self._read()
        now = time.time()
        data = {k: v for k, v in data.items() if isinstance(v, dict) and now - v.get("at", 0) < UPLOAD_REUSE_SECONDS}
        data[f"{base_url} {digest}"] = {"url": url, "at": now}
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            temp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(temp, self.path)


# --- the plan of one cell --------------------------------------------------------------------


@dataclass
class _Plan:
    prompt: str
    negative: str | None
    n: int
    combos: list[tuple[str, str, str]]
    labels: list[str | None]
    name: str
    timeout: float
    columns: int | None
    fresh: bool
    background: bool


# --- the magics ------------------------------------------------------------------------------


@magics_class
class QImageMagics(Magics):
    """``%%qimage`` (generate) and ``%qimage`` (login, emulator, config, resume, history, panel).

    Defaults are configurable: ``%config QImageMagics.model = "qwen-image-2.0-pro"`` in a
    notebook, or ``c.QImageMagics.model = ...`` in ``ipython_config.py``.
    """

    model = Unicode("qwen-image-2.0", help="Default model: qwen-image-2.0 or qwen-image-2.0-pro.").tag(config=True)
    size = Unicode("1:1", help="Default aspect ratio: 1:1, 4:3, 3:4, 16:9, 9:16, 3:2 or 2:3.").tag(config=True)
    resolution = Unicode("1K", help="Default resolution tier: 1K or 2K.").tag(config=True)
    n = Int(1, help="Default number of images per request (1 to 6).").tag(config=True)
    thumb_px = Int(256, help="Longest side of the thumbnails kept in the notebook, in pixels.").tag(config=True)
    thumb_format = Unicode("JPEG", help="Thumbnail format kept in the notebook: JPEG or WEBP.").tag(config=True)
    timeout = Float(900.0, help="Seconds to wait for a task before giving up waiting (it keeps running).").tag(
        config=True
    )
    output = Unicode(DEFAULT_OUTPUT, help="Variable that receives the images when -o is not given.").tag(config=True)
    concurrency = Int(4, help="Generations in flight at once for a comparison grid or resume --all.").tag(
        config=True
    )

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._background_tasks: set[Any] = set()
        self._background_threads: list[threading.Thread] = []

    # -- settings -----------------------------------------------------------------------------

    def _config_error(self, trait: str, message: str) -> UsageError:
        value = getattr(self, trait)
        return UsageError(f"{message} (from %config QImageMagics.{trait} = {value!r}; fix it or pass the option)")

    def _checked_display_settings(self) -> tuple[int, str, int]:
        if not 32 <= self.thumb_px <= 1024:
            raise self._config_error("thumb_px", f"thumb_px is {self.thumb_px}; use 32 to 1024 pixels")
        fmt = self.thumb_format.strip().upper()
        if fmt not in THUMB_FORMATS:
            raise self._config_error("thumb_format", f"thumb_format {self.thumb_format!r} is not JPEG or WEBP")
        if not 1 <= self.concurrency <= 64:
            raise self._config_error("concurrency", f"concurrency is {self.concurrency}; use 1 to 64")
        return self.thumb_px, fmt, self.concurrency

    def _checked_name(self, name: str | None, *, option: str = "-o") -> str:
        if name is None:
            name = self.output
            if not (name.isidentifier() and not keyword.iskeyword(name)):
                raise self._config_error("output", f"output {name!r} is not a Python variable name")
            return name
        if not (name.isidentifier() and not keyword.iskeyword(name)):
            raise UsageError(f"{option} {name!r} is not a Python variable name; e.g. {option} cats")
        return name

    def _plan(self, args: Any, prompt: str) -> _Plan:
        from ._contract import REFS_MAX, GenerationRequest
        from ._exceptions import ValidationError

        from_config: dict[str, str] = {}
        models = [MODEL_ALIASES.get(m.lower(), m) for m in _split_values(args.model)]
        if args.pro:
            if models and models != ["qwen-image-2.0-pro"]:
                raise UsageError("--pro and --model disagree; pass one of them")
            models = ["qwen-image-2.0-pro"]
        if not models:
            models = [self.model]
            from_config["model"] = "model"
        sizes = _split_values(args.size)
        if not sizes:
            sizes = [self.size]
            from_config["size"] = "size"
        resolutions = _split_values(args.resolution)
        if not resolutions:
            resolutions = [self.resolution]
            from_config["resolution"] = "resolution"
        n = args.n
        if n is None:
            n = self.n
            from_config["n"] = "n"
        timeout = args.timeout
        if timeout is None:
            timeout = self.timeout
            if not 0 < timeout < float("inf"):
                raise self._config_error("timeout", f"timeout is {timeout}; use a positive number of seconds")
        elif not 0 < timeout < float("inf"):
            raise UsageError(f"--timeout {timeout} must be a positive number of seconds")

        refs_count = sum(1 for _ in _split_refs(args.ref))
        placeholders = [f"https://reference.invalid/{i}" for i in range(min(refs_count, REFS_MAX))] or None
        combos = list(product(models, sizes, resolutions))
        normal: list[tuple[str, str, str]] = []
        for model, size, resolution in combos:
            try:
                request = GenerationRequest.create(
                    prompt,
                    model=model,
                    size=size,
                    resolution=resolution,
                    n=n,
                    negative_prompt=args.negative,
                    image_urls=placeholders,
                )
            except ValidationError as exc:
                if exc.field in from_config:
                    raise self._config_error(from_config[exc.field], exc.message) from None
                if exc.field == "negative_prompt":
                    raise UsageError(f"--negative: {exc.message}") from None
                raise UsageError(exc.message) from None
            key = (request.model, request.size, request.resolution)
            if key not in normal:
                normal.append(key)

        grid = len(normal) > 1
        labels: list[str | None] = (
            [" · ".join((SHORT_MODEL.get(m, m), s, r)) for m, s, r in normal] if grid else [None]
        )
        columns = None
        if grid:
            axes = [len({c[i] for c in normal}) for i in range(3)]
            varied = [a for a in axes if a > 1]
            per_row = len(normal) // varied[0] if len(varied) >= 2 else len(normal)
            columns = per_row * n
        return _Plan(
            prompt=prompt,
            negative=args.negative,
            n=n,
            combos=normal,
            labels=labels,
            name=self._checked_name(args.output),
            timeout=timeout,
            columns=columns,
            fresh=args.new,
            background=args.background,
        )

    # -- references ---------------------------------------------------------------------------

    def _resolve_refs(self, tokens: list[str]) -> list[_Ref]:
        from ._contract import REFS_MAX

        refs: list[_Ref] = []
        for token in tokens:
            refs.extend(self._resolve_ref(token))
        if len(refs) > REFS_MAX:
            raise UsageError(f"--ref names {len(refs)} reference images; the API takes 1 to {REFS_MAX}")
        return refs

    def _resolve_ref(self, token: str) -> list[_Ref]:
        if token.lower().startswith(("http://", "https://")):
            return [self._url_ref(token, token)]
        found, value = self._evaluate(token)
        if found:
            refs = self._refs_from_value(value, token)
            if refs is not None:
                return refs
            if not Path(os.path.expanduser(token)).exists():
                raise UsageError(
                    f"--ref {token} is a {type(value).__name__}; pass an image, a list of images, "
                    "a file path or an http(s) URL"
                )
        if _URI.match(token) and not Path(os.path.expanduser(token)).exists():
            # data:, file:, ftp:, javascript: ... are URLs the API refuses: say so, not "no such file".
            return [self._url_ref(token, token)]
        return [self._path_ref(token, token)]

    def _evaluate(self, token: str) -> tuple[bool, Any]:
        """``imgs[0]``-style expressions in the user's namespace; paths fail to parse or to resolve."""
        try:
            code = compile(token, "<--ref>", "eval")
        except (SyntaxError, ValueError):
            return False, None
        try:
            return True, eval(code, self.shell.user_ns)
        except Exception:
            return False, None

    def _url_ref(self, url: str, shown: str) -> _Ref:
        from ._contract import check_reference_url
        from ._exceptions import ValidationError

        try:
            return _Ref(shown=shown, url=check_reference_url(url))
        except ValidationError as exc:
            raise UsageError(f"--ref {shown}: {exc.message}") from None

    def _refs_from_value(self, value: Any, shown: str) -> list[_Ref] | None:
        if isinstance(value, (list, tuple)):
            refs: list[_Ref] = []
            for i, item in enumerate(value):
                sub = self._refs_from_value(item, f"{shown}[{i}]")
                if sub is None:
                    raise UsageError(f"--ref {shown}[{i}] is a {type(item).__name__}, not an image, path or URL")
                refs.extend(sub)
            return refs
        if hasattr(value, "images") and isinstance(getattr(value, "images", None), list):
            return self._refs_from_value(value.images, f"{shown}.images")
        if isinstance(value, str):
            if value.lower().startswith(("http://", "https://")):
                return [self._url_ref(value, shown)]
            return [self._path_ref(value, shown)]
        if isinstance(value, os.PathLike):
            return [self._path_ref(os.fspath(value), shown)]
        if "PIL" in sys.modules and isinstance(value, sys.modules["PIL"].Image.Image):
            source = str((getattr(value, "info", None) or {}).get("source_url") or "")
            if source.lower().startswith(("http://", "https://")):
                # An image this package generated: the API already has it at its source URL.
                return [_Ref(shown=shown, url=source)]
            return [self._local_ref(value, f"{shown} (a {value.size[0]}x{value.size[1]} image)")]
        return None

    def _path_ref(self, path: str, shown: str) -> _Ref:
        p = Path(os.path.expanduser(path))
        if not p.exists():
            raise UsageError(f"--ref {shown}: no such file (and no variable of that name); nothing was sent")
        if not p.is_file():
            raise UsageError(f"--ref {shown} is a folder, not an image file; nothing was sent")
        return self._local_ref(p, p.name)

    def _local_ref(self, material: Any, shown: str) -> _Ref:
        import hashlib

        from ._exceptions import QImageError
        from ._images import prepare_upload

        try:
            prepared = prepare_upload(material)
        except (QImageError, OSError, ValueError) as exc:
            raise UsageError(f"--ref {shown} is not an image the API accepts: {exc}; nothing was sent") from None
        return _Ref(shown=shown, local=material, digest=hashlib.sha256(prepared.data).hexdigest())

    async def _ref_urls(self, client: AsyncClient, refs: list[_Ref], say: Any) -> list[str]:
        urls = []
        cache = _UploadCache(_home_of(client))
        for ref in refs:
            if ref.url is not None:
                urls.append(ref.url)
                continue
            assert ref.digest is not None
            hit = cache.get(client.base_url, ref.digest)
            if hit is not None:
                say(f"reusing the upload of {ref.shown} from {_when(hit[1])}")
                urls.append(hit[0])
                continue
            say(f"uploading {ref.shown} as a reference...")
            url = await client.upload(ref.local)
            cache.put(client.base_url, ref.digest, url)
            urls.append(url)
        return urls

    # -- %%qimage -----------------------------------------------------------------------------

    @no_var_expand
    @magic_arguments(name="%qimage")
    @argument(
        "-o", "--output", metavar="NAME", default=None,
        help=f"variable that receives the images as a list of PIL images, in the API's order "
        f"(default: {DEFAULT_OUTPUT}, or %%config QImageMagics.output)",
    )
    @argument(
        "--model", action="append", metavar="M",
        help="qwen-image-2.0 (default) or qwen-image-2.0-pro ('standard' and 'pro' work too); "
        "comma-separated values make a comparison grid",
    )
    @argument("--pro", action="store_true", help="use qwen-image-2.0-pro (better text, finer texture)")
    @argument(
        "--size", action="append", metavar="RATIO",
        help="aspect ratio: 1:1 (default), 4:3, 3:4, 16:9, 9:16, 3:2, 2:3; comma-separated for a grid",
    )
    @argument(
        "--resolution", action="append", metavar="1K|2K",
        help="1K (default) or 2K; comma-separated for a grid",
    )
    @argument("-n", type=int, default=None, metavar="N", help="images per request, 1 to 6 (default 1)")
    @argument("--negative", metavar="TEXT", default=None, help="negative prompt (quote it), up to 500 characters")
    @argument(
        "--ref", action="append", nargs="+", metavar="URL_OR_NAME",
        help="reference image(s), at most 3: an http(s) URL, a variable holding images this package "
        "made (e.g. qimages[0]; their source URL is reused), another PIL image or a file path "
        "(uploaded first)",
    )
    @argument("--new", action="store_true", help="fresh images even if an identical request is cached")
    @argument(
        "--background", action="store_true",
        help="return at once; thumbnails still fill in and NAME is bound when the images arrive",
    )
    @argument("--timeout", type=float, default=None, metavar="S", help="seconds to wait (default 900)")
    @cell_magic("qimage")
    def qimage_cell(self, line: str, cell: str) -> None:
        """Generate images with Qwen Image 2.0; the cell body is the prompt.

        The prompt is sent exactly as written (surrounding whitespace trimmed): braces, quotes,
        ``$`` and any language pass through untouched. When it finishes, NAME (``-o``, default
        ``qimages``) holds a list of PIL images in the API's order; full images stay on disk and
        the notebook keeps small thumbnails only.

        An identical request that already completed is served from the journal with no request
        to the API ("from cache"); ``--new`` pays for fresh images. Comma-separated values for
        --model, --size and --resolution run every combination concurrently as a comparison grid.

        Examples::

            %%qimage -o cats --size 16:9 -n 2
            a watercolour cat reading "Qwen" on a sign

            %%qimage --ref cats[0] --pro
            the same cat, wearing a hat
        """
        args = _parse(self.qimage_cell, line)
        prompt = cell.strip()
        plan = self._plan(args, prompt)
        thumb_px, fmt, concurrency = self._checked_display_settings()
        refs = self._resolve_refs(list(_split_refs(args.ref)))

        from ._session import EMULATOR_BANNER, get_session

        session = get_session()
        if not session.has_key:
            raise UsageError(NO_KEY)
        client = session.client()

        live = self._live_for(plan, thumb_px, fmt, EMULATOR_BANNER if session.using_emulator else None)
        live.show()
        if plan.background:
            self._start_background(plan, refs, live, concurrency)
            print(f"running in the background: {plan.name} is bound when the images arrive")
            return

        from ._sync import run_sync

        started = time.time()
        try:
            generations = run_sync(self._execute(client, plan, refs, live, concurrency, say=print))
        except KeyboardInterrupt:
            _adopt_journal_ids(client, live, started)
            ids = live.interrupted()
            if any(slot.unconfirmed for slot in live.slots):
                print(
                    "interrupted while submitting: the API may or may not have the task. "
                    f"%qimage resume {ids[0] if len(ids) == 1 else '--all'} finishes it, re-sending the "
                    "same Idempotency-Key so it is never billed twice"
                )
            else:
                print(_resume_hint(ids))
            return
        except BaseException as exc:
            raise self._surface(exc, live) from None
        self._conclude(plan, generations, live)

    def _live_for(self, plan: _Plan, thumb_px: int, fmt: str, banner: str | None) -> _Live:
        from ._contract import GenerationRequest

        slots = []
        for (model, size, resolution), label in zip(plan.combos, plan.labels, strict=True):
            request = GenerationRequest(
                prompt=plan.prompt, model=model, size=size, resolution=resolution, n=plan.n
            )
            slots.append(_Slot(request=request, label=label))
        first = plan.combos[0]
        if len(plan.combos) == 1:
            subtitle = f"{first[0]} · {first[1]} {first[2]} · {plan.n} image{'s' if plan.n > 1 else ''} -> {plan.name}"
        else:
            subtitle = f"comparison grid: {len(plan.combos)} combinations x {plan.n} -> {plan.name}"
        if plan.negative:
            subtitle += f" · negative: {_short(plan.negative, 80)}"
        return _Live(
            slots,
            title=_short(plan.prompt, 200),
            subtitle=subtitle,
            banner=banner,
            thumb_px=thumb_px,
            fmt=fmt,
            columns=plan.columns,
        )

    async def _execute(
        self, client: AsyncClient, plan: _Plan, refs: list[_Ref], live: _Live, concurrency: int, *, say: Any
    ) -> list[Generation]:
        from ._contract import GenerationRequest

        def tell(text: str) -> None:
            live.note(text)
            if say is not None:
                say(text)

        urls = await self._ref_urls(client, refs, tell) if refs else []
        if len(plan.combos) == 1:
            model, size, resolution = plan.combos[0]
            generation = await client.generate(
                plan.prompt,
                model=model,
                size=size,
                resolution=resolution,
                n=plan.n,
                negative_prompt=plan.negative,
                image_urls=urls or None,
                on_update=live.on_update,
                timeout=plan.timeout,
                cache=not plan.fresh,
                label=f"%%qimage -o {plan.name}",
            )
            return [generation]
        requests = [
            GenerationRequest.create(
                plan.prompt, model=m, size=s, resolution=r, n=plan.n,
                negative_prompt=plan.negative, image_urls=urls or None,
            )
            for m, s, r in plan.combos
        ]
        return await client.generate_many(
            requests,
            concurrency=concurrency,
            on_update=live.on_update,
            timeout=plan.timeout,
            cache=not plan.fresh,
        )

    def _conclude(self, plan: _Plan, generations: list[Generation], live: _Live, *, quiet: bool = False) -> None:
        """Bind the images, draw the final static output, and report failures in one line each."""
        images = [image for gen in generations if gen.error is None for image in gen.images]
        failures = [gen for gen in generations if gen.error is not None]
        if images or not failures:
            self.shell.user_ns[plan.name] = images
        live.footer = f"{plan.name}: {len(images)} image{'s' if len(images) != 1 else ''}" if images else None
        live.finish(list(generations))
        if not failures:
            return
        lines = []
        for gen in failures:
            assert gen.error is not None
            kind, message = _error_line(gen.error)
            label = f"{gen.request.model} · {gen.request.size} {gen.request.resolution}: " if len(generations) > 1 else ""
            lines.append(f"{label}{kind}: {message}")
        if len(failures) == len(generations):
            first = failures[0].error
            assert first is not None
            kind, message = _error_line(first)
            if len(failures) > 1:
                message += f" (and {len(failures) - 1} more failed; see above)"
            raise QImageCellError(message, kind, getattr(first, "task_id", None))
        if not quiet:
            print(f"{len(failures)} of {len(generations)} generations failed:", *lines, sep="\n  ", file=sys.stderr)

    def _surface(self, exc: BaseException, live: _Live) -> BaseException:
        """The one line a user sees for a failure: UsageError for bad input, the API's reason otherwise."""
        from ._exceptions import QImageError, ValidationError

        if isinstance(exc, (UsageError, QImageCellError)):
            return exc
        if isinstance(exc, ValidationError):
            live.fail(exc)
            return UsageError(exc.message)
        if isinstance(exc, QImageError):
            live.fail(exc)
            kind, message = _error_line(exc)
            return QImageCellError(message, kind, exc.task_id)
        if isinstance(exc, Exception):
            live.fail(exc)
            return QImageCellError(f"{type(exc).__name__}: {exc}", "QImageError")
        return exc

    # -- background runs ----------------------------------------------------------------------

    def _start_background(self, plan: _Plan, refs: list[_Ref], live: _Live, concurrency: int) -> None:
        import asyncio

        from ._session import get_session

        session = get_session()

        async def run(client: AsyncClient, owned: bool) -> None:
            try:
                generations = await self._execute(client, plan, refs, live, concurrency, say=None)
                self._conclude(plan, generations, live, quiet=True)
            except QImageCellError:
                pass  # every failure is already drawn in the output area by _conclude
            except asyncio.CancelledError:
                ids = live.interrupted()
                live.errors.append(_resume_hint(ids))
                live.refresh()
                raise
            except BaseException as exc:  # never lost: a background failure lands in its output area
                self._surface(exc, live)
                if not isinstance(exc, Exception):
                    raise
            finally:
                if owned:
                    await client.aclose()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            running = False
        else:
            running = True
        if running:
            # In a kernel: a task on the kernel's own loop, which keeps running between cells.
            task = asyncio.ensure_future(run(session.client(), False))
            self._background_tasks.add(task)
            task.add_done_callback(self._background_tasks.discard)
            return
        # No loop running (plain IPython, a script): a daemon thread with its own loop and its own
        # client, because an httpx client's connections belong to the loop that opened them.
        client = _fresh_client(session)

        def main() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(run(client, True))
            finally:
                loop.close()

        thread = threading.Thread(target=main, name="qimage-background", daemon=True)
        self._background_threads.append(thread)
        thread.start()

    def _join_background(self, timeout: float | None = None) -> None:
        """Wait for background runs started without a running loop (tests, scripts)."""
        for thread in list(self._background_threads):
            thread.join(timeout)
            if not thread.is_alive():
                self._background_threads.remove(thread)

    # -- %qimage ------------------------------------------------------------------------------

    @magic_arguments(name="qimage resume")
    @argument("task_id", nargs="?", help="the task id (or journal key) to re-attach to")
    @argument("--all", action="store_true", help="every task that was submitted but never downloaded")
    @argument("-o", "--output", metavar="NAME", default=None, help=f"variable for the images (default {DEFAULT_OUTPUT})")
    def _cmd_resume(self, line: str) -> None:
        """%qimage resume [TASK_ID | --all] [-o NAME]: fetch a task's images without submitting again."""
        args = _parse(self._cmd_resume, line)
        if args.task_id and args.all:
            raise UsageError("pass a task id or --all, not both")
        name = self._checked_name(args.output)
        thumb_px, fmt, concurrency = self._checked_display_settings()
        import asyncio

        from ._session import EMULATOR_BANNER, get_session
        from ._sync import run_sync

        session = get_session()
        client = session.client()
        if args.task_id:
            ids = [args.task_id.strip()]
        else:
            pending = client.pending()
            ids = [entry.task_id or entry.key for entry in pending]
            if not ids:
                print("nothing to resume: every task in the journal has its images (%qimage history lists them)")
                return
            if not args.all and len(ids) > 1:
                raise UsageError(
                    f"{len(ids)} tasks are pending ({', '.join(ids)}); pass one task id, or --all"
                )
        slots = [_Slot(request=None, label=task_id if len(ids) > 1 else None) for task_id in ids]
        live = _Live(
            slots,
            title=f"resuming {', '.join(ids)}",
            subtitle=f"-> {name}",
            banner=EMULATOR_BANNER if session.using_emulator else None,
            thumb_px=thumb_px,
            fmt=fmt,
        )
        live.show()

        async def resume_all() -> list[Generation]:
            from ._client import Generation
            from ._contract import GenerationRequest
            from ._exceptions import QImageError

            gate = asyncio.Semaphore(concurrency)

            async def one(index: int, task_id: str) -> Generation:
                async with gate:
                    try:
                        return await client.resume(
                            task_id, on_update=lambda u: live.on_update(u, index), timeout=self.timeout
                        )
                    except QImageError as exc:
                        return Generation(
                            task_id=exc.task_id or task_id, request=GenerationRequest(prompt=""), status="failed", error=exc
                        )

            return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(ids))))

        try:
            generations = run_sync(resume_all())
        except KeyboardInterrupt:
            print(_resume_hint(live.interrupted() or ids))
            return
        except BaseException as exc:
            raise self._surface(exc, live) from None
        from ._exceptions import ValidationError

        for gen in generations:
            if isinstance(gen.error, ValidationError):
                live.fail(gen.error)
                raise UsageError(gen.error.message)
        plan = _Plan(
            prompt="", negative=None, n=0, combos=[], labels=[], name=name, timeout=self.timeout,
            columns=None, fresh=False, background=False,
        )
        self._conclude(plan, generations, live)

    @magic_arguments(name="qimage history")
    @argument("-n", "--limit", type=int, default=20, help="how many entries, newest first (default 20)")
    @argument("--pending", action="store_true", help="only tasks submitted but never downloaded")
    def _cmd_history(self, line: str) -> None:
        """%qimage history [-n N] [--pending]: the journal of this machine's generations."""
        args = _parse(self._cmd_history, line)
        if args.limit < 1:
            raise UsageError(f"-n {args.limit}: show at least 1 entry")
        from IPython.display import display

        from ._session import get_session

        client = get_session().client()
        entries = client.pending()[: args.limit] if args.pending else client.history(args.limit)
        display(_history_bundle(entries, pending_only=args.pending), raw=True)

    def _cmd_pending(self, line: str) -> None:
        """%qimage pending: tasks submitted but never downloaded (same as history --pending)."""
        self._cmd_history(("--pending " + line).strip())

    @magic_arguments(name="qimage emulator")
    @argument("--auto", action="store_true", help="start it only when no API key is configured")
    @argument("--stop", action="store_true", help="stop the emulator and go back to the configured API")
    @argument("--latency", type=float, default=None, metavar="S", help="seconds a task takes (default 2)")
    def _cmd_emulator(self, line: str) -> None:
        """%qimage emulator [--auto] [--stop] [--latency S]: the bundled offline emulator in this kernel."""
        args = _parse(self._cmd_emulator, line)
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
            emulator = session.emulator
            assert emulator is not None
            note = " (stop it first to change --latency)" if args.latency is not None else ""
            print(f"the emulator is already running at {emulator.base_url}{note}")
            return
        options: dict[str, Any] = {}
        if args.latency is not None:
            options = {"latency": args.latency, "jitter": args.latency / 2}
        emulator = session.start_emulator(**options)
        from IPython.display import display

        text = f"{EMULATOR_BANNER}\nemulator running at {emulator.base_url}; %qimage emulator --stop leaves it"
        banner = (
            '<div class="qimage-banner" style="background:#fff3cd;color:#664d03;padding:4px 8px;border-radius:4px">'
            f"{html.escape(EMULATOR_BANNER)}<br/><small>emulator running at {html.escape(emulator.base_url)}; "
            "<code>%qimage emulator --stop</code> leaves it</small></div>"
        )
        display({"text/html": banner, "text/plain": text}, raw=True)

    def _cmd_login(self, line: str) -> None:
        """%qimage login: type the API key at a hidden prompt; kept in this kernel's memory only."""
        if line.strip():
            # Never echo what was typed: it may be the key itself, which now sits in the cell.
            raise UsageError(
                "%qimage login takes no arguments: run it alone and paste the key at the hidden prompt, "
                "so the key never lands in the notebook (delete it from this cell)"
            )
        import getpass

        from ._exceptions import ValidationError
        from ._session import get_session

        key = getpass.getpass("Qwen Image API key (kept in this kernel's memory only): ")
        session = get_session()
        try:
            session.login(key)
        except ValidationError as exc:
            raise UsageError(exc.message) from None
        finally:
            del key
        stopped = ""
        if session.using_emulator:
            session.stop_emulator()
            stopped = "emulator stopped; "
        print(f"key set for this kernel (memory only, never saved); {stopped}using the API at {session.base_url}")

    def _cmd_logout(self, line: str) -> None:
        """%qimage logout: forget the key typed with %qimage login."""
        from ._session import get_session

        session = get_session()
        session.logout()
        print(f"forgot the key typed with %qimage login; key now {_key_state(session)}")

    def _cmd_config(self, line: str) -> None:
        """%qimage config: the effective settings (never the key) and, with a key, the balance."""
        from ._session import get_session
        from ._sync import run_sync

        session = get_session()
        described = session.describe()
        lines = ["qimage_nb settings:"]
        lines.append(f"  API:       {described['base_url']}")
        lines.append(f"  key:       {described['key']}")
        lines.append(f"  emulator:  {described['emulator']}")
        client = session.client()
        if session.has_key:
            try:
                balance = run_sync(client.balance())
            except KeyboardInterrupt:
                lines.append("  balance:   (interrupted)")
            except Exception as exc:
                lines.append(f"  balance:   unavailable ({_error_line(exc)[1]})")
            else:
                if balance.unlimited_quota:
                    lines.append("  balance:   unlimited quota")
                else:
                    credits = f" ({balance.remain_credits:g} credits)" if balance.remain_credits is not None else ""
                    amount = f"{balance.remain_balance:g}" if balance.remain_balance is not None else "unknown"
                    lines.append(f"  balance:   {amount}{credits}")
        else:
            lines.append("  balance:   (no key) " + NO_KEY)
        with contextlib.suppress(Exception):
            lines.append(f"  journal:   {_home_of(client)}")
        lines.append("  %%qimage defaults (%config QImageMagics.<name> = value):")
        for name in ("model", "size", "resolution", "n", "output", "timeout", "concurrency", "thumb_px", "thumb_format"):
            lines.append(f"    {name} = {getattr(self, name)!r}")
        print("\n".join(lines))

    def _cmd_panel(self, line: str) -> None:
        """%qimage panel: the interactive panel (ipywidgets) that shares this kernel's session."""
        from IPython.display import display

        try:
            from ._panel import Panel
        except ImportError as exc:
            raise UsageError(f"the panel is unavailable: {exc}") from None
        display(Panel())

    _SUBCOMMANDS = ("login", "logout", "config", "emulator", "resume", "history", "pending", "panel")

    @no_var_expand
    @line_magic("qimage")
    def qimage_line(self, line: str) -> None:
        command, _, rest = line.strip().partition(" ")
        if not command or command in ("help", "-h", "--help"):
            print(_LINE_HELP)
            return
        if command not in self._SUBCOMMANDS:
            raise UsageError(
                f"unknown subcommand {command!r}: use one of {', '.join(self._SUBCOMMANDS)}; "
                "to generate, put the prompt in a %%qimage cell"
            )
        getattr(self, f"_cmd_{command}")(rest.strip())


def _split_refs(groups: list[list[str]] | None) -> list[str]:
    return [token for group in groups or [] for token in group]


_LINE_HELP = "\n".join(
    [
        "%qimage SUBCOMMAND: manage the session (generation is the %%qimage cell magic).",
        "",
        "  %qimage login                  ask for the API key (hidden prompt; memory only)",
        "  %qimage logout                 forget it",
        "  %qimage config                 effective settings (never the key) and the balance",
        "  %qimage emulator [--auto] [--stop] [--latency S]",
        "                                 the bundled offline emulator in this kernel (--auto: only",
        "                                 when no key is configured)",
        "  %qimage resume [TASK_ID | --all] [-o NAME]",
        "                                 fetch a task's images without submitting it again",
        "  %qimage history [-n N] [--pending]",
        "                                 the journal of generations on this machine",
        "  %qimage pending                tasks submitted but never downloaded",
        "  %qimage panel                  the interactive panel",
    ]
)

QImageMagics.qimage_line.__doc__ = _LINE_HELP


def _adopt_journal_ids(client: AsyncClient, live: _Live, since: float) -> None:
    """Fill in task ids the display never saw (an interrupt before the first poll) from the journal."""
    with contextlib.suppress(Exception):
        entries = [e for e in client.pending() if e.created_at >= since - 1]
        for slot in live.slots:
            if slot.task_id or slot.request is None:
                continue
            wanted = (slot.request.prompt, slot.request.model, slot.request.size, slot.request.resolution, slot.request.n)
            for entry in entries:
                r = entry.request
                if (r.prompt, r.model, r.size, r.resolution, r.n) == wanted:
                    slot.task_id = entry.task_id or entry.key  # resume takes either
                    slot.unconfirmed = entry.task_id is None
                    entries.remove(entry)
                    break


def _key_state(session: Any) -> str:
    return f"set (from {session.key_source})" if session.has_key else "not set"


def _home_of(client: AsyncClient) -> Path:
    return Path(client.store.root)


def _fresh_client(session: Any) -> AsyncClient:
    """A client with the session's settings that no other event loop has touched."""
    from ._client import AsyncClient

    # The session's own client belongs to the loop of the thread that first used it.
    return AsyncClient(api_key=session._key(), base_url=session.base_url, **session._client_options)


def _history_bundle(entries: list[Any], *, pending_only: bool) -> dict[str, Any]:
    if not entries:
        text = "no pending tasks" if pending_only else "the journal is empty: no generations yet"
        return {"text/plain": text, "text/html": f"<div>{html.escape(text)}</div>"}
    header = ("time", "status", "task id", "prompt", "n", "model / size")
    rows = []
    for entry in entries:
        request = entry.request
        created = getattr(entry, "created_at", None)
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else ""
        model = SHORT_MODEL.get(request.model, request.model)
        rows.append(
            (
                stamp,
                str(getattr(entry, "status", "")),
                entry.task_id or f"(no id yet; key {entry.key})",
                _short(request.prompt or "(unknown prompt)", 50),
                str(request.n),
                f"{model} · {request.size} {request.resolution}",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    text_lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    text_lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    pending = [e for e in entries if not getattr(e, "downloaded", True) and getattr(e, "status", "") not in ("failed", "cancelled")]
    if pending:
        text_lines.append("resume with: %qimage resume TASK_ID, or %qimage resume --all")
    cells = "".join(
        "<tr>" + "".join(f'<td style="text-align:left">{html.escape(c)}</td>' for c in row) + "</tr>" for row in rows
    )
    head = "".join(f'<th style="text-align:left">{html.escape(h)}</th>' for h in header)
    foot = (
        '<div style="color:#555">resume with <code>%qimage resume TASK_ID</code> or '
        "<code>%qimage resume --all</code></div>"
        if pending
        else ""
    )
    table = f'<table class="qimage-history"><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>{foot}'
    return {"text/plain": "\n".join(text_lines), "text/html": table}
