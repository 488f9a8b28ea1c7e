"""``DashScopeHandler``: the DashScope host and its result CDN, answering the emulator's framework-free
``Request``s, so the stdlib socket server and the in-process httpx transports serve it unchanged.

Timing, billing and fault switches come from the seed emulator's ``State`` and ``Faults``: a sync
call is a task whose answer is held until the task ends; an async call is a task the client polls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .._control import control
from .._faults import Faults
from .._messages import Request, Response, html_response, json_response
from .._render import cdn_image, render_png
from .._state import State, Task
from . import _wire as wire
from ._wire import Job, Refusal

_RESULT_PATH = re.compile(r"^/(\d{8})/([0-9a-f-]{36})/(\d+)\.png$")
# State words -> the host's task_status words.
_STATUS = {"pending": "PENDING", "processing": "RUNNING", "completed": "SUCCEEDED",
           "failed": "FAILED", "cancelled": "CANCELED"}
# Counters of the seed emulator's State that mean the same here (the rest are seed-API only).
_SHARED_COUNTERS = ("api_requests", "api_requests_without_valid_auth", "polls", "polls_per_task",
                    "images_billed", "cdn_hits", "cdn_hits_per_path", "cdn_authorization_headers",
                    "faults_injected")


def _oss_error(status: int, code: str, message: str) -> Response:
    # The CDN is an OSS bucket: its refusals are XML, not the API's JSON.
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n  <Code>{code}</Code>\n'
            f"  <Message>{message}</Message>\n</Error>\n").encode()
    return Response(status, [("Content-Type", "application/xml")], body)


class DashScopeHandler:
    """Answers the DashScope API (``/api/v1/...``), the emulator's ``/_emulator/`` control endpoints
    and the result CDN from one :class:`State`."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.cdn_origins: set[str] = set()  # filled by the emulator: which URLs are our own results
        self._secret = secrets.token_bytes(16)  # signs result URLs, like OSS signed URLs
        self._requests: Counter[str] = Counter()
        # Seconds an async task waits PENDING (each draws 0.5x to 1.5x) before it runs; set by the emulator.
        settings = state.settings
        self.queue = settings.pickup * settings.latency

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
        label, route, argument = self._route(request.method, path)
        with self.state.lock:
            self._requests[label] += 1
        if route is None:
            return wire.error(400, "InvalidParameter", "url error, please check url!")
        if not self._authorized(request):
            return wire.error(401, "InvalidApiKey", wire.INVALID_KEY)
        return route(request, *argument)

    def _route(self, method: str, path: str) -> tuple[str, Any, tuple[str, ...]]:
        """(label for the counters, handler method, its arguments); no method for an unknown URL."""
        if (method, path) == ("POST", wire.SYNC_PATH):
            return "POST multimodal-generation", self._sync_call, ()
        if (method, path) == ("POST", wire.ASYNC_PATH):
            return "POST image-synthesis", self._async_submit, ()
        task = wire.TASK_PATH.match(path)
        if task and method == "GET":
            return "GET tasks/{id}", self._task, (unquote(task.group(1)),)
        cancel = wire.CANCEL_PATH.match(path)
        if cancel and method == "POST":
            return "POST tasks/{id}/cancel", self._cancel, (unquote(cancel.group(1)),)
        return "unknown", None, ()

    def _authorized(self, request: Request) -> bool:
        return self.state.authorized(request.headers, "Bearer")

    def _throttled(self, switch: str) -> Response | None:
        with self.state.lock:
            if not self.state.take(switch):
                return None
            self.state.injected(switch.replace("rate_limit_", "throttle_"))
        return wire.error(429, "Throttling.RateQuota", wire.THROTTLED)

    # -- generation --

    def _accept(self, request: Request, job_of: Any) -> Job | Response:
        """The checks both endpoints share after their own header check: throttling, the body,
        input inspection. Returns the job, or the refusal to send."""
        throttled = self._throttled("rate_limit_submits")
        if throttled is not None:
            return throttled
        try:
            job = job_of(request)
        except Refusal as refusal:
            return wire.refused(refusal)
        with self.state.lock:
            if wire.flagged(job, self.state.faults.moderation_words):
                self.state.injected("moderation")
                return wire.error(400, "DataInspectionFailed", wire.INSPECTION)
        return job

    def _create(self, job: Job, kind: str) -> Task:
        """A task on the shared clock (latency, jitter, queueing, fail/cancel rates); caller holds the lock."""
        state = self.state
        actual = wire.extended(job.prompt) if job.prompt_extend else job.prompt
        seed = job.seed if job.seed is not None else secrets.randbelow(wire.SEED_MAX + 1)
        # An async task queues briefly, then runs for its own length with no progress to show (the
        # host's RUNNING says nothing of how far it got); its submit/scheduled/end times say both.
        task = state.create_task(
            {"prompt": actual, "n": job.n, "job": job, "kind": kind, "seed": seed}, None,
            pixels=(job.width, job.height), queue=self.queue if kind == "async" else None,
        )
        # The host's task ids are UUIDs, not the seed API's task_01...: re-key the task.
        del state.tasks[task.id]
        task.id = str(uuid.uuid4())
        state.tasks[task.id] = task
        return task

    def _urls(self, task: Task, cdn_url: str) -> list[str]:
        ends_wall = task.created_wall + (task.end - task.created_mono)
        expires = int(ends_wall) + wire.RESULT_LIFETIME
        day = time.strftime("%Y%m%d", time.gmtime(task.created_wall + 8 * 3600))
        urls = []
        for index in range(task.n):
            path = f"/{day}/{task.id}/{index}.png"
            urls.append(f"{cdn_url}{path}?Expires={expires}&OSSAccessKeyId=EMULATOR"
                        f"&Signature={self._signature(path, expires)}")
        return urls

    def _signature(self, path: str, expires: int) -> str:
        digest = hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def _sync_call(self, request: Request) -> Response:
        if request.headers.get("x-dashscope-async", "").strip().lower() == "enable":
            return wire.error(403, "AccessDenied", wire.ASYNC_NOT_SUPPORTED)
        job = self._accept(request, lambda r: wire.parse_sync(r.body, self._size_of))
        if isinstance(job, Response):
            return job
        state = self.state
        with state.lock:
            task = self._create(job, "sync")
            remaining = max(0.0, task.end - state.clock())
            ok = task.outcome == "completed"
            lose = ok and state.take("lose_submit_answers")
            mode, slow = state.faults.lose_mode, state.faults.slow_seconds
            if lose:
                state.injected(f"lose_answer_{mode}")
        if not ok:
            response = wire.error(500, "InternalError", wire.INTERNAL)
        else:
            content: list[dict[str, str]] = [{"image": url} for url in self._urls(task, request.cdn_url)]
            usage: dict[str, Any] = {"width": job.width, "height": job.height, "image_count": job.n}
            if job.qwen3:
                # 3.0's usage shape, and a content part that carries text and no image (PROVIDERS.md
                # 5): a client must count images, not parts.
                content.append({"text": task.request["prompt"]})
                tier = "2k" if job.width * job.height > 1536 * 1536 else "1k"
                usage = {"input_image_count": len(job.images), "input_image_type": "qima_input_1k",
                         "output_width": job.width, "output_height": job.height,
                         "output_image_count": job.n, "output_image_type": f"qima_output_{tier}"}
            response = json_response(200, {
                "output": {"choices": [{"finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content}}]},
                "usage": usage,
                "request_id": wire.new_request_id(),
            })
        # The call is synchronous: the answer leaves when the work is done.
        response.delay = remaining
        if not lose:
            return response
        # The work is done (and billed); only the answer is lost on the way.
        if mode == "reset":
            return Response(0, reset=True, delay=remaining)
        if mode == "html502":
            lost = html_response(502, "502 Bad Gateway", "nginx")
            lost.delay = remaining
            return lost
        response.delay = remaining + slow
        return response

    def _async_submit(self, request: Request) -> Response:
        if request.headers.get("x-dashscope-async", "").strip().lower() != "enable":
            return wire.error(403, "AccessDenied", wire.SYNC_NOT_SUPPORTED)
        job = self._accept(request, lambda r: wire.parse_async(r.body))
        if isinstance(job, Response):
            return job
        state = self.state
        with state.lock:
            task = self._create(job, "async")
            lose = state.take("lose_submit_answers")
            mode, slow = state.faults.lose_mode, state.faults.slow_seconds
            if lose:
                state.injected(f"lose_answer_{mode}")
        response = json_response(200, {"output": {"task_status": "PENDING", "task_id": task.id},
                                        "request_id": wire.new_request_id()})
        if lose and mode == "reset":
            return Response(0, reset=True)
        if lose and mode == "html502":
            return html_response(502, "502 Bad Gateway", "nginx")
        if lose:
            response.delay = slow
        return response

    def _size_of(self, url: str) -> tuple[int, int] | None:
        """The pixel size of one of this emulator's own result URLs (an edit's default size)."""
        parts = urlsplit(url)
        match = _RESULT_PATH.match(parts.path)
        if not match or f"{parts.scheme}://{parts.netloc}" not in self.cdn_origins:
            return None
        with self.state.lock:
            task = self.state.tasks.get(match.group(2))
        if task is None:
            return None
        job: Job = task.request["job"]
        return job.width, job.height

    # -- tasks --

    def _task(self, request: Request, task_id: str) -> Response:
        state = self.state
        with state.lock:
            state.counters["polls"] += 1
            state.counters["polls_per_task"][task_id] += 1
        throttled = self._throttled("rate_limit_polls")
        if throttled is not None:
            return throttled
        with state.lock:
            faults = state.faults
            fault = None
            if faults.poll_fault_rate > 0 and state.fault_rng.random() < faults.poll_fault_rate:
                fault = state.fault_rng.choice(faults.poll_fault_kinds)
                state.injected(f"poll_{fault}")
            if fault is not None and fault != "timeout":
                return _poll_fault(fault)
            task = state.tasks.get(task_id)
            if task is None or task.request["kind"] != "async":
                # Unknown and expired ids are not an error: HTTP 200 with status UNKNOWN.
                body: dict[str, Any] = {"request_id": wire.new_request_id(),
                                        "output": {"task_id": task_id, "task_status": "UNKNOWN"}}
            else:
                body = self._task_json(task, request.cdn_url)
        response = json_response(200, body)
        if fault == "timeout":
            response.delay = faults.slow_seconds
        return response

    def _task_json(self, task: Task, cdn_url: str) -> dict[str, Any]:
        status = _STATUS[self.state.status_of(task)[0]]

        def wall(mono: float) -> str:
            return wire.timestamp(task.created_wall + (mono - task.created_mono))

        output: dict[str, Any] = {"task_id": task.id, "task_status": status,
                                  "submit_time": wall(task.created_mono)}
        body: dict[str, Any] = {"request_id": wire.new_request_id(), "output": output}
        if status in ("RUNNING", "SUCCEEDED", "FAILED"):
            output["scheduled_time"] = wall(task.pickup_end)
        if status in ("SUCCEEDED", "FAILED", "CANCELED"):
            output["end_time"] = wall(task.end)
        if status == "SUCCEEDED":
            job: Job = task.request["job"]
            results = []
            for url in self._urls(task, cdn_url):
                result = {"orig_prompt": job.prompt}
                if job.prompt_extend:
                    result["actual_prompt"] = task.request["prompt"]
                result["url"] = url
                results.append(result)
            output["results"] = results
            body["usage"] = {"image_count": task.n}
        elif status == "FAILED":
            output["code"], output["message"] = "InternalError", wire.INTERNAL
        return body

    def _cancel(self, request: Request, task_id: str) -> Response:
        state = self.state
        with state.lock:
            task = state.tasks.get(task_id)
            if task is None or task.request["kind"] != "async" or state.status_of(task)[0] != "pending":
                return wire.error(400, "UnsupportedOperation", wire.NOT_PENDING)
            # Ends now, never billed (State.settle bills completed tasks only). Its worker slot
            # stays booked: with max_concurrent set, later tasks do not move up the queue.
            now = state.clock()
            task.outcome, task.error = "cancelled", None
            task.pickup_end = task.end = now
        return json_response(200, {"request_id": wire.new_request_id()})

    # -- observing and steering (no auth: these exist only on the emulator) --

    def snapshot(self) -> dict[str, Any]:
        """What clients did: requests per endpoint, polls, images and generations billed, tasks by
        the host's status words, CDN hits, faults injected. Caller holds the lock."""
        state = self.state
        full = state.snapshot()  # settles billing first
        counters = {key: full[key] for key in _SHARED_COUNTERS}
        now = state.clock()
        by_status: Counter[str] = Counter()
        for task in state.tasks.values():
            by_status[_STATUS[state.status_of(task, now)[0]]] += 1
        counters["requests_per_endpoint"] = dict(self._requests)
        counters["generations_billed"] = sum(1 for task in state.tasks.values() if task.billed)
        counters["tasks"] = len(state.tasks)
        counters["tasks_by_status"] = dict(by_status)
        return counters

    def _control(self, request: Request, path: str) -> Response:
        def refuse(status: int, message: str) -> Response:
            return wire.error(status, "InvalidParameter" if status == 400 else "NotFound", message)

        return control(self.state, request, path, snapshot=self.snapshot, reset=self.reset, refuse=refuse)

    def reset(self) -> None:
        with self.state.lock:
            self.state.clear()
            self.state.faults = Faults()
            self._requests.clear()

    # -- CDN --

    def _cdn(self, request: Request, path: str) -> Response:
        state = self.state
        state.count_cdn_hit(path, request.headers)
        if request.method not in ("GET", "HEAD"):
            return _oss_error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        match = _RESULT_PATH.match(path)
        if not match:
            return _oss_error(404, "NoSuchKey", "The specified key does not exist.")
        query = parse_qs(urlsplit(request.target).query)
        expires = (query.get("Expires") or ["0"])[0]
        signature = (query.get("Signature") or [""])[0]
        if not expires.isdigit() or not hmac.compare_digest(signature, self._signature(path, int(expires))):
            return _oss_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
        if state.wall() > int(expires):
            return _oss_error(403, "AccessDenied", "Request has expired.")
        task_id, index = match.group(2), int(match.group(3))
        with state.lock:
            task = state.tasks.get(task_id)
            ready = task is not None and state.status_of(task)[0] == "completed" and index < task.n
            variant, delay, bps, truncate = state.cdn_faults(ready)
        if not ready or task is None:
            return _oss_error(404, "NoSuchKey", "The specified key does not exist.")
        return cdn_image(variant, lambda: self._picture(task, index), delay=delay, bytes_per_second=bps,
                         truncate=truncate)

    def _picture(self, task: Task, index: int) -> bytes:
        job: Job = task.request["job"]
        return self.state.render_once((task.id, index), lambda: render_png(
            prompt=task.request["prompt"], index=index, n=task.n, size=job.size,
            resolution=f"seed {task.request['seed']}", model=job.model,
            references=[None] * len(job.images), pixels=(job.width, job.height),
        ))


def _poll_fault(kind: str) -> Response:
    if kind == "reset":
        return Response(0, reset=True)
    if kind == "html502":
        return html_response(502, "502 Bad Gateway", "nginx")
    if kind == "429":
        return wire.error(429, "Throttling.RateQuota", wire.THROTTLED)
    if kind == "503":
        return wire.error(503, "ServiceUnavailable", "The service is temporarily unavailable.")
    return wire.error(500, "InternalError", wire.INTERNAL)
