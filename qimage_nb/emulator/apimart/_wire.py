"""How tasks and submit answers look on the wire, in each dialect of API.md.

The state knows a task's phases (pending, processing, then its outcome); this module words them:
the documented contract (sections 1-2) or what the provider really serves (section 7: statuses
``submitted``/``queued``/``in_progress``, string error codes, ``credits_cost`` while pending, the
versioned 202 envelope, synchronous ``generation.result`` answers), in the configured letter case.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from .._faults import Faults
from .._messages import Response, json_response
from .._state import RESULT_LIFETIME, State, Task

VERSION_HEADER = "X-APIMart-Response-Version"
RESPONSE_VERSION = "2026-07-27"
REPLAYED_HEADER = "Idempotency-Replayed"
TERMINAL = ("completed", "failed", "cancelled")

_WILD_WORDS = {"processing": "in_progress"}
_WILD_ERRORS = {
    "moderation": {
        "code": "OutputImageSensitiveContentDetected",
        "message": "The generated image may contain sensitive content",
        "type": "content_policy_violation",
    },
    "upstream": {"code": "task_failed", "message": "The image generation failed upstream", "type": "server_error"},
}


def cased(word: str, faults: Faults) -> str:
    # Section 7.1: data.status "may be any case"; a client must fold it before comparing.
    if faults.status_case == "upper":
        return word.upper()
    if faults.status_case == "title":
        return word.title()
    return word


def status_word(state: State, task: Task, now: float) -> tuple[str, int]:
    """The status word (before casing) and progress a poll at ``now`` reports."""
    phase, progress = state.status_of(task, now)
    if state.faults.dialect != "wild":
        return phase, progress
    if phase == "pending":
        # "submitted" right after the submit (the first half of the wait), then "queued".
        halfway = task.created_mono + (task.pickup_end - task.created_mono) / 2
        return ("submitted" if now < halfway else "queued"), progress
    return _WILD_WORDS.get(phase, phase), progress


def task_json(state: State, task: Task, cdn_url: str, now: float | None = None) -> dict[str, Any]:
    """The task object of a poll (section 2), or of a synchronous result, as seen at ``now``."""
    faults = state.faults
    now = state.clock() if now is None else now
    word, progress = status_word(state, task, now)
    phase = state.status_of(task, now)[0]
    data: dict[str, Any] = {
        "id": task.id,
        "status": cased(word, faults),
        "progress": progress,
        "created": int(task.created_wall),
        "estimated_time": state.estimated_time(task),
    }
    if faults.dialect == "wild":
        # Section 7.4: the price shows from the start; a failed task is then not charged.
        cost = 0.0 if phase in TERMINAL and phase != "completed" else state.cost(task)
        data["cost"], data["credits_cost"] = cost, round(cost * 100, 4)
    else:
        data["cost"] = state.cost(task) if task.outcome == "completed" else 0.0
    if phase in TERMINAL:
        elapsed = task.end - task.created_mono
        data["completed"] = int(task.created_wall + elapsed)
        if phase == "completed":
            data["actual_time"] = max(1, math.ceil(elapsed))
            data["result"] = {"images": images(faults, task, cdn_url, data["completed"])}
        elif task.error is not None:
            data["error"] = failure_error(task, faults)
    return data


def failure_error(task: Task, faults: Faults) -> dict[str, Any]:
    if faults.dialect == "wild" and task.failure in _WILD_ERRORS:
        return dict(_WILD_ERRORS[task.failure])
    return dict(task.error or {})


def images(faults: Faults, task: Task, cdn_url: str, completed: int) -> list[dict[str, Any]]:
    urls = [f"{cdn_url}/images/{task.id}/{i}.png" for i in range(task.n)]
    expires = completed + RESULT_LIFETIME
    if faults.multi_url == "one-item":
        return [{"url": urls, "expires_at": expires}]
    if faults.url_format == "string":
        return [{"url": url, "expires_at": expires} for url in urls]
    return [{"url": [url], "expires_at": expires} for url in urls]


# -- submit answers --


def documented_submit(faults: Faults, task_id: str) -> Response:
    """Section 1's answer in the envelope variant ``submit_envelope`` names."""
    envelope, status = faults.submit_envelope, cased("submitted", faults)
    if envelope == "object":
        return json_response(200, {"code": 200, "data": {"task_id": task_id, "status": status}})
    if envelope == "object-id":
        return json_response(200, {"code": 200, "data": {"id": task_id, "status": status}})
    code: int | str = "success" if envelope == "code-success" else 200
    return json_response(200, {"code": code, "data": [{"status": status, "task_id": task_id}]})


def _versioned_headers(replayed: bool) -> list[tuple[str, str]]:
    headers = [(VERSION_HEADER, RESPONSE_VERSION)]
    return [*headers, (REPLAYED_HEADER, "true")] if replayed else headers


def _request_id() -> str:
    return "req_" + secrets.token_hex(12)


def versioned_submit(faults: Faults, task_id: str, *, replayed: bool) -> Response:
    """Section 7.1's answer to a submit that carries the response version header."""
    data = {"object": "generation.task", "id": task_id, "status": cased("queued", faults)}
    return json_response(202, {"code": 202, "data": data, "request_id": _request_id()},
                         _versioned_headers(replayed))


def sync_result(state: State, task: Task, cdn_url: str, *, versioned: bool, replayed: bool) -> Response:
    """A synchronous model's answer (section 7.1): the finished task inside, nothing to poll.

    Held until the task ends, so its images are on the CDN by the time the answer arrives.
    """
    now = state.clock()
    data = {"object": "generation.result", **task_json(state, task, cdn_url, max(now, task.end))}
    response = json_response(200, {"code": 200, "data": data, "request_id": _request_id()},
                             _versioned_headers(replayed) if versioned else None)
    # A millisecond to spare: a timer may wake a hair early, and the CDN must already say "ready".
    response.delay = max(0.0, task.end - now) + 0.001
    return response
