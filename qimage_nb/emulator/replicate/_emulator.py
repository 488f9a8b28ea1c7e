"""``ReplicateEmulator``: the shared ``HostEmulator`` lifecycle (two loopback origins, in-process
transports, fault switches, counters) serving Replicate's predictions API instead of the seed API."""

from __future__ import annotations

from typing import Any

from .._faults import Faults
from .._host import HostEmulator
from .._state import PICKUP_FRACTION
from ._handler import ReplicateHandler
from ._wire import RETENTION_SECONDS

DEFAULT_REPLICATE_TOKEN = "r8_emulator_local_token"


class ReplicateEmulator(HostEmulator):
    """A stand-in for Replicate (``api.replicate.com``) serving ``qwen/qwen-image-2``,
    ``qwen/qwen-image-2-pro``, ``alibaba/qwen-image-3`` and ``alibaba/qwen-image-3-pro``, and a delivery
    CDN whose pictures say EMULATOR.

    ``base_url`` stands for ``https://api.replicate.com`` (the SDK's ``REPLICATE_BASE_URL``). The
    control endpoints (``/_emulator/counters``, ``/faults``, ``/reset``, ``/timeline``) live there too.

    Parameters
    ----------
    api_key:
        The only token accepted, as ``Authorization: Bearer <token>`` (anything else: 401).
    latency, jitter:
        Each prediction runs ``latency + uniform(-jitter, +jitter)`` seconds (seeded by ``seed``).
    max_concurrent, pickup:
        Predictions run at once (the rest stay ``starting``), and the share of each run spent starting.
    retention:
        Seconds after a prediction ends before its input, output, logs and files are removed
        (Replicate: an hour).
    host, port, cdn_port, faults:
        As for every emulator: where ``start()`` binds, and the initial :class:`Faults`.
    """

    cache_scope = "emulator:qimage_nb:replicate"
    handler_class = ReplicateHandler
    key_variable = "REPLICATE_API_TOKEN"
    base_url_variable = "REPLICATE_BASE_URL"

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_REPLICATE_TOKEN,
        latency: float = 3.0,
        jitter: float = 1.0,
        seed: int = 0,
        max_concurrent: int | None = None,
        pickup: float = PICKUP_FRACTION,
        retention: float = RETENTION_SECONDS,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        if not retention > 0:
            raise ValueError("retention must be > 0 seconds")
        super().__init__(api_key=api_key, latency=latency, jitter=jitter, seed=seed,
                         max_concurrent=max_concurrent, pickup=pickup, host=host, port=port,
                         cdn_port=cdn_port, faults=faults)
        self._handler.retention = float(retention)  # type: ignore[attr-defined]

    def counters(self) -> dict[str, Any]:
        """A JSON-able snapshot of what clients did: requests_per_endpoint, api_requests,
        api_requests_without_valid_auth, polls, polls_per_task, held_creates (finished, ran_out),
        predictions_billed, images_billed, tasks, tasks_by_status (starting, processing, succeeded,
        failed, canceled), cdn_hits, cdn_hits_per_path, cdn_authorization_headers, faults_injected."""
        with self._state.lock:
            return self._handler.snapshot()  # type: ignore[attr-defined]
