"""Framework-free request and response descriptions shared by the socket server and the in-process
transport, so both speak through exactly the same handler code.

A response may carry a raw action that only a transport can perform: hold the answer (``delay``),
close without answering (``reset``), send the full Content-Length but only part of the body
(``truncate_at``), or drip the body slowly (``bytes_per_second``). A streamed response (``stream``:
server-sent events, an answer held until a task ends) has no length: its body is produced while it
is sent, so what it says is read off the state at that moment, not when the request arrived.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

# What a stream yields: bytes to send now, or seconds to wait first (the transport sleeps, so the
# socket server and the in-process transports pace it the same way, and a stop ends it at once).
StreamStep = bytes | float


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path + query, as on the request line
    headers: dict[str, str]  # lower-case names
    body: bytes
    origin: str  # "api" | "cdn"
    api_url: str  # the API origin as this client sees it (socket or in-process)
    cdn_url: str  # the CDN origin as this client sees it


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay: float = 0.0
    reset: bool = False
    truncate_at: int | None = None
    bytes_per_second: float | None = None
    # A body made while it is sent (chunked on a socket); called once, when the answer starts.
    stream: Callable[[], Iterator[StreamStep]] | None = None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(status, [("Content-Type", "application/json"), *(headers or [])], body)


def error_response(
    status: int,
    message: str,
    type_: str | None,
    param: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    code: int | str | None = None,
) -> Response:
    """The error shape of API.md section 3; ``code`` defaults to the HTTP status (section 7.3: some
    errors carry a string code instead)."""
    error: dict[str, Any] = {"code": status if code is None else code, "message": message}
    if type_ is not None:
        error["type"] = type_
    if param is not None:
        error["param"] = param
    return json_response(status, {"error": error}, headers)


def html_response(status: int, title: str, text: str) -> Response:
    """What a proxy (nginx, Cloudflare) sends instead of JSON when the upstream misbehaves."""
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>{text}</center>\r\n</body>\r\n</html>\r\n"
    ).encode()
    return Response(status, [("Content-Type", "text/html; charset=utf-8")], body)


class Handler(Protocol):
    """What the socket server and the in-process transport call: one host's request handler."""

    def handle(self, request: Request) -> Response: ...
