"""The wire contract of the Qwen Image 2.0 task API (``shared/API.md``), in one place.

This module owns the constants (models, ratios, tiers, the pixel table, limits), validation of a
request before anything is sent, and the one parsing function per endpoint. It does no I/O, so the
client, the faces and the emulator can all import it cheaply. The emulator imports only the
constants: it validates requests with its own code, as an independent server would.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ._exceptions import ProtocolError, ValidationError

# --- constants -------------------------------------------------------------------------------

PRODUCTION_BASE_URL = "https://api.apimart.ai"

SUBMIT_PATH = "/v1/images/generations"
TASK_PATH = "/v1/tasks/{task_id}"
UPLOAD_PATH = "/v1/uploads/images"
BALANCE_PATH = "/v1/balance"

MODELS = ("qwen-image-2.0", "qwen-image-2.0-pro")
DEFAULT_MODEL = MODELS[0]
RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3")
DEFAULT_RATIO = "1:1"
RESOLUTIONS = ("1K", "2K")
DEFAULT_RESOLUTION = "1K"

# Output pixel size (width, height) fixed by ratio x tier.
PIXEL_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("1:1", "1K"): (1024, 1024), ("1:1", "2K"): (2048, 2048),
    ("4:3", "1K"): (1152, 864), ("4:3", "2K"): (2048, 1536),
    ("3:4", "1K"): (864, 1152), ("3:4", "2K"): (1536, 2048),
    ("16:9", "1K"): (1280, 720), ("16:9", "2K"): (2048, 1152),
    ("9:16", "1K"): (720, 1280), ("9:16", "2K"): (1152, 2048),
    ("3:2", "1K"): (1248, 832), ("3:2", "2K"): (2048, 1360),
    ("2:3", "1K"): (832, 1248), ("2:3", "2K"): (1360, 2048),
}  # fmt: skip

PROMPT_MAX = 800
NEGATIVE_PROMPT_MAX = 500
N_MIN, N_MAX = 1, 6
REFS_MIN, REFS_MAX = 1, 3

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})

UPLOAD_MAX_BYTES = 20 * 1024 * 1024
UPLOAD_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}

# HTTP statuses worth retrying for idempotent requests (and for a submit with the same key).
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


# --- requests --------------------------------------------------------------------------------


def _choices(values: Iterable[str]) -> str:
    return ", ".join(values)


def _suggest(value: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _short(text: Any, limit: int = 40) -> str:
    """``text`` on one line of at most ``limit`` characters: whitespace runs collapsed, a cut marked "…".

    The one shortener of the package: messages here, and captions and status lines in both faces.
    """
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _brief(value: Any, limit: int = 40) -> str:
    """A value as it was given (its repr), shortened for a message."""
    return _short(repr(value), limit)


def _check_text(field_name: str, value: Any, *, limit: int, required: bool, hint: str) -> str | None:
    if value is None:
        if required:
            raise ValidationError(field_name, f"{field_name} is required: {hint}")
        return None
    if not isinstance(value, str):
        raise ValidationError(
            field_name, f"{field_name} must be text, got {type(value).__name__}: {hint}"
        )
    if required and not value.strip():
        raise ValidationError(field_name, f"{field_name} is empty: {hint}")
    if len(value) > limit:
        raise ValidationError(
            field_name,
            f"{field_name} is {len(value)} characters; the API allows at most {limit}: shorten it "
            f"by {len(value) - limit}",
        )
    return value


def _check_choice(field_name: str, value: Any, allowed: tuple[str, ...], *, fold: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(
            field_name,
            f"{field_name} must be one of {_choices(allowed)}, got {type(value).__name__} {_brief(value)}",
        )
    normal = value.strip().upper() if fold == "upper" else value.strip().lower()
    if normal not in allowed:
        raise ValidationError(
            field_name,
            f"{field_name} {value!r} is not supported{_suggest(normal, allowed)}; use one of "
            f"{_choices(allowed)}",
        )
    return normal


def _check_n(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            "n", f"n must be a whole number from {N_MIN} to {N_MAX}, got {type(value).__name__} {_brief(value)}"
        )
    if not N_MIN <= value <= N_MAX:
        raise ValidationError("n", f"n is {value}; the API makes {N_MIN} to {N_MAX} images per request")
    return value


def check_reference_url(value: Any, index: int = 0) -> str:
    """Validate one reference image URL: the API takes only public http(s) URLs."""
    name = f"image_urls[{index}]"
    upload_hint = (
        "the API needs a public http(s) URL: upload local images first with client.upload(...) "
        "(or pass the file path or image to %%qimage --ref, which uploads it)"
    )
    if not isinstance(value, str):
        raise ValidationError(name, f"{name} is a {type(value).__name__}; {upload_hint}")
    url = value.strip()
    if not url:
        raise ValidationError(name, f"{name} is empty; {upload_hint}")
    if url[:5].lower() == "data:":
        raise ValidationError(name, f"{name} is a data: URI, which the API does not accept; {upload_hint}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValidationError(name, f"{name} {_brief(url)} has no host; {upload_hint}")
        return url
    if scheme == "" or (len(scheme) == 1 and url[1:3] in (":\\", ":/")) or scheme == "file":
        raise ValidationError(name, f"{name} {_brief(url)} is a local path; {upload_hint}")
    raise ValidationError(
        name, f"{name} uses the {scheme}: scheme; {upload_hint}"
    )


@dataclass(frozen=True)
class GenerationRequest:
    """A validated generation request. Build it with :meth:`create`, never by hand."""

    prompt: str
    model: str = DEFAULT_MODEL
    size: str = DEFAULT_RATIO
    resolution: str = DEFAULT_RESOLUTION
    n: int = 1
    negative_prompt: str | None = None
    image_urls: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        prompt: Any,
        *,
        model: Any = DEFAULT_MODEL,
        size: Any = DEFAULT_RATIO,
        resolution: Any = DEFAULT_RESOLUTION,
        n: Any = 1,
        negative_prompt: Any = None,
        image_urls: Any = None,
    ) -> GenerationRequest:
        """Validate every field; raise :class:`ValidationError` naming the first bad one."""
        checked_prompt = _check_text(
            "prompt", prompt, limit=PROMPT_MAX, required=True,
            hint=f"describe the image in 1 to {PROMPT_MAX} characters",
        )
        negative = _check_text(
            "negative_prompt", negative_prompt, limit=NEGATIVE_PROMPT_MAX, required=False,
            hint=f"pass text of at most {NEGATIVE_PROMPT_MAX} characters, or None",
        )
        if negative is not None and not negative.strip():
            negative = None
        urls: tuple[str, ...] = ()
        if image_urls is not None:
            if isinstance(image_urls, (str, bytes)) or not isinstance(image_urls, Iterable):
                raise ValidationError(
                    "image_urls",
                    "image_urls must be a list of 1 to 3 public http(s) URLs, e.g. image_urls=[url]",
                )
            listed = list(image_urls)
            if len(listed) > REFS_MAX:
                raise ValidationError(
                    "image_urls",
                    f"image_urls has {len(listed)} references; the API takes {REFS_MIN} to {REFS_MAX}",
                )
            urls = tuple(check_reference_url(url, i) for i, url in enumerate(listed))
        assert checked_prompt is not None
        return cls(
            prompt=checked_prompt,
            model=_check_choice("model", model, MODELS, fold="lower"),
            size=_check_choice("size", size, RATIOS, fold="upper"),
            resolution=_check_choice("resolution", resolution, RESOLUTIONS, fold="upper"),
            n=_check_n(n),
            negative_prompt=negative,
            image_urls=urls,
        )

    @property
    def pixel_size(self) -> tuple[int, int]:
        """The (width, height) the API renders for this ratio and tier."""
        return PIXEL_SIZES[(self.size, self.resolution)]

    def to_json(self) -> dict[str, Any]:
        """The submit body, exactly as API.md names the fields."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt,
            "size": self.size,
            "resolution": self.resolution,
            "n": self.n,
        }
        if self.negative_prompt is not None:
            body["negative_prompt"] = self.negative_prompt
        if self.image_urls:
            body["image_urls"] = list(self.image_urls)
        return body

    def fingerprint(self) -> str:
        """A stable hash of the normalised request: equal requests may share cached images."""
        canonical = json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> GenerationRequest:
        """Rebuild a request from :meth:`to_json` output (e.g. from the journal)."""
        return cls.create(
            body.get("prompt"),
            model=body.get("model", DEFAULT_MODEL),
            size=body.get("size", DEFAULT_RATIO),
            resolution=body.get("resolution", DEFAULT_RESOLUTION),
            n=body.get("n", 1),
            negative_prompt=body.get("negative_prompt"),
            image_urls=body.get("image_urls") or None,
        )


