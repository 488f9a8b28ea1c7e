"""The submit endpoint: idempotency as each deployment honours it (API.md sections 1 and 7.1).

Three deployments: one that honours the ``Idempotency-Key`` on every submit (the documented contract),
one that honours it only on submits carrying ``X-APIMart-Response-Version`` (what the provider
documents today) and one that never does (where a resend bills twice and nothing says so). On top:
the versioned 202 answer, synchronous models, idempotency conflicts (409/503) and lost answers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._messages import Request, Response, error_response, html_response
from .._state import Task
from ._validate import Invalid, validate_submit
from ._wire import (
    RESPONSE_VERSION,
    VERSION_HEADER,
    documented_submit,
    sync_result,
    versioned_submit,
)

if TYPE_CHECKING:
    from ._handler import Handler

_CONFLICTS = {
    "idempotency_in_progress": (409, "a request with this Idempotency-Key is still being processed",
                                "invalid_request_error"),
    "idempotency_result_indeterminate": (409, "the outcome of the first request with this Idempotency-Key "
                                         "cannot be determined", "invalid_request_error"),
    "idempotency_key_reused": (409, "this Idempotency-Key was already used with a different request body",
                               "invalid_request_error"),
    "idempotency_unavailable": (503, "idempotency is temporarily unavailable: retry later with the same key",
                                "service_unavailable"),
}
_RETRY_HINTED = ("idempotency_in_progress", "idempotency_unavailable")


def fingerprint(body: bytes) -> str:
    """The request body's identity for replays: the same JSON however its keys are ordered or spaced."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class _Call:
    """One submit as this deployment reads it."""

    key: str | None
    versioned: bool  # carries the known response version, on a deployment that has that contract
    honoured: bool  # its key (if any) is honoured: a replay returns the original task
    answer_versioned: bool  # answered in the versioned shape (202, version header)
    fingerprint: str


class SubmitEndpoint:
    """``POST /v1/images/generations``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.state = handler.state

    def __call__(self, request: Request) -> Response:
        state = self.state
        key = request.headers.get("idempotency-key", "").strip() or None
        version = request.headers.get(VERSION_HEADER.lower(), "").strip()
        with state.lock:
            counters = state.counters
            counters["submit_attempts"] += 1
            if key is None:
                counters["submits_without_idempotency_key"] += 1
            else:
                counters["submits_per_key"][key] += 1
            if version:
                counters["submits_with_version_header"] += 1
            faults = state.faults
            versioned = version == RESPONSE_VERSION and faults.idempotency != "never"
            call = _Call(
                key=key,
                versioned=versioned,
                honoured=key is not None and (faults.idempotency == "always" or versioned),
                answer_versioned=versioned and faults.versioned_answers,
                fingerprint=fingerprint(request.body),
            )
        response, created = self._answer(request, call)
        with state.lock:
            if response.status >= 300:
                if not created:
                    counters["submits_rejected"] += 1
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
        response.delay = max(response.delay, slow)
        return response

    def _answer(self, request: Request, call: _Call) -> tuple[Response, bool]:
        """The answer, and whether this submit created a task."""
        state, handler = self.state, self.handler
        if not handler.authorized(request):
            return handler.unauthorized(request), False
        with state.lock:
            if state.take("rate_limit_submits"):
                return handler.rate_limited("rate_limit_submit"), False
            if call.versioned and call.key is not None and state.take("idempotency_unavailable"):
                state.injected("idempotency_unavailable")
                return self._conflict("idempotency_unavailable"), False
            replay = self._replay(request, call)
            if replay is not None:
                return replay, False
            faults = state.faults
        try:
            fields, pixels = validate_submit(request.body, faults)
        except Invalid as invalid:
            return invalid.response(faults), False
        with state.lock:
            faults = state.faults
            # Checked again under the same lock as creation: two racing retries make one task.
            replay = self._replay(request, call)
            if replay is not None:
                return replay, False
            price = fields["n"] * state.settings.price_per_image
            if faults.balance_answer != "unlimited" and state.available_balance() + 1e-9 < price:
                return error_response(
                    402,
                    f"Insufficient balance: {fields['n']} image(s) cost {price:.4f}, "
                    f"remaining {max(0.0, state.available_balance()):.4f}",
                    "payment_required",
                ), False
            conflict = None
            if call.versioned and call.key is not None:
                if state.take("idempotency_in_progress"):
                    conflict = "idempotency_in_progress"
                elif state.take("idempotency_indeterminate"):
                    conflict = "idempotency_result_indeterminate"
            if conflict is not None:
                state.injected(conflict)
                if conflict == "idempotency_result_indeterminate" and not faults.indeterminate_creates_task:
                    return self._conflict(conflict), False
            task = state.create_task(fields, call.key, pixels=pixels, register=call.honoured,
                                     fingerprint=call.fingerprint, sync=fields["model"] in faults.sync_models)
            state.counters["submits_accepted"] += 1
            if conflict is not None:
                # The task exists and will be billed; the client is only told to wait or that nobody knows.
                return self._conflict(conflict), True
            return self._accepted(task, request, call, replayed=False), True

    def _replay(self, request: Request, call: _Call) -> Response | None:
        """The original task's answer when the key is honoured and known (caller holds the lock)."""
        state = self.state
        if not call.honoured or call.key not in state.idempotency:
            return None
        if state.key_bodies.get(call.key) != call.fingerprint:
            return self._conflict("idempotency_key_reused")
        state.counters["submit_replays"] += 1
        return self._accepted(state.tasks[state.idempotency[call.key]], request, call, replayed=True)

    def _accepted(self, task: Task, request: Request, call: _Call, *, replayed: bool) -> Response:
        faults = self.state.faults
        if task.sync:
            return sync_result(self.state, task, request.cdn_url, versioned=call.answer_versioned,
                               replayed=replayed)
        if call.answer_versioned:
            return versioned_submit(faults, task.id, replayed=replayed)
        return documented_submit(faults, task.id)

    def _conflict(self, code: str) -> Response:
        status, message, type_ = _CONFLICTS[code]
        headers = [("Retry-After", self.handler.retry_after())] if code in _RETRY_HINTED else None
        return error_response(status, message, type_, headers=headers, code=code)
