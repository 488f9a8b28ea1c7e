"""The ``/_emulator/`` control endpoints, shared by every host's emulator: what clients did
(counters, the timeline), the fault switches, and a reset. They exist only on the emulator and take
no key; each host refuses a bad one in its own error shape (``refuse``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ._messages import Request, Response, json_response
from ._state import State


def control(
    state: State,
    request: Request,
    path: str,
    *,
    snapshot: Callable[[], dict[str, Any]],
    reset: Callable[[], None],
    refuse: Callable[[int, str], Response],
) -> Response:
    route = (request.method, path)
    if route == ("GET", "/_emulator/counters"):
        with state.lock:
            return json_response(200, snapshot())
    if route == ("GET", "/_emulator/timeline"):
        with state.lock:
            return json_response(200, {"clock": "monotonic", "tasks": state.timeline()})
    if route == ("GET", "/_emulator/faults"):
        with state.lock:
            return json_response(200, state.faults.to_json())
    if route == ("POST", "/_emulator/faults"):
        try:
            switches = json.loads(request.body or b"{}")
            if not isinstance(switches, dict):
                raise ValueError("send a JSON object of fault switches")
            with state.lock:
                state.faults = state.faults.replace(**switches)
                return json_response(200, state.faults.to_json())
        except (ValueError, TypeError) as exc:
            return refuse(400, str(exc))
    if route == ("POST", "/_emulator/reset"):
        reset()
        return json_response(200, {"ok": True})
    return refuse(404, f"no such emulator endpoint: {path}")
