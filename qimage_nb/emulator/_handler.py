"""Request handling for both origins, framework-free: ``Handler.handle(Request) -> Response``.

The socket server and the in-process transport both call this, so every rule of API.md (and every
fault) lives here once. Validation is the emulator's own, written from API.md, not borrowed from the
client: an independent server is what catches a client that validates wrongly.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import secrets
import threading
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .._contract import (
    MODELS,
    N_MAX,
    N_MIN,
    NEGATIVE_PROMPT_MAX,
    PROMPT_MAX,
    RATIOS,
    REFS_MAX,
    REFS_MIN,
    RESOLUTIONS,
    UPLOAD_MAX_BYTES,
)
from ._faults import Faults
from ._messages import Request, Response, error_response, html_response, json_response
from ._multipart import MultipartError, parse_multipart, safe_filename, sniff_image
from ._render import NOT_AN_IMAGE, bomb_png, huge_png, render_png
from ._state import RESULT_LIFETIME, State, Task, Upload

_TASK_PATH = re.compile(r"^/v1/tasks/([^/]+)$")
_IMAGE_PATH = re.compile(r"^/images/([^/]+)/(\d+)\.png$")
_UPLOAD_PATH = re.compile(r"^/f/image/([^/]+)$")
_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Invalid(Exception):
    def __init__(self, status: int, message: str, type_: str, param: str | None = None) -> None:
        super().__init__(message)
        self.response = error_response(status, message, type_, param)


def _bad(message: str, param: str | None = None) -> _Invalid:
    return _Invalid(400, message, "invalid_request_error", param)


class Handler:
    """Answers API and CDN requests from a shared :class:`State`."""

    def __init__(self, state: State) -> None:
        self.state = state
        # CDN origins whose /f/image/ URLs are our own uploads (socket and in-process).
        self.cdn_origins: set[str] = set()

    # -- entry point --

    def handle(self, request: Request) -> Response:
        path = urlsplit(request.target).path
        if request.origin == "cdn":
            return self._cdn(request, path)
        if path.startswith("/_emulator/"):
            return self._control(request, path)
        with self.state.lock:
            self.state.settle()
            self.state.counters["api_requests"] += 1
        response = self._api(request, path)
        if response.status == 200 and not response.reset:
            with self.state.lock:
                garble = self.state.take("malformed_json")
                if garble:
                    self.state.injected("malformed_json")
            if garble:
                # A 200 whose body is cut mid-object, as a broken proxy or serializer sends.
                response.body = b'{"code": 200, "data": [{"status": "submi'
        return response

    def _api(self, request: Request, path: str) -> Response:
        routes = {
            ("POST", "/v1/images/generations"): self._submit,
            ("POST", "/v1/uploads/images"): self._upload,
            ("GET", "/v1/balance"): self._balance,
        }
        route = routes.get((request.method, path))
        if route is not None:
            return route(request)
        match = _TASK_PATH.match(path)
        if match and request.method == "GET":
            return self._poll(request, unquote(match.group(1)))
        known = {p for _, p in routes} | ({path} if match else set())
        if path in known:
            return error_response(405, f"{request.method} is not allowed on {path}", "invalid_request_error")
        return error_response(404, f"no such endpoint: {path}", "not_found_error")

    # -- auth, rate limits --

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and secrets.compare_digest(
            token.strip().encode(), self.state.settings.api_key.encode()
        )
        if not ok:
            with self.state.lock:
                self.state.counters["api_requests_without_valid_auth"] += 1
        return ok

    @staticmethod
    def _unauthorized(request: Request) -> Response:
        has = "authorization" in request.headers
        message = "Invalid API key provided" if has else "Missing API key: send Authorization: Bearer <key>"
        return error_response(401, message, "authentication_error")

    def _rate_limited(self, kind: str | None) -> Response:
        faults = self.state.faults
        if faults.retry_after_format == "http-date":
            retry = email.utils.formatdate(self.state.wall() + faults.retry_after, usegmt=True)
        else:
            # Whole seconds as RFC 9110 says; fractions (an emulator extension) keep tests fast.
            retry = format(faults.retry_after, "g")
        if kind is not None:
            self.state.injected(kind)
        return error_response(
            429, "Too many requests, please slow down", "rate_limit_error", headers=[("Retry-After", retry)]
        )

    # -- submit --

    def _submit(self, request: Request) -> Response:
        state = self.state
        key = request.headers.get("idempotency-key", "").strip() or None
        with state.lock:
            state.counters["submit_attempts"] += 1
            if key is None:
                state.counters["submits_without_idempotency_key"] += 1
        response = self._submit_answer(request, key)
        with state.lock:
            if response.status != 200:
                state.counters["submits_rejected"] += 1
                return response
            if not state.take("lose_submit_answers"):
                return response
            mode = state.faults.lose_mode
            state.injected(f"lose_submit_answer_{mode}")
            slow = state.faults.slow_seconds
        # The task exists (and will be billed); only the answer is lost on the way.
        if mode == "reset":
            return Response(0, reset=True)
        if mode == "html502":
            return html_response(502, "502 Bad Gateway", "nginx")
        response.delay = slow
        return response

    def _submit_answer(self, request: Request, key: str | None) -> Response:
        state = self.state
        if not self._authorized(request):
            return self._unauthorized(request)
        with state.lock:
            if state.take("rate_limit_submits"):
                return self._rate_limited("rate_limit_submit")
            if key is not None and key in state.idempotency:
                state.counters["submit_replays"] += 1
                return self._submitted(state.idempotency[key])
        try:
            fields = _validate_submit(request.body)
        except _Invalid as invalid:
            return invalid.response
        with state.lock:
            # Checked again under the same lock as creation: two racing retries make one task.
            if key is not None and key in state.idempotency:
                state.counters["submit_replays"] += 1
                return self._submitted(state.idempotency[key])
            price = fields["n"] * state.settings.price_per_image
            if state.available_balance() + 1e-9 < price:
                return error_response(
                    402,
                    f"Insufficient balance: {fields['n']} image(s) cost {price:.4f}, "
                    f"remaining {max(0.0, state.available_balance()):.4f}",
                    "payment_required",
                )
            task = state.create_task(fields, key)
            state.counters["submits_accepted"] += 1
            return self._submitted(task.id)

    def _submitted(self, task_id: str) -> Response:
        envelope = self.state.faults.submit_envelope
        item = {"status": "submitted", "task_id": task_id}
        if envelope == "object":
            return json_response(200, {"code": 200, "data": {"task_id": task_id, "status": "submitted"}})
        if envelope == "object-id":
            return json_response(200, {"code": 200, "data": {"id": task_id, "status": "submitted"}})
        code: int | str = "success" if envelope == "code-success" else 200
        return json_response(200, {"code": code, "data": [item]})

    # -- poll --

    def _poll(self, request: Request, task_id: str) -> Response:
        state = self.state
        if not self._authorized(request):
            return self._unauthorized(request)
        query = parse_qs(urlsplit(request.target).query)
        language = (query.get("language") or ["en"])[0]
        with state.lock:
            state.counters["polls"] += 1
            state.counters["polls_per_task"][task_id] += 1
            if state.take("rate_limit_polls"):
                return self._rate_limited("rate_limit_poll")
            fault = None
            faults = state.faults
            if faults.poll_fault_rate > 0 and state.fault_rng.random() < faults.poll_fault_rate:
                fault = state.fault_rng.choice(faults.poll_fault_kinds)
                state.injected(f"poll_{fault}")
            if fault is not None and fault != "timeout":
                return self._poll_fault(fault)
            if not _TASK_ID.match(task_id):
                return error_response(400, "Invalid task ID", "invalid_request_error", "task_id")
            task = state.tasks.get(task_id)
            if task is None:
                return error_response(404, f"Task not found: {task_id}", "invalid_request_error", "task_id")
            data = self._task_json(task, request.cdn_url, language)
            if state.take("unknown_status"):
                state.injected("unknown_status")
                data["status"] = "paused"
            response = json_response(200, {"code": 200, "data": data})
            if fault == "timeout":
                response.delay = faults.slow_seconds
            return response

    def _poll_fault(self, kind: str) -> Response:
        if kind == "reset":
            return Response(0, reset=True)
        if kind == "html502":
            return html_response(502, "502 Bad Gateway", "cloudflare")
        if kind == "429":
            return self._rate_limited(None)  # counted as poll_429 by the caller
        if kind == "503":
            return error_response(503, "The service is temporarily unavailable", "service_unavailable")
        return error_response(500, "Internal server error", "server_error")

    def _task_json(self, task: Task, cdn_url: str, language: str) -> dict[str, Any]:
        state = self.state
        status, progress = state.status_of(task)
        data: dict[str, Any] = {
            "id": task.id,
            "status": status,
            "progress": progress,
            "created": int(task.created_wall),
            "estimated_time": state.estimated_time(task),
            "cost": state.cost(task) if task.outcome == "completed" else 0.0,
        }
        if status in ("completed", "failed", "cancelled"):
            elapsed = task.end - task.created_mono
            data["completed"] = int(task.created_wall + elapsed)
            if status == "completed":
                data["actual_time"] = max(1, math.ceil(elapsed))
                data["result"] = {"images": self._images(task, cdn_url, data["completed"])}
            elif task.error is not None:
                data["error"] = dict(task.error)
        return data

    def _images(self, task: Task, cdn_url: str, completed: int) -> list[dict[str, Any]]:
        faults = self.state.faults
        urls = [f"{cdn_url}/images/{task.id}/{i}.png" for i in range(task.n)]
        expires = completed + RESULT_LIFETIME
        if faults.multi_url == "one-item":
            return [{"url": urls, "expires_at": expires}]
        if faults.url_format == "string":
            return [{"url": url, "expires_at": expires} for url in urls]
        return [{"url": [url], "expires_at": expires} for url in urls]

    # -- upload, balance --

    def _upload(self, request: Request) -> Response:
        state = self.state
        if not self._authorized(request):
            return self._unauthorized(request)
        if len(request.body) > UPLOAD_MAX_BYTES + 64 * 1024:
            return error_response(413, "File too large: at most 20 MB", "invalid_request_error", "file")
        try:
            parts = parse_multipart(request.headers.get("content-type", ""), request.body)
        except MultipartError as exc:
            return error_response(400, f"{exc}; send one multipart field named file", "invalid_request_error", "file")
        part = next((p for p in parts if p.name == "file"), None)
        if part is None:
            return error_response(400, "Missing file field", "invalid_request_error", "file")
        if len(part.data) > UPLOAD_MAX_BYTES:
            return error_response(413, "File too large: at most 20 MB", "invalid_request_error", "file")
        content_type = sniff_image(part.data)
        if content_type is None:
            return error_response(
                400, "Unsupported file format: send JPEG, PNG, WebP or GIF", "invalid_request_error", "file"
            )
        filename = safe_filename(part.filename, content_type)
        with state.lock:
            now = int(state.wall())
            name = f"{int(state.wall() * 1000):013d}-{secrets.token_hex(4)}-{filename}"
            state.uploads[name] = Upload(part.data, content_type, filename, now)
            state.counters["uploads"] += 1
        return json_response(200, {
            "url": f"{request.cdn_url}/f/image/{name}",
            "filename": filename,
            "content_type": content_type,
            "bytes": len(part.data),
            "created_at": now,
        })

    def _balance(self, request: Request) -> Response:
        state = self.state
        if not self._authorized(request):
            return self._unauthorized(request)
        with state.lock:
            state.counters["balance_reads"] += 1
            remain, used = state.remaining_balance(), round(state.used_balance, 6)
        return json_response(200, {
            "success": True,
            "remain_balance": remain,
            "remain_credits": round(remain * 100, 4),
            "used_balance": used,
            "used_credits": round(used * 100, 4),
            "unlimited_quota": False,
        })

    # -- test-only control endpoints (no auth: they exist only on the emulator) --

    def _control(self, request: Request, path: str) -> Response:
        state = self.state
        if (request.method, path) == ("GET", "/_emulator/counters"):
            with state.lock:
                return json_response(200, state.snapshot())
        if (request.method, path) == ("GET", "/_emulator/timeline"):
            with state.lock:
                return json_response(200, {"clock": "monotonic", "tasks": state.timeline()})
        if (request.method, path) == ("GET", "/_emulator/faults"):
            with state.lock:
                return json_response(200, state.faults.to_json())
        if (request.method, path) == ("POST", "/_emulator/faults"):
            try:
                switches = json.loads(request.body or b"{}")
                if not isinstance(switches, dict):
                    raise ValueError("send a JSON object of fault switches")
                with state.lock:
                    state.faults = state.faults.replace(**switches)
                    return json_response(200, state.faults.to_json())
            except (ValueError, TypeError) as exc:
                return error_response(400, str(exc), "invalid_request_error")
        if (request.method, path) == ("POST", "/_emulator/reset"):
            self.reset()
            return json_response(200, {"ok": True})
        return error_response(404, f"no such emulator endpoint: {path}", "not_found_error")

    def reset(self) -> None:
        with self.state.lock:
            self.state.clear()
            self.state.faults = Faults()

    # -- CDN --

    def _cdn(self, request: Request, path: str) -> Response:
        state = self.state
        with state.lock:
            state.counters["cdn_hits"] += 1
            state.counters["cdn_hits_per_path"][path] += 1
            if "authorization" in request.headers:
                # The key must never reach the CDN: count every leak so tests can assert zero.
                state.counters["cdn_authorization_headers"] += 1
        if request.method not in ("GET", "HEAD"):
            return _text(405, "method not allowed")
        upload = _UPLOAD_PATH.match(path)
        if upload:
            with state.lock:
                stored = state.uploads.get(unquote(upload.group(1)))
            if stored is None:
                return _text(404, "no such upload")
            return Response(200, [("Content-Type", stored.content_type)], stored.data)
        image = _IMAGE_PATH.match(path)
        if not image:
            return _text(404, "not found")
        task_id, index = image.group(1), int(image.group(2))
        with state.lock:
            task = state.tasks.get(task_id)
            ready = task is not None and state.status_of(task)[0] == "completed" and index < task.n
            faults = state.faults
            variant, delay, bps = faults.cdn_body, faults.cdn_delay, faults.cdn_bytes_per_second
            truncate = ready and state.take("cdn_truncate")
            if ready:
                for kind, on in (("cdn_truncate", truncate), ("cdn_delay", delay > 0),
                                 ("cdn_drip", bps is not None), (f"cdn_body_{variant}", variant != "image")):
                    if on:
                        state.injected(kind)
        if not ready or task is None:
            return _text(404, "not found")
        if variant == "not-image":
            response = Response(200, [("Content-Type", "text/html; charset=utf-8")], NOT_AN_IMAGE)
        else:
            body = {"bomb": bomb_png, "huge": huge_png}.get(variant, lambda: self._picture(task, index))()
            response = Response(200, [("Content-Type", "image/png"), ("Cache-Control", "public, max-age=86400")], body)
        response.delay = delay
        response.bytes_per_second = bps
        if truncate:
            response.truncate_at = len(response.body) // 2
        return response

    def _picture(self, task: Task, index: int) -> bytes:
        state = self.state
        key = (task.id, index)
        with state.lock:
            cached = state.renders.get(key)
            lock = state.render_locks.setdefault(key, threading.Lock())
        if cached is not None:
            return cached
        with lock:  # render each picture once, outside the state lock so other requests flow
            with state.lock:
                cached = state.renders.get(key)
            if cached is None:
                request = task.request
                cached = render_png(
                    prompt=request["prompt"],
                    index=index,
                    n=task.n,
                    size=request["size"],
                    resolution=request["resolution"],
                    model=request["model"],
                    references=[self._own_upload(url) for url in request.get("image_urls") or ()],
                )
                with state.lock:
                    state.renders[key] = cached
        return cached

    def _own_upload(self, url: str) -> bytes | None:
        parts = urlsplit(url)
        match = _UPLOAD_PATH.match(parts.path)
        if not match or f"{parts.scheme}://{parts.netloc}" not in self.cdn_origins:
            return None
        with self.state.lock:
            stored = self.state.uploads.get(unquote(match.group(1)))
        return stored.data if stored is not None else None


def _text(status: int, text: str) -> Response:
    return Response(status, [("Content-Type", "text/plain; charset=utf-8")], text.encode())


def _validate_submit(body: bytes) -> dict[str, Any]:
    """API.md section 1, field by field; the first bad field names itself in ``param``."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _bad("The request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _bad("The request body must be a JSON object")
    model = payload.get("model")
    if model is None:
        raise _bad("model is required", "model")
    if not isinstance(model, str):
        raise _bad("model must be a string", "model")
    if model not in MODELS:
        raise _Invalid(503, f"The model {model!r} does not exist or is not available", "model_not_found", "model")
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad("prompt is required: 1 to 800 characters", "prompt")
    if len(prompt) > PROMPT_MAX:
        raise _bad(f"prompt is too long: {len(prompt)} characters, at most {PROMPT_MAX}", "prompt")
    negative = payload.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise _bad("negative_prompt must be a string", "negative_prompt")
    if negative is not None and len(negative) > NEGATIVE_PROMPT_MAX:
        raise _bad(f"negative_prompt is too long: at most {NEGATIVE_PROMPT_MAX} characters", "negative_prompt")
    size = payload.get("size", RATIOS[0])
    if size not in RATIOS:
        raise _bad(f"size must be one of {', '.join(RATIOS)}", "size")
    resolution = payload.get("resolution", RESOLUTIONS[0])
    if resolution not in RESOLUTIONS:
        raise _bad(f"resolution must be one of {', '.join(RESOLUTIONS)}", "resolution")
    n = payload.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not N_MIN <= n <= N_MAX:
        raise _bad(f"n must be an integer from {N_MIN} to {N_MAX}", "n")
    urls = payload.get("image_urls")
    if urls is not None:
        if not isinstance(urls, list) or not REFS_MIN <= len(urls) <= REFS_MAX:
            raise _bad(f"image_urls must be a list of {REFS_MIN} to {REFS_MAX} URLs", "image_urls")
        for url in urls:
            if not isinstance(url, str):
                raise _bad("image_urls items must be strings", "image_urls")
            if url.strip()[:5].lower() == "data:":
                raise _bad("base64 / data: URIs are not accepted: pass a public http(s) URL", "image_urls")
            parts = urlsplit(url.strip())
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise _bad(f"image_urls must be public http(s) URLs, got {url[:60]!r}", "image_urls")
    return {
        "model": model,
        "prompt": prompt,
        "negative_prompt": negative,
        "size": size,
        "resolution": resolution,
        "n": n,
        "image_urls": [u.strip() for u in urls] if urls else [],
    }
