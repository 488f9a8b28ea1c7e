"""The fault switches: everything a real provider (or the proxy in front of it) does to a client.

Counted switches (``rate_limit_submits``, ``lose_submit_answers``, ...) fire on the next k matching
requests and count down; rates are drawn from the emulator's seeded RNG so a run is reproducible.
The defaults are a well-behaved provider speaking the documented contract (API.md sections 1-6) in
the first variant it names; ``dialect``, ``idempotency`` and the switches after them serve what
section 7 says the provider really does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

POLL_FAULT_KINDS = ("500", "503", "html502", "429", "timeout", "reset")
LOSE_MODES = ("reset", "html502", "timeout")
RETRY_AFTER_FORMATS = ("seconds", "http-date")
SUBMIT_ENVELOPES = ("list", "object", "object-id", "code-success")
URL_FORMATS = ("list", "string")
MULTI_URLS = ("per-item", "one-item")
CDN_BODIES = ("image", "bomb", "huge", "not-image")
DIALECTS = ("documented", "wild")
IDEMPOTENCY_MODES = ("always", "versioned", "never")
STATUS_CASES = ("lower", "upper", "title")
BALANCE_ANSWERS = ("normal", "unlimited", "token-not-found")

_COUNTS = (
    "rate_limit_submits",
    "rate_limit_polls",
    "lose_submit_answers",
    "cdn_truncate",
    "unknown_status",
    "malformed_json",
    "error_in_200",
    "idempotency_in_progress",
    "idempotency_indeterminate",
    "idempotency_unavailable",
)
_RATES = ("poll_fault_rate", "fail_rate", "cancel_rate")
_CHOICES = {
    "retry_after_format": RETRY_AFTER_FORMATS,
    "lose_mode": LOSE_MODES,
    "submit_envelope": SUBMIT_ENVELOPES,
    "url_format": URL_FORMATS,
    "multi_url": MULTI_URLS,
    "cdn_body": CDN_BODIES,
    "dialect": DIALECTS,
    "idempotency": IDEMPOTENCY_MODES,
    "status_case": STATUS_CASES,
    "balance_answer": BALANCE_ANSWERS,
}
_FLAGS = ("versioned_answers", "submit_500_for_bad_params", "indeterminate_creates_task")
_MODEL_LISTS = ("sync_models", "extra_models")


@dataclass
class Faults:
    """Switches that make the emulator misbehave the way real deployments do.

    Counted switches: the next k matching requests misbehave, then the count is back to 0.
    """

    # the next k submit attempts / polls answer 429 rate_limit_error with Retry-After
    rate_limit_submits: int = 0
    rate_limit_polls: int = 0
    retry_after: float = 1.0
    retry_after_format: str = "seconds"
    # random poll faults, drawn per poll from the seeded RNG
    poll_fault_rate: float = 0.0
    poll_fault_kinds: tuple[str, ...] = POLL_FAULT_KINDS
    # how long a "timeout" answer is held back (longer than the client's read timeout)
    slow_seconds: float = 5.0
    # the next k submits create (and will bill) the task, but the answer never arrives intact
    lose_submit_answers: int = 0
    lose_mode: str = "reset"
    # CDN misbehaviour
    cdn_truncate: int = 0
    cdn_delay: float = 0.0
    cdn_bytes_per_second: float | None = None
    cdn_body: str = "image"
    # task outcomes
    moderation_words: tuple[str, ...] = ("FAIL_MODERATION",)
    fail_rate: float = 0.0
    cancel_rate: float = 0.0
    # protocol oddities
    unknown_status: int = 0
    malformed_json: int = 0
    submit_envelope: str = "list"
    url_format: str = "list"
    multi_url: str = "per-item"
    # The dialect of API.md section 7 ("wild"): statuses submitted/queued/in_progress, string error
    # codes on failed tasks, cost and credits_cost while pending, more models listed and accepted,
    # and bad submit parameters answered 500 build_request_failed (as if submit_500_for_bad_params).
    dialect: str = "documented"
    # Whether the Idempotency-Key is honoured: on every submit, only on submits that carry
    # X-APIMart-Response-Version (section 7.1), or never (and then the versioned contract is unknown).
    idempotency: str = "always"
    # A submit carrying X-APIMart-Response-Version is answered 202 with the object envelope, the
    # version response header and Idempotency-Replayed on replays.
    versioned_answers: bool = True
    status_case: str = "lower"
    # Models answered synchronously (data.object generation.result, images ready at once).
    sync_models: tuple[str, ...] = ()
    # More model ids listed by /v1/models and accepted on submit with the universal checks only.
    extra_models: tuple[str, ...] = ()
    # The next k API error answers arrive as HTTP 200 with {"code": <status>, "error": {...}}.
    error_in_200: int = 0
    balance_answer: str = "normal"
    submit_500_for_bad_params: bool = False
    # Idempotency conflicts, on versioned submits with a key: in_progress creates (and bills) the task
    # and answers 409 with Retry-After; indeterminate answers 409 and creates the task only if
    # indeterminate_creates_task; unavailable answers 503 and creates nothing.
    idempotency_in_progress: int = 0
    idempotency_indeterminate: int = 0
    indeterminate_creates_task: bool = True
    idempotency_unavailable: int = 0

    def __post_init__(self) -> None:
        # Validate eagerly: a typo in a test's fault switch must fail loudly, not silently do nothing.
        for name in _COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"fault {name} must be a count >= 0, got {value!r}")
        for name in _RATES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"fault {name} must be a fraction from 0 to 1, got {value!r}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"fault {name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"fault {name} must be true or false, got {getattr(self, name)!r}")
        for name in _MODEL_LISTS:
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(m, str) and m.strip() for m in value):
                raise ValueError(f"fault {name} must be a list of model ids, got {value!r}")
            setattr(self, name, tuple(value))
        for name in ("retry_after", "slow_seconds", "cdn_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"fault {name} must be seconds >= 0, got {value!r}")
        bps = self.cdn_bytes_per_second
        if bps is not None and (isinstance(bps, bool) or not isinstance(bps, (int, float)) or bps <= 0):
            raise ValueError(f"fault cdn_bytes_per_second must be > 0 or None, got {bps!r}")
        # JSON gives lists; keep tuples so the dataclass stays hashable-looking and comparable.
        self.poll_fault_kinds = tuple(self.poll_fault_kinds)
        self.moderation_words = tuple(self.moderation_words)
        bad = [kind for kind in self.poll_fault_kinds if kind not in POLL_FAULT_KINDS]
        if bad or not self.poll_fault_kinds:
            raise ValueError(f"poll_fault_kinds must be a non-empty subset of {POLL_FAULT_KINDS}")
        if not all(isinstance(word, str) and word for word in self.moderation_words):
            raise ValueError("moderation_words must be non-empty strings")
        if self.fail_rate + self.cancel_rate > 1:
            raise ValueError("fail_rate + cancel_rate must not exceed 1")
        if self.url_format == "string" and self.multi_url == "one-item":
            # A plain-string url can carry one URL only: that combination would drop images.
            raise ValueError('url_format="string" cannot carry several URLs in one item')

    @property
    def bad_params_answer_500(self) -> bool:
        """Whether a submit refused for a bad parameter answers 500 build_request_failed."""
        return self.submit_500_for_bad_params or self.dialect == "wild"

    def replace(self, **switches: Any) -> Faults:
        """A copy with some switches changed; unknown names raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(switches) - known)
        if unknown:
            raise ValueError(f"unknown fault switch(es) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **switches)

    def to_json(self) -> dict[str, Any]:
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
        }
