"""In-process httpx transports: the emulator without sockets, routed by host name.

``http://api.emulator.localhost`` is the API origin and ``http://cdn.emulator.localhost`` the CDN;
any other host is refused with ``httpx.ConnectError`` (nothing ever leaves the process). Raw faults
become the exceptions a real socket would produce: a reset is ``RemoteProtocolError`` before any
response, a truncated body raises ``RemoteProtocolError`` partway through the stream, and an answer
held longer than the request's read timeout raises ``ReadTimeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx

from ._messages import Handler, Request, Response

API_HOST = "api.emulator.localhost"
CDN_HOST = "cdn.emulator.localhost"
IN_PROCESS_API_URL = f"http://{API_HOST}"
IN_PROCESS_CDN_URL = f"http://{CDN_HOST}"
_DRIP_TICK = 0.05


def _to_request(request: httpx.Request, body: bytes) -> Request:
    host = request.url.host
    origins = {API_HOST: "api", CDN_HOST: "cdn"}
    if host not in origins:
        raise httpx.ConnectError(
            f"the in-process emulator serves only {API_HOST} and {CDN_HOST}, not {host!r}",
            request=request,
        )
    target = request.url.raw_path.decode("ascii")
    return Request(
        method=request.method,
        target=target,
        headers={name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers.raw},
        body=body,
        origin=origins[host],
        api_url=IN_PROCESS_API_URL,
        cdn_url=IN_PROCESS_CDN_URL,
    )


def _read_timeout(request: httpx.Request) -> float | None:
    value = request.extensions.get("timeout", {}).get("read")
    return float(value) if value is not None else None


def _plan(response: Response) -> list[tuple[float, bytes]]:
    """The body as (pause before, bytes) steps; raises mid-way the way a socket would."""
    body = response.body[: response.truncate_at] if response.truncate_at is not None else response.body
    if response.bytes_per_second:
        step = max(1, int(response.bytes_per_second * _DRIP_TICK))
        return [(_DRIP_TICK if k else 0.0, body[k : k + step]) for k in range(0, len(body), step)]
    return [(0.0, body)]


def _truncation_error(response: Response, request: httpx.Request) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(
        "peer closed connection without sending complete message body: "
        f"received {response.truncate_at} bytes, expected {len(response.body)}",
        request=request,
    )


class _Stream(httpx.AsyncByteStream, httpx.SyncByteStream):
    """A streamed answer (``Response.stream``): waits are slept, a wait longer than the request's
    read timeout raises ``ReadTimeout`` as a silent socket would."""

    def __init__(self, response: Response, request: httpx.Request) -> None:
        assert response.stream is not None
        self._steps = response.stream
        self._request = request
        self._read_timeout = _read_timeout(request)

    def _too_long(self, pause: float) -> bool:
        return self._read_timeout is not None and pause > self._read_timeout

    def _timeout(self) -> httpx.ReadTimeout:
        return httpx.ReadTimeout("timed out waiting for the next streamed chunk", request=self._request)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        steps = self._steps()
        try:
            for step in steps:
                if isinstance(step, (int, float)):
                    await asyncio.sleep(min(step, self._read_timeout or step))
                    if self._too_long(step):
                        raise self._timeout()
                elif step:
                    yield step
        finally:
            steps.close()

    def __iter__(self) -> Iterator[bytes]:
        steps = self._steps()
        try:
            for step in steps:
                if isinstance(step, (int, float)):
                    time.sleep(min(step, self._read_timeout or step))
                    if self._too_long(step):
                        raise self._timeout()
                elif step:
                    yield step
        finally:
            steps.close()


class _Body(httpx.AsyncByteStream, httpx.SyncByteStream):
    def __init__(self, response: Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request
        self._read_timeout = _read_timeout(request)

    def _check(self, pause: float) -> None:
        if self._read_timeout is not None and pause > self._read_timeout:
            raise httpx.ReadTimeout("timed out waiting for the next body chunk", request=self._request)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for pause, chunk in _plan(self._response):
            if pause:
                await asyncio.sleep(min(pause, self._read_timeout or pause))
                self._check(pause)
            yield chunk
        if self._response.truncate_at is not None:
            raise _truncation_error(self._response, self._request)

    def __iter__(self) -> Iterator[bytes]:
        for pause, chunk in _plan(self._response):
            if pause:
                time.sleep(min(pause, self._read_timeout or pause))
                self._check(pause)
            yield chunk
        if self._response.truncate_at is not None:
            raise _truncation_error(self._response, self._request)


def _headers(response: Response) -> list[tuple[str, str]]:
    return [*response.headers, ("Content-Length", str(len(response.body)))]


def _before_answer(response: Response, request: httpx.Request) -> float:
    """How long to wait before answering; raises ReadTimeout/RemoteProtocolError after waiting."""
    if response.reset:
        return 0.0
    timeout = _read_timeout(request)
    if timeout is not None and response.delay > timeout:
        return timeout
    return response.delay


def _finish(response: Response, request: httpx.Request) -> httpx.Response:
    if response.reset:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
    timeout = _read_timeout(request)
    if timeout is not None and response.delay > timeout:
        raise httpx.ReadTimeout("timed out waiting for the answer", request=request)
    if response.stream is not None:
        return httpx.Response(response.status, headers=response.headers, stream=_Stream(response, request),
                              request=request)
    return httpx.Response(
        response.status, headers=_headers(response), stream=_Body(response, request), request=request
    )


class AsyncEmulatorTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=emu.transport(), base_url=emu.in_process_base_url)``."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        emulated = _to_request(request, await request.aread())
        if emulated.origin == "cdn":
            # Rendering a picture takes tens of milliseconds: keep the event loop free meanwhile.
            response = await asyncio.to_thread(self._handler.handle, emulated)
        else:
            response = self._handler.handle(emulated)
        wait = _before_answer(response, request)
        if wait > 0:
            await asyncio.sleep(wait)
        return _finish(response, request)


class SyncEmulatorTransport(httpx.BaseTransport):
    """``httpx.Client(transport=emu.sync_transport(), base_url=emu.in_process_base_url)``."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._handler.handle(_to_request(request, request.read()))
        wait = _before_answer(response, request)
        if wait > 0:
            time.sleep(wait)
        return _finish(response, request)
