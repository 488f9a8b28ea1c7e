"""The emulator's memory: tasks and their simulated lifecycle, balance, uploads, idempotency keys,
counters and the fault switches, behind one lock (the HTTP server answers from many threads).

Nothing ticks: a task's whole timeline (queue slot, pickup, end, outcome) is fixed when it is
created, and its status is read off the monotonic clock whenever someone asks. That keeps the
emulator deterministic per seed and free of background threads.
"""

from __future__ import annotations

import heapq
import math
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._faults import Faults

# Default share of a task's run spent "pending" (picked up from the queue) before "processing"
# starts: real providers answer pending for a moment even when idle.
PICKUP_FRACTION = 0.1
# Failed and cancelled tasks stop halfway through, like a real refusal or a cancellation.
ABORT_FRACTION = 0.5
MIN_DURATION = 0.05
RESULT_LIFETIME = 24 * 3600  # expires_at: API.md's shortest documented lifetime
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_task_id(now: float, prefix: str = "task_01") -> str:
    """``task_01`` + 23 uppercase alphanumerics: a millisecond time part then randomness, ULID-style,
    so ids sort by creation and never repeat across emulator restarts (a journal may outlive one)."""
    millis = int(now * 1000)
    stamp = "".join(_CROCKFORD[(millis >> (5 * k)) & 31] for k in reversed(range(10)))
    return prefix + stamp + "".join(secrets.choice(_CROCKFORD) for _ in range(13))


@dataclass
class Task:
    id: str
    request: dict[str, Any]
    created_wall: float
    created_mono: float
    slot_start: float  # when a worker takes it (later than created when queued)
    pickup_end: float  # pending -> processing
    full_end: float  # when it would complete (progress scale)
    end: float  # when it becomes terminal (earlier than full_end when it fails)
    outcome: str  # completed | failed | cancelled
    error: dict[str, Any] | None
    idempotency_key: str | None  # as sent, honoured or not
    pixels: tuple[int, int]
    failure: str | None = None  # moderation | upstream: the dialect words the error
    sync: bool = False  # answered at once as a generation.result: no task to poll
    billed: bool = False

    @property
    def n(self) -> int:
        return int(self.request["n"])


@dataclass
class Upload:
    data: bytes
    content_type: str
    filename: str
    created_at: int


@dataclass
class Settings:
    api_key: str
    latency: float
    jitter: float
    seed: int
    max_concurrent: int | None
    overstate: float
    balance: float
    price_per_image: float
    pickup: float = PICKUP_FRACTION


def _new_counters() -> dict[str, Any]:
    return {
        "api_requests": 0,
        "api_requests_without_valid_auth": 0,
        "submit_attempts": 0,
        "submits_accepted": 0,  # submits that created a task, whatever their answer said
        "submit_replays": 0,
        "submits_rejected": 0,  # error answers that created nothing
        "submits_without_idempotency_key": 0,
        "submits_with_version_header": 0,
        "submits_per_key": Counter(),
        "tasks_per_key": Counter(),
        "tasks_billed": 0,
        "polls": 0,
        "polls_per_task": Counter(),
        "uploads": 0,
        "balance_reads": 0,
        "images_billed": 0,
        "cdn_hits": 0,
        "cdn_hits_per_path": Counter(),
        "cdn_authorization_headers": 0,
        "faults_injected": Counter(),
    }