# --- responses -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskFailure:
    """The ``error`` object of a failed task."""

    message: str
    code: int | None = None
    type: str | None = None


@dataclass(frozen=True)
class TaskStatus:
    """One answer of ``GET /v1/tasks/{id}``, normalised across envelope variants."""

    task_id: str
    status: str
    progress: int = 0
    urls: tuple[str, ...] = ()
    created: float | None = None
    completed: float | None = None
    estimated_time: float | None = None
    actual_time: float | None = None
    cost: float | None = None
    expires_at: float | None = None
    error: TaskFailure | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class UploadedImage:
    """The answer of ``POST /v1/uploads/images``: a public URL usable in ``image_urls``."""

    url: str
    filename: str | None = None
    content_type: str | None = None
    bytes: int | None = None
    created_at: float | None = None


@dataclass(frozen=True)
class Balance:
    """The answer of ``GET /v1/balance``."""

    remain_balance: float | None
    remain_credits: float | None = None
    used_balance: float | None = None
    used_credits: float | None = None
    unlimited_quota: bool = False


@dataclass(frozen=True)
class ErrorInfo:
    """An error body (JSON shape of API.md section 3, or an HTML page) reduced to what matters."""

    message: str
    type: str | None = None
    param: str | None = None
    code: int | None = None
    html: bool = False


