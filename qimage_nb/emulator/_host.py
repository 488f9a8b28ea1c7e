"""``HostEmulator``: what every host's emulator shares: state, fault switches, two loopback origins
(API and CDN) in daemon threads, in-process transports, counters. A host's emulator subclasses it and
names its handler; start/stop, the servers and the transports are written once."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from typing_extensions import Self

from ._faults import Faults
from ._messages import Handler
from ._server import OriginServer
from ._state import PICKUP_FRACTION, Settings, State
from ._transport import (
    IN_PROCESS_API_URL,
    IN_PROCESS_CDN_URL,
    AsyncEmulatorTransport,
    SyncEmulatorTransport,
)

DEFAULT_KEY = "sk-emulator-local"


def _origin(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class HostEmulator:
    """The lifecycle every host's emulator shares; a subclass sets ``handler_class`` (and its own
    docstring, cache scope and counters). See ``qimage_nb.emulator.Emulator`` for the parameters."""

    # The host's request handler: built with the shared State, it answers API and CDN requests.
    handler_class: ClassVar[Any]

    in_process_base_url = IN_PROCESS_API_URL
    in_process_cdn_url = IN_PROCESS_CDN_URL
    cache_scope: ClassVar[str]  # the journal's cache scope of this host's in-kernel emulator
    # The variables the host's own tools read for its key and address (``use:`` of the command line).
    key_variable: ClassVar[str]
    base_url_variable: ClassVar[str]

    @classmethod
    def cli_options(cls, args: Any) -> dict[str, Any]:
        """This host's own ``python -m qimage_nb.emulator`` options, as constructor arguments."""
        return {}

    def use_line(self) -> str:
        """How to point a client at this running emulator: ``VAR=url KEY_VAR=key``."""
        return f"{self.base_url_variable}={self.base_url} {self.key_variable}={self.api_key}"

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_KEY,
        latency: float = 3.0,
        jitter: float = 1.0,
        seed: int = 0,
        max_concurrent: int | None = None,
        overstate: float = 1.5,
        pickup: float = PICKUP_FRACTION,
        balance: float = 100.0,
        price_per_image: float = 0.006,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        if latency < 0 or jitter < 0:
            raise ValueError("latency and jitter must be >= 0 seconds")
        if not 0 <= pickup < 1:
            raise ValueError("pickup must be a share of the run in [0, 1)")
        if not overstate > 0:
            raise ValueError("overstate must be > 0 (estimated_time = duration x overstate)")
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("max_concurrent must be None or >= 1")
        settings = Settings(api_key, float(latency), float(jitter), seed, max_concurrent,
                            float(overstate), float(balance), float(price_per_image), float(pickup))
        # A copy: counted switches count down, and the caller's Faults must not change under it.
        self._state = State(settings, faults=dataclasses.replace(faults) if faults is not None else Faults())
        self._handler: Handler = self.handler_class(self._state)
        self._handler.cdn_origins.add(IN_PROCESS_CDN_URL)
        self.host, self.port, self.cdn_port = host, port, cdn_port
        self._servers: list[OriginServer] = []
        self._threads: list[threading.Thread] = []
        self._base_url: str | None = None
        self._cdn_url: str | None = None

    # -- lifecycle --

    def start(self) -> Self:
        """Bind both origins and serve in background daemon threads (idempotent)."""
        if self._servers:
            return self
        api = OriginServer((self.host, self.port), self._handler, "api")
        try:
            cdn = OriginServer((self.host, self.cdn_port), self._handler, "cdn")
        except OSError:
            api.server_close()
            raise
        base_url, cdn_url = _origin(self.host, api.server_address[1]), _origin(self.host, cdn.server_address[1])
        for server in (api, cdn):
            server.api_url, server.cdn_url = base_url, cdn_url
        self._handler.cdn_origins.add(cdn_url)
        self._base_url, self._cdn_url = base_url, cdn_url
        self._servers = [api, cdn]
        self._threads = [
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                             name=f"qimage-emulator-{server.origin}", daemon=True)
            for server in self._servers
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections; state survives (the transports still work)."""
        # Each server's shutdown waits for its poll loop to notice: stop both at once.
        stoppers = [threading.Thread(target=server.stop) for server in self._servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []
        self._base_url = self._cdn_url = None

    @property
    def running(self) -> bool:
        return bool(self._servers)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._base_url or "not started"
        return f"<{type(self).__name__} {where} latency={self._state.settings.latency}s>"

    # -- where and who --

    @property
    def base_url(self) -> str:
        """The API origin over loopback, e.g. ``http://127.0.0.1:PORT``."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not started: call start() (or use in_process_base_url)")
        return self._base_url

    @property
    def cdn_url(self) -> str:
        """The CDN origin (another port: a different origin from the API)."""
        if self._cdn_url is None:
            raise RuntimeError("the emulator is not started: call start() (or use in_process_cdn_url)")
        return self._cdn_url

    @property
    def api_key(self) -> str:
        return self._state.settings.api_key

    @property
    def latency(self) -> float:
        """Seconds a task takes (before jitter): what ``PollPolicy.for_latency`` paces polls by."""
        return self._state.settings.latency

    # -- observing and steering --

    def counters(self) -> dict[str, Any]:
        """A JSON-able snapshot of what clients did: submit_attempts, submits_accepted (submits that
        created a task, whatever the answer said), submit_replays, submits_rejected (error answers
        that created nothing), submits_without_idempotency_key, submits_with_version_header,
        submits_per_key and tasks_per_key (by Idempotency-Key), polls, polls_per_task, uploads,
        balance_reads, tasks_billed, images_billed, cdn_hits, cdn_hits_per_path,
        cdn_authorization_headers, api_requests, api_requests_without_valid_auth, faults_injected,
        tasks, tasks_by_status, remain_balance, used_balance."""
        with self._state.lock:
            return self._state.snapshot()

    @property
    def faults(self) -> Faults:
        """The live fault switches (counted switches count down as they fire)."""
        return self._state.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        with self._state.lock:
            self._state.faults = dataclasses.replace(faults)

    def set_faults(self, **switches: Any) -> Faults:
        """Change some fault switches, e.g. ``set_faults(rate_limit_polls=2, retry_after=0.1)``."""
        with self._state.lock:
            self._state.faults = self._state.faults.replace(**switches)
            return self._state.faults

    def reset(self) -> None:
        """Forget tasks, uploads, idempotency keys, counters and billing; restore the faults the
        emulator was created with."""
        self._handler.reset()

    # -- in-process --

    def transport(self) -> AsyncEmulatorTransport:
        """An ``httpx.AsyncBaseTransport`` serving this emulator without sockets (start() not needed)."""
        return AsyncEmulatorTransport(self._handler)

    def sync_transport(self) -> SyncEmulatorTransport:
        """The same as :meth:`transport` for ``httpx.Client``."""
        return SyncEmulatorTransport(self._handler)
