"""``FalEmulator``: the shared ``HostEmulator`` lifecycle (two loopback origins, in-process
transports, fault switches, counters) serving fal's queue API instead of the seed API."""

from __future__ import annotations

from typing import Any

from .._faults import Faults
from .._host import HostEmulator
from .._state import PICKUP_FRACTION
from ._handler import FalHandler
from ._wire import KEEPALIVE_SECONDS

# fal keys are "key id:key secret"; the SDK also builds one from FAL_KEY_ID and FAL_KEY_SECRET.
DEFAULT_FAL_KEY = "emulator-key-id:emulator-key-secret"


class FalEmulator(HostEmulator):
    """A stand-in for fal's queue (``queue.fal.run``) serving the Qwen Image apps
    (``fal-ai/qwen-image-2/{text-to-image,edit,pro/text-to-image,pro/edit}``,
    ``alibaba/qwen-image-3/{text-to-image,edit}``) and a media CDN whose pictures say EMULATOR.

    ``base_url`` stands for ``https://queue.fal.run``: submit to ``{base_url}/{app}``, then use the
    URLs the answer gives. The control endpoints (``/_emulator/counters``, ``/faults``, ``/reset``,
    ``/timeline``) live there too.

    Parameters
    ----------
    api_key:
        The only key accepted, sent as ``Authorization: Key <api_key>`` (anything else: 401).
    latency, jitter:
        Each request runs ``latency + uniform(-jitter, +jitter)`` seconds (seeded by ``seed``).
    max_concurrent:
        Requests run at once (fal: 2 to 40 per account); the rest wait IN_QUEUE with a position.
    pickup:
        The share of each run a request spends IN_QUEUE even when a runner is free.
    keepalive:
        Seconds between keepalive comments on a quiet status stream (fal: 15).
    host, port, cdn_port, faults:
        As for every emulator: where ``start()`` binds, and the initial :class:`Faults`.
    """

    cache_scope = "emulator:qimage_nb:fal"
    handler_class = FalHandler
    key_variable = "FAL_KEY"
    # fal's SDK puts https:// before FAL_QUEUE_RUN_HOST; qimage_nb keeps a scheme given with it.
    base_url_variable = "FAL_QUEUE_RUN_HOST"

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_FAL_KEY,
        latency: float = 3.0,
        jitter: float = 1.0,
        seed: int = 0,
        max_concurrent: int | None = None,
        pickup: float = PICKUP_FRACTION,
        keepalive: float = KEEPALIVE_SECONDS,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        if not keepalive > 0:
            raise ValueError("keepalive must be > 0 seconds")
        super().__init__(api_key=api_key, latency=latency, jitter=jitter, seed=seed,
                         max_concurrent=max_concurrent, pickup=pickup, host=host, port=port,
                         cdn_port=cdn_port, faults=faults)
        self._handler.keepalive = float(keepalive)  # type: ignore[attr-defined]

    def counters(self) -> dict[str, Any]:
        """A JSON-able snapshot of what clients did: requests_per_endpoint, api_requests,
        api_requests_without_valid_auth, polls, polls_per_task, streams, cancels (queued, running,
        ALREADY_COMPLETED, NOT_FOUND), requests_billed, refusals_billed (fal bills a 422),
        images_billed, cost_billed, tasks, tasks_by_status (IN_QUEUE, IN_PROGRESS, COMPLETED),
        cdn_hits, cdn_hits_per_path, cdn_authorization_headers, faults_injected."""
        with self._state.lock:
            return self._handler.snapshot()  # type: ignore[attr-defined]