def _ok_code(code: Any) -> bool:
    return code is None or code in (200, "200", "success", "SUCCESS", "ok")


def _envelope_data(payload: Any, what: str) -> Any:
    if not isinstance(payload, Mapping):
        raise ProtocolError(f"the {what} answer is not a JSON object: {_brief(payload, 60)}")
    if "error" in payload and isinstance(payload["error"], Mapping) and "data" not in payload:
        err = payload["error"]
        raise ProtocolError(f"the {what} answer is an error: {err.get('message') or _brief(err, 80)}")
    if not _ok_code(payload.get("code")):
        message = payload.get("message") or payload.get("msg") or ""
        raise ProtocolError(f"the {what} answer has code {payload.get('code')!r}: {message}".rstrip(": "))
    return payload.get("data", payload)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_submit(payload: Any) -> str:
    """Return the task id from a submit answer, whatever the envelope variant."""
    data = _envelope_data(payload, "submit")
    if isinstance(data, list):
        if not data:
            raise ProtocolError("the submit answer has an empty data list and no task id")
        data = data[0]
    if not isinstance(data, Mapping):
        raise ProtocolError(f"the submit answer's data is not an object: {_brief(data, 60)}")
    task_id = data.get("task_id") or data.get("id")
    if not isinstance(task_id, str) or not task_id.strip():
        raise ProtocolError(f"the submit answer carries no task id: {_brief(dict(data), 80)}")
    return task_id.strip()


def _image_urls(result: Any) -> tuple[tuple[str, ...], float | None]:
    if not isinstance(result, Mapping):
        return (), None
    images = result.get("images")
    if images is None:
        images = result.get("urls") or []
    if isinstance(images, (str, Mapping)):
        images = [images]
    urls: list[str] = []
    expires: float | None = None
    for item in images:
        if isinstance(item, str):
            urls.append(item)
            continue
        if not isinstance(item, Mapping):
            continue
        value = item.get("url", item.get("urls"))
        if isinstance(value, str):
            urls.append(value)
        elif isinstance(value, list):
            urls.extend(u for u in value if isinstance(u, str))
        exp = _number(item.get("expires_at"))
        if exp is not None:
            expires = exp if expires is None else min(expires, exp)
    return tuple(u.strip() for u in urls if u.strip()), expires


