"""``python -m qimage_nb.emulator``: serve the emulator until Ctrl-C or SIGTERM.

The first line printed is the API base URL (scripts read it to find a ``--port 0`` server).
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
from collections.abc import Sequence

# The switch names and choices only: importing _faults loads nothing heavy.
from . import HOSTS, emulator_class
from ._faults import BALANCE_ANSWERS, DIALECTS, IDEMPOTENCY_MODES, STATUS_CASES

# The seed host's emulator answered to "qimage" before the hosts had names of their own.
_ALIASES = {"qimage": "apimart"}


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qimage_nb.emulator",
        description="Serve the offline emulator of the Qwen Image 2.0 task API (API and CDN origins).",
        epilog="Prints the API base URL on the first line, then the CDN URL, the key and how to "
        "point qimage_nb at it.",
    )
    parser.add_argument("--provider", choices=(*HOSTS, *_ALIASES), default="apimart",
                        help="which host to emulate: the APIMart API's Qwen Image task API (apimart, the "
                        "default; also 'qimage'), Alibaba Model Studio (dashscope, served under /api/v1), "
                        "fal's queue (fal), or Replicate (replicate)")
    parser.add_argument("--port", type=int, default=0, help="API port (default 0: any free port)")
    parser.add_argument("--cdn-port", type=int, default=0, help="CDN port (default 0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--public", action="store_true",
                        help="allow a non-loopback --host (the emulator has a well-known key and "
                        "unauthenticated control endpoints)")
    parser.add_argument("--latency", type=float, default=3.0, help="seconds per task (default 3)")
    parser.add_argument("--jitter", type=float, default=1.0, help="+/- seconds of random variation (default 1)")
    parser.add_argument("--key", default=None,
                        help="the API key to accept (default: each host's well-known emulator key)")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="tasks processed at once; the rest wait pending (default: unlimited)")
    parser.add_argument("--seed", type=int, default=0, help="seed for durations and random faults")
    parser.add_argument("--overstate", type=float, default=1.5,
                        help="estimated_time is the real duration times this (default 1.5)")
    parser.add_argument("--pickup", type=float, default=0.1,
                        help="share of each run spent pending before progress starts (default 0.1)")
    parser.add_argument("--queue", type=float, default=None,
                        help="dashscope: seconds an async task waits PENDING (each draws 0.5x to 1.5x) "
                        "before it runs for its whole length (default: pickup x latency)")
    wire = parser.add_argument_group(
        "deployment", "which of API.md's variants to serve (default: the documented contract, sections 1-6)")
    wire.add_argument("--dialect", choices=DIALECTS, default="documented",
                      help="wild: what the provider really serves (section 7): statuses submitted/queued/"
                      "in_progress, string error codes, cost while pending, more models, 500 for bad "
                      "submit parameters")
    wire.add_argument("--idempotency", choices=IDEMPOTENCY_MODES, default="always",
                      help="when the Idempotency-Key is honoured: always, only with "
                      "X-APIMart-Response-Version (versioned), or never (default always)")
    wire.add_argument("--no-versioned-answers", dest="versioned_answers", action="store_false",
                      help="answer versioned submits in the documented shape (no 202, no version header)")
    wire.add_argument("--status-case", choices=STATUS_CASES, default="lower",
                      help="letter case of status words (default lower)")
    wire.add_argument("--sync-model", dest="sync_models", action="append", default=[], metavar="MODEL",
                      help="answer submits for MODEL synchronously (generation.result); repeatable")
    wire.add_argument("--extra-model", dest="extra_models", action="append", default=[], metavar="MODEL",
                      help="list MODEL in /v1/models and accept it with the universal checks; repeatable")
    wire.add_argument("--balance-answer", choices=BALANCE_ANSWERS, default="normal",
                      help="unlimited: remain_balance -1; token-not-found: HTTP 200 success:false")
    wire.add_argument("--submit-500-for-bad-params", action="store_true",
                      help="refuse a bad submit parameter with 500 build_request_failed (implied by "
                      "--dialect wild)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not _is_loopback(args.host) and not args.public:
        _parser().error(
            f"--host {args.host} is not a loopback address: anyone on the network could use the "
            "emulator's well-known key and its unauthenticated /_emulator/ control endpoints. "
            "Pass --public if that is really what you want."
        )
    common = dict(latency=args.latency, jitter=args.jitter, seed=args.seed,
                  max_concurrent=args.max_concurrent, pickup=args.pickup, host=args.host,
                  port=args.port, cdn_port=args.cdn_port)
    if args.key is not None:
        common["api_key"] = args.key
    host = emulator_class(_ALIASES.get(args.provider, args.provider))
    try:
        emulator = host(**common, **host.cli_options(args)).start()
    except (OSError, ValueError) as exc:
        print(f"error: cannot start the emulator: {exc}", file=sys.stderr)
        return 1
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(emulator.base_url)
    print(f"CDN:  {emulator.cdn_url}")
    print(f"key:  {emulator.api_key}")
    print(f"use:  {emulator.use_line()}")
    print("Ctrl-C to stop.", flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    emulator.stop()
    print("emulator stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