@dataclass
class State:
    """Everything mutable. Callers hold ``lock`` for compound operations; methods here assume it."""

    settings: Settings
    faults: Faults = field(default_factory=Faults)
    lock: threading.RLock = field(default_factory=threading.RLock)
    clock: Any = time.monotonic
    wall: Any = time.time

    def __post_init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.tasks: dict[str, Task] = {}
            self.in_flight: list[Task] = []  # not yet terminal: to bill or to reserve balance for
            self.idempotency: dict[str, str] = {}  # honoured key -> task id
            self.key_bodies: dict[str, str] = {}  # honoured key -> fingerprint of its request body
            self.uploads: dict[str, Upload] = {}
            self.counters = _new_counters()
            self.used_balance = 0.0
            self.sequence = 0
            self.fault_rng = random.Random(f"{self.settings.seed}/faults")
            self.renders: dict[tuple[str, int], bytes] = {}
            self.render_locks: dict[tuple[str, int], threading.Lock] = {}
            # Free-at times of the worker slots: FIFO queueing is exact because every run length
            # is known at creation.
            slots = self.settings.max_concurrent
            self.slots: list[float] = [0.0] * slots if slots else []

    # -- faults --

    def take(self, switch: str) -> bool:
        """Consume one shot of a counted fault switch."""
        left = getattr(self.faults, switch)
        if left <= 0:
            return False
        setattr(self.faults, switch, left - 1)
        return True

    def injected(self, kind: str) -> None:
        self.counters["faults_injected"][kind] += 1

    # -- tasks --

    def create_task(
        self,
        request: dict[str, Any],
        idempotency_key: str | None,
        *,
        pixels: tuple[int, int],
        register: bool = True,
        fingerprint: str = "",
        sync: bool = False,
        queue: float | None = None,
    ) -> Task:
        """A new task, its whole timeline drawn now; ``register`` records the key for replays.

        ``queue``: the task waits pending for its own draw of 0.5x to 1.5x this many seconds, then
        runs for its whole duration (a host whose queue and run are separate, like DashScope's);
        None: pending is the first ``settings.pickup`` share of the run (the seed's API)."""
        settings, faults = self.settings, self.faults
        now_mono, now_wall = self.clock(), self.wall()
        self.sequence += 1
        # One RNG per task, keyed by seed and sequence: the timeline of task k does not depend on
        # how many polls or faults happened before it.
        rng = random.Random(f"{settings.seed}/task/{self.sequence}")
        duration = max(MIN_DURATION, settings.latency + rng.uniform(-settings.jitter, settings.jitter))
        draw = rng.random()
        prompt_folded = request["prompt"].casefold()
        outcome, error, failure = "completed", None, None
        if any(word.casefold() in prompt_folded for word in faults.moderation_words):
            outcome = "failed"
            error = {
                "code": 400,
                "message": "Input data may contain inappropriate content",
                "type": "content_policy_violation",
            }
            failure = "moderation"
            self.injected("moderation")
        elif draw < faults.fail_rate:
            outcome = "failed"
            error = {"code": 500, "message": "The image generation failed upstream", "type": "server_error"}
            failure = "upstream"
            self.injected("fail")
        elif draw < faults.fail_rate + faults.cancel_rate:
            outcome = "cancelled"
            self.injected("cancel")
        run = duration if outcome == "completed" else duration * ABORT_FRACTION
        # Drawn after the duration and outcome, so a queue leaves every other draw as it was.
        waits = 0.0 if queue is None else queue * (0.5 + rng.random())
        start = now_mono
        if self.slots:
            start = max(now_mono, heapq.heappop(self.slots))
            heapq.heappush(self.slots, start + waits + run)
        pickup_end = start + waits if queue is not None else min(start + duration * settings.pickup, start + run)
        task = Task(
            id=new_task_id(now_wall, "gen_01" if sync else "task_01"),
            request=request,
            created_wall=now_wall,
            created_mono=now_mono,
            slot_start=start,
            pickup_end=pickup_end,  # a refusal can come before it
            full_end=start + waits + duration,
            end=start + waits + run,
            outcome=outcome,
            error=error,
            idempotency_key=idempotency_key,
            pixels=pixels,
            failure=failure,
            sync=sync,
        )
        self.tasks[task.id] = task
        self.in_flight.append(task)
        if idempotency_key is not None:
            self.counters["tasks_per_key"][idempotency_key] += 1
            if register:
                self.idempotency[idempotency_key] = task.id
                self.key_bodies[idempotency_key] = fingerprint
        return task

    def status_of(self, task: Task, now: float | None = None) -> tuple[str, int]:
        now = self.clock() if now is None else now
        if now >= task.end:
            return task.outcome, 100 if task.outcome == "completed" else self._progress(task, task.end)
        if now < task.pickup_end:
            return "pending", 0
        return "processing", self._progress(task, now)

    @staticmethod
    def _progress(task: Task, now: float) -> int:
        # Linear in processing time, and never 100 before the task really is complete.
        span = task.full_end - task.pickup_end
        return max(0, min(99, int(100 * (now - task.pickup_end) / span))) if span > 0 else 99

    def estimated_time(self, task: Task) -> int:
        # Real providers overstate; the estimate includes time spent waiting for a slot.
        return math.ceil((task.full_end - task.created_mono) * self.settings.overstate)

    def render_once(self, key: tuple[str, int], render: Callable[[], bytes]) -> bytes:
        """The picture ``key`` (task id, index), rendered once by ``render``: outside the state lock,
        so other requests flow while a large PNG is drawn, and never twice for two racing GETs."""
        with self.lock:
            cached = self.renders.get(key)
            lock = self.render_locks.setdefault(key, threading.Lock())
        if cached is not None:
            return cached
        with lock:
            with self.lock:
                cached = self.renders.get(key)
            if cached is None:
                cached = render()
                with self.lock:
                    self.renders[key] = cached
        return cached

    def cost(self, task: Task) -> float:
        return round(task.n * self.settings.price_per_image, 6)

    def settle(self) -> None:
        """Bill every task that has completed by now (lazily, at each request)."""
        now = self.clock()
        waiting = []
        for task in self.in_flight:
            if now < task.end:
                waiting.append(task)
            elif task.outcome == "completed":
                task.billed = True
                self.used_balance += self.cost(task)
                self.counters["tasks_billed"] += 1
                self.counters["images_billed"] += task.n
        self.in_flight = waiting

    def available_balance(self) -> float:
        """What a new submit may spend: the balance minus what in-flight tasks may still cost
        (the server cannot know which of them will fail)."""
        self.settle()
        reserved = sum(self.cost(t) for t in self.in_flight)
        return self.settings.balance - self.used_balance - reserved

    def remaining_balance(self) -> float:
        return round(self.settings.balance - self.used_balance, 6)

    # -- snapshot --

    def timeline(self) -> list[dict[str, Any]]:
        """Each task's instants on this host's monotonic clock (``time.monotonic()``, shared by
        every process of the machine): what a benchmark needs to time detection latency."""
        return [
            {"id": task.id, "created": task.created_mono, "processing": task.pickup_end, "end": task.end,
             "outcome": task.outcome, "polls": self.counters["polls_per_task"][task.id]}
            for task in self.tasks.values()
        ]

    def authorized(self, headers: Mapping[str, str], *schemes: str) -> bool:
        """Whether a request carries this emulator's key under one of the host's schemes
        (``Bearer``, ``Key``, ``Token``); one that does not is counted."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        ok = scheme.lower() in {s.lower() for s in schemes} and secrets.compare_digest(
            token.strip().encode(), self.settings.api_key.encode()
        )
        if not ok:
            with self.lock:
                self.counters["api_requests_without_valid_auth"] += 1
        return ok

    def cdn_faults(self, ready: bool) -> tuple[str, float, float | None, bool]:
        """How the fault switches shape a CDN answer, with the lock held: (body variant, delay,
        bytes per second, truncate). A picture about to be served counts each fault it meets."""
        faults = self.faults
        variant, delay, bps = faults.cdn_body, faults.cdn_delay, faults.cdn_bytes_per_second
        truncate = ready and self.take("cdn_truncate")
        if ready:
            for kind, on in (("cdn_truncate", truncate), ("cdn_delay", delay > 0),
                             ("cdn_drip", bps is not None), (f"cdn_body_{variant}", variant != "image")):
                if on:
                    self.injected(kind)
        return variant, delay, bps, truncate

    def count_cdn_hit(self, path: str, headers: Mapping[str, str]) -> None:
        """One request to the CDN. An Authorization header on it is counted as a leak: the key must
        never reach the CDN, and tests assert this counter stays zero."""
        with self.lock:
            self.counters["cdn_hits"] += 1
            self.counters["cdn_hits_per_path"][path] += 1
            if "authorization" in headers:
                self.counters["cdn_authorization_headers"] += 1

    def snapshot(self) -> dict[str, Any]:
        self.settle()
        by_status: Counter[str] = Counter()
        now = self.clock()
        for task in self.tasks.values():
            by_status[self.status_of(task, now)[0]] += 1
        counters = {
            key: dict(value) if isinstance(value, Counter) else value
            for key, value in self.counters.items()
        }
        counters["tasks"] = len(self.tasks)
        counters["tasks_by_status"] = dict(by_status)
        counters["remain_balance"] = self.remaining_balance()
        counters["used_balance"] = round(self.used_balance, 6)
        return counters
