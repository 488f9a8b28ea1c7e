"""Alibaba Cloud Model Studio (DashScope), the official host of Qwen Image (``shared/PROVIDERS.md`` 1).

Two wires under one base URL that ends in ``/api/v1`` (as ``DASHSCOPE_HTTP_BASE_URL`` does for the
official SDK):
- qwen-image-2.0 (and -pro, -max): the synchronous multimodal-generation endpoint. The answer holds
  the images; there is no task id (the ``request_id`` stands for it) and no idempotency key.
- qwen-image and qwen-image-plus: the asynchronous image-synthesis endpoint with
  ``X-DashScope-Async: enable``, then ``GET /tasks/{id}``, which the client polls like any task.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote

from .._contract import (
    PIXEL_SIDE_MAX,
    PIXEL_SIDE_MIN,
    PIXEL_SIZES,
    GenerationRequest,
    TaskFailure,
    TaskStatus,
    _brief,
    number,
    parse_pixel_size,
)
from .._exceptions import NotFoundError, ProtocolError, ValidationError
from ._base import Call, Capabilities, ErrorInfo, Provider, Submitted, decode_json, html_title

BEIJING = "https://dashscope.aliyuncs.com/api/v1"
SINGAPORE = "https://dashscope-intl.aliyuncs.com/api/v1"
SYNC_PATH = "/services/aigc/multimodal-generation/generation"
ASYNC_PATH = "/services/aigc/text2image/image-synthesis"
TASK_PATH = "/tasks/{task_id}"

SYNC_MODELS = (
    "qwen-image-2.0", "qwen-image-2.0-pro", "qwen-image-2.0-2026-03-03", "qwen-image-2.0-pro-2026-03-03",
    "qwen-image-max",
)  # fmt: skip
ASYNC_MODELS = ("qwen-image", "qwen-image-plus")
# Models with the host's fixed sizes and one image per request.
FIXED_SIZE_MODELS = frozenset({"qwen-image-max", *ASYNC_MODELS})
FIXED_SIZES = {"1:1": (1328, 1328), "16:9": (1664, 928), "9:16": (928, 1664), "4:3": (1472, 1104), "3:4": (1104, 1472)}
# Also served for those models (PROVIDERS.md: 1472*1140 and 1140*1472 on some pages).
_ALSO_FIXED = {(1472, 1140), (1140, 1472)}
# A synchronous generation answers when its images exist: tens of seconds, not a poll's timeout.
SYNC_READ_TIMEOUT = 180.0

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
    default_base_url = BEIJING  # the official SDK's default too
    capabilities = Capabilities(options=frozenset({"seed", "prompt_extend", "watermark", "pixel_size"}))
    models = SYNC_MODELS + ASYNC_MODELS
    default_model = "qwen-image-2.0"

    # -- requests --

    def check(self, request: GenerationRequest, listed: Collection[str] = ()) -> None:
        if request.model not in self.models:
            raise ValidationError(
                "model", f"model {request.model!r} is not a Qwen Image model of {self.title}; known: {', '.join(self.models)}"
            )
        self.pixels(request)  # refuses a size this model cannot make
        if request.model in FIXED_SIZE_MODELS:
            if request.n != 1:
                raise ValidationError("n", f"{request.model} on {self.title} makes one image per request: use -n 1")
            if request.image_urls:
                raise ValidationError(
                    "image_urls", f"{request.model} on {self.title} takes no reference images: use qwen-image-2.0"
                )

    def pixels(self, request: GenerationRequest) -> tuple[int, int]:
        """The ``W*H`` this request asks of the host."""
        asked = parse_pixel_size(request.size)
        if request.model in FIXED_SIZE_MODELS:
            if asked is not None:
                if asked in FIXED_SIZES.values() or asked in _ALSO_FIXED:
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
            return PIXEL_SIZES[(request.size, request.resolution)]
        width, height = asked
        total = width * height
        if not (PIXEL_SIDE_MIN <= width <= PIXEL_SIDE_MAX and PIXEL_SIDE_MIN <= height <= PIXEL_SIDE_MAX) or not (
            PIXEL_SIDE_MIN**2 <= total <= PIXEL_SIDE_MAX**2
        ):
            raise ValidationError(
                "size",
                f"size {width}x{height} is outside what {self.title} makes: each side "
                f"{PIXEL_SIDE_MIN} to {PIXEL_SIDE_MAX} pixels",
            )
        return asked

    @staticmethod
    def _fixed_list() -> str:
        return ", ".join(f"{w}x{h}" for w, h in FIXED_SIZES.values())

    def _parameters(self, request: GenerationRequest) -> dict[str, Any]:
        width, height = self.pixels(request)
        parameters: dict[str, Any] = {"size": f"{width}*{height}", "n": request.n}
        if request.negative_prompt is not None:
            parameters["negative_prompt"] = request.negative_prompt
        parameters.update(request.options)
        return parameters

    def submit(self, request: GenerationRequest, key: str) -> Call:
        if request.model in ASYNC_MODELS:
            return Call(
                "POST",
                ASYNC_PATH,
                json={"model": request.model, "input": {"prompt": request.prompt}, "parameters": self._parameters(request)},
                headers={"X-DashScope-Async": "enable"},
            )
        content: list[dict[str, str]] = [{"text": request.prompt}]
        content += [{"image": url} for url in request.image_urls]
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
        region = "Singapore" if "intl" in base_url else "Beijing" if "dashscope.aliyuncs.com" in base_url else None
        where = f"the {region} region ({base_url})" if region else base_url or "this base URL"
        return (
            f"{self.title} refused the key for {where}: keys are per region; check {self.key_env}, "
            f"and for a Singapore key set {self.base_url_env}={SINGAPORE} (Beijing: {BEIJING})"
        )

    def cancel(self, task_id: str) -> Call:
        return Call("POST", TASK_PATH.format(task_id=quote(task_id, safe="")) + "/cancel")


PROVIDER = DashScope()


def _output(payload: Any, what: str) -> Mapping[str, Any]:
    output = payload.get("output") if isinstance(payload, Mapping) else None
    if not isinstance(output, Mapping):
        raise ProtocolError(f"the {what} answer has no output object: {_brief(payload, 80)}")
    return output


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
        actual_prompt=output.get("actual_prompt") if isinstance(output.get("actual_prompt"), str) else None,
        seed=_seed(output),
        raw=dict(payload),
    )
