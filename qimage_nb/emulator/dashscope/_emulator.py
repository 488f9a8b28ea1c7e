"""``DashScopeEmulator``: the shared ``HostEmulator`` lifecycle (two loopback origins, in-process
transports, fault switches, counters) serving the DashScope host instead of the seed API.

A subclass rather than a copy: start/stop, the servers and the transports are written once; only the
handler and where the API lives (``/api/v1``) differ.
"""

from __future__ import annotations

from typing import Any

from .._faults import Faults
from .._host import DEFAULT_KEY, HostEmulator
from .._state import PICKUP_FRACTION
from .._transport import IN_PROCESS_API_URL, IN_PROCESS_CDN_URL
from ._handler import DashScopeHandler
from ._wire import API_PREFIX


class DashScopeEmulator(HostEmulator):
    """A stand-in for Alibaba Model Studio (DashScope) serving Qwen Image: the sync
    multimodal-generation call, the async text2image task API with polling and cancel, and a CDN
    of signed result URLs whose pictures are stamped EMULATOR.

    ``base_url`` ends in ``/api/v1``, like ``DASHSCOPE_HTTP_BASE_URL``. The control endpoints
    (``/_emulator/counters``, ``/faults``, ``/reset``, ``/timeline``) live at ``origin``.

    Parameters
    ----------
    api_key:
        The only Bearer key accepted (anything else: 401 InvalidApiKey).
    latency, jitter:
        Each generation takes ``latency + uniform(-jitter, +jitter)`` seconds (seeded by ``seed``);
        a sync call answers after it, an async task ends after it.
    max_concurrent:
        At most this many generations run at once; the rest wait (async: PENDING).
    queue:
        An async task waits PENDING for 0.5x to 1.5x this many seconds (each task its own draw),
        then RUNs for its whole duration and SUCCEEDs, with no progress along the way; its
        ``submit_time``, ``scheduled_time`` and ``end_time`` say when each happened. Default
        ``pickup * latency``.
    pickup:
        The mean queue as a share of ``latency`` when ``queue`` is not given.
    host, port, cdn_port:
        Where ``start()`` binds (port 0: a free port).
    faults:
        Initial :class:`Faults`; the switches that apply here are listed in the README.
    """

    in_process_base_url = IN_PROCESS_API_URL + API_PREFIX
    # Its own journal cache scope: the same request on the seed API's emulator made other pictures.
    cache_scope = "emulator:qimage_nb:dashscope"
    in_process_cdn_url = IN_PROCESS_CDN_URL
    handler_class = DashScopeHandler
    key_variable = "DASHSCOPE_API_KEY"
    base_url_variable = "DASHSCOPE_HTTP_BASE_URL"

    @classmethod
    def cli_options(cls, args: Any) -> dict[str, Any]:
        return {"queue": args.queue}

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_KEY,
        latency: float = 3.0,
        jitter: float = 1.0,
        seed: int = 0,
        max_concurrent: int | None = None,
        pickup: float = PICKUP_FRACTION,
        queue: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(api_key=api_key, latency=latency, jitter=jitter, seed=seed,
                         max_concurrent=max_concurrent, pickup=pickup, host=host, port=port,
                         cdn_port=cdn_port, faults=faults)
        if queue is not None:
            if not (queue >= 0 and queue < float("inf")):
                raise ValueError("queue must be a number of seconds >= 0")
            self._handler.queue = float(queue)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        where = self._base_url or "not started"
        return f"<DashScopeEmulator {where}{API_PREFIX if self._base_url else ''} latency={self._state.settings.latency}s>"

    @property
    def origin(self) -> str:
        """The API origin without a path, e.g. ``http://127.0.0.1:PORT`` (control endpoints)."""
        return super().base_url

    @property
    def base_url(self) -> str:
        """The API base over loopback, ``http://127.0.0.1:PORT/api/v1``."""
        return super().base_url + API_PREFIX

    def counters(self) -> dict[str, Any]:
        """A JSON-able snapshot of what clients did: requests_per_endpoint, api_requests,
        api_requests_without_valid_auth, polls, polls_per_task, images_billed, generations_billed,
        tasks, tasks_by_status (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELED), cdn_hits,
        cdn_hits_per_path, cdn_authorization_headers, faults_injected."""
        with self._state.lock:
            return self._handler.snapshot()  # type: ignore[attr-defined]
