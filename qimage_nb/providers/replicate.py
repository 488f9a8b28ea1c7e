"""Replicate (``api.replicate.com``): the Qwen Image models there (``shared/PROVIDERS.md`` 3 and 5).

``POST /v1/models/{owner}/{name}/predictions`` with ``Prefer: wait`` holds the answer until the
prediction ends (up to 60 s), so a fast one finishes inside the submit and nothing is polled; an
answer that ran out of time says ``starting`` and the client polls ``GET /v1/predictions/{id}``
(the answer's ``urls.get``), honouring ``Retry-After`` on a 429. One output per prediction: a
request for n images is n predictions, each journaled. Outputs are deleted an hour after the
prediction ends, so the client downloads at once, and a resume after that says why it cannot.
Errors are RFC 7807 problems. No idempotency key: a create whose answer is lost is "outcome
unknown", never resent.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote

from .._contract import (
    AUTO_SIZE,
    PIXEL_SIZES,
    QWEN_IMAGE_MODELS,
    GenerationRequest,
    TaskFailure,
    TaskStatus,
    _brief,
    number,
    parse_pixel_size,
)
from .._exceptions import NotFoundError, ProtocolError, ValidationError
from ._base import Call, Capabilities, ErrorInfo, Provider, Submitted, decode_json, html_title

PRODUCTION = "https://api.replicate.com"
# Each model a user knows, as Replicate's model (owner/name).
MODELS = {
    "qwen-image-2.0": "qwen/qwen-image-2",
    "qwen-image-2.0-pro": "qwen/qwen-image-2-pro",
    "qwen-image-3.0": "alibaba/qwen-image-3",
    "qwen-image-3.0-pro": "alibaba/qwen-image-3-pro",
}
ALIASES = {"standard": "qwen-image-2.0", "pro": "qwen-image-2.0-pro"}
# Models whose schema takes ``size`` "W*H"; the others take ``aspect_ratio`` (PROVIDERS.md 3).
SIZED = frozenset({"qwen/qwen-image-2-pro"})
RATIOS = {
    "qwen/qwen-image-2": ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"),
    "alibaba/qwen-image-3": ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2"),
    "alibaba/qwen-image-3-pro": ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2"),
}
PIXELS_MIN, PIXELS_MAX = 512 * 512, 2048 * 2048
# Prefer: wait holds at most 60 s; the read timeout leaves the host time to answer "starting".
WAIT_SECONDS = 60
SUBMIT_READ_TIMEOUT = WAIT_SECONDS + 10.0
RETENTION = "an hour"

_STATUSES = {"starting": "pending", "processing": "processing", "succeeded": "completed",
             "failed": "failed", "canceled": "cancelled", "cancelled": "cancelled", "aborted": "cancelled"}


class Replicate(Provider):
    name = "replicate"
    title = "Replicate"
    label = "Replicate"
    key_env = "REPLICATE_API_TOKEN"
    base_url_env = "REPLICATE_BASE_URL"
    default_base_url = PRODUCTION
    capabilities = Capabilities(options=frozenset({"seed", "prompt_extend", "pixel_size"}), images_per_submit=1,
                                cancel_on_stop=True)
    # The contract's names (checked as Qwen Image there); Replicate's own ids are accepted as written.
    models = tuple(model for model in MODELS if model in QWEN_IMAGE_MODELS)
    host_ids = tuple(MODELS.values())
    default_model = "qwen-image-2.0"
    # replicate 1.0.7's wait: a GET every REPLICATE_POLL_INTERVAL (0.5 s) once Prefer: wait ends.
    # Its statuses say nothing of when a prediction will end, so a wait is never later than that.
    sdk_sleeps = (0.5,)
    # USD per image as (model, resolution, price). Replicate's answers carry no price, and no
    # source in reach gives one for qwen/qwen-image-2[-pro]; 3.0 from a third-party comparison
    # (PROVIDERS.md 5, muapi.ai, low confidence). Estimated.
    prices = (("qwen-image-3.0", "1K", 0.04), ("qwen-image-3.0", "2K", 0.065))
    model_aliases = ALIASES
    prices_as_of = "estimated from a third party's comparison (muapi.ai), 2026-12"

    # -- requests --

    def model_of(self, request: GenerationRequest) -> str:
        """Replicate's owner/name for this request's model."""
        model = ALIASES.get(request.model, request.model)
        if model in MODELS:
            return MODELS[model]
        if model in MODELS.values():
            return model
        known = ", ".join([*MODELS, *ALIASES])
        raise ValidationError(
            "model", f"model {request.model!r} is not a Qwen Image model on Replicate; use one of {known}, "
            f"or Replicate's own id ({', '.join(MODELS.values())})",
        )

    def check(self, request: GenerationRequest, listed: Collection[str] = (), schema: Any = None) -> None:
        model = self.model_of(request)
        self.size_input(request, model)
        if len(request.image_urls) > 1:
            raise ValidationError(
                "image_urls", f"{model} on Replicate takes one reference image, not {len(request.image_urls)}: "
                "pass one --ref, or use dashscope or fal (up to 3)",
            )
        if request.image_urls and not isinstance(request.image_urls[0], str):
            raise ValidationError("image_urls", "Replicate takes a reference as a URL: upload the picture first")

    def size_input(self, request: GenerationRequest, model: str) -> dict[str, str]:
        """``{"size": "W*H"}`` for a sized model, else ``{"aspect_ratio": ratio}``; nothing for
        ``auto`` (the model's own default)."""
        if request.size == AUTO_SIZE:
            return {}
        pixels = parse_pixel_size(request.size)
        if model in SIZED:
            if pixels is None:
                if (request.size, request.resolution) not in PIXEL_SIZES:
                    raise ValidationError("size", f"size {request.size!r} is not one {model} takes: a ratio or WIDTHxHEIGHT")
                pixels = PIXEL_SIZES[(request.size, request.resolution)]
            width, height = pixels
            if not PIXELS_MIN <= width * height <= PIXELS_MAX:
                raise ValidationError(
                    "size", f"size {width}x{height} is outside what {model} makes: 512x512 to 2048x2048 pixels in all"
                )
            return {"size": f"{width}*{height}"}
        ratios = RATIOS[model]
        if pixels is not None:
            raise ValidationError(
                "size", f"{model} on Replicate takes an aspect ratio ({', '.join(ratios)}), not pixels: use a "
                "ratio, or qwen-image-2.0-pro (Replicate, dashscope, fal) for WIDTHxHEIGHT",
            )
        if request.size not in ratios:
            raise ValidationError("size", f"{model} on Replicate takes {', '.join(ratios)}, not {request.size}")
        if request.resolution != "1K":
            raise ValidationError(
                "resolution", f"{model} on Replicate makes one size per ratio (about 1K) and has no 2K: use "
                "--resolution 1K, or qwen-image-2.0-pro with WIDTHxHEIGHT for larger pictures",
            )
        return {"aspect_ratio": request.size}

    def submit(self, request: GenerationRequest, key: str) -> Call:
        model = self.model_of(request)
        data: dict[str, Any] = {"prompt": request.prompt, **self.size_input(request, model)}
        if request.negative_prompt is not None:
            data["negative_prompt"] = request.negative_prompt
        if request.image_urls:
            data["image"] = str(request.image_urls[0])
        if request.seed is not None:
            data["seed"] = request.seed
        if request.prompt_extend is not None:
            data["enable_prompt_expansion"] = request.prompt_extend
        data.update(getattr(request, "host_params", None) or {})
        owner, name = model.split("/")
        return Call(
            "POST", f"/v1/models/{quote(owner, safe='')}/{quote(name, safe='')}/predictions",
            json={"input": data}, headers={"Prefer": f"wait={WAIT_SECONDS}"}, read_timeout=SUBMIT_READ_TIMEOUT,
        )

    def read_submit(self, payload: Any, headers: Mapping[str, str]) -> Submitted:
        prediction_id = payload.get("id") if isinstance(payload, Mapping) else None
        if not isinstance(prediction_id, str) or not prediction_id.strip():
            raise ProtocolError(f"the create answer carries no prediction id: {_brief(payload, 80)}")
        try:
            status = self.read_task(payload, prediction_id.strip())
        except ProtocolError:
            # The prediction exists (and may bill): journal its id and let the polls read it, rather
            # than call the submit "outcome unknown", whose resend would bill a second time.
            return Submitted(task_id=prediction_id.strip())
        # A prediction that ended inside the held request needs no polling; "starting" (a held
        # answer that ran out) or "processing" is a task to poll.
        return Submitted(task_id=prediction_id.strip(), result=status if status.terminal else None)

    def poll(self, task_id: str) -> Call:
        return Call("GET", f"/v1/predictions/{quote(task_id, safe='')}")

    def cancel(self, task_id: str) -> Call:
        return Call("POST", f"/v1/predictions/{quote(task_id, safe='')}/cancel")

    def read_cancel(self, status_code: int, payload: Any) -> str:
        word = payload.get("status") if isinstance(payload, Mapping) else None
        return f"status {word}" if word else f"HTTP {status_code}"

    def read_task(self, payload: Any, task_id: str) -> TaskStatus:
        if not isinstance(payload, Mapping):
            raise ProtocolError(f"the prediction answer is not an object: {_brief(payload, 80)}", task_id=task_id)
        word = payload.get("status")
        if not isinstance(word, str) or not word.strip():
            raise ProtocolError(f"the prediction has no status: {_brief(dict(payload), 80)}", task_id=task_id)
        word = word.strip().lower()
        status = _STATUSES.get(word, "processing")  # an unfamiliar word means "still running"
        output = payload.get("output")
        outputs = output if isinstance(output, list) else [output]
        urls = tuple(item.strip() for item in outputs if isinstance(item, str) and item.strip())
        if status == "completed" and not urls:
            if payload.get("data_removed"):
                raise NotFoundError(
                    f"prediction {task_id} finished, but Replicate deletes outputs {RETENTION} after a "
                    "prediction ends and has removed its image: it cannot be fetched any more; run the "
                    "cell again for a new one", status_code=410, task_id=task_id,
                )
            raise ProtocolError("the prediction succeeded but lists no output", task_id=task_id)
        failure = None
        if status == "failed":
            failure = TaskFailure(message=str(payload.get("error") or "the prediction failed without a reason"))
        metrics = payload.get("metrics") if isinstance(payload.get("metrics"), Mapping) else {}
        inputs = payload.get("input") if isinstance(payload.get("input"), Mapping) else {}
        seed = number(inputs.get("seed"))
        return TaskStatus(
            task_id=task_id, status=status, progress=100 if status == "completed" else 0, urls=urls,
            actual_time=number(metrics.get("predict_time")), error=failure, raw_status=word,
            seed=int(seed) if seed is not None else None, raw=dict(payload),
        )

    def read_error(self, status_code: int, content_type: str, body: bytes) -> ErrorInfo:
        text = body.decode("utf-8", errors="replace").strip()
        title = html_title(content_type, text)
        if title is not None:
            return ErrorInfo(
                message=f"HTTP {status_code} with an HTML page{': ' + title if title else ''} (a proxy in front of Replicate)",
                code=status_code, html=True,
            )
        payload = decode_json(body)
        if isinstance(payload, Mapping) and (payload.get("detail") or payload.get("title")):
            detail = " ".join(
                line.strip().lstrip("- ").strip() for line in str(payload.get("detail") or "").splitlines() if line.strip()
            )
            heading = str(payload.get("title") or "").strip()
            message = "; ".join(part for part in (heading, detail) if part) if heading not in detail else detail
            fields = payload.get("invalid_fields") if isinstance(payload.get("invalid_fields"), list) else []
            field = next((str(item.get("field")) for item in fields if isinstance(item, Mapping) and item.get("field")), None)
            if field and len(fields) > 1:
                message = "; ".join(
                    f"{item.get('field')}: {item.get('description')}" for item in fields if isinstance(item, Mapping)
                )
            return ErrorInfo(message=message, code=status_code, type=str(payload.get("type") or "") or None,
                             param=field.removeprefix("input.") if field else None)
        snippet = " ".join(text.split())[:120]
        return ErrorInfo(message=f"HTTP {status_code}{': ' + snippet if snippet else ''}", code=status_code)

    def auth_hint(self, base_url: str = "") -> str:
        return "Replicate refused the token: check REPLICATE_API_TOKEN, or run %qimage login replicate"


PROVIDER = Replicate()
