"""The schedule of a host that gives no hints (issue 24), on a fake clock: no sleeping, no timing.

A task is driven through ``PollSchedule`` with statuses built by the DashScope provider from
answers shaped like the host's (PENDING / RUNNING / SUCCEEDED, no progress, its submit, scheduled
and end times). The official SDK's ``ImageSynthesis.wait`` runs against the same fake clock (its
sleeps and its GETs replaced), so the comparison with it uses the SDK's real loop.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import statistics
import types

import dashscope.client.base_api as sdk_base
import pytest
from dashscope import ImageSynthesis
from dashscope.api_entities.dashscope_response import DashScopeAPIResponse

from qimage_nb._contract import TaskStatus
from qimage_nb.core._calibration import Calibration
from qimage_nb.core._durations import Durations, cold_poll, plan_polls
from qimage_nb.core._polling import PollPolicy
from qimage_nb.emulator.dashscope._wire import timestamp
from qimage_nb.providers.dashscope import PROVIDER

MODEL = "qwen-image-plus"
CREATED = 1_757_000_000.0  # the host's clock when a task was created (any offset works)


def answer(elapsed: float, finish: float, queue: float | None, stamps: bool = True) -> TaskStatus:
    """What the host answers about a task ``elapsed`` s after its creation: it queues ``queue`` s
    (None: no RUNNING phase known), then runs until ``finish``."""
    if elapsed >= finish:
        word = "SUCCEEDED"
    elif queue is not None and elapsed >= queue:
        word = "RUNNING"
    else:
        word = "PENDING"
    output: dict = {"task_id": "t", "task_status": word}
    if stamps:
        output["submit_time"] = timestamp(CREATED)
        if word != "PENDING" and queue is not None:
            output["scheduled_time"] = timestamp(CREATED + queue)
        if word == "SUCCEEDED":
            output["end_time"] = timestamp(CREATED + finish)
    if word == "SUCCEEDED":
        output["results"] = [{"url": "https://cdn.example/t/0.png"}]
    return PROVIDER.read_task({"output": output}, "t")


def drive(policy: PollPolicy, finish: float, queue: float | None = 0.5, *, stamps: bool = True,
          model: str | None = MODEL, fresh: bool = True) -> list[float]:
    """The poll instants (seconds since creation) of one task, its schedule fed on a fake clock."""
    schedule = policy.schedule(fresh=fresh, model=model)
    now = schedule.next_delay(None, 0.0)
    polls = []
    while True:
        polls.append(now)
        status = answer(now, finish, queue, stamps)
        if status.terminal:
            schedule.finish(status, now)
            return polls
        now += schedule.next_delay(status, now)
        assert len(polls) < 200


@pytest.fixture
def sdk_polls(monkeypatch):
    """The official SDK's poll instants for a task ending ``finish`` s after its submit: its own
    ``wait`` loop, with its sleeps advancing a fake clock and its GETs answered from it."""

    def run(finish: float) -> list[float]:
        clock = {"now": 0.0}
        polls: list[float] = []

        def get(cls, task_id, api_key=None, workspace=None, **kwargs):
            polls.append(clock["now"])
            word = "SUCCEEDED" if clock["now"] >= finish else "RUNNING"
            return DashScopeAPIResponse(status_code=200, output={"task_id": task_id, "task_status": word})

        def sleep(seconds):
            clock["now"] += seconds

        with monkeypatch.context() as patch:
            patch.setattr(sdk_base, "time", types.SimpleNamespace(sleep=sleep, time=lambda: clock["now"]))
            patch.setattr(ImageSynthesis, "_get", classmethod(get))
            ImageSynthesis.wait("t", api_key="sk-test")
        return polls

    return run


def detection(polls: list[float], finish: float) -> float:
    return polls[-1] - finish


def test_the_sdk_schedule_the_tests_compare_with_is_the_documented_one(sdk_polls):
    assert sdk_polls(29.5) == [0, 1, 2, 4, 6, 8, 12, 16, 20, 25, 30]
    # The provider's account of its SDK is that SDK's own loop, and the poller's default.
    assert list(itertools.accumulate((0.0, *PROVIDER.sdk_sleeps))) == sdk_polls(29.5)[:10]
    assert PollPolicy().sleeps == PROVIDER.sdk_sleeps


def test_a_client_for_the_host_waits_no_later_than_its_sdk_would(tmp_path):
    from qimage_nb.core._client import AsyncClient
    from qimage_nb.journal._store import Store

    client = AsyncClient("sk-test", provider="dashscope", store=Store(tmp_path))
    assert client.poll.sleeps == PROVIDER.sdk_sleeps


def test_cold_a_hintless_task_is_never_seen_later_than_by_the_sdk_and_costs_fewer_polls(sdk_polls):
    for tenth in range(15, 400, 7):  # finishes from 1.5 s to 40 s
        finish = tenth / 10
        ours, theirs = drive(PollPolicy(), finish), sdk_polls(finish)
        assert detection(ours, finish) <= detection(theirs, finish), finish
        assert len(ours) < len(theirs), finish
    # Without timestamps nothing is learned from SDK-sized gaps either way: still the cold instants.
    assert drive(PollPolicy(), 9.0, stamps=False) == [1.5, 2, 4, 6, 8, 12]


def test_the_hosts_timestamps_teach_queue_and_run_apart_exactly():
    policy = PollPolicy()
    drive(policy, finish=7.25, queue=0.75)
    durations = policy.calibration.durations
    [sample] = durations.to_json()[MODEL]["total"]
    assert sample == pytest.approx([7.248, 7.252], abs=1e-6)  # not the polls' bracket (6, 8]
    assert durations.to_json()[MODEL]["run"] == [pytest.approx([6.498, 6.502], abs=1e-6)]
    assert durations.to_json()[MODEL]["queue"] == [pytest.approx([0.748, 0.752], abs=1e-6)]


def test_without_timestamps_the_polls_around_the_finish_bound_it():
    policy = PollPolicy()
    drive(policy, finish=7.25, stamps=False)
    assert policy.calibration.durations.to_json()[MODEL] == {"total": [[6.0, 8.0]], "run": [], "queue": []}


def test_a_task_with_hints_or_of_unknown_age_teaches_no_durations():
    policy = PollPolicy()
    schedule = policy.schedule(model="seed-model")
    schedule.next_delay(None, 0.0)
    schedule.next_delay(TaskStatus("t", "processing", progress=40, estimated_time=9), 3.0)
    schedule.finish(TaskStatus("t", "completed", progress=100, estimated_time=9, urls=("u",)), 6.0)
    drive(policy, finish=5.0, stamps=False, fresh=False)  # a resumed task: no origin to count from
    assert policy.calibration.durations.to_json() == {}


def learn(policy: PollPolicy, durations: list[float], queue: float = 0.5) -> None:
    for total in durations:
        drive(policy, finish=total, queue=queue)


@pytest.mark.parametrize("spread", [2.0, 5.0])
def test_warm_the_learned_plan_sees_tasks_sooner_than_the_sdk_with_fewer_polls(sdk_polls, spread):
    rng = random.Random(24)

    def draw() -> float:
        return rng.uniform(0.25, 0.75) + rng.uniform(8 - spread, 8 + spread)

    policy = PollPolicy()
    learn(policy, [draw() for _ in range(48)])
    assert policy.calibration.durations.known(MODEL)
    tests = [draw() for _ in range(48)]
    ours = [drive(policy, t) for t in tests]
    theirs = [sdk_polls(t) for t in tests]
    ours_median = statistics.median(detection(p, t) for p, t in zip(ours, tests, strict=True))
    theirs_median = statistics.median(detection(p, t) for p, t in zip(theirs, tests, strict=True))
    assert ours_median <= 0.75 * theirs_median
    assert sum(map(len, ours)) <= sum(map(len, theirs))


def test_the_plan_spends_no_poll_before_the_shortest_task_and_crowds_where_tasks_end():
    rng = random.Random(7)
    # Two kinds of task: about 3 s and about 9 s, none in between.
    durations = [rng.gauss(3, 0.15) for _ in range(24)] + [rng.gauss(9, 0.15) for _ in range(24)]
    plan = plan_polls([(d, d) for d in durations], floor=0.2)
    assert plan[0] >= min(durations) - 1.0
    near = sum(1 for t in plan if abs(t - 3) < 0.6 or abs(t - 9) < 0.6)
    between = sum(1 for t in plan if 4 < t < 8)
    assert near >= 4 and between <= 1, plan
    assert all(b - a >= 0.2 - 1e-9 for a, b in itertools.pairwise(plan))
    assert plan[-1] >= max(durations)


def test_past_everything_seen_the_polls_back_off():
    policy = PollPolicy()
    learn(policy, [5.0 + 0.1 * k for k in range(10)])
    polls = drive(policy, finish=60.0)
    gaps = [b - a for a, b in itertools.pairwise(polls) if a > 6.5]
    assert len(gaps) >= 3 and all(b >= a - 1e-9 for a, b in itertools.pairwise(gaps)), polls
    assert gaps[-1] > 2 * gaps[0]
    assert max(gaps) <= 5.0 + 1e-9  # never sparser than the SDK's longest gap


def test_a_task_seen_running_is_polled_on_the_run_it_has_left():
    policy = PollPolicy()
    for k in range(10):  # runs of 4 s, after a queue of about 0.5 s
        drive(policy, finish=0.5 + 0.01 * k + 4.0, queue=0.5 + 0.01 * k)
    # This task queued 6 s (a busy host): its finish is 6 + 4 s, where a plan from creation
    # would have looked around 4.5 s and then backed off.
    polls = drive(policy, finish=10.0, queue=6.0)
    assert detection(polls, 10.0) <= 0.3
    assert len(polls) <= 5, polls


def test_what_was_learned_is_kept_across_kernels_and_a_broken_file_is_ignored(tmp_path):
    path = tmp_path / "timing" / "host.json"
    policy = PollPolicy(calibration=Calibration(path=path))
    learn(policy, [6.0 + 0.2 * k for k in range(12)])
    plan = policy.calibration.durations.plan(MODEL, floor=0.2)
    later = Calibration(path=path)  # another kernel, same data directory
    assert later.durations.plan(MODEL, floor=0.2) == plan
    saved = json.loads(path.read_text())
    saved["durations"][MODEL]["total"] = [[1, 2, 3], "x", [-1, 2], [5, 1e9], [True, 2]]
    path.write_text(json.dumps(saved))
    assert not Calibration(path=path).durations.known(MODEL)


def test_durations_refuse_nonsense_and_keep_the_newest():
    durations = Durations(min_samples=2, max_samples=3)
    assert not durations.add(MODEL, (-1.0, 2.0))
    assert not durations.add(MODEL, (2.0, 1.0))
    assert not durations.add(MODEL, (float("nan"), 1.0))
    assert not durations.known(MODEL)
    for k in range(5):
        assert durations.add(MODEL, (float(k), float(k)))
    assert durations.to_json()[MODEL]["total"] == [[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]
    assert durations.plan(None, floor=0.2) is None and durations.plan("other", floor=0.2) is None


def test_cold_instants_scale_with_the_policy_for_a_fast_emulator():
    fast = PollPolicy.for_latency(0.15)
    assert fast.sleeps == pytest.approx([0.05 * s for s in PollPolicy().sleeps])
    instants = [fast.first]
    while len(instants) < 6:
        instants.append(cold_poll(instants[-1], fast.floor, fast.sleeps))
    assert instants == pytest.approx([0.075, 0.1, 0.2, 0.3, 0.4, 0.6])


def run_batch(policy: PollPolicy, finishes: list[float], queues: list[float]) -> list[list[float]]:
    """Tasks created together, polled on one fake clock; each one's poll instants."""
    schedules = [policy.schedule(model=MODEL) for _ in finishes]
    due = [(schedule.next_delay(None, 0.0), i) for i, schedule in enumerate(schedules)]
    heapq.heapify(due)
    polls: list[list[float]] = [[] for _ in finishes]
    while due:
        now, i = heapq.heappop(due)
        polls[i].append(now)
        status = answer(now, finishes[i], queues[i])
        if status.terminal:
            schedules[i].finish(status, now)
            schedules[i].close()
        else:
            heapq.heappush(due, (now + schedules[i].next_delay(status, now), i))
    return polls


