"""The adaptive poll schedule: its bounds, what it does with each kind of reading, what it learns.

Pure tests drive :class:`PollSchedule` with a fake clock against the emulator's own status model
(pending for the first 10 %, then honest floored progress, ``estimated_time`` overstated 1.5x);
one test watches real polls through the in-process emulator. No timing is asserted, only order,
bounds and counts, except one wide bound: a policy scaled to a fast emulator waits for a 0.1 s task
for less than the default policy's first poll.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time

import httpx
import pytest

from qimage_nb._contract import TaskStatus
from qimage_nb.core._client import AsyncClient
from qimage_nb.core._polling import Calibration, PollPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.journal._store import Store


def server(duration: float, *, share: float = 0.1, overstate: float = 1.5):
    start = share * duration

    def status(t: float) -> TaskStatus:
        estimate = math.ceil(duration * overstate)
        if t >= duration:
            return TaskStatus("task_x", "completed", 100, estimated_time=estimate)
        if t < start:
            return TaskStatus("task_x", "pending", 0, estimated_time=estimate)
        progress = min(99, int(100 * (t - start) / (duration - start)))
        return TaskStatus("task_x", "processing", progress, estimated_time=estimate)

    return status


def follow(policy: PollPolicy, duration: float, **model) -> list[float]:
    """Poll one simulated task to the end; return the poll times."""
    status_at = server(duration, **model)
    schedule = policy.schedule()
    t = schedule.next_delay(None, 0.0)
    times = [t]
    while True:
        status = status_at(t)
        if status.terminal:
            schedule.finish(status, t)
            return times
        t += schedule.next_delay(status, t)
        times.append(t)
        assert len(times) < 200, "the schedule never reached the finish"


@pytest.mark.parametrize("seed", range(5))
def test_every_gap_is_within_floor_and_ceiling(seed):
    rng = random.Random(seed)
    policy = PollPolicy(floor=0.25, ceiling=3.0)
    for _ in range(40):
        times = follow(policy, rng.uniform(0.5, 20.0), share=rng.choice([0.0, 0.1, 0.3]),
                       overstate=rng.choice([1.0, 1.5, 2.5]))
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(policy.floor - 1e-9 <= gap <= policy.ceiling + 1e-9 for gap in gaps), gaps
        assert times[0] == policy.first


def test_two_readings_put_the_next_poll_just_past_the_finish():
    policy = PollPolicy(learn=False)
    times = follow(policy, 5.0)
    # learn (E, progress), probe (the rate), then done: the last poll lands within a few tens of ms.
    assert len(times) == 3
    assert 5.0 <= times[-1] <= 5.0 + 0.15


def test_the_fixed_poller_sends_about_twice_as_many_polls():
    rng = random.Random(3)
    durations = [rng.uniform(2, 8) for _ in range(40)]
    ours = sum(len(follow(PollPolicy(learn=False), d)) for d in durations)
    fixed = sum(math.ceil(d) for d in durations)  # sleep 1 s, poll, until done
    assert ours <= 0.65 * fixed


def test_a_task_that_overruns_is_polled_densely_then_with_backoff():
    policy = PollPolicy(floor=0.2, ceiling=5.0, learn=False)
    schedule = policy.schedule()
    schedule.next_delay(None, 0.0)
    # The server claims 3 s, then progress stalls at 99: the interval's end passes.
    schedule.next_delay(TaskStatus("t", "processing", 50, estimated_time=3), 1.0)
    schedule.next_delay(TaskStatus("t", "processing", 90, estimated_time=3), 1.8)
    t, gaps = 3.0, []
    for _ in range(8):
        gap = schedule.next_delay(TaskStatus("t", "processing", 99, estimated_time=3), t)
        gaps.append(gap)
        t += gap
    assert gaps[0] == pytest.approx(policy.floor)
    assert gaps == sorted(gaps)  # geometric back-off, never denser than the floor
    assert gaps[-1] <= policy.ceiling


def test_without_any_timing_information_it_still_polls_within_bounds():
    policy = PollPolicy(floor=0.1, ceiling=2.0)
    schedule = policy.schedule()
    t = schedule.next_delay(None, 0.0)
    for _ in range(20):
        gap = schedule.next_delay(TaskStatus("t", "pending"), t)
        assert 0.1 <= gap <= 2.0
        t += gap


def test_calibration_predicts_an_interval_that_holds_the_finish():
    calibration = Calibration()
    assert calibration.finish_from_estimate(9) is None  # nothing learned yet
    for k in range(16):
        finish = 2.0 + 6.0 * k / 15
        calibration.add(math.ceil(1.5 * finish), finish - 0.02, finish + 0.02)
    for finish in (2.5, 5.9, 7.4):
        lo, hi = calibration.finish_from_estimate(math.ceil(1.5 * finish))
        assert lo <= finish <= hi
        assert hi - lo < 1.0


def test_calibration_from_short_tasks_alone_does_not_pretend_to_know_long_ones():
    calibration = Calibration()
    for finish in (2.0, 2.1, 2.2, 2.4):
        calibration.add(math.ceil(1.5 * finish), finish - 0.02, finish + 0.02)
    interval = calibration.finish_from_estimate(12)
    assert interval is None or interval[1] - interval[0] > 1.0


def test_calibration_ignores_vague_samples_and_providers_with_no_pattern():
    calibration = Calibration(precision=0.3)
    calibration.add(9, 4.0, 5.0)  # finish known only to a second
    assert calibration.version == 0
    rng = random.Random(1)
    for _ in range(10):
        finish = rng.uniform(2, 8)
        calibration.add(rng.randint(1, 60), finish - 0.01, finish + 0.01)  # estimates unrelated
    assert calibration.finish_from_estimate(20) is None


def test_a_warm_policy_needs_fewer_polls_and_stays_close():
    policy = PollPolicy()
    rng = random.Random(5)
    for _ in range(30):
        follow(policy, rng.uniform(2, 8))
    polls, late = [], []
    for _ in range(30):
        duration = rng.uniform(2, 8)
        times = follow(policy, duration)
        polls.append(len(times))
        late.append(times[-1] - duration)
    assert sum(polls) / len(polls) < 2.7
    assert sorted(late)[len(late) // 2] < 0.35


def test_a_resumed_task_neither_teaches_nor_uses_the_calibration():
    policy = PollPolicy()
    for finish in (2.0, 3.1, 4.4, 5.2, 6.9, 7.7):
        policy.calibration.add(math.ceil(1.5 * finish), finish - 0.02, finish + 0.02)
    version = policy.calibration.version
    schedule = policy.schedule(fresh=False)
    schedule.next_delay(TaskStatus("t", "processing", 40, estimated_time=9), 0.0)
    assert not schedule.revisable
    schedule.finish(TaskStatus("t", "completed", 100, estimated_time=9), 3.0)
    assert policy.calibration.version == version


def test_revise_moves_a_probe_only_when_the_calibration_changed():
    policy = PollPolicy()
    schedule = policy.schedule()
    schedule.next_delay(None, 0.0)
    schedule.next_delay(TaskStatus("t", "processing", 10, estimated_time=12), 1.5)
    assert schedule.revisable
    assert schedule.revise(2.0) is None
    for finish in (2.0, 3.1, 4.4, 5.2, 6.9, 7.7):
        policy.calibration.add(math.ceil(1.5 * finish), finish - 0.02, finish + 0.02)
    revised = schedule.revise(2.5)
    assert revised is not None and revised >= 0


async def test_real_polls_are_never_closer_than_the_floor(tmp_path):
    emu = Emulator(latency=0.6, jitter=0.2, seed=4)
    seen: dict[str, list[float]] = {}
    inner = emu.transport()

    class Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            if request.method == "GET" and "/v1/tasks/" in request.url.path:
                seen.setdefault(request.url.path, []).append(time.monotonic())
            return await inner.handle_async_request(request)

    policy = PollPolicy(floor=0.1, ceiling=1.0, first=0.2)
    async with AsyncClient(emu.api_key, emu.in_process_base_url, transport=Recording(), poll=policy,
                           store=Store(tmp_path)) as client:
        results = await client.generate_many([f"floor {i}" for i in range(6)], concurrency=6)
    assert all(r.ok for r in results)
    assert sum(len(v) for v in seen.values()) == emu.counters()["polls"]
    for times in seen.values():
        assert len(times) >= 1
        assert all(b - a >= policy.floor - 0.01 for a, b in itertools.pairwise(times))


# --- what the calibration learns about when progress starts -------------------------------------------


def _learn(policy: PollPolicy, durations, **model) -> None:
    for duration in durations:
        follow(policy, duration, **model)


def test_progress_counted_from_the_submit_is_recognised_and_one_reading_then_suffices():
    policy = PollPolicy()
    rng = random.Random(11)
    _learn(policy, [rng.uniform(2, 8) for _ in range(8)], share=0.0)
    assert policy.calibration.finish_from_progress(1.5, 18) == pytest.approx((150 / 19, 150 / 18))
    polls, late = [], []
    for _ in range(30):
        duration = rng.uniform(2, 8)
        times = follow(policy, duration, share=0.0)
        polls.append(len(times))
        late.append(times[-1] - duration)
    assert sum(polls) / len(polls) <= 2.1  # the floor: one poll to learn, one to see it done
    assert all(0 <= x <= 0.5 for x in late)


def test_a_pickup_proportional_to_the_run_is_learned_and_predicts_long_tasks():
    policy = PollPolicy()
    rng = random.Random(12)
    _learn(policy, [rng.uniform(2, 8) for _ in range(12)], share=0.1)
    # An 8 s task read once at 1.5 s: pickup at 0.8 s, so progress 100 * 0.7 / 7.2 = 9.7 -> 9.
    lo, hi = policy.calibration.finish_from_progress(1.5, 9)
    assert lo <= 8.0 <= hi and hi - lo < 1.0
    # "Progress counts from the submit" would put that finish at 16 s: it is not what was learned.
    assert hi < 10


def test_a_fixed_queueing_delay_is_learned():
    def queued(duration: float):
        return server(duration + 0.5, share=0.5 / (duration + 0.5))

    policy = PollPolicy()
    rng = random.Random(13)
    for _ in range(12):
        duration = rng.uniform(2, 8)
        status_at, schedule = queued(duration), policy.schedule()
        t = schedule.next_delay(None, 0.0)
        while not (status := status_at(t)).terminal:
            t += schedule.next_delay(status, t)
        schedule.finish(status, t)
    # Progress started 0.5 s after the submit, whatever the run: a 7.5 s task (finish at 8 s) read
    # at 1.5 s shows 100 * 1.0 / 7.5 = 13.3 -> 13.
    lo, hi = policy.calibration.finish_from_progress(1.5, 13)
    assert lo <= 8.0 <= hi and hi - lo < 1.5


def test_vague_samples_from_short_tasks_do_not_pass_for_progress_from_the_submit():
    calibration = Calibration()
    # Each sample allows a start at 0, but together they put it well after the submit.
    for finish in (2.0, 2.2, 2.4):
        calibration.add(math.ceil(1.5 * finish), finish - 0.02, finish + 0.02, (0.0, 0.3))
    for finish in (2.1, 2.3):
        calibration.add(math.ceil(1.5 * finish), finish - 0.02, finish + 0.02, (0.15, 0.4))
    interval = calibration.finish_from_progress(1.5, 18)
    assert interval is None or interval[0] < 150 / 19 - 0.3  # not the sharp "from the submit" answer


def test_progress_reported_in_steps_is_learned_and_the_finish_still_caught():
    def stepped(duration: float):
        def status(t: float) -> TaskStatus:
            estimate = math.ceil(duration * 1.5)
            if t >= duration:
                return TaskStatus("task_x", "completed", 100, estimated_time=estimate)
            return TaskStatus("task_x", "processing", 10 * int(10 * t / duration), estimated_time=estimate)
        return status

    policy = PollPolicy()
    rng = random.Random(14)
    late = []
    for _ in range(20):
        duration = rng.uniform(2, 8)
        status_at, schedule = stepped(duration), policy.schedule()
        t = schedule.next_delay(None, 0.0)
        polls = 1
        while not (status := status_at(t)).terminal:
            t += schedule.next_delay(status, t)
            polls += 1
            assert polls < 30
        schedule.finish(status, t)
        late.append(t - duration)
    assert policy.calibration.quantum == 10
    assert sorted(late)[len(late) // 2] < 0.35


def test_a_finished_task_bounds_its_start_from_a_single_reading():
    policy = PollPolicy(learn=False)
    schedule = policy.schedule()
    schedule.next_delay(None, 0.0)
    schedule.next_delay(TaskStatus("t", "processing", 30, estimated_time=8), 1.5)
    # Finish at 4.5 s: 30 <= 100 (1.5 - s) / (4.5 - s) < 31 puts the start in (0.14, 0.21].
    lo, hi = schedule._start(4.5, 4.5)
    assert lo == pytest.approx((150 - 31 * 4.5) / 69) and hi == pytest.approx(0.0 + (150 - 30 * 4.5) / 70)
    assert lo < hi < 0.25


async def test_the_schedule_counts_from_the_submit_exchange_not_from_when_the_wait_starts(tmp_path):
    emu = Emulator(latency=0.3, jitter=0, seed=5, pickup=0)
    inner = emu.transport()

    class SlowSubmit(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            if request.method == "POST":
                await asyncio.sleep(0.2)  # the request travels...
                response = await inner.handle_async_request(request)
                await asyncio.sleep(0.2)  # ...and so does the answer
                return response
            polls.append(time.monotonic())
            return await inner.handle_async_request(request)

    made: list[tuple[bool, float, float]] = []
    polls: list[float] = []

    class Spy(PollPolicy):
        def schedule(self, *, fresh=True, slack=0.0, **more):
            made.append((fresh, slack, time.monotonic()))
            return super().schedule(fresh=fresh, slack=slack, **more)

    async with AsyncClient(emu.api_key, emu.in_process_base_url, transport=SlowSubmit(), poll=Spy(),
                           store=Store(tmp_path)) as client:
        sent = time.monotonic()
        task_id = await client.submit("counted from the submit")
        await asyncio.sleep(0.5)  # the caller waits on it later
        await client.wait(task_id)
        await client.wait(task_id)  # a second wait has no submit of its own to count from
    (fresh, slack, began), (again, slack_again, _) = made
    assert fresh and 0.19 <= slack <= 0.3  # half of a >= 0.4 s exchange
    assert began - sent >= 0.9  # the wait began after the submit and the caller's 0.5 s...
    # ...and its first poll came `first` after the middle of the exchange, not `first` after that.
    assert polls[0] - began <= Spy().first - 0.3
    assert not again and slack_again == 0.0  # unknown age: polled at once, learns nothing


# --- what was learned outlives a client and a kernel ----------------------------------------------------


def _teach(calibration: Calibration) -> None:
    for finish in (2.0, 3.1, 4.4, 5.2, 6.9, 7.7):
        start = 0.1 * finish
        calibration.add(math.ceil(1.5 * finish), finish - 0.02, finish + 0.02, (start - 0.03, start + 0.03))


def test_default_clients_of_one_provider_share_what_was_learned(tmp_path):
    store = Store(tmp_path)
    first = AsyncClient("sk-test", "https://api.example.test", store=store)
    second = AsyncClient("sk-other", "https://api.example.test", store=store)
    elsewhere = AsyncClient("sk-test", "https://other.example.test", store=store)
    own = AsyncClient("sk-test", "https://api.example.test", store=store, poll=PollPolicy())
    assert first.poll.calibration is second.poll.calibration
    assert elsewhere.poll.calibration is not first.poll.calibration
    assert own.poll.calibration is not first.poll.calibration
    # A real provider's timing is kept with the data; an emulator's (plain http, often a random
    # port each run) is not, so its files do not pile up.
    assert first.poll.calibration.path.parent == tmp_path / "timing"
    for local in ("http://127.0.0.1:8765", "http://api.emulator.localhost"):
        assert AsyncClient("sk-test", local, store=store).poll.calibration.path is None


def test_what_was_learned_is_saved_and_read_back_by_the_next_process(tmp_path):
    path = tmp_path / "timing" / "provider.json"
    taught = Calibration(path=path)
    _teach(taught)
    assert path.exists()
    reborn = Calibration(path=path)  # what a restarted kernel constructs: no I/O until first use
    assert reborn.finish_from_estimate(9) == taught.finish_from_estimate(9) is not None
    assert reborn.finish_from_progress(1.5, 12) == taught.finish_from_progress(1.5, 12) is not None


def test_old_or_damaged_timing_is_ignored(tmp_path):
    path = tmp_path / "provider.json"
    _teach(Calibration(path=path))
    assert Calibration(path=path, max_age=-1).finish_from_estimate(9) is None  # too old: forgotten
    path.write_text("{not json", encoding="utf-8")
    damaged = Calibration(path=path)
    assert damaged.finish_from_estimate(9) is None
    _teach(damaged)  # and it learns afresh, writing a good file over the bad one
    assert Calibration(path=path).finish_from_estimate(9) is not None


def test_when_two_learned_models_disagree_the_probe_lands_where_the_earlier_one_ends():
    policy = PollPolicy()
    # Short tasks alone: a start 0.2 s in fits "a fixed delay" and "10 % of the run" alike.
    for finish in (2.0, 2.05, 2.1):
        policy.calibration.add(3, finish - 0.01, finish + 0.01, (0.18, 0.22))
    each = policy.calibration.finishes_from_progress(1.5, 30)
    assert len(each) == 2 and all(hi - lo < 1.0 for lo, hi in each)
    earlier, later = sorted(each, key=lambda interval: interval[1])
    assert earlier[1] < later[1]
    schedule = policy.schedule()
    schedule.next_delay(None, 0.0)
    delay = schedule.next_delay(TaskStatus("t", "processing", 30), 1.5)
    # Either that model is right and this poll sees the task done, or the reading it brings is
    # late enough to pin the finish for the next.
    assert 1.5 + delay == pytest.approx(earlier[1] + policy.margin)


# --- numbers and failures the schedule must survive -----------------------------------------------------


def test_progress_that_goes_back_or_sits_at_100_neither_breaks_the_wait_nor_teaches():
    policy = PollPolicy(floor=0.2, ceiling=5.0)
    _teach(policy.calibration)
    version = policy.calibration.version
    schedule = policy.schedule()
    t = schedule.next_delay(None, 0.0)
    for progress in (50, 49, 48, 100, 100):  # back by one step, then "processing" at 100
        gap = schedule.next_delay(TaskStatus("t", "processing", progress, estimated_time=9), t)
        assert policy.floor - 1e-9 <= gap <= policy.ceiling + 1e-9
        t += gap
    schedule.finish(TaskStatus("t", "completed", 100, estimated_time=9), t)
    assert policy.calibration.version == version  # a run that went back teaches nothing


def _refusing_gets(request: httpx.Request) -> httpx.Response:
    if request.method == "POST":
        return httpx.Response(200, json={"data": {"task_id": "task_01ABCDEFGHJKMNPQRSTVWXYZ0"}})
    raise httpx.ConnectError("connection refused")


async def test_polls_that_get_no_answer_are_spaced_by_the_floor_not_sent_in_a_tight_loop(tmp_path):
    gets = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            gets.append(time.monotonic())
        return _refusing_gets(request)

    from qimage_nb._exceptions import GenerationTimeout
    from qimage_nb.core._retry import RetryPolicy

    policy = PollPolicy(floor=0.2, first=0.1)
    async with AsyncClient("sk-test", "https://api.example.test", transport=httpx.MockTransport(handler),
                           store=Store(tmp_path), retry=RetryPolicy(max_attempts=1), poll=policy) as client:
        task_id = await client.submit("no answer")
        with pytest.raises(GenerationTimeout):
            await client.wait(task_id, timeout=1.2)
    assert 2 <= len(gets) <= 1.2 / policy.floor + 2
    assert all(b - a >= policy.floor - 0.02 for a, b in itertools.pairwise(gets))


class _Recorder(PollPolicy):
    """A policy whose schedules record what the client tells them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "made", [])

    def schedule(self, *, fresh=True, slack=0.0, **more):
        schedule = super().schedule(fresh=fresh, slack=slack, **more)
        fed = []
        self.made.append((fresh, fed))
        original = schedule.next_delay

        def next_delay(status, elapsed):
            fed.append(status)
            return original(status, elapsed)

        schedule.next_delay = next_delay
        return schedule


