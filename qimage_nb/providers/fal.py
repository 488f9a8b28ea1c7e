"""fal (``queue.fal.run``): the Qwen Image apps on fal's queue (``shared/PROVIDERS.md`` 2 and 5).

The queue: ``POST /{app}`` answers at once with a request id and the URLs to use from then on
(status, response, cancel: owner/app only, whatever the app's deeper path). The status answers
IN_QUEUE (with a queue position), IN_PROGRESS (with logs), COMPLETED; a status stream (server-sent
events) says the same as it happens, which the client waits on instead of polling. The images are
at the response URL, fetched once the status says COMPLETED; an input the app refuses ends
COMPLETED too and its response is a 422 whose ``detail`` lists the fields. fal bills those 422s,
so every field is checked here before anything is sent. No idempotency key: a submit whose answer
is lost is "outcome unknown", never resent (fal-client resends POSTs up to ten times; this does not).

A task id here is the owner, app and request id the submit answer's URLs name (``owner:app:id``),
so a resume in a later kernel reaches the same URLs without the journal keeping them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from .._contract import (
    AUTO_SIZE,
    PIXEL_SIZES,
    QWEN_IMAGE_MODELS,
    RATIOS,
    GenerationRequest,
    TaskStatus,
    _brief,
    number,
    parse_pixel_size,
)
from .._exceptions import ProtocolError, ValidationError
from ._base import Call, Capabilities, ErrorInfo, Provider, Submitted, decode_json, html_title

PRODUCTION = "https://queue.fal.run"
# Each model a user knows, as fal's (text-to-image app, edit app).
APPS = {
    "qwen-image-2.0": ("fal-ai/qwen-image-2/text-to-image", "fal-ai/qwen-image-2/edit"),
    "qwen-image-2.0-pro": ("fal-ai/qwen-image-2/pro/text-to-image", "fal-ai/qwen-image-2/pro/edit"),
    "qwen-image-3.0": ("alibaba/qwen-image-3/text-to-image", "alibaba/qwen-image-3/edit"),
}
ALIASES = {"standard": "qwen-image-2.0", "pro": "qwen-image-2.0-pro"}
EDIT_APPS = frozenset(edit for _, edit in APPS.values()) | {"fal-ai/qwen-image-3/edit"}
HOST_IDS = frozenset(app for pair in APPS.values() for app in pair) | {
    "fal-ai/qwen-image-3/text-to-image", "fal-ai/qwen-image-3/edit",  # 3.0's alias path
}
# fal's size presets (its image apps' shared enum), for a size given in fal's own words.
PRESETS = {
    "square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576),
}  # fmt: skip
PIXELS_MIN, PIXELS_MAX = 512 * 512, 2048 * 2048
IMAGES_PER_SUBMIT = 4
# The parameters of fal's apps that qimage_nb has no option for, passed as host parameters.
HOST_PARAMS = {"enable_safety_checker": (bool,), "output_format": ("png", "jpeg", "webp")}

_STATUSES = {"IN_QUEUE": "pending", "IN_PROGRESS": "processing", "COMPLETED": "completed"}


def _host_params(request: GenerationRequest) -> Mapping[str, Any]:
    # Host parameters arrive with the contract's ``host_params`` (where that field exists).
    return getattr(request, "host_params", None) or {}


class Fal(Provider):
    name = "fal"
    title = "fal"
    label = "fal"
    key_env = "FAL_KEY"
    base_url_env = "FAL_QUEUE_RUN_HOST"
    default_base_url = PRODUCTION
    auth_scheme = "Key"
    capabilities = Capabilities(
        options=frozenset({"seed", "prompt_extend", "pixel_size"}),
        images_per_submit=IMAGES_PER_SUBMIT,
        bills_refusals=True,
        cancel_on_stop=True,
        status_stream=True,
    )
    # The contract's names (checked as Qwen Image there); fal's own app ids are accepted as written.
    models = tuple(model for model in APPS if model in QWEN_IMAGE_MODELS)
    host_ids = tuple(sorted(HOST_IDS))
    default_model = "qwen-image-2.0"
    # USD per image as (model, resolution, price): fal's pages as third parties quoted them
    # (PROVIDERS.md 2: fal OpenAPI 2026-08; 5: two third parties). Estimated: fal's answers carry
    # no price.
    prices = (
        ("qwen-image-2.0", "1K", 0.035), ("qwen-image-2.0", "2K", 0.035),
        ("qwen-image-2.0-pro", "1K", 0.075), ("qwen-image-2.0-pro", "2K", 0.075),
        ("qwen-image-3.0", "1K", 0.04), ("qwen-image-3.0", "2K", 0.075),
    )  # fmt: skip
    model_aliases = ALIASES
    prices_as_of = "estimated from fal's pages as third parties quoted them, 2026-08"

    # -- the environment, as fal-client reads it --

    def key_from_env(self, environ: Mapping[str, str]) -> str | None:
        key = (environ.get("FAL_KEY") or "").strip()
        if key:
            return key
        key_id, secret = (environ.get("FAL_KEY_ID") or "").strip(), (environ.get("FAL_KEY_SECRET") or "").strip()
        return f"{key_id}:{secret}" if key_id and secret else None

    def base_url_from_env(self, environ: Mapping[str, str]) -> str | None:
        host = (environ.get(self.base_url_env) or "").strip()
        if not host:
            return None
        # fal-client puts https:// before the host; a URL with its own scheme (an emulator) is kept.
        return host if "://" in host else f"https://{host}"

    # -- requests --

    def app(self, request: GenerationRequest) -> str:
        """The fal app this request goes to (the edit app when it has references)."""
        model = ALIASES.get(request.model, request.model)
        if model in APPS:
            return APPS[model][1 if request.image_urls else 0]
        if model in HOST_IDS:
            edit = model in EDIT_APPS
            if edit and not request.image_urls:
                raise ValidationError("image_urls", f"{model} on fal edits images: give 1 to 3 references (--ref)")
            if request.image_urls and not edit:
                raise ValidationError(
                    "image_urls", f"{model} on fal makes images from text only: use its edit app for references"
                )
            return model
        known = ", ".join([*APPS, *ALIASES])
        raise ValidationError(
            "model", f"model {request.model!r} is not served by fal; use one of {known}, or a fal app id "
            f"({', '.join(sorted(HOST_IDS))})",
        )

    def check(self, request: GenerationRequest, listed: Collection[str] = (), schema: Any = None) -> None:
        app = self.app(request)
        self.image_size(request, app)
        for ref in request.image_urls:
            if not isinstance(ref, str):
                raise ValidationError("image_urls", "fal takes references as URLs: upload the picture first")
        for name, value in _host_params(request).items():
            allowed = HOST_PARAMS.get(name)
            if allowed is None:
                raise ValidationError(
                    name, f"fal's Qwen Image apps take no {name!r} here (fal bills a refused request); "
                    f"host parameters it takes: {', '.join(HOST_PARAMS)}",
                )
            ok = isinstance(value, bool) if allowed == (bool,) else value in allowed
            if not ok:
                want = "true or false" if allowed == (bool,) else " or ".join(allowed)
                raise ValidationError(name, f"{name} on fal must be {want}, got {_brief(value)}")

    def image_size(self, request: GenerationRequest, app: str) -> str | dict[str, int] | None:
        """fal's ``image_size``: a preset name as given, else ``{width, height}``; None for ``auto``
        (the app's own choice: 3.0 picks a size from the prompt, 2.0 its default)."""
        if request.size == AUTO_SIZE:
            return None
        if request.size in PRESETS:
            return request.size
        side_max = 2560 if "qwen-image-3" in app else 2048
        pixels = parse_pixel_size(request.size)
        if pixels is None:
            if (request.size, request.resolution) not in PIXEL_SIZES:
                raise ValidationError(
                    "size", f"size {request.size!r} is not one fal takes: use a ratio ({', '.join(RATIOS)}), "
                    f"WIDTHxHEIGHT, or a fal preset ({', '.join(PRESETS)})",
                )
            pixels = PIXEL_SIZES[(request.size, request.resolution)]
        width, height = pixels
        if not PIXELS_MIN <= width * height <= PIXELS_MAX or max(width, height) > side_max:
            raise ValidationError(
                "size", f"size {width}x{height} is outside what fal makes with {app}: 512x512 to 2048x2048 "
                f"pixels in all, each side at most {side_max}",
            )
        return {"width": width, "height": height}

    def submit(self, request: GenerationRequest, key: str) -> Call:
        app = self.app(request)
        body: dict[str, Any] = {"prompt": request.prompt, "num_images": request.n}
        size = self.image_size(request, app)
        if size is not None:
            body["image_size"] = size
        if request.negative_prompt is not None:
            body["negative_prompt"] = request.negative_prompt
        if request.image_urls:
            body["image_urls"] = [str(ref) for ref in request.image_urls]
        if request.seed is not None:
            body["seed"] = request.seed
        if request.prompt_extend is not None:
            body["enable_prompt_expansion"] = request.prompt_extend
        body.update(_host_params(request))
        # No idempotency key: fal has none, and ``key`` stays in the journal only.
        return Call("POST", "/" + app, json=body)

    def read_submit(self, payload: Any, headers: Mapping[str, str]) -> Submitted:
        if not isinstance(payload, Mapping):
            raise ProtocolError(f"the submit answer is not an object: {_brief(payload, 80)}")
        request_id = payload.get("request_id")
        response_url = payload.get("response_url")
        if not isinstance(request_id, str) or not request_id.strip():
            raise ProtocolError(f"the submit answer carries no request_id: {_brief(dict(payload), 80)}")
        request_id = request_id.strip()
        # The request exists and is billed: its id must reach the journal whatever else the answer
        # lacks. The app comes from the response URL, else the status or cancel URL; failing all
        # three, the bare id is journaled (a resume then says it cannot be polled) rather than the
        # submit called "outcome unknown", whose resend would bill a second time.
        for url in (response_url, payload.get("status_url"), payload.get("cancel_url")):
            try:
                return Submitted(task_id=_task_id(url, request_id))
            except ProtocolError:
                continue
        return Submitted(task_id=request_id)

    def _requests(self, task_id: str) -> str:
        owner, app, request_id = _parts(task_id)
        return f"/{quote(owner, safe='')}/{quote(app, safe='')}/requests/{quote(request_id, safe='')}"

    def poll(self, task_id: str) -> Call:
        return Call("GET", self._requests(task_id) + "/status?logs=1")

    def stream(self, task_id: str) -> Call:
        return Call("GET", self._requests(task_id) + "/status/stream?logs=1", headers={"Accept": "text/event-stream"})

    def result(self, task_id: str) -> Call:
        return Call("GET", self._requests(task_id))

    def cancel(self, task_id: str) -> Call:
        return Call("PUT", self._requests(task_id) + "/cancel")

    def read_cancel(self, status_code: int, payload: Any) -> str:
        word = payload.get("status") if isinstance(payload, Mapping) else None
        return str(word) if word else f"HTTP {status_code}"

    def cancel_refused(self, code: int | str | None) -> str | None:
        return code if code in ("ALREADY_COMPLETED", "NOT_FOUND") else None

    def read_event(self, data: str, task_id: str) -> TaskStatus | None:
        try:
            payload = json.loads(data)
        except ValueError:
            return None
        if not isinstance(payload, Mapping) or "status" not in payload:
            return None
        return self.read_task(payload, task_id)

    def read_task(self, payload: Any, task_id: str) -> TaskStatus:
        if not isinstance(payload, Mapping):
            raise ProtocolError(f"the status answer is not an object: {_brief(payload, 80)}", task_id=task_id)
        word = payload.get("status")
        if not isinstance(word, str) or not word.strip():
            raise ProtocolError(f"the status answer has no status: {_brief(dict(payload), 80)}", task_id=task_id)
        word = word.strip().upper()
        status = _STATUSES.get(word, "processing")  # an unfamiliar word means "still running"
        logs = payload.get("logs") if isinstance(payload.get("logs"), list) else []
        error = None
        # A cancelled request ends COMPLETED with its error type; any other error is read from the
        # response URL, which says which field (the 422).
        cancelled = str(payload.get("error_type") or "").lower() in ("request_cancelled", "cancelled", "canceled")
        if status == "completed" and payload.get("error") and cancelled:
            status = "cancelled"
        raw = dict(payload)
        position = number(payload.get("queue_position"))
        raw["queue_position"] = int(position) if position is not None else None
        raw["log_lines"] = [str(line.get("message")) for line in logs if isinstance(line, Mapping)]
        return TaskStatus(task_id=task_id, status=status, progress=100 if status == "completed" else _progress(raw["log_lines"]),
                          raw_status=word, error=error, queue_position=raw["queue_position"], raw=raw)

    def read_result(self, payload: Any, status: TaskStatus) -> TaskStatus:
        images = payload.get("images") if isinstance(payload, Mapping) else None
        urls = tuple(
            item["url"].strip() for item in images or []
            if isinstance(item, Mapping) and isinstance(item.get("url"), str) and item["url"].strip()
        )
        if not urls:
            raise ProtocolError(f"the result lists no image: {_brief(payload, 80)}", task_id=status.task_id)
        seed = number(payload.get("seed"))
        prompt = payload.get("prompt")
        return TaskStatus(
            task_id=status.task_id, status="completed", progress=100, urls=urls, raw_status=status.raw_status,
            seed=int(seed) if seed is not None else None,
            actual_prompt=prompt if isinstance(prompt, str) else None, raw={**status.raw, "result": dict(payload)},
        )

    def read_error(self, status_code: int, content_type: str, body: bytes) -> ErrorInfo:
        text = body.decode("utf-8", errors="replace").strip()
        title = html_title(content_type, text)
        if title is not None:
            return ErrorInfo(
                message=f"HTTP {status_code} with an HTML page{': ' + title if title else ''} (a proxy in front of fal)",
                code=status_code, html=True,
            )
        payload = decode_json(body)
        if isinstance(payload, Mapping):
            detail = payload.get("detail")
            kind = payload.get("error_type") if isinstance(payload.get("error_type"), str) else None
            if isinstance(detail, list) and detail:
                return _detail_line(detail, status_code, kind)
            if isinstance(detail, str) and detail.strip():
                return ErrorInfo(message=" ".join(detail.split()), code=status_code, type=kind)
            if isinstance(payload.get("status"), str):
                return ErrorInfo(message=str(payload["status"]), code=payload["status"])
        snippet = " ".join(text.split())[:120]
        return ErrorInfo(message=f"HTTP {status_code}{': ' + snippet if snippet else ''}", code=status_code)

    def auth_hint(self, base_url: str = "") -> str:
        return "fal refused the key: check FAL_KEY (or FAL_KEY_ID and FAL_KEY_SECRET), or run %qimage login fal"


PROVIDER = Fal()


_STEP = re.compile(r"\b(\d+)\s*/\s*(\d+)\b")


def _progress(lines: list[str]) -> int:
    """Progress from the app's logs, where its last step line says ``k/N`` (0 when none does):
    fal's status has no progress field, and its logs are what it says about a running request."""
    for line in reversed(lines):
        match = _STEP.search(line)
        if match and int(match.group(2)) > 0 and int(match.group(1)) <= int(match.group(2)):
            return min(99, 100 * int(match.group(1)) // int(match.group(2)))
    return 0


def _detail_line(detail: list[Any], status_code: int, kind: str | None) -> ErrorInfo:
    """fal's (pydantic's) list of field errors as one line naming each field."""
    parts, first = [], None
    for item in detail[:4]:
        if not isinstance(item, Mapping):
            continue
        loc = [str(part) for part in item.get("loc") or [] if part != "body"]
        field = ".".join(loc) or "input"
        first = first or field
        parts.append(f"{field}: {' '.join(str(item.get('msg') or item.get('type') or 'invalid').split())}")
    more = f" (+{len(detail) - 4} more)" if len(detail) > 4 else ""
    message = "; ".join(parts) + more if parts else f"HTTP {status_code}: the input was refused"
    return ErrorInfo(message=message, code=status_code, type=kind or "validation_error", param=first)


def _parts(task_id: str) -> tuple[str, str, str]:
    parts = task_id.split(":")
    if len(parts) != 3 or not all(parts):
        raise ValidationError(
            "task_id", f"{task_id!r} is not a fal task id (owner:app:request-id, as qimage_nb shows it)"
        )
    return parts[0], parts[1], parts[2]


def _task_id(response_url: Any, request_id: str) -> str:
    """``owner:app:request-id`` from the response URL the submit answer gave."""
    path = urlsplit(response_url).path if isinstance(response_url, str) else ""
    path = path.removesuffix("/status").removesuffix("/cancel")  # the status and cancel URLs name it too
    head, found, tail = path.rpartition("/requests/")
    segments = [segment for segment in head.split("/") if segment]
    if not found or len(segments) < 2 or tail.strip("/") != request_id:
        raise ProtocolError(
            f"the submit answer's response_url {_brief(response_url, 80)} does not name request {request_id}",
            task_id=request_id,
        )
    return f"{segments[-2]}:{segments[-1]}:{request_id}"