def test_cold_the_first_tasks_of_a_batch_to_finish_teach_the_others_while_they_wait(sdk_polls):
    rng = random.Random(3)
    queues = [rng.uniform(0.25, 0.75) for _ in range(48)]
    finishes = [q + rng.uniform(3, 13) for q in queues]
    ours = run_batch(PollPolicy(), finishes, queues)
    untaught = run_batch(PollPolicy(learn=False), finishes, queues)  # the SDK's instants throughout
    theirs = [sdk_polls(t) for t in finishes]
    # Once half the batch finished, the rest were polled on what it taught: the later half is
    # seen sooner than without it, and the batch costs fewer polls than the SDK's.
    later = [i for i, t in enumerate(finishes) if t > statistics.median(finishes)]

    def later_median(polls: list[list[float]]) -> float:
        return statistics.median(detection(polls[i], finishes[i]) for i in later)

    assert later_median(ours) <= 0.85 * later_median(untaught)
    assert later_median(untaught) <= later_median(theirs)
    assert sum(map(len, ours)) < sum(map(len, theirs))
    assert all(detection(p, t) <= 4.0 + 1e-9 for p, t in zip(ours, finishes, strict=True))


def test_a_plan_made_while_a_batch_runs_weighs_the_tasks_still_running():
    durations = Durations()
    tokens = [durations.begin(MODEL) for _ in range(20)]
    for k, token in enumerate(tokens[:6]):  # the six shortest of twenty finished
        durations.end(token)
        durations.add(MODEL, (3.0 + 0.1 * k, 3.0 + 0.1 * k))
    for token in tokens[6:]:
        durations.seen(token, 3.6)
    assert durations.plan(MODEL, floor=0.2) is None  # most still run: no plan from the six shortest
    for k, token in enumerate(tokens[6:12]):  # now more than half finished, up to 4.6 s
        durations.end(token)
        durations.add(MODEL, (4.0 + 0.1 * k, 4.0 + 0.1 * k))
    for token in tokens[12:]:
        durations.seen(token, 4.6)
    plan = durations.plan(MODEL, floor=0.2, after=4.6)
    # The eight still running are expected above the median as the first ones ended below it.
    assert plan and plan[0] > 4.6 and plan[-1] >= 5.4, plan


