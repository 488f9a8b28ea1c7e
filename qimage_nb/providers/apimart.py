"""The seed's host: the Qwen Image 2.0 task API of ``shared/API.md``, as it really serves (section 7).

Its wire in one place: the submit with ``Idempotency-Key`` and the versioned-contract header, every
answer envelope seen in the wild (legacy list, object, ``code: "success"``, the versioned 202,
``generation.result`` at once), tolerant statuses, errors whose ``code`` is an int or a string, and
errors inside an HTTP 200.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from .._contract import (
    AUTO_SIZE,
    DEFAULT_MODEL,
    MODELS,
    RATIOS,
    RESOLUTIONS,
    Balance,
    GenerationRequest,
    InlineImage,
    TaskFailure,
    TaskStatus,
    UploadedImage,
    _brief,
    number,
    parse_pixel_size,
)
from .._exceptions import ProtocolError, ValidationError
from ._base import Call, Capabilities, ErrorInfo, Provider, Submitted, decode_json, html_title
from ._schema import check_schema

# The provider's production host (API.md: mirrors and resellers serve the same API elsewhere).
PRODUCTION_BASE_URL = "https://api.apimart.ai"
SUBMIT_PATH = "/v1/images/generations"
TASK_PATH = "/v1/tasks/{task_id}"
UPLOAD_PATH = "/v1/uploads/images"
BALANCE_PATH = "/v1/balance"
MODELS_PATH = "/v1/models"
SCHEMA_PATH = "/v1/model-schema"

# Models this host serves beyond the contract's two, with the rules known of them, checked 2026-12
# (PROVIDERS.md 5, "Seed's reseller": its model list and README of 2026-09-21, L-M): a ratio, 1K or
# 2K, n 1-4. Sent only where the host's model list has the model; where the host serves its
# schema (API.md 7.7) the schema decides instead of this table.
KNOWN_MODELS = {"qwen-image-3.0": {"n_max": 4}}

# API.md 7.1: the provider's own client sends this on every submit; idempotent replay is documented
# only for requests that carry it, and answers that carry it back prove keys are honoured there.
RESPONSE_VERSION = "2026-07-27"
VERSION_HEADER = "X-APIMart-Response-Version"
REPLAYED_HEADER = "Idempotency-Replayed"

# API.md 7.2: lower-cased, only these are terminal; every other word means "still running".
_TERMINAL = {"completed": "completed", "failed": "failed", "cancelled": "cancelled", "canceled": "cancelled"}
_QUEUED = frozenset({"submitted", "queued", "pending", "waiting"})


class APIMart(Provider):
    name = "apimart"
    title = "the APIMart API"
    label = "APIMart"
    key_env = "QIMAGE_API_KEY"
    base_url_env = "QIMAGE_BASE_URL"
    default_base_url = PRODUCTION_BASE_URL
    capabilities = Capabilities(
        upload=True, balance=True, list_models=True, idempotency_keys=True, model_schema=True,
        upload_lifetime=72 * 3600,  # API.md: uploaded files are kept 72 hours
        parameter_refusal_codes=frozenset({"build_request_failed"}),  # API.md 7.3: a 500 for a bad parameter
        idempotency_codes={  # API.md 7.1, the versioned contract's answers
            "idempotency_in_progress": "in_progress", "idempotency_unavailable": "unavailable",
            "idempotency_result_indeterminate": "indeterminate", "idempotency_key_reused": "reused",
        },
    )
    models = MODELS
    default_model = DEFAULT_MODEL
    # API.md section 2's example answer: "cost": 0.006 for a finished one-image task. No other
    # price is published for this host; the journal learns each model's from the host's answers.
    prices = (("qwen-image-2.0", "1K", 0.006),)
    prices_as_of = "the API's documented example answer, 2026-07"

    # -- requests --

    def check(self, request: GenerationRequest, listed: Collection[str] = (), schema: Any = None) -> None:
        if any(isinstance(ref, InlineImage) for ref in request.image_urls):
            raise ValidationError(
                "image_urls", f"{self.title} takes public http(s) URLs, not local images inline: "
                "upload them first with client.upload(...) (or pass them to %%qimage --ref, which uploads them)"
            )
        for name in request.host_params:
            if name in _OWN_FIELDS:
                raise ValidationError("host_params", f"{name} is one of qimage_nb's own fields: pass {name}=... instead")
        if request.model not in self.models and request.model not in listed:
            known = list(dict.fromkeys([*self.models, *listed]))
            close = difflib.get_close_matches(request.model, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValidationError(
                "model",
                f"model {request.model!r} is not served by {self.title}{hint}; known: {', '.join(known)}",
            )
        if request.model in self.models and parse_pixel_size(request.size) is not None:
            raise ValidationError(
                "size",
                f"{self.title} takes a ratio and a resolution, not {request.size}: use --size 16:9 "
                "--resolution 2K (or a provider with free pixel sizes: dashscope)",
            )
        if request.model in self.models and request.size == AUTO_SIZE:
            raise ValidationError("size", f"{request.model} on {self.title} needs a ratio: use --size 1:1 (or 16:9, ...)")
        if schema:
            check_schema(request.model, self.body(request), schema, self.title)
        elif request.model in KNOWN_MODELS:
            self._check_known(request)

    def _check_known(self, request: GenerationRequest) -> None:
        rules = KNOWN_MODELS[request.model]
        if parse_pixel_size(request.size) is not None or (request.size not in RATIOS and request.size != AUTO_SIZE):
            raise ValidationError("size", f"{request.model} on {self.title} takes a ratio ({', '.join(RATIOS)})")
        if request.resolution not in RESOLUTIONS:
            raise ValidationError("resolution", f"{request.model} on {self.title} takes 1K or 2K")
        if request.n > rules["n_max"]:
            raise ValidationError("n", f"{request.model} on {self.title} makes 1 to {rules['n_max']} images per request")

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        """The submit body: the journal's field names, without options this host lacks (refused
        before this), with host parameters as written; no size when the model picks one."""
        body = {name: value for name, value in request.to_json().items() if name not in request.options}
        body.pop("host_params", None)
        if request.size == AUTO_SIZE:
            body.pop("size", None)
        body.update(request.host_params)
        return body

    def submit(self, request: GenerationRequest, key: str) -> Call:
        # The journal keeps requests in this API's own field names; the options this API does not
        # take were refused by check() and never reach the wire.
        return Call(
            "POST", SUBMIT_PATH, json=self.body(request),
            headers={"Idempotency-Key": key, VERSION_HEADER: RESPONSE_VERSION},
        )

    def read_submit(self, payload: Any, headers: Mapping[str, str]) -> Submitted:
        return parse_submit(payload, headers)

    def confirms_idempotency(self, headers: Mapping[str, str]) -> bool:
        return confirms_idempotency(headers)

    def poll(self, task_id: str) -> Call:
        return Call("GET", TASK_PATH.format(task_id=quote(task_id, safe="")))

    def read_task(self, payload: Any, task_id: str) -> TaskStatus:
        return parse_task(payload, task_id)

    def read_error(self, status_code: int, content_type: str, body: bytes) -> ErrorInfo:
        return parse_error(status_code, content_type, body)

    def error_in_success(self, payload: Any) -> tuple[int, ErrorInfo] | None:
        return error_in_success(payload)

    # -- other endpoints --

    def upload(self, filename: str, data: bytes, content_type: str) -> Call:
        return Call("POST", UPLOAD_PATH, files={"file": (filename, data, content_type)})

    def read_upload(self, payload: Any) -> UploadedImage:
        return parse_upload(payload)

    def balance(self) -> Call:
        return Call("GET", BALANCE_PATH)

    def read_balance(self, payload: Any) -> Balance:
        return parse_balance(payload)

    def list_models(self) -> Call:
        return Call("GET", MODELS_PATH)

    def read_models(self, payload: Any) -> list[str]:
        return parse_models(payload)

    def model_schema(self, model: str) -> Call:
        return Call("GET", f"{SCHEMA_PATH}?model={quote(model, safe='')}&operation=image_generation")

    def read_model_schema(self, payload: Any) -> Mapping[str, Any] | None:
        data = payload.get("data", payload) if isinstance(payload, Mapping) else None
        schema = data.get("input_schema") if isinstance(data, Mapping) else None
        return schema if isinstance(schema, Mapping) and isinstance(schema.get("properties"), Mapping) else None


PROVIDER = APIMart()

_OWN_FIELDS = frozenset({"model", "prompt", "size", "resolution", "n", "negative_prompt", "image_urls"})


# --- parsing: plain functions, one per answer ---------------------------------------------------


def _code_number(code: Any) -> int | None:
    value = number(code)
    return int(value) if value is not None and value == int(value) else None


def _kept_code(code: Any) -> int | str | None:
    """``error.code`` as given: an int stays an int, a word stays a word (API.md 7.3)."""
    if isinstance(code, bool) or code is None:
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, float) and code == int(code):
        return int(code)
    if isinstance(code, str) and code.strip():
        text = code.strip()
        return int(text) if text.isdigit() else text
    return None


def _error_info(err: Any, payload: Mapping[str, Any], fallback: str) -> ErrorInfo:
    if isinstance(err, Mapping):
        message = err.get("message") or payload.get("message") or payload.get("msg")
        code = _kept_code(err.get("code"))
        text = " ".join(str(message).split()) if message else fallback
        if isinstance(code, str) and code not in text:
            text = f"{code}: {text}"  # the word often says more than the message (content_rejected)
        return ErrorInfo(
            message=text,
            code=code,
            type=err.get("type") if isinstance(err.get("type"), str) else None,
            param=err.get("param") if isinstance(err.get("param"), str) else None,
        )
    if isinstance(err, str) and err.strip():
        return ErrorInfo(message=" ".join(err.split()))
    message = payload.get("message") or payload.get("msg")
    return ErrorInfo(message=" ".join(str(message).split()) if message else fallback)


# API.md section 3's error types, for an error inside a 200 that carries no status number.
_STATUS_OF_TYPE = {
    "invalid_request_error": 400, "authentication_error": 401, "payment_required": 402,
    "permission_error": 403, "not_found_error": 404, "rate_limit_error": 429, "server_error": 500,
    "bad_gateway": 502, "service_unavailable": 503,
}


def error_in_success(payload: Any) -> tuple[int, ErrorInfo] | None:
    """An error the provider carried inside an HTTP 2xx (API.md 7.3): the envelope's ``code`` >= 400,
    an ``error`` field, or ``success: false``. Returns (the HTTP status it stands for, its info)."""
    if not isinstance(payload, Mapping):
        return None
    envelope = _code_number(payload.get("code"))
    err = payload.get("error")
    if err is not None and err != {} and err != "" and "data" not in payload:
        info = _error_info(err, payload, "the API answered with an error")
        if envelope and envelope >= 400:
            status = envelope
        elif isinstance(info.code, int) and info.code >= 400:
            status = info.code
        else:
            # No number: the error's type says what it is (a server fault is transient, never a
            # refusal that would end the wait on a paid task); a bare word is a refusal.
            status = _STATUS_OF_TYPE.get(str(info.type or "").lower(), 400)
        return status, info
    if envelope is not None and envelope >= 400:
        return envelope, _error_info(None, payload, f"the API answered code {envelope}")
    if payload.get("success") is False:
        info = _error_info(None, payload, "the API answered success=false")
        lowered = info.message.lower()
        auth = any(word in lowered for word in ("token", "api key", "apikey", "unauthori", "auth"))
        return (401 if auth else 400), info
    return None


def _envelope_data(payload: Any, what: str) -> Any:
    if not isinstance(payload, Mapping):
        raise ProtocolError(f"the {what} answer is not a JSON object: {_brief(payload, 60)}")
    return payload.get("data", payload)


def _one(data: Any, what: str, task_id: str | None = None) -> Mapping[str, Any]:
    if isinstance(data, list):
        if not data:
            raise ProtocolError(f"the {what} answer has an empty data list", task_id=task_id)
        data = data[0]
    if not isinstance(data, Mapping):
        raise ProtocolError(f"the {what} answer's data is not an object: {_brief(data, 60)}", task_id=task_id)
    return data


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def confirms_idempotency(headers: Mapping[str, str]) -> bool:
    """Whether an answer proves that this origin honours the Idempotency-Key (API.md 7.1): it
    speaks the versioned contract (the version header, with the version we asked for) or says
    it replayed a key. Any other value proves nothing: a proxy may echo request headers."""
    replayed = str(_header(headers, REPLAYED_HEADER) or "").strip().lower() == "true"
    return replayed or str(_header(headers, VERSION_HEADER) or "").strip() == RESPONSE_VERSION


def parse_submit(payload: Any, headers: Mapping[str, str] | None = None) -> Submitted:
    """A submit answer, whatever the envelope (API.md 1 and 7.1): the task id, or the result itself."""
    headers = headers or {}
    data = _one(_envelope_data(payload, "submit"), "submit")
    finished = str(data.get("object") or "").lower() == "generation.result" or (
        isinstance(data.get("result"), Mapping) and bool(data.get("result", {}).get("images"))
    )
    task_id = data.get("task_id") or data.get("id")
    if finished and not (isinstance(task_id, str) and task_id.strip()):
        # A result needs no task to poll; the envelope's request id names it in the journal.
        task_id = payload.get("request_id") if isinstance(payload, Mapping) else None
    if not isinstance(task_id, str) or not task_id.strip():
        raise ProtocolError(f"the submit answer carries no task id: {_brief(dict(data), 80)}")
    task_id = task_id.strip()
    replayed = str(_header(headers, REPLAYED_HEADER) or "").strip().lower() == "true"
    result = None
    if finished:
        # Answered at once (some models): no task to poll. Read like a finished task; a result
        # that is not failed and lists images is done, whatever its word for it (succeeded, ...).
        word = str(data.get("status") or "completed")
        if phase_of(word) not in ("failed", "cancelled") and _image_urls(data.get("result"))[0]:
            word = "completed"
        result = _task_from(dict(data, status=word), task_id)
    return Submitted(
        task_id=task_id, result=result, confirms_idempotency=confirms_idempotency(headers), replayed=replayed
    )


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
    for item in images if isinstance(images, list) else []:
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
        exp = number(item.get("expires_at"))
        if exp is not None:
            expires = exp if expires is None else min(expires, exp)
    return tuple(u.strip() for u in urls if u.strip()), expires


def phase_of(word: str) -> str:
    """A host's status word as one of the journal's phases (API.md 7.2)."""
    word = word.strip().lower()
    if word in _TERMINAL:
        return _TERMINAL[word]
    return "pending" if word in _QUEUED else "processing"


def parse_task(payload: Any, task_id: str | None = None) -> TaskStatus:
    """A task-status answer. Unknown fields are ignored; an unfamiliar status word means "running"."""
    data = _one(_envelope_data(payload, "task status"), "task status", task_id)
    found_id = data.get("id") or data.get("task_id") or task_id
    if not isinstance(found_id, str) or not found_id:
        raise ProtocolError("the task status answer carries no task id")
    return _task_from(data, found_id)


def _task_from(data: Mapping[str, Any], task_id: str) -> TaskStatus:
    word = data.get("status")
    if not isinstance(word, str) or not word.strip():
        raise ProtocolError(f"the task status answer has no status: {_brief(dict(data), 80)}", task_id=task_id)
    status = phase_of(word)
    progress_value = data.get("progress")
    if isinstance(progress_value, str):
        progress_value = progress_value.strip().rstrip("%")
    progress_number = number(progress_value)
    progress = 100 if status == "completed" else int(max(0, min(100, progress_number or 0)))
    urls, expires = _image_urls(data.get("result"))
    if status == "completed" and not urls:
        raise ProtocolError("the task completed but its result lists no image URL", task_id=task_id)
    failure = None
    if status == "failed":
        info = _error_info(data.get("error"), data, "the task failed without a reason")
        failure = TaskFailure(message=info.message, code=info.code, type=info.type, param=info.param)
    cost = number(data.get("cost"))
    credits = number(data.get("credits_cost"))
    return TaskStatus(
        task_id=task_id,
        status=status,
        progress=progress,
        urls=urls,
        created=number(data.get("created")),
        completed=number(data.get("completed")),
        estimated_time=number(data.get("estimated_time")),
        actual_time=number(data.get("actual_time")),
        cost=cost,
        credits_cost=credits,
        expires_at=expires,
        error=failure,
        raw_status=word.strip(),
        raw=dict(data),
    )


def parse_upload(payload: Any) -> UploadedImage:
    """An upload answer (bare object, or wrapped in ``data``)."""
    data = _one(_envelope_data(payload, "upload"), "upload")
    url = data.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ProtocolError(f"the upload answer carries no http(s) url: {_brief(dict(data), 80)}")
    size = number(data.get("bytes"))
    return UploadedImage(
        url=url,
        filename=data.get("filename") if isinstance(data.get("filename"), str) else None,
        content_type=data.get("content_type") if isinstance(data.get("content_type"), str) else None,
        bytes=int(size) if size is not None else None,
        created_at=number(data.get("created_at")),
    )


def parse_balance(payload: Any) -> Balance:
    """A balance answer. ``remain_balance`` -1 means an unlimited quota (API.md 7.6), never a debt."""
    data = _envelope_data(payload, "balance")
    if not isinstance(data, Mapping):
        raise ProtocolError(f"the balance answer is not an object: {_brief(data, 60)}")
    remain = number(data.get("remain_balance"))
    unlimited = bool(data.get("unlimited_quota", False)) or remain == -1
    return Balance(
        remain_balance=None if unlimited else remain,
        remain_credits=None if unlimited else number(data.get("remain_credits")),
        used_balance=number(data.get("used_balance")),
        used_credits=number(data.get("used_credits")),
        unlimited_quota=unlimited,
    )


def parse_models(payload: Any) -> list[str]:
    """``GET /v1/models``: the model ids, in the order listed."""
    data = payload.get("data", payload) if isinstance(payload, Mapping) else payload
    if not isinstance(data, list):
        raise ProtocolError(f"the model list is not a list: {_brief(payload, 60)}")
    ids = [item.get("id") if isinstance(item, Mapping) else item for item in data]
    return [i.strip() for i in ids if isinstance(i, str) and i.strip()]


def parse_error(status_code: int, content_type: str, body: bytes) -> ErrorInfo:
    """An error body in one line: JSON ``{"error": {...}}`` or ``{"error": "..."}``, other JSON, or
    a proxy's HTML page."""
    text = body.decode("utf-8", errors="replace").strip()
    title = html_title(content_type, text)
    if title is None:
        payload = decode_json(body)
        if isinstance(payload, Mapping):
            info = _error_info(payload.get("error", payload), payload, f"HTTP {status_code}")
            return info if info.code is not None else ErrorInfo(
                message=info.message, code=status_code, type=info.type, param=info.param
            )
        snippet = " ".join(text.split())[:120]
        return ErrorInfo(message=f"HTTP {status_code}{': ' + snippet if snippet else ''}", code=status_code)
    return ErrorInfo(
        message=f"HTTP {status_code} with an HTML page{': ' + title if title else ''} (a proxy in front of the API)",
        code=status_code,
        html=True,
    )