def parse_task(payload: Any, task_id: str | None = None) -> TaskStatus:
    """Normalise a task-status answer. Unknown fields are ignored; an unknown status is an error."""
    data = _envelope_data(payload, "task status")
    if isinstance(data, list):
        if not data:
            raise ProtocolError("the task status answer has an empty data list", task_id=task_id)
        data = data[0]
    if not isinstance(data, Mapping):
        raise ProtocolError(f"the task status answer's data is not an object: {_brief(data, 60)}", task_id=task_id)
    found_id = data.get("id") or data.get("task_id") or task_id
    if not isinstance(found_id, str) or not found_id:
        raise ProtocolError("the task status answer carries no task id")
    status = data.get("status")
    if not isinstance(status, str) or status.strip().lower() not in STATUSES:
        raise ProtocolError(
            f"task status {status!r} is not one the contract knows ({_choices(STATUSES)}); "
            "the client stops rather than guess",
            task_id=found_id,
        )
    status = status.strip().lower()
    progress_value = data.get("progress")
    if isinstance(progress_value, str):
        progress_value = progress_value.strip().rstrip("%")
    progress_number = _number(progress_value)
    progress = 100 if status == "completed" else int(max(0, min(100, progress_number or 0)))
    urls, expires = _image_urls(data.get("result"))
    if status == "completed" and not urls:
        raise ProtocolError("the task completed but its result lists no image URL", task_id=found_id)
    failure = None
    if status == "failed":
        err = data.get("error")
        if isinstance(err, Mapping):
            code = _number(err.get("code"))
            failure = TaskFailure(
                message=str(err.get("message") or "the task failed without a reason"),
                code=int(code) if code is not None else None,
                type=err.get("type") if isinstance(err.get("type"), str) else None,
            )
        else:
            failure = TaskFailure(message=str(err or data.get("message") or "the task failed without a reason"))
    return TaskStatus(
        task_id=found_id,
        status=status,
        progress=progress,
        urls=urls,
        created=_number(data.get("created")),
        completed=_number(data.get("completed")),
        estimated_time=_number(data.get("estimated_time")),
        actual_time=_number(data.get("actual_time")),
        cost=_number(data.get("cost", data.get("credits_cost"))),
        expires_at=expires,
        error=failure,
        raw=dict(data),
    )


def parse_upload(payload: Any) -> UploadedImage:
    """Normalise an upload answer (bare object, or wrapped in ``data``)."""
    data = _envelope_data(payload, "upload")
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, Mapping):
        raise ProtocolError(f"the upload answer is not an object: {_brief(data, 60)}")
    url = data.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ProtocolError(f"the upload answer carries no http(s) url: {_brief(dict(data), 80)}")
    size = _number(data.get("bytes"))
    return UploadedImage(
        url=url,
        filename=data.get("filename") if isinstance(data.get("filename"), str) else None,
        content_type=data.get("content_type") if isinstance(data.get("content_type"), str) else None,
        bytes=int(size) if size is not None else None,
        created_at=_number(data.get("created_at")),
    )


def parse_balance(payload: Any) -> Balance:
    """Normalise a balance answer."""
    data = _envelope_data(payload, "balance")
    if not isinstance(data, Mapping):
        raise ProtocolError(f"the balance answer is not an object: {_brief(data, 60)}")
    if data.get("success") is False:
        raise ProtocolError(f"the balance answer says success=false: {data.get('message', '')}".rstrip(": "))
    return Balance(
        remain_balance=_number(data.get("remain_balance")),
        remain_credits=_number(data.get("remain_credits")),
        used_balance=_number(data.get("used_balance")),
        used_credits=_number(data.get("used_credits")),
        unlimited_quota=bool(data.get("unlimited_quota", False)),
    )


def parse_error(status_code: int, content_type: str, body: bytes) -> ErrorInfo:
    """Reduce an error body to one line: JSON ``{"error": {...}}``, other JSON, or an HTML page."""
    text = body.decode("utf-8", errors="replace").strip()
    looks_html = "html" in content_type.lower() or text[:15].lower().startswith(("<!doctype", "<html"))
    if not looks_html:
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = None
        if isinstance(payload, Mapping):
            err = payload.get("error", payload)
            if isinstance(err, Mapping):
                message = err.get("message") or payload.get("message") or payload.get("msg")
                code = _number(err.get("code"))
                return ErrorInfo(
                    message=" ".join(str(message).split()) if message else f"HTTP {status_code}",
                    type=err.get("type") if isinstance(err.get("type"), str) else None,
                    param=err.get("param") if isinstance(err.get("param"), str) else None,
                    code=int(code) if code is not None else status_code,
                )
            if isinstance(err, str):
                return ErrorInfo(message=" ".join(err.split()), code=status_code)
    title = ""
    if looks_html:
        lower = text.lower()
        start, end = lower.find("<title>"), lower.find("</title>")
        if 0 <= start < end:
            title = " ".join(text[start + 7 : end].split())
        return ErrorInfo(
            message=f"HTTP {status_code} with an HTML page{': ' + title if title else ''} (a proxy in front of the API)",
            code=status_code,
            html=True,
        )
    snippet = " ".join(text.split())[:120]
    return ErrorInfo(message=f"HTTP {status_code}{': ' + snippet if snippet else ''}", code=status_code)
