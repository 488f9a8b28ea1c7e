"""The stdlib HTTP adapter: one ``ThreadingHTTPServer`` per origin (API and CDN on two loopback ports,
because the CDN must be a different origin), speaking HTTP/1.1 with keep-alive.

No web framework on purpose: faults need raw control of the socket (close without answering, send
half a body under a full Content-Length, drip bytes), which frameworks hide.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ._messages import Handler, Request, Response, error_response

# Bodies larger than this are refused unread (uploads are capped at 20 MB; leave room for framing).
MAX_REQUEST_BODY = 64 * 1024 * 1024
_DRIP_TICK = 0.05


class OriginServer(ThreadingHTTPServer):
    """Serves one origin ("api" or "cdn") from the shared handler; closes every connection on stop."""

    daemon_threads = True
    block_on_close = False  # stop() must not wait for a client's idle keep-alive connection
    # socketserver listens with a backlog of 5: a batch opening more connections at once would get
    # SYNs dropped and retried a second later. Real API front ends accept far more.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: Handler, origin: str) -> None:
        self.app = handler
        self.origin = origin
        self.api_url = self.cdn_url = ""  # filled in once both origins are bound
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RequestHandler)

    def process_request(self, request, client_address):  # type: ignore[override]
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[override]
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):  # type: ignore[override]
        # A client that hangs up (a status stream closed once it said COMPLETED, a pool shut down)
        # is not an emulator fault: no traceback on the terminal for it.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        # A pooled keep-alive connection must not keep talking to a stopped emulator.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.stopping.set()
        stopper = threading.Thread(target=self.shutdown)
        stopper.start()
        # serve_forever() checks for shutdown only when its select() wakes (every poll_interval);
        # a throwaway connection wakes it at once, so stop() is quick in a test suite.
        with contextlib.suppress(OSError):
            socket.create_connection(self.server_address[:2], timeout=0.5).close()
        stopper.join()
        self.close_connections()
        self.server_close()


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's
    # delayed ACK and every keep-alive request costs ~40 ms.
    disable_nagle_algorithm = True
    server: OriginServer
    timeout = 120  # idle keep-alive connections are dropped eventually

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass  # a test run or a notebook must not fill up with access logs

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_REQUEST_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        server = self.server
        try:
            body = self._read_body()
        except ValueError:
            self._send(error_response(400, "malformed request body framing", "invalid_request_error"))
            self.close_connection = True
            return
        if body is None:
            self.close_connection = True
            self._send(error_response(413, "Request body too large", "invalid_request_error", "file"))
            return
        request = Request(
            method=self.command,
            target=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            origin=server.origin,
            api_url=server.api_url,
            cdn_url=server.cdn_url,
        )
        try:
            self._send(server.app.handle(request))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client gave up (e.g. its read timeout fired)

    def _send(self, response: Response) -> None:
        stopping = self.server.stopping
        if response.delay > 0 and stopping.wait(response.delay):
            self.close_connection = True
            return
        if response.reset:
            # SO_LINGER 0: closing sends RST, so the client sees a reset, not a polite answer.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        if response.stream is not None:
            self._send_stream(response)
            return
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        body = response.body
        if response.truncate_at is not None:
            # The promised Content-Length stays; the connection closes partway through the body.
            body = body[: response.truncate_at]
            self.close_connection = True
        if response.bytes_per_second:
            step = max(1, int(response.bytes_per_second * _DRIP_TICK))
            for start in range(0, len(body), step):
                self.wfile.write(body[start : start + step])
                self.wfile.flush()
                if stopping.wait(_DRIP_TICK):
                    self.close_connection = True
                    return
        else:
            self.wfile.write(body)
        self.wfile.flush()

    def _send_stream(self, response: Response) -> None:
        """A body produced while it is sent, in HTTP/1.1 chunks; a stop or a client that hangs up
        ends it (the generator is closed, so it never runs on for nobody)."""
        assert response.stream is not None
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        stopping = self.server.stopping
        steps = response.stream()
        try:
            for step in steps:
                if isinstance(step, (int, float)):
                    if stopping.wait(step):
                        self.close_connection = True
                        return
                    continue
                if step:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(step), step))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            steps.close()
