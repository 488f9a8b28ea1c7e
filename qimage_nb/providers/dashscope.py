"""Alibaba Cloud Model Studio (DashScope), the official host of Qwen Image (``shared/PROVIDERS.md`` 1).

Two wires under one base URL that ends in ``/api/v1`` (as ``DASHSCOPE_HTTP_BASE_URL`` does for the
official SDK; ``_dashscope_regions`` chooses it as the SDK does, by default
``https://dashscope-intl.aliyuncs.com/api/v1``, Singapore):
- qwen-image-3.0 (and -pro), 2.0 (and -pro, -max): the synchronous multimodal-generation endpoint.
  The answer holds the images; there is no task id (the ``request_id`` stands for it) and no
  idempotency key.
- qwen-image and qwen-image-plus: the asynchronous image-synthesis endpoint with
  ``X-DashScope-Async: enable``, then ``GET /tasks/{id}``, which the client polls like any task.

Which model takes what lives in one table (``_dashscope_models``); a model not in it is sent as
written with a one-line note, and host parameters (``host_params``) go into ``parameters`` as given.
Local references travel inside the request as ``data:`` URIs (no upload service needed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from .._contract import (
    AUTO_SIZE,
    PIXEL_SIZES,
    GenerationRequest,
    InlineImage,
    TaskFailure,
    TaskStatus,
    _brief,
    number,
    parse_pixel_size,
)
from .._exceptions import NotFoundError, ProtocolError, ValidationError
from ._base import Call, Capabilities, ErrorInfo, Provider, Submitted, decode_json, html_title
from ._dashscope_models import (
    ALSO_FIXED,
    CHECKED,
    FIXED_SIZES,
    INLINE_LIMITS,
    MODELS,
    Rules,
    rules_of,
    suggest,
)
from ._dashscope_regions import BEIJING, SINGAPORE, choose, describe_url, url_for

SYNC_PATH = "/services/aigc/multimodal-generation/generation"
ASYNC_PATH = "/services/aigc/text2image/image-synthesis"
TASK_PATH = "/tasks/{task_id}"

SYNC_MODELS = tuple(name for name, rules in MODELS.items() if not rules.asynchronous)
ASYNC_MODELS = tuple(name for name, rules in MODELS.items() if rules.asynchronous)
# A synchronous generation answers when its images exist: tens of seconds, not a poll's timeout.
SYNC_READ_TIMEOUT = 180.0
# Fields qimage_nb itself writes into ``parameters``: host_params may not overwrite them.
_OWN_PARAMETERS = {"size": "size", "n": "n", "seed": "seed", "prompt_extend": "prompt_extend",
                   "watermark": "watermark", "negative_prompt": "negative_prompt"}
# 3.0-pro's price tiers: up to 2.25 MP of output is the "1K" tier, above it "2K"; an edit's
# references are priced apiece (shared/PROVIDERS.md 5).
_TIER_1K_PIXELS = 2_250_000
_PER_REFERENCE = 0.003
# Unlisted models get 2.0's shape (the sync call, a W*H size): the host judges the rest.
_UNLISTED = Rules("unlisted", side_min=1, side_max=100_000, pixels_min=1, pixels_max=10**10)

_STATUSES = {
    "PENDING": "pending",
    "RUNNING": "processing",
    "SUSPENDED": "processing",
    "SUCCEEDED": "completed",
    "FAILED": "failed",
    "CANCELED": "cancelled",
    "CANCELLED": "cancelled",
}


class DashScope(Provider):
    name = "dashscope"
    title = "Alibaba Model Studio (DashScope)"
    label = "DashScope"
    key_env = "DASHSCOPE_API_KEY"
    base_url_env = "DASHSCOPE_HTTP_BASE_URL"
    default_base_url = SINGAPORE  # for a new user; the SDK's own default is Beijing
    capabilities = Capabilities(
        options=frozenset({"seed", "prompt_extend", "watermark", "pixel_size"}), inline_refs=INLINE_LIMITS
    )
    models = tuple(MODELS)
    default_model = "qwen-image-2.0"
    # dashscope 2.0.2's ImageSynthesis.wait (client/base_api.py): a GET at once, then sleeps that
    # double every third poll from 1 s up to 5 s. The async models say nothing of when a task ends.
    sdk_sleeps = (1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 4.0, 4.0, 5.0)
    models_checked = CHECKED
    # USD per image, international: 3.0 one flat price at any size; 3.0-pro by the output's area
    # (up to 2.25 MP the "1K" tier, above it the "2K" one); an edit adds $0.003 per reference.
    # Derived from the Chinese site's price badge (shared/PROVIDERS.md 5, medium confidence); no
    # published price for the other models, whose estimates say "unknown".
    prices = (
        ("qwen-image-3.0", "1K", 0.03), ("qwen-image-3.0", "2K", 0.03),
        ("qwen-image-3.0-pro", "1K", 0.04), ("qwen-image-3.0-pro", "2K", 0.075),
    )
    prices_as_of = "estimated from Alibaba Cloud's Chinese price list, 2026-12"

    def base_url_from(self, environ: Mapping[str, str]) -> tuple[str, str]:
        return choose(environ)

    def region_url(self, region: str, workspace: str = "") -> str:
        return url_for(region, workspace)

    # -- requests --

    def check(self, request: GenerationRequest, listed: Collection[str] = (), schema: Any = None) -> None:
        rules = rules_of(request.model)
        self._check_params(request, rules)
        if rules is None:
            self.pixels(request)  # still a size the wire can carry
            return
        self.pixels(request)  # refuses a size this model cannot make
        if request.n > rules.n_max:
            limit = "one image per request: use -n 1" if rules.n_max == 1 else f"1 to {rules.n_max} images per request"
            raise ValidationError("n", f"{request.model} on {self.title} makes {limit}")
        if request.image_urls and not rules.edits:
            raise ValidationError(
                "image_urls", f"{request.model} on {self.title} takes no reference images: use qwen-image-3.0 or qwen-image-2.0"
            )

    def _check_params(self, request: GenerationRequest, rules: Rules | None) -> None:
        for name in request.host_params:
            if name in _OWN_PARAMETERS:
                raise ValidationError(
                    "host_params", f"{name} is one of qimage_nb's own fields: pass {_OWN_PARAMETERS[name]}=... instead of a host parameter"
                )
        mode = request.host_params.get("prompt_extend_mode")
        if mode is None or rules is None:
            return
        if not rules.extend_modes:
            raise ValidationError(
                "host_params", f"prompt_extend_mode is a Qwen Image 3.0 parameter; {request.model} does not take it"
            )
        if mode not in rules.extend_modes:
            raise ValidationError(
                "host_params", f"prompt_extend_mode {_brief(mode)} is not one of {', '.join(rules.extend_modes)}"
            )
        if mode == "agent" and request.image_urls:
            raise ValidationError(
                "host_params", "prompt_extend_mode agent is for text-to-image only: use direct when editing"
            )

    def notes(self, request: GenerationRequest) -> list[str]:
        if request.model in MODELS:
            return []
        return [
            f"{request.model} is not in qimage_nb's DashScope models (checked {CHECKED}); sending it as "
            f"written{suggest(request.model)}"
        ]

    def estimated_price(self, request: GenerationRequest) -> float | None:
        tiers = {resolution: price for name, resolution, price in self.prices if name == request.model}
        if not tiers:
            return None
        try:
            size = self.pixels(request)
        except ValidationError:
            return None  # a request the host would refuse has no price; check() says why
        if size is None:  # the model picks the size, so the tier: the dearer one, so that a cap holds
            per_image = max(tiers.values())
        else:
            per_image = tiers["1K" if size[0] * size[1] <= _TIER_1K_PIXELS else "2K"]
        return per_image + _PER_REFERENCE * len(request.image_urls) / request.n

    def pixels(self, request: GenerationRequest) -> tuple[int, int] | None:
        """The ``W*H`` this request asks of the host; None: no size, the model picks."""
        rules = rules_of(request.model) or _UNLISTED
        if request.size == AUTO_SIZE:
            return None
        asked = parse_pixel_size(request.size)
        if rules.fixed_sizes:
            if asked is not None:
                if asked in FIXED_SIZES.values() or asked in ALSO_FIXED:
                    return asked
                raise ValidationError("size", f"{request.model} on {self.title} makes only {self._fixed_list()}")
            if request.resolution != "1K":
                raise ValidationError(
                    "resolution", f"{request.model} on {self.title} has fixed sizes ({self._fixed_list()}); no 2K"
                )
            if request.size not in FIXED_SIZES:
                raise ValidationError(
                    "size", f"{request.model} on {self.title} makes {', '.join(FIXED_SIZES)} only, not {request.size}"
                )
            return FIXED_SIZES[request.size]
        if asked is None:
            table = PIXEL_SIZES.get((request.size, request.resolution))
            if table is None:
                raise ValidationError(
                    "size", f"size {request.size!r} is not a ratio or WIDTHxHEIGHT that {self.title} can send"
                )
            return table
        width, height = asked
        total = width * height
        sides_ok = rules.side_min <= width <= rules.side_max and rules.side_min <= height <= rules.side_max
        aspect_ok = rules.aspect_max is None or max(width, height) <= rules.aspect_max * min(width, height)
        if not (sides_ok and aspect_ok and rules.pixels_min <= total <= rules.pixels_max):
            raise ValidationError(
                "size", f"size {width}x{height} is outside what {self.title} makes for {request.model}: {_size_rule(rules)}"
            )
        return asked

    @staticmethod
    def _fixed_list() -> str:
        return ", ".join(f"{w}x{h}" for w, h in FIXED_SIZES.values())

    def _parameters(self, request: GenerationRequest) -> dict[str, Any]:
        parameters: dict[str, Any] = {}
        pixels = self.pixels(request)
        if pixels is not None:
            parameters["size"] = f"{pixels[0]}*{pixels[1]}"
        parameters["n"] = request.n
        if request.negative_prompt is not None:
            parameters["negative_prompt"] = request.negative_prompt
        parameters.update(request.options)
        parameters.update(request.host_params)  # as written: the host judges what it does not know
        return parameters

    def submit(self, request: GenerationRequest, key: str) -> Call:
        if request.model in ASYNC_MODELS:
            return Call(
                "POST",
                ASYNC_PATH,
                json={"model": request.model, "input": {"prompt": request.prompt}, "parameters": self._parameters(request)},
                headers={"X-DashScope-Async": "enable"},
            )
        # Images first, then the prompt, as the host's own examples and Comfy's client order them
        # ("Image 1..3" in a prompt count from the first).
        content: list[dict[str, str]] = [
            {"image": ref.uri if isinstance(ref, InlineImage) else ref} for ref in request.image_urls
        ]
        content.append({"text": request.prompt})
        return Call(
            "POST",
            SYNC_PATH,
            json={
                "model": request.model,
                "input": {"messages": [{"role": "user", "content": content}]},
                "parameters": self._parameters(request),
            },
            read_timeout=SYNC_READ_TIMEOUT,
        )

    def read_submit(self, payload: Any, headers: Mapping[str, str]) -> Submitted:
        output = _output(payload, "submit")
        if "choices" in output:
            request_id = payload.get("request_id") if isinstance(payload, Mapping) else None
            if not isinstance(request_id, str) or not request_id.strip():
                raise ProtocolError("the generation answer carries no request_id")
            return Submitted(task_id=request_id.strip(), result=_sync_result(request_id.strip(), payload, output))
        task_id = output.get("task_id")
        if not isinstance(task_id, str) or not task_id.strip():
            raise ProtocolError(f"the submit answer carries no task id: {_brief(dict(output), 80)}")
        return Submitted(task_id=task_id.strip())

    def poll(self, task_id: str) -> Call:
        return Call("GET", TASK_PATH.format(task_id=quote(task_id, safe="")))

    def read_task(self, payload: Any, task_id: str) -> TaskStatus:
        output = _output(payload, "task status")
        word = output.get("task_status")
        if not isinstance(word, str) or not word.strip():
            raise ProtocolError(f"the task answer has no task_status: {_brief(dict(output), 80)}", task_id=task_id)
        word = word.strip().upper()
        if word == "UNKNOWN":
            # The host's answer for an id it does not know, or one past its 24 hours.
            raise NotFoundError(
                f"task {task_id} is unknown to {self.title} or expired (tasks are kept 24 hours)",
                status_code=404, task_id=task_id,
            )
        status = _STATUSES.get(word, "processing")  # an unfamiliar word means "still running"
        results = output.get("results") if isinstance(output.get("results"), list) else []
        urls = tuple(
            item["url"].strip() for item in results
            if isinstance(item, Mapping) and isinstance(item.get("url"), str) and item["url"].strip()
        )
        if status == "completed" and not urls:
            raise ProtocolError("the task succeeded but lists no image URL", task_id=task_id)
        failure = None
        if status == "failed":
            failure = TaskFailure(
                message=str(output.get("message") or "the task failed without a reason"),
                code=output.get("code") if isinstance(output.get("code"), (str, int)) else None,
            )
        first = next((item for item in results if isinstance(item, Mapping)), {})
        return TaskStatus(
            task_id=task_id,
            status=status,
            progress=100 if status == "completed" else 0,
            urls=urls,
            created=_moment(output.get("submit_time")),
            started=_moment(output.get("scheduled_time")),
            completed=_moment(output.get("end_time")),
            expires_at=_expiry(urls),
            error=failure,
            raw_status=word,
            actual_prompt=first.get("actual_prompt") if isinstance(first.get("actual_prompt"), str) else None,
            seed=_seed(first) if first else None,
            raw=dict(output),
        )

    def read_error(self, status_code: int, content_type: str, body: bytes) -> ErrorInfo:
        text = body.decode("utf-8", errors="replace").strip()
        title = html_title(content_type, text)
        if title is not None:
            return ErrorInfo(
                message=f"HTTP {status_code} with an HTML page{': ' + title if title else ''} (a proxy in front of the API)",
                code=status_code, html=True,
            )
        payload = decode_json(body)
        if isinstance(payload, Mapping) and (payload.get("code") or payload.get("message")):
            code = payload.get("code")
            message = " ".join(str(payload.get("message") or code).split())
            return ErrorInfo(message=f"{code}: {message}" if code and code not in message else message,
                             code=code if isinstance(code, (str, int)) else status_code)
        snippet = " ".join(text.split())[:120]
        return ErrorInfo(message=f"HTTP {status_code}{': ' + snippet if snippet else ''}", code=status_code)

    def error_in_success(self, payload: Any) -> tuple[int, ErrorInfo] | None:
        if isinstance(payload, Mapping) and "output" not in payload and payload.get("code"):
            code = payload.get("code")
            message = " ".join(str(payload.get("message") or code).split())
            return 400, ErrorInfo(message=f"{code}: {message}", code=code if isinstance(code, (str, int)) else None)
        return None

    def auth_hint(self, base_url: str = "") -> str:
        where = describe_url(base_url) if base_url else "this base URL"
        if where != base_url and base_url:
            where += f" ({base_url})"
        try:
            chosen, why = choose(os.environ)
        except ValidationError:
            chosen, why = "", ""
        if chosen == base_url and why:
            where += f", chosen by {why}"
        return (
            f"{self.title} refused the key for {where}: keys are per region; "
            f"check {self.key_env}, and choose the key's region with DASHSCOPE_API_REGION (+ DASHSCOPE_WORKSPACE_ID) "
            f"or {self.base_url_env} (Singapore: {SINGAPORE}, Beijing: {BEIJING})"
        )

    def cancel(self, task_id: str) -> Call:
        return Call("POST", TASK_PATH.format(task_id=quote(task_id, safe="")) + "/cancel")


PROVIDER = DashScope()


def _output(payload: Any, what: str) -> Mapping[str, Any]:
    output = payload.get("output") if isinstance(payload, Mapping) else None
    if not isinstance(output, Mapping):
        raise ProtocolError(f"the {what} answer has no output object: {_brief(payload, 80)}")
    return output


_BEIJING = timezone(timedelta(hours=8))
_MOMENT = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?")


def _moment(value: Any) -> float | None:
    """A task time (``2025-09-09 11:38:54.741``, Beijing time) in epoch seconds, or None. Only its
    differences are used (queue and run time), so a zone or clock off by hours changes nothing;
    anything malformed is ignored rather than refused, as it only informs the poll schedule."""
    match = _MOMENT.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    *fields, fraction = match.groups()
    try:
        whole = datetime(*(int(v) for v in fields), tzinfo=_BEIJING).timestamp()  # type: ignore[misc]
    except (ValueError, OverflowError):
        return None
    return whole + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _size_rule(rules: Rules) -> str:
    if rules.aspect_max is not None:
        return (f"{rules.pixels_min} to {rules.pixels_max} pixels in all (512x512 to 2048x2048), aspect up to "
                f"{rules.aspect_max:g}:1, each side up to {rules.side_max}; or no size, and the model picks")
    return f"each side {rules.side_min} to {rules.side_max} pixels"


def _expiry(urls: Any) -> float | None:
    """When the signed result URLs stop working (their ``Expires`` query, OSS's epoch seconds): a
    face then sends a generated image by URL while it lives, and its bytes once it has expired."""
    ends = []
    for url in urls:
        for value in parse_qs(urlsplit(url).query).get("Expires", []):
            if value.isdigit():
                ends.append(float(value))
    return min(ends) if ends else None


def _output_size(usage: Any) -> tuple[int, int] | None:
    """The size the host says it made: 3.0's ``output_width/height``, 2.0's ``width/height``."""
    if not isinstance(usage, Mapping):
        return None
    for w_key, h_key in (("output_width", "output_height"), ("width", "height")):
        width, height = number(usage.get(w_key)), number(usage.get(h_key))
        if width and height and width > 0 and height > 0:
            return int(width), int(height)
    return None


def _seed(item: Mapping[str, Any]) -> int | None:
    value = number(item.get("seed"))
    return int(value) if value is not None else None


def _sync_result(request_id: str, payload: Mapping[str, Any], output: Mapping[str, Any]) -> TaskStatus:
    urls: list[str] = []
    for choice in output.get("choices") or []:
        message = choice.get("message") if isinstance(choice, Mapping) else None
        for part in (message or {}).get("content") or []:
            if isinstance(part, Mapping) and isinstance(part.get("image"), str) and part["image"].strip():
                urls.append(part["image"].strip())
    if not urls:
        raise ProtocolError("the generation answer lists no image", task_id=request_id)
    return TaskStatus(
        task_id=request_id,
        status="completed",
        progress=100,
        urls=tuple(urls),
        raw_status="SUCCEEDED",
        output_size=_output_size(payload.get("usage")),
        expires_at=_expiry(urls),
        actual_prompt=output.get("actual_prompt") if isinstance(output.get("actual_prompt"), str) else None,
        seed=_seed(output),
        raw=dict(payload),
    )