def test_a_task_waiting_on_the_sdks_instants_moves_its_next_poll_when_its_batch_teaches():
    policy = PollPolicy()
    schedules = [policy.schedule(model=MODEL) for _ in range(20)]
    for schedule in schedules:
        schedule.next_delay(None, 0.0)
    ends = [6.0 + 0.1 * k for k in range(12)]  # the twelve that end first, by 7.1 s
    waiting = schedules[12:]
    for schedule in waiting:  # seen running at 8 s before the others' answers were read
        assert schedule.next_delay(answer(8.0, 99.0, 0.5), 8.0) == pytest.approx(4.0)  # the SDK's 12 s
        assert schedule.revisable and schedule.revise(8.1) is None  # nothing new yet
    for schedule, end in zip(schedules[:12], ends, strict=True):
        schedule.finish(answer(8.0, end, 0.5), 8.0)
        schedule.close()
    moved = [schedule.revise(8.1) for schedule in waiting]
    # The other eight are expected by about 8 s, as the first twelve spread below their median.
    assert all(delay is not None and delay < 1.5 for delay in moved), moved  # not at 12 s
    # A task that began once the model was known keeps its plan: nothing to revise.
    later = policy.schedule(model=MODEL)
    later.next_delay(None, 0.0)
    later.next_delay(answer(5.0, 99.0, 0.5), 5.0)
    assert not later.revisable