async def test_a_poll_without_an_answer_is_not_fed_to_the_schedule_as_a_sighting(tmp_path):
    from qimage_nb.core._retry import RetryPolicy

    emu = Emulator(latency=1.0, jitter=0)
    inner = emu.transport()
    gets = 0

    class Flaky(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            nonlocal gets
            if request.method == "GET":
                gets += 1
                if gets in (2, 3):  # after the first answer: two polls get a 503
                    return httpx.Response(503, json={"error": {"code": 503, "message": "busy", "type": "x"}})
            return await inner.handle_async_request(request)

    policy = _Recorder(floor=0.05, first=0.1)
    async with AsyncClient(emu.api_key, emu.in_process_base_url, transport=Flaky(), poll=policy,
                           store=Store(tmp_path), retry=RetryPolicy(max_attempts=1)) as client:
        await client.wait(await client.submit("some polls are refused"))
    (_, fed), = policy.made
    statuses = [s for s in fed if s is not None]
    assert gets >= 4 and statuses
    # Each answer is told once: a refused poll does not repeat the previous answer as if new.
    assert len({id(s) for s in statuses}) == len(statuses)


async def test_a_replayed_submit_is_a_task_of_unknown_age_and_teaches_nothing(tmp_path):
    emu = Emulator(latency=0.3, jitter=0)
    policy = _Recorder(floor=0.05, first=0.1)
    async with AsyncClient(emu.api_key, emu.in_process_base_url, transport=emu.transport(), poll=policy,
                           store=Store(tmp_path)) as client:
        task_id = await client.submit("once", idempotency_key="replayed-key-0001")
        await client.wait(task_id)
        again = await client.submit("once", idempotency_key="replayed-key-0001")
        await client.wait(again)
    assert again == task_id and emu.counters()["submits_accepted"] == 1
    assert [fresh for fresh, _ in policy.made] == [True, False]


@pytest.mark.parametrize(
    "damage",
    [
        lambda saved: saved.update(step=float("inf")),
        lambda saved: saved.update(finish=[[1.0, 2.0, 3.0, 4.0]] * 5),
        lambda saved: saved.update(finish=[[9.0, 0.0, 0.01]] * 5),
        lambda saved: saved.update(start=[[float("nan")] * 3] * 5),
        lambda saved: saved.update(saved=saved["saved"] + 86400),
        lambda saved: saved.update(format=99),
        lambda saved: saved.update(finish="not rows"),
    ],
)
def test_a_damaged_or_foreign_timing_file_is_ignored_and_then_replaced(tmp_path, damage):
    import json

    path = tmp_path / "provider.json"
    _teach(Calibration(path=path))
    saved = json.loads(path.read_text())
    damage(saved)
    path.write_text(json.dumps(saved))
    damaged = Calibration(path=path)
    follow(PollPolicy(calibration=damaged), 5.0)  # no exception, whatever the file said
    _teach(damaged)
    assert Calibration(path=path).finish_from_estimate(9) == damaged.finish_from_estimate(9) is not None


# --- a policy scaled to a fast server --------------------------------------------------------


def test_for_latency_shrinks_every_time_bound_but_never_below_a_floor_or_above_the_defaults():
    default = PollPolicy()
    assert PollPolicy.for_latency(60.0) == default  # a slow server gets the defaults
    fast = PollPolicy.for_latency(0.1)
    assert (fast.first, fast.floor, fast.ceiling) == pytest.approx((0.05, 0.01, 0.2))
    idle = PollPolicy.for_latency(0.0)
    assert idle.floor >= 0.01 and idle.first >= 0.02  # never a busy loop
    for bad in (-1, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="latency"):
            PollPolicy.for_latency(bad)


async def test_a_fast_emulator_is_waited_for_about_as_long_as_its_tasks_take():
    emulator = Emulator(latency=0.1, jitter=0.0)
    async with AsyncClient(
        emulator.api_key, emulator.in_process_base_url, transport=emulator.transport(),
        poll=PollPolicy.for_latency(0.1),
    ) as client:
        started = time.monotonic()
        generation = await client.generate("a quick sketch")
        took = time.monotonic() - started
    assert len(generation.images) == 1
    # The default policy's first poll alone comes at 1.5 s, fifteen times the task.
    assert took < 1.0, took
    assert emulator.counters()["polls"] <= 8


# --- the waiting loop over any get_task ------------------------------------------------------


def _scripted(script):
    """A get_task coroutine function answering from ``script`` (a status, or an exception to raise),
    recording when each poll happened."""
    times = []

    async def get_task():
        times.append(time.monotonic())
        step = script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    return get_task, times


async def test_poll_updates_yields_each_change_over_any_get_task_and_holds_for_retry_after():
    from qimage_nb._exceptions import ProtocolError, RateLimitError
    from qimage_nb.core._polling import poll_updates

    limited = RateLimitError("slow down", status_code=429, retry_after=0.3)
    get_task, times = _scripted([
        TaskStatus("t1", "pending", 0), ProtocolError("garbled"), TaskStatus("t1", "pending", 0),
        limited, TaskStatus("t1", "processing", 50), TaskStatus("t1", "completed", 100),
    ])
    now = time.monotonic()
    seen = [
        (s.status, s.progress)
        async for s in poll_updates(get_task, "t1", policy=PollPolicy.for_latency(0.05), started=now,
                                    timeout=10, origin=now, immediate=True)
    ]
    # Changes only: the repeated pending is not told twice; a garbled answer and a 429 end nothing.
    assert seen == [("pending", 0), ("processing", 50), ("completed", 100)]
    assert times[4] - times[3] >= 0.3 - 0.01  # the server's Retry-After outranks the schedule


async def test_poll_updates_gives_up_on_repeated_garbage_and_at_the_deadline():
    from qimage_nb._exceptions import GenerationTimeout, ProtocolError
    from qimage_nb.core._polling import MAX_PROTOCOL_ERRORS, poll_updates

    policy, now = PollPolicy.for_latency(0.05), time.monotonic()
    get_task, _ = _scripted([ProtocolError(f"garbled {i}") for i in range(MAX_PROTOCOL_ERRORS)])
    with pytest.raises(ProtocolError, match=f"garbled {MAX_PROTOCOL_ERRORS - 1}"):
        async for _ in poll_updates(get_task, "t2", policy=policy, started=now, timeout=10, origin=now):
            pass
    get_task, times = _scripted([TaskStatus("t3", "processing", 10)] * 100)
    started = time.monotonic()
    with pytest.raises(GenerationTimeout, match=r"task t3 still running after 0 s; fetch it later with resume") as caught:
        async for _ in poll_updates(get_task, "t3", policy=policy, started=started, timeout=0.3, origin=started):
            pass
    assert caught.value.task_id == "t3" and caught.value.last_status == "processing"
    assert times and time.monotonic() - started == pytest.approx(0.3, abs=0.15)
