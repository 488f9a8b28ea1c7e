"""``ReplicateHandler``: Replicate's predictions API for the Qwen Image models and its delivery CDN,
answering the emulator's framework-free ``Request``s.

As Replicate documents it (PROVIDERS.md 3): ``POST /v1/models/{owner}/{name}/predictions`` answers
201 with the prediction; with ``Prefer: wait[=n]`` the answer is held until the prediction ends or
the wait runs out, and a held answer that runs out says ``starting`` (as the official SDK's comment
describes the real service), while ``GET /v1/predictions/{id}`` always says where it really is.
``POST .../cancel`` cancels. Inputs, outputs and logs are removed after the retention time (an hour;
less in tests). Errors are RFC 7807 problems. Billing is per output image: a prediction that never
produced its image (cancelled, failed) is not billed.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from .._control import control
from .._faults import Faults
from .._messages import Request, Response, StreamStep, html_response, json_response
from .._render import cdn_image, render_ahead, render_png
from .._state import State, Task
from . import _wire as wire
from ._wire import MODELS, Invalid, Job

_DELIVERY_PATH = re.compile(r"^/xezq/([a-z0-9]+)/out-0\.png$")
_STATUS = {"pending": "starting", "processing": "processing", "completed": "succeeded",
           "failed": "failed", "cancelled": "canceled"}
_SHARED_COUNTERS = ("api_requests", "api_requests_without_valid_auth", "polls", "polls_per_task",
                    "images_billed", "cdn_hits", "cdn_hits_per_path", "cdn_authorization_headers",
                    "faults_injected")
_FLAGGED = "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
_HOLD_TICK = 0.05  # how often a held create looks for a cancel (its end itself is met exactly)
_ID_ALPHABET = string.ascii_lowercase + string.digits


class ReplicateHandler:
    """Answers the predictions API, the ``/_emulator/`` control endpoints and the delivery CDN."""

    retention = float(wire.RETENTION_SECONDS)

    def __init__(self, state: State) -> None:
        self.state = state
        self.cdn_origins: set[str] = set()
        self._requests: Counter[str] = Counter()
        self._held: Counter[str] = Counter()

    # -- entry point --

    def handle(self, request: Request) -> Response:
        path = urlsplit(request.target).path
        if request.origin == "cdn":
            return self._cdn(request, path)
        if path.startswith("/_emulator/"):
            return control(self.state, request, path, snapshot=self.snapshot, reset=self.reset,
                           refuse=lambda status, message: wire.problem(status, "Bad request", message))
        with self.state.lock:
            self.state.settle()
            self.state.counters["api_requests"] += 1
        label, route, argument = self._route(request.method, path)
        with self.state.lock:
            self._requests[label] += 1
        if not self._authorized(request):
            return wire.problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        if route is None:
            return wire.problem(404, "Not found", "The requested resource could not be found.")
        return route(request, *argument)

    def _route(self, method: str, path: str) -> tuple[str, Any, tuple[Any, ...]]:
        created = wire.MODEL_PREDICTIONS.match(path)
        if created and method == "POST":
            model = MODELS.get(f"{created.group(1)}/{created.group(2)}")
            return ("POST create", self._create, (model,)) if model else ("unknown model", None, ())
        found = wire.PREDICTION.match(path)
        if found and found.group(2) and method == "POST":
            return "POST cancel", self._cancel, (found.group(1),)
        if found and not found.group(2) and method == "GET":
            return "GET prediction", self._get, (found.group(1),)
        return "unknown", None, ()

    def _authorized(self, request: Request) -> bool:
        return self.state.authorized(request.headers, "Bearer", "Token")

    def _throttled(self, switch: str) -> Response | None:
        with self.state.lock:
            if not self.state.take(switch):
                return None
            self.state.injected(switch.replace("rate_limit_", "throttle_"))
            wait = max(1, round(self.state.faults.retry_after))
        return wire.problem(429, "Too Many Requests",
                            f"Request was throttled. Your rate limit resets in ~{wait}s.",
                            [("Retry-After", str(wait))])

    # -- create --

    def _create(self, request: Request, model: wire.Model) -> Response:
        throttled = self._throttled("rate_limit_submits")
        if throttled is not None:
            return throttled
        try:
            job = wire.parse(request.body, model, self._size_of)
        except Invalid as refusal:
            return wire.invalid(refusal.fields)
        state = self.state
        with state.lock:
            task = state.create_task({"prompt": job.prompt, "n": 1, "job": job}, None,
                                     pixels=(job.width, job.height))
            del state.tasks[task.id]
            task.id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))
            state.tasks[task.id] = task
            faults = state.faults
            lose = state.take("lose_submit_answers")
            mode, slow = faults.lose_mode, faults.slow_seconds
            if lose:
                state.injected(f"lose_answer_{mode}")
        render_ahead(state.clock, task, lambda: self._picture(task))
        if lose and mode == "reset":
            return Response(0, reset=True)
        if lose and mode == "html502":
            return html_response(502, "502 Bad Gateway", "nginx")
        headers = [("Location", f"{request.api_url}{wire.PREDICTIONS}/{task.id}")]
        wait = wire.prefer_wait(request.headers.get("prefer", ""))
        if wait is None:
            with state.lock:
                response = json_response(201, self._json(task, request), headers)
            response.delay = slow if lose else 0.0
            return response
        deadline = state.clock() + wait

        def held() -> Iterator[StreamStep]:
            if lose:
                yield slow
            while True:
                with state.lock:
                    now = state.clock()
                    done = now >= task.end
                    if done or now >= deadline:
                        body = self._json(task, request)
                        if not done:
                            body["status"] = "starting"  # what a held answer that runs out says
                        self._held["finished" if done else "ran_out"] += 1
                        break
                    pause = min(task.end, deadline) - now
                yield max(0.001, min(pause, _HOLD_TICK))
            yield _dumps(body)

        return Response(201, [("Content-Type", "application/json"), *headers], stream=held)

    def _size_of(self, url: str) -> tuple[int, int] | None:
        parts = urlsplit(url)
        match = _DELIVERY_PATH.match(parts.path)
        if not match or f"{parts.scheme}://{parts.netloc}" not in self.cdn_origins:
            return None
        with self.state.lock:
            task = self.state.tasks.get(match.group(1))
        return task.pixels if task is not None else None

    # -- the prediction object --

    def _removed(self, task: Task, now: float) -> bool:
        return now >= task.end and now - task.end >= self.retention

    def _json(self, task: Task, request: Request) -> dict[str, Any]:
        state = self.state
        now = state.clock()
        word, _ = state.status_of(task, now)
        status = _STATUS[word]
        job: Job = task.request["job"]
        wall = task.created_wall - task.created_mono
        api = f"{request.api_url}{wire.PREDICTIONS}/{task.id}"
        removed = self._removed(task, now)
        body: dict[str, Any] = {
            "id": task.id, "model": job.model.id, "version": job.model.version,
            "input": {} if removed else job.input, "logs": "" if removed else self._logs(task, now),
            "output": None, "data_removed": removed, "error": None, "status": status,
            "created_at": wire.iso(task.created_wall),
            "started_at": wire.iso(wall + task.pickup_end) if now >= task.pickup_end else None,
            "completed_at": wire.iso(wall + task.end) if now >= task.end else None,
            "urls": {"get": api, "cancel": f"{api}/cancel", "web": f"https://replicate.com/p/{task.id}"},
            "metrics": {},
        }
        if status == "succeeded":
            body["metrics"] = {"predict_time": round(task.end - task.pickup_end, 3),
                               "total_time": round(task.end - task.created_mono, 3), "image_count": 1}
            if not removed:
                body["output"] = f"{request.cdn_url}/xezq/{task.id}/out-0.png"
        elif status == "failed":
            body["error"] = _FLAGGED if task.failure == "moderation" else "Prediction failed: the model crashed."
        return body

    def _logs(self, task: Task, now: float) -> str:
        lines = []
        if now >= task.pickup_end:
            lines.append("Using seed: {}".format(task.request["job"].seed if task.request["job"].seed is not None
                                                 else int(task.id[:6], 36) % wire.SEED_MAX))
            lines.append("Generating image...")
        if now >= task.end and task.outcome == "completed":
            lines.append("Image generated.")
        return "".join(line + "\n" for line in lines)

    def _get(self, request: Request, prediction_id: str) -> Response:
        state = self.state
        with state.lock:
            state.counters["polls"] += 1
            state.counters["polls_per_task"][prediction_id] += 1
        throttled = self._throttled("rate_limit_polls")
        if throttled is not None:
            return throttled
        with state.lock:
            fault = _poll_fault(state)
            if fault is not None:
                return fault
            task = state.tasks.get(prediction_id)
            if task is None:
                return wire.problem(404, "Not found", "The requested resource could not be found.")
            return json_response(200, self._json(task, request))

    def _cancel(self, request: Request, prediction_id: str) -> Response:
        state = self.state
        with state.lock:
            task = state.tasks.get(prediction_id)
            if task is None:
                return wire.problem(404, "Not found", "The requested resource could not be found.")
            now = state.clock()
            if now < task.end:
                # Stopped now; no output was made, so nothing is billed (per-output pricing).
                task.outcome, task.error = "cancelled", None
                task.pickup_end = min(task.pickup_end, now)
                task.end = now
                if task in state.in_flight:
                    state.in_flight.remove(task)
            return json_response(200, self._json(task, request))

    # -- observing and steering --

    def snapshot(self) -> dict[str, Any]:
        """What clients did: requests per endpoint, polls, held creates (finished inside the wait
        or ran out), predictions billed, tasks by Replicate status, CDN hits, faults. Caller holds the lock."""
        state = self.state
        full = state.snapshot()
        counters = {key: full[key] for key in _SHARED_COUNTERS}
        now = state.clock()
        by_status: Counter[str] = Counter(_STATUS[state.status_of(t, now)[0]] for t in state.tasks.values())
        counters.update({
            "requests_per_endpoint": dict(self._requests),
            "held_creates": dict(self._held),
            "predictions_billed": sum(1 for t in state.tasks.values() if t.billed),
            "tasks": len(state.tasks),
            "tasks_by_status": dict(by_status),
        })
        return counters

    def reset(self) -> None:
        with self.state.lock:
            self.state.clear()
            self.state.faults = Faults()
            self._requests.clear()
            self._held.clear()

    # -- delivery CDN --

    def _cdn(self, request: Request, path: str) -> Response:
        state = self.state
        state.count_cdn_hit(path, request.headers)
        if request.method not in ("GET", "HEAD"):
            return wire.problem(405, "Method not allowed", "Only GET is served here.")
        match = _DELIVERY_PATH.match(path)
        with state.lock:
            task = state.tasks.get(match.group(1)) if match else None
            now = state.clock()
            ready = task is not None and state.status_of(task, now)[0] == "completed" and not self._removed(task, now)
            variant, delay, bps, truncate = state.cdn_faults(ready)
        if not ready or task is None:
            return Response(404, [("Content-Type", "text/plain")], b"Not Found")
        return cdn_image(variant, lambda: self._picture(task), delay=delay, bytes_per_second=bps, truncate=truncate)

    def _picture(self, task: Task) -> bytes:
        job: Job = task.request["job"]
        return self.state.render_once((task.id, 0), lambda: render_png(
            prompt=job.prompt, index=0, n=1, size=f"{job.width}x{job.height}", resolution=job.model.id,
            model=job.model.label, references=[None] if job.image else [], pixels=(job.width, job.height),
        ))


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _poll_fault(state: State) -> Response | None:
    """A random fault on a prediction GET, drawn from the seeded RNG (``poll_fault_rate``)."""
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
        return wire.problem(429, "Too Many Requests", "Request was throttled.", [("Retry-After", "1")])
    if kind == "timeout":
        response = wire.problem(504, "Gateway Timeout", "The upstream timed out.")
        response.delay = faults.slow_seconds
        return response
    return wire.problem(int(kind) if kind.isdigit() else 500, "Internal Server Error", "Something went wrong.")
