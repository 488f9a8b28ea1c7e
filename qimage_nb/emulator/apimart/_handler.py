"""Request handling for both origins, framework-free: ``Handler.handle(Request) -> Response``.

The socket server and the in-process transport both call this, so every rule of API.md (and every
fault) lives in one place: here, or in the modules it routes to (the submit endpoint in ``_submit``,
its validation in ``_validate``, the wording of tasks and answers per dialect in ``_wire``).
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..._contract import UPLOAD_MAX_BYTES
from .._control import control
from .._messages import Request, Response, error_response, html_response, json_response
from .._render import cdn_image, render_png
from .._state import State, Task, Upload
from ._catalogue import listed_models, model_schema
from ._multipart import MultipartError, parse_multipart, safe_filename, sniff_image
from ._submit import SubmitEndpoint
from ._wire import cased, task_json

_TASK_PATH = re.compile(r"^/v1/tasks/([^/]+)$")
_IMAGE_PATH = re.compile(r"^/images/([^/]+)/(\d+)\.png$")
_UPLOAD_PATH = re.compile(r"^/f/image/([^/]+)$")
_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Handler:
    """Answers API and CDN requests from a shared :class:`State`."""

    def __init__(self, state: State) -> None:
        self.state = state
        # What reset() goes back to: the deployment this emulator was started as (flags included).
        self.initial_faults = dataclasses.replace(state.faults)
        self.submit = SubmitEndpoint(self)
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
        if 200 <= response.status < 300 and not response.reset:
            with self.state.lock:
                garble = self.state.take("malformed_json")
                if garble:
                    self.state.injected("malformed_json")
            if garble:
                # A 200 whose body is cut mid-object, as a broken proxy or serializer sends.
                response.body = b'{"code": 200, "data": [{"status": "submi'
        elif response.status >= 400 and response.header("content-type") == "application/json":
            with self.state.lock:
                in_200 = self.state.take("error_in_200")
                if in_200:
                    self.state.injected("error_in_200")
            if in_200:
                response = _error_in_200(response)
        return response

    def _api(self, request: Request, path: str) -> Response:
        routes = {
            ("POST", "/v1/images/generations"): self.submit,
            ("POST", "/v1/uploads/images"): self._upload,
            ("GET", "/v1/balance"): self._balance,
            ("GET", "/v1/models"): self._models,
            ("GET", "/v1/model-schema"): self._model_schema,
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

    def authorized(self, request: Request) -> bool:
        return self.state.authorized(request.headers, "Bearer")

    @staticmethod
    def unauthorized(request: Request) -> Response:
        has = "authorization" in request.headers
        message = "Invalid API key provided" if has else "Missing API key: send Authorization: Bearer <key>"
        return error_response(401, message, "authentication_error")

    def retry_after(self) -> str:
        faults = self.state.faults
        if faults.retry_after_format == "http-date":
            return email.utils.formatdate(self.state.wall() + faults.retry_after, usegmt=True)
        # Whole seconds as RFC 9110 says; fractions (an emulator extension) keep tests fast.
        return format(faults.retry_after, "g")

    def rate_limited(self, kind: str | None) -> Response:
        if kind is not None:
            self.state.injected(kind)
        return error_response(
            429, "Too many requests, please slow down", "rate_limit_error",
            headers=[("Retry-After", self.retry_after())],
        )

    # -- poll --

    def _poll(self, request: Request, task_id: str) -> Response:
        state = self.state
        if not self.authorized(request):
            return self.unauthorized(request)
        # ?language= is accepted; the emulator's messages are English whatever it asks.
        with state.lock:
            state.counters["polls"] += 1
            state.counters["polls_per_task"][task_id] += 1
            if state.take("rate_limit_polls"):
                return self.rate_limited("rate_limit_poll")
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
            if task is None or task.sync:  # a synchronous result has no task to poll
                message = ("task does not exist or has expired" if faults.dialect == "wild"
                           else f"Task not found: {task_id}")
                return error_response(404, message, "invalid_request_error", "task_id")
            data = task_json(state, task, request.cdn_url)
            if state.take("unknown_status"):
                state.injected("unknown_status")
                data["status"] = cased("paused", faults)
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
            return self.rate_limited(None)  # counted as poll_429 by the caller
        if kind == "503":
            return error_response(503, "The service is temporarily unavailable", "service_unavailable")
        return error_response(500, "Internal server error", "server_error")

    # -- upload, balance --

    def _upload(self, request: Request) -> Response:
        state = self.state
        if not self.authorized(request):
            return self.unauthorized(request)
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
        with state.lock:
            answer = state.faults.balance_answer
        if answer == "token-not-found":
            # Section 7.6: this deployment answers any key, good or bad, with a 200 that is a refusal.
            with state.lock:
                state.counters["balance_reads"] += 1
            return json_response(200, {"success": False, "message": "Token Not Found"})
        if not self.authorized(request):
            return self.unauthorized(request)
        with state.lock:
            state.counters["balance_reads"] += 1
            remain, used = state.remaining_balance(), round(state.used_balance, 6)
        balance: dict[str, Any] = {
            "success": True,
            "remain_balance": remain,
            "remain_credits": round(remain * 100, 4),
            "used_balance": used,
            "used_credits": round(used * 100, 4),
            "unlimited_quota": False,
        }
        if answer == "unlimited":
            del balance["remain_credits"]
            balance.update(remain_balance=-1, unlimited_quota=True)
        return json_response(200, balance)

    def _models(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.unauthorized(request)
        with self.state.lock:
            models = listed_models(self.state.faults)
        return json_response(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

    def _model_schema(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.unauthorized(request)
        query = parse_qs(urlsplit(request.target).query)
        model = (query.get("model") or [""])[0]
        operation = (query.get("operation") or ["image_generation"])[0]
        with self.state.lock:
            schema = model_schema(model, self.state.faults)
        if schema is None or operation != "image_generation":
            return error_response(404, f"no schema for model {model!r} and operation {operation!r}", "not_found_error")
        return json_response(200, {"model": model, "operation": operation, "input_schema": schema})

    # -- test-only control endpoints (no auth: they exist only on the emulator) --

    def _control(self, request: Request, path: str) -> Response:
        return control(
            self.state, request, path, snapshot=self.state.snapshot, reset=self.reset,
            refuse=lambda status, message: error_response(
                status, message, "invalid_request_error" if status == 400 else "not_found_error"
            ),
        )

    def reset(self) -> None:
        with self.state.lock:
            self.state.clear()
            self.state.faults = dataclasses.replace(self.initial_faults)

    # -- CDN --

    def _cdn(self, request: Request, path: str) -> Response:
        state = self.state
        state.count_cdn_hit(path, request.headers)
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
            variant, delay, bps, truncate = state.cdn_faults(ready)
        if not ready or task is None:
            return _text(404, "not found")
        return cdn_image(
            variant, lambda: self._picture(task, index), headers=[("Cache-Control", "public, max-age=86400")],
            delay=delay, bytes_per_second=bps, truncate=truncate,
        )

    def _picture(self, task: Task, index: int) -> bytes:
        request = task.request
        return self.state.render_once((task.id, index), lambda: render_png(
            prompt=request["prompt"],
            index=index,
            n=task.n,
            size=request["size"],
            resolution=request["resolution"],
            model=request["model"],
            pixels=task.pixels,
            references=[self._own_upload(url) for url in request.get("image_urls") or ()],
        ))

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


def _error_in_200(response: Response) -> Response:
    """An error answer delivered as HTTP 200 with the status in the envelope (API.md section 7.3)."""
    payload = json.loads(response.body)
    wrapped = json_response(200, {"code": response.status, "error": payload["error"]},
                            [h for h in response.headers if h[0].lower() != "content-type"])
    wrapped.delay = response.delay
    return wrapped
