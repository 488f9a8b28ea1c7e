"""``FalHandler``: fal's queue API for the Qwen Image apps and its media CDN, answering the emulator's
framework-free ``Request``s (so the socket server and the in-process transports serve it unchanged).

The queue as fal documents it (PROVIDERS.md 2): a submit answers at once with a request id and the
status, response and cancel URLs (owner/app only, whatever the app's deeper path); the status answers
202 with the queue position or logs until the request is done, then 200; the status stream sends
``data:`` events and keepalive comments and closes after COMPLETED; the result is at the response URL.
There is no FAILED status: a request whose input the app refuses ends COMPLETED and its response is
the 422 (billed, as fal bills them). A request cancelled while queued ends unbilled; one cancelled
while running is stopped but billed (the app had begun).
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .._control import control
from .._faults import Faults
from .._messages import Request, Response, StreamStep, html_response, json_response
from .._render import cdn_image, render_ahead, render_png
from .._state import State, Task
from . import _wire as wire
from ._wire import APPS, Invalid, Job

_MEDIA_PATH = re.compile(r"^/files/([a-z]+)/([0-9a-f-]{36})_(\d+)\.(png|jpeg|webp)$")
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_MEDIA_BUCKETS = ("rabbit", "koala", "penguin", "lion", "zebra")
_SHARED_COUNTERS = ("api_requests", "api_requests_without_valid_auth", "polls", "polls_per_task",
                    "cdn_hits", "cdn_hits_per_path", "cdn_authorization_headers", "faults_injected")
# A refused input is found out at once by the app: it ends this fast, not after a whole run.
_REFUSAL_SECONDS = 0.05
# How often a held stream looks at the state for a cancel (transitions themselves are exact).
_STREAM_TICK = 0.05


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall * 1000) % 1000:03d}Z"


class FalHandler:
    """Answers ``/{owner}/{app}[/path]`` submits, ``/{owner}/{app}/requests/{id}[/status[/stream]|/cancel]``,
    the ``/_emulator/`` control endpoints and the media CDN from one :class:`State`."""

    keepalive = wire.KEEPALIVE_SECONDS

    def __init__(self, state: State) -> None:
        self.state = state
        self.cdn_origins: set[str] = set()
        self._requests: Counter[str] = Counter()
        self._cancels: Counter[str] = Counter()

    # -- entry point --

    def handle(self, request: Request) -> Response:
        parts = urlsplit(request.target)
        path = parts.path
        if request.origin == "cdn":
            return self._cdn(request, path)
        if path.startswith("/_emulator/"):
            return control(self.state, request, path, snapshot=self.snapshot, reset=self.reset,
                           refuse=lambda status, message: wire.detail(status, message))
        with self.state.lock:
            self.state.settle()
            self.state.counters["api_requests"] += 1
        label, route, argument = self._route(request.method, path)
        with self.state.lock:
            self._requests[label] += 1
        if route is None:
            return wire.detail(404, f"Path {path} not found")
        if not self._authorized(request):
            return wire.detail(401, "Invalid Key Authorization header format or key not found."
                               if request.headers.get("authorization") else "Missing authorization header.")
        return route(request, *argument)

    def _route(self, method: str, path: str) -> tuple[str, Any, tuple[Any, ...]]:
        match = wire.REQUESTS_PATH.match(path)
        if match:
            owner, app, request_id, tail = match.groups()
            kind = {None: "result", "/status": "status", "/status/stream": "stream", "/cancel": "cancel"}[tail]
            wanted = "PUT" if kind == "cancel" else "GET"
            if method != wanted:
                return f"{method} {kind}", None, ()
            handler = {"result": self._result, "status": self._status, "stream": self._stream,
                       "cancel": self._cancel}[kind]
            return f"{wanted} {kind}", handler, (f"{owner}/{app}", unquote(request_id))
        app = APPS.get(path.strip("/"))
        if app is not None and method == "POST":
            return "POST submit", self._submit, (app,)
        return "unknown", None, ()

    def _authorized(self, request: Request) -> bool:
        return self.state.authorized(request.headers, "Key")

    def _throttled(self, switch: str) -> Response | None:
        with self.state.lock:
            if not self.state.take(switch):
                return None
            self.state.injected(switch.replace("rate_limit_", "throttle_"))
            wait = self.state.faults.retry_after
        return wire.detail(429, "Too many requests: the rate limit of this key was reached.",
                           [("Retry-After", str(max(1, round(wait)))), ("X-Fal-Retryable", "true")])

    # -- submit --

    def _submit(self, request: Request, app: wire.App) -> Response:
        throttled = self._throttled("rate_limit_submits")
        if throttled is not None:
            return throttled
        state = self.state
        problems: list[dict[str, Any]] | None = None
        try:
            job: Job | None = wire.parse_input(request.body, app, self._size_of)
        except Invalid as refusal:
            job, problems = None, refusal.detail
        with state.lock:
            faults = state.faults
            moderated = job is not None and job.safety_checker and any(
                word.casefold() in job.prompt.casefold() for word in faults.moderation_words)
            if moderated:
                state.injected("moderation")
                problems = [{"loc": ["body", "prompt"], "type": "content_policy_violation",
                             "msg": "The content could not be processed because it contained material "
                                    "flagged by a content checker."}]
            pixels = (job.width, job.height) if job else wire.PRESETS[wire.DEFAULT_PRESET]
            prompt = job.prompt if job else ""
            task = state.create_task({"prompt": prompt, "n": job.num_images if job else 1, "job": job,
                                      "app": app.id, "problems": problems}, None, pixels=pixels)
            del state.tasks[task.id]
            task.id = str(uuid.uuid4())  # fal's request ids are UUIDs
            state.tasks[task.id] = task
            if problems is not None:
                # The app reads the input as soon as it starts: the refusal ends the request then.
                task.outcome, task.error = "failed", {"status": 422, "detail": problems}
                task.end = task.full_end = task.pickup_end + _REFUSAL_SECONDS
            lose = state.take("lose_submit_answers")
            mode, slow = faults.lose_mode, faults.slow_seconds
            if lose:
                state.injected(f"lose_answer_{mode}")
        if job is not None and problems is None:
            render_ahead(state.clock, task, lambda: [self._picture(task, job, i) for i in range(job.num_images)])
        if lose and mode == "reset":
            return Response(0, reset=True)
        if lose and mode == "html502":
            return html_response(502, "502 Bad Gateway", "nginx")
        base = f"{request.api_url}/{_owner_app(app.id)}/requests/{task.id}"
        response = json_response(200, {
            "request_id": task.id, "response_url": base, "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel", "queue_position": self._position(task),
        }, [("X-Fal-Request-Id", task.id)])
        if lose:
            response.delay = slow
        return response

    def _size_of(self, url: str) -> tuple[int, int] | None:
        parts = urlsplit(url)
        match = _MEDIA_PATH.match(parts.path)
        if not match or f"{parts.scheme}://{parts.netloc}" not in self.cdn_origins:
            return None
        with self.state.lock:
            task = self.state.tasks.get(match.group(2))
        return task.pixels if task is not None else None

    # -- status --

    def _find(self, app: str, request_id: str) -> Task | None:
        task = self.state.tasks.get(request_id)
        if task is None or _owner_app(task.request["app"]) != app:
            return None
        return task

    def _position(self, task: Task) -> int:
        now = self.state.clock()
        return sum(1 for other in self.state.tasks.values()
                   if other is not task and now < other.pickup_end and now < other.end
                   and other.created_mono < task.created_mono)

    def _phase(self, task: Task, now: float) -> str:
        if now >= task.end:
            return "COMPLETED"
        return "IN_QUEUE" if now < task.pickup_end else "IN_PROGRESS"

    def _status_json(self, task: Task, request: Request, with_logs: bool) -> dict[str, Any]:
        now = self.state.clock()
        phase = self._phase(task, now)
        base = f"{request.api_url}/{_owner_app(task.request['app'])}/requests/{task.id}"
        body: dict[str, Any] = {"status": phase, "request_id": task.id, "response_url": base,
                                "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}
        if phase == "IN_QUEUE":
            body["queue_position"] = self._position(task)
            return body
        body["logs"] = _logs(task, now) if with_logs else None
        if phase == "COMPLETED":
            body["metrics"] = {"inference_time": round(task.end - task.pickup_end, 3)}
            if task.outcome == "failed":
                body["error"] = "Unprocessable Entity"
                body["error_type"] = "validation_error"
            elif task.outcome == "cancelled":
                body["error"] = "Request was cancelled"
                body["error_type"] = "request_cancelled"
        return body

    def _status(self, request: Request, app: str, request_id: str) -> Response:
        state = self.state
        with state.lock:
            state.counters["polls"] += 1
            state.counters["polls_per_task"][request_id] += 1
        throttled = self._throttled("rate_limit_polls")
        if throttled is not None:
            return throttled
        with state.lock:
            fault = _poll_fault(state)
            if fault is not None:
                return fault
            task = self._find(app, request_id)
            if task is None:
                return wire.detail(404, f"Request {request_id} not found")
            body = self._status_json(task, request, _logs_wanted(request))
        return json_response(200 if body["status"] == "COMPLETED" else 202, body)

    def _stream(self, request: Request, app: str, request_id: str) -> Response:
        state = self.state
        with state.lock:
            task = self._find(app, request_id)
            state.counters["streams"] = state.counters.get("streams", 0) + 1
        if task is None:
            return wire.detail(404, f"Request {request_id} not found")
        with_logs = _logs_wanted(request)
        keepalive = self.keepalive

        def events() -> Iterator[StreamStep]:
            last = ""
            quiet_since = state.clock()
            while True:
                with state.lock:
                    body = self._status_json(task, request, with_logs)
                    now = state.clock()
                    upcoming = [at for at in (task.pickup_end, task.end, *_log_times(task)) if at > now]
                text = json.dumps(body, separators=(",", ":"))
                if text != last:
                    yield f"data: {text}\n\n".encode()
                    last, quiet_since = text, now
                if body["status"] == "COMPLETED":
                    return
                if now - quiet_since >= keepalive:
                    yield b": keepalive\n\n"
                    quiet_since = now
                due = min([*upcoming, quiet_since + keepalive])
                yield max(0.001, min(due - now, _STREAM_TICK))

        return Response(200, [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                              ("X-Fal-Request-Id", request_id)], stream=events)

    # -- result and cancel --

    def _result(self, request: Request, app: str, request_id: str) -> Response:
        state = self.state
        with state.lock:
            task = self._find(app, request_id)
            if task is None:
                return wire.detail(404, f"Request {request_id} not found")
            if state.clock() < task.end:
                return wire.detail(400, "Request is still in progress")
            outcome, error, job = task.outcome, task.error, task.request["job"]
        if outcome == "failed":
            assert error is not None
            return wire.invalid(error["detail"])
        if outcome == "cancelled":
            return wire.detail(400, "Request was cancelled", [("X-Fal-Error-Type", "request_cancelled")])
        assert job is not None
        seed = job.seed if job.seed is not None else int(task.id[:8], 16) % (wire.SEED_MAX + 1)
        images = []
        for index in range(job.num_images):
            bucket = _MEDIA_BUCKETS[int(task.id[:2], 16) % len(_MEDIA_BUCKETS)]
            name = f"{task.id}_{index}.{job.output_format}"
            images.append({"url": f"{request.cdn_url}/files/{bucket}/{name}",
                           "content_type": _CONTENT_TYPES[job.output_format], "file_name": name,
                           "width": job.width, "height": job.height})
        body: dict[str, Any] = {"images": images, "seed": seed}
        if job.prompt_expansion:
            body["prompt"] = job.prompt
        return json_response(200, body, [("X-Fal-Request-Id", request_id)])

    def _cancel(self, request: Request, app: str, request_id: str) -> Response:
        state = self.state
        with state.lock:
            task = self._find(app, request_id)
            if task is None:
                self._cancels["NOT_FOUND"] += 1
                return json_response(404, {"status": "NOT_FOUND"})
            now = state.clock()
            if now >= task.end:
                self._cancels["ALREADY_COMPLETED"] += 1
                return json_response(400, {"status": "ALREADY_COMPLETED"})
            running = now >= task.pickup_end
            task.outcome, task.error = "cancelled", None
            task.pickup_end = min(task.pickup_end, now)
            task.end = now
            if task in state.in_flight:
                state.in_flight.remove(task)
            if running:
                # The app had started: fal bills the work done (PROVIDERS.md: cancelling a running
                # request is a signal the app may honour; the GPU time is spent either way).
                task.billed = True
                state.counters["tasks_billed"] += 1
                state.counters["images_billed"] += task.n
            self._cancels["running" if running else "queued"] += 1
        return json_response(202, {"status": "CANCELLATION_REQUESTED"})

    # -- observing and steering --

    def snapshot(self) -> dict[str, Any]:
        """What clients did: requests per endpoint, polls, streams, cancels (queued, running, and
        the refusals), requests billed (completed, refused with 422, cancelled while running),
        images billed, cost billed in USD, tasks by fal status, CDN hits, faults. Caller holds the lock."""
        state = self.state
        full = state.snapshot()  # settles billing first
        counters = {key: full[key] for key in _SHARED_COUNTERS}
        now = state.clock()
        by_status: Counter[str] = Counter()
        refused_billed = 0
        cost = 0.0
        for task in state.tasks.values():
            by_status[self._phase(task, now)] += 1
            job: Job | None = task.request["job"]
            if task.outcome == "failed" and now >= task.end:
                refused_billed += 1  # fal bills a 422
            if task.billed and job is not None:
                cost += job.price * job.num_images
        counters.update({
            "requests_per_endpoint": dict(self._requests),
            "streams": state.counters.get("streams", 0),
            "cancels": dict(self._cancels),
            "requests_billed": sum(1 for t in state.tasks.values() if t.billed) + refused_billed,
            "refusals_billed": refused_billed,
            "images_billed": sum(t.n for t in state.tasks.values() if t.billed),
            "cost_billed": round(cost, 6),
            "tasks": len(state.tasks),
            "tasks_by_status": dict(by_status),
        })
        return counters

    def reset(self) -> None:
        with self.state.lock:
            self.state.clear()
            self.state.faults = Faults()
            self._requests.clear()
            self._cancels.clear()

    # -- media CDN --

    def _cdn(self, request: Request, path: str) -> Response:
        state = self.state
        state.count_cdn_hit(path, request.headers)
        if request.method not in ("GET", "HEAD"):
            return wire.detail(405, "Method not allowed")
        match = _MEDIA_PATH.match(path)
        with state.lock:
            task = state.tasks.get(match.group(2)) if match else None
            job: Job | None = task.request["job"] if task is not None else None
            ready = (task is not None and job is not None and state.status_of(task)[0] == "completed"
                     and int(match.group(3)) < job.num_images and match.group(4) == job.output_format)  # type: ignore[union-attr]
            variant, delay, bps, truncate = state.cdn_faults(ready)
        if not ready or task is None or job is None or match is None:
            return wire.detail(404, "File not found")
        index = int(match.group(3))
        response = cdn_image(variant, lambda: self._picture(task, job, index), delay=delay,
                             bytes_per_second=bps, truncate=truncate)
        if variant == "image":
            response.headers[0] = ("Content-Type", _CONTENT_TYPES[job.output_format])
        return response

    def _picture(self, task: Task, job: Job, index: int) -> bytes:
        def render() -> bytes:
            png = render_png(prompt=job.prompt, index=index, n=job.num_images, size=f"{job.width}x{job.height}",
                             resolution=job.app.id, model=job.app.model, references=[None] * len(job.image_urls),
                             pixels=(job.width, job.height))
            if job.output_format == "png":
                return png
            from PIL import Image

            out = io.BytesIO()
            with Image.open(io.BytesIO(png)) as image:
                image.convert("RGB").save(out, job.output_format.upper(), quality=90)
            return out.getvalue()

        return self.state.render_once((task.id, index), render)


def _owner_app(app_id: str) -> str:
    """fal's request URLs name the owner and app only, whatever the app's deeper path."""
    return "/".join(app_id.split("/")[:2])


def _logs_wanted(request: Request) -> bool:
    value = (parse_qs(urlsplit(request.target).query).get("logs") or ["0"])[0].lower()
    return value in ("1", "true", "yes")


def _poll_fault(state: State) -> Response | None:
    """A random fault on a status poll, drawn from the seeded RNG (``poll_fault_rate``)."""
    faults = state.faults
    if faults.poll_fault_rate <= 0 or state.fault_rng.random() >= faults.poll_fault_rate:
        return None
    kind = state.fault_rng.choice(faults.poll_fault_kinds)
    state.injected(f"poll_{kind}")
    if kind == "reset":
        return Response(0, reset=True)
    if kind == "html502":
        return html_response(502, "502 Bad Gateway", "nginx")
    if kind == "429":
        return wire.detail(429, "Too many requests", [("Retry-After", "1")])
    if kind == "timeout":
        response = wire.detail(504, "Gateway timeout")
        response.delay = faults.slow_seconds
        return response
    return wire.detail(int(kind) if kind.isdigit() else 500, "Internal server error")


def _logs(task: Task, now: float) -> list[dict[str, Any]]:
    """The app's log lines so far: a start line, then one per quarter of the run."""
    job: Job | None = task.request["job"]
    steps = 4
    lines: list[tuple[float, str]] = [(task.pickup_end, f"Starting {job.app.model if job else 'request'}")]
    if task.outcome == "completed":
        span = task.full_end - task.pickup_end
        lines += [(task.pickup_end + span * k / steps, f"Generating: step {k}/{steps}") for k in range(1, steps + 1)]
    else:
        lines.append((task.end, "Request stopped"))
    wall = task.created_wall - task.created_mono
    return [{"timestamp": _iso(wall + at), "level": "INFO", "source": "USER", "message": text}
            for at, text in lines if at <= now]


def _log_times(task: Task) -> list[float]:
    span = task.full_end - task.pickup_end
    return [task.pickup_end + span * k / 4 for k in range(1, 5)] if task.outcome == "completed" else []
