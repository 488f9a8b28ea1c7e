"""``Emulator``: the seed host's emulator (APIMart's task API) on the shared ``HostEmulator``."""

from __future__ import annotations

from typing import Any

from .._host import DEFAULT_KEY, HostEmulator
from ._handler import Handler

__all__ = ["DEFAULT_KEY", "Emulator"]


class Emulator(HostEmulator):
    """A contract-exact stand-in for the Qwen Image 2.0 task API (``shared/API.md``).

    ``start()`` serves the API and its CDN on two loopback ports in daemon threads; ``transport()``
    serves the same state in-process without sockets. Nothing runs until you ask.

    Parameters
    ----------
    api_key:
        The only Bearer key accepted.
    latency, jitter:
        Each task takes ``latency + uniform(-jitter, +jitter)`` seconds (seeded by ``seed``).
    max_concurrent:
        At most this many tasks run at once; the rest wait ``pending`` in FIFO order.
    overstate:
        ``estimated_time`` is the real duration times this, as real providers overstate.
    pickup:
        The share of each run spent ``pending`` before progress starts (0: progress counts from
        the submit).
    balance, price_per_image:
        Starting balance and the price billed per image of each completed task.
    host, port, cdn_port:
        Where ``start()`` binds (port 0: a free port).
    faults:
        Initial :class:`Faults`; change them later with :meth:`set_faults`.
    """

    handler_class = Handler
    # The journal's cache scope for the in-kernel emulator (every instance, whatever its port):
    # not an http URL, so no real API's client can ever share it.
    cache_scope = "emulator:qimage_nb"
    key_variable = "QIMAGE_API_KEY"
    base_url_variable = "QIMAGE_BASE_URL"

    @classmethod
    def cli_options(cls, args: Any) -> dict[str, Any]:
        from .._faults import Faults

        return {"overstate": args.overstate, "faults": Faults(
            dialect=args.dialect, idempotency=args.idempotency, versioned_answers=args.versioned_answers,
            status_case=args.status_case, sync_models=tuple(args.sync_models),
            extra_models=tuple(args.extra_models), balance_answer=args.balance_answer,
            submit_500_for_bad_params=args.submit_500_for_bad_params,
        )}
