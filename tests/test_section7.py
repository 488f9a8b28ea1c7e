"""The client against the emulator serving what the provider really serves (API.md section 7).

Each test names a deployment (dialect, idempotency mode) and counts what the server billed and how
many submits it saw: a duplicate submit and an abandoned paid task are the two worst bugs.
"""

from __future__ import annotations

import pytest

from qimage_nb import AsyncClient, Client
from qimage_nb._exceptions import (
    AuthenticationError,
    BadRequestError,
    InsufficientBalanceError,
    SubmitOutcomeUnknown,
    TaskFailedError,
    ValidationError,
)
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator import Emulator, Faults

FAST_RETRY = RetryPolicy(max_attempts=6, backoff_base=0.02, backoff_cap=0.1)
LATENCY = 0.15


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=LATENCY, jitter=0.05) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu):
    emu.reset()
    yield
    emu.reset()


def client_for(emu: Emulator, **kwargs) -> AsyncClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("poll", PollPolicy.for_latency(emu.latency))
    kwargs.setdefault("timeout", 0.6)
    return AsyncClient(emu.api_key, emu.base_url, **kwargs)


def billed(emu: Emulator) -> int:
    """Tasks the server created: each bills once it completes, whether or not anyone waits."""
    return emu.counters()["submits_accepted"]


# --- lost submit answers: the core -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["reset", "html502", "timeout"])
async def test_a_lost_answer_where_keys_are_ignored_bills_once_and_says_so(emu, mode):
    emu.set_faults(idempotency="never", lose_submit_answers=1, lose_mode=mode, slow_seconds=1.0)
    async with client_for(emu) as client:
        with pytest.raises(SubmitOutcomeUnknown) as info:
            await client.generate("a lost answer")
        (entry,) = client.pending()
    counters = emu.counters()
    assert counters["submit_attempts"] == 1 and billed(emu) == 1
    message = str(info.value)
    assert "may exist and may be billed" in message and "\n" not in message
    assert f"%qimage resume --resend {entry.key}" in message and entry.outcome_unknown


@pytest.mark.parametrize("mode", ["reset", "html502", "timeout"])
async def test_a_lost_answer_on_the_versioned_contract_yields_the_original_task(emu, mode):
    emu.set_faults(idempotency="versioned")
    async with client_for(emu) as client:
        await client.generate("first: its 202 answer proves keys are honoured here")
        emu.set_faults(lose_submit_answers=1, lose_mode=mode, slow_seconds=1.0)
        generation = await client.generate("a lost answer")
    counters = emu.counters()
    assert generation.images and billed(emu) == 2  # one per generation, none twice
    assert counters["submit_replays"] == 1
    assert counters["submits_per_key"][generation.idempotency_key] == 2


async def test_what_an_origin_proved_is_remembered_across_processes(emu):
    emu.set_faults(idempotency="versioned")
    async with client_for(emu) as client:
        await client.generate("first")
    emu.set_faults(lose_submit_answers=1)
    async with client_for(emu) as fresh:  # a new client, as after a kernel restart: same journal
        generation = await fresh.generate("lost, then replayed")
    assert generation.images and billed(emu) == 2


async def test_the_first_answer_lost_is_unknown_then_a_chosen_resend_returns_the_original(emu):
    emu.set_faults(idempotency="versioned", lose_submit_answers=1)
    async with client_for(emu) as client:
        with pytest.raises(SubmitOutcomeUnknown) as info:
            await client.generate("first ever, lost")
        generation = await client.resend(info.value.idempotency_key)
    counters = emu.counters()
    assert generation.images and billed(emu) == 1 and counters["submit_replays"] == 1
    assert client.pending() == []


async def test_a_resend_where_keys_are_ignored_is_the_users_explicit_choice(emu):
    emu.set_faults(idempotency="never", lose_submit_answers=1)
    with Client(emu.api_key, emu.base_url, retry=FAST_RETRY, poll=PollPolicy.for_latency(emu.latency)) as client:
        with pytest.raises(SubmitOutcomeUnknown) as info:
            client.generate("lost where keys are ignored")
        assert billed(emu) == 1
        generation = client.resend(info.value.idempotency_key)
    assert generation.images and billed(emu) == 2  # the user was told it may bill twice, and chose


async def test_resume_of_an_unknown_outcome_never_resends_on_its_own(emu):
    emu.set_faults(idempotency="never", lose_submit_answers=1)
    async with client_for(emu) as client:
        with pytest.raises(SubmitOutcomeUnknown) as info:
            await client.generate("lost")
        key = info.value.idempotency_key
        with pytest.raises(SubmitOutcomeUnknown):
            await client.resume(key)
        with pytest.raises(SubmitOutcomeUnknown):  # a re-run of the same cell (cache=True) neither
            await client.generate("lost", cache=True)
    assert emu.counters()["submit_attempts"] == 1 and billed(emu) == 1


# --- conflicts, 500s, errors in a 200 ----------------------------------------------------------


async def test_a_first_submit_answered_idempotency_in_progress_gets_the_original_task(emu):
    emu.set_faults(idempotency="versioned", idempotency_in_progress=1, retry_after=0.1)
    async with client_for(emu) as client:
        generation = await client.generate("in progress")
    counters = emu.counters()
    assert generation.images and billed(emu) == 1
    assert counters["submit_attempts"] == 2 and counters["submit_replays"] == 1


async def test_an_indeterminate_result_is_reported_and_not_resent(emu):
    emu.set_faults(idempotency="versioned", idempotency_indeterminate=1)
    async with client_for(emu) as client:
        with pytest.raises(SubmitOutcomeUnknown, match="cannot tell"):
            await client.generate("indeterminate")
    assert emu.counters()["submit_attempts"] == 1


async def test_idempotency_unavailable_is_resent_with_the_same_key(emu):
    emu.set_faults(idempotency="versioned", idempotency_unavailable=2, retry_after=0.05)
    async with client_for(emu) as client:
        generation = await client.generate("unavailable twice")
    counters = emu.counters()
    assert generation.images and billed(emu) == 1 and counters["submit_attempts"] == 3
    assert counters["submits_per_key"][generation.idempotency_key] == 3


async def test_a_500_for_a_bad_parameter_is_sent_once_and_shown_at_once(emu):
    emu.set_faults(dialect="wild")
    async with client_for(emu) as client:
        await client.models()
        # A listed model of its own parameters: the server, not the client, refuses its size.
        with pytest.raises(BadRequestError) as info:
            await client.generate("bad size", model="qwen-image-3.0", size="banana")
    error = info.value
    assert emu.counters()["submit_attempts"] == 1 and billed(emu) == 0
    assert error.status_code == 500 and error.code == "build_request_failed" and error.param == "size"
    assert "size" in str(error) and "\n" not in str(error)


async def test_an_error_inside_a_200_is_the_typed_error_of_its_code(emu):
    emu.set_faults(error_in_200=1)
    async with AsyncClient("sk-wrong-key", emu.base_url, retry=FAST_RETRY) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.generate("wrong key")
    assert "QIMAGE_API_KEY" in str(info.value)
    with Emulator(latency=LATENCY, balance=0.001, faults=Faults(error_in_200=1)) as poor:
        async with client_for(poor) as client:
            with pytest.raises(InsufficientBalanceError, match="Insufficient balance"):
                await client.generate("no money left")
            assert client.pending() == []  # a definite refusal: nothing to resend, nothing billed
        assert poor.counters()["submit_attempts"] == 1


async def test_balance_unlimited_and_token_not_found(emu):
    async with client_for(emu) as client:
        emu.set_faults(balance_answer="unlimited")
        balance = await client.balance()
        assert balance.unlimited_quota and balance.remain_balance is None
        emu.set_faults(balance_answer="token-not-found")
        with pytest.raises(AuthenticationError) as info:
            await client.balance()
    assert "Token Not Found" in str(info.value) and "\n" not in str(info.value)


# --- the wild dialect ------------------------------------------------------------------------


async def test_wild_statuses_never_abandon_a_paid_task_and_updates_say_queued_then_running(emu):
    emu.set_faults(dialect="wild", status_case="upper")
    seen: list[str] = []
    async with client_for(emu) as client:
        generation = await client.generate("wild", on_update=lambda u: seen.append(u.stage))
    assert generation.images and generation.cost is not None and generation.cost > 0
    assert seen[0] == "submitting" and seen[-1] == "done"


async def test_string_error_codes_reach_the_user_with_type_and_param(emu):
    emu.set_faults(dialect="wild")
    async with client_for(emu) as client:
        with pytest.raises(TaskFailedError) as info:
            await client.generate("FAIL_MODERATION please")
    error = info.value
    assert error.code == "OutputImageSensitiveContentDetected" and isinstance(error.type, str)
    assert "OutputImageSensitiveContentDetected" in str(error) and "\n" not in str(error)


async def test_a_listed_model_the_table_does_not_know_is_accepted_at_the_size_it_returns(emu):
    emu.set_faults(dialect="wild")
    async with client_for(emu) as client:
        assert "qwen-image-3.0" in await client.models()
        generation = await client.generate("a newer model", model="qwen-image-3.0")
    assert generation.images[0].size == (1328, 1328)  # not in the 2.0 pixel table


async def test_a_model_in_neither_the_table_nor_the_list_is_refused_before_any_submit(emu):
    async with client_for(emu) as client:
        with pytest.raises(ValidationError) as info:
            await client.generate("typo", model="qwen-image-2.1")
    assert "known: qwen-image-2.0, qwen-image-2.0-pro" in str(info.value)
    assert "did you mean 'qwen-image-2.0'" in str(info.value)
    assert emu.counters()["submit_attempts"] == 0


async def test_models_are_fetched_once_per_origin(emu):
    emu.set_faults(dialect="wild")
    async with client_for(emu) as client:
        assert emu.counters()["api_requests"] == 0
        first = await client.models()
        await client.generate("a", model="qwen-image-3.0")
        await client.generate("b", model="qwen-image-3.0")
    async with client_for(emu) as other:
        assert await other.models() == first
    # Besides polls and submits: the model list once, and qwen-image-3.0's own schema once (API.md
    # 7.7, read since issue 21 to check a listed model before its submit).
    assert emu.counters()["api_requests"] - emu.counters()["polls"] - emu.counters()["submit_attempts"] == 2


async def test_a_synchronous_answer_is_downloaded_and_journaled_like_a_task(emu):
    emu.set_faults(sync_models=("qwen-image-2.0",))
    async with client_for(emu) as client:
        generation = await client.generate("at once", n=2)
        (entry,) = client.history(1)
    assert len(generation.images) == 2 and emu.counters()["polls"] == 0
    assert generation.images[0].info["task_id"] == generation.task_id
    assert entry.downloaded and entry.status == "completed" and entry.cost == generation.cost


async def test_a_model_list_that_cannot_be_read_refuses_an_unknown_model_and_says_why():
    import httpx

    def host(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "no such endpoint"}})

    async with AsyncClient("sk-unit", "https://api.test.example", transport=httpx.MockTransport(host),
                           retry=FAST_RETRY) as client:
        with pytest.raises(ValidationError) as info:
            await client.generate("x", model="qwen-image-9")
    message = str(info.value)
    assert "known: qwen-image-2.0" in message and "model list could not be read" in message
    assert "\n" not in message


async def test_resume_many_fetches_each_in_order_and_a_bad_one_does_not_stop_the_rest(emu):
    async with client_for(emu) as client:
        first = await client.submit("one")
        second = await client.submit("two")
        seen: set[int] = set()
        results = await client.resume_many(
            [second, "task_unknown_here", first], concurrency=2, on_update=lambda i, u: seen.add(i)
        )
    assert [g.task_id for g in results] == [second, "task_unknown_here", first]
    assert results[0].ok and results[2].ok and results[1].error is not None
    assert {0, 2} <= seen  # each index reported its own steps
    assert billed(emu) == 2  # nothing was submitted again


# --- what a review found: each a way to bill twice or lose a task ------------------------------


async def test_the_users_resend_is_one_send_where_keys_are_ignored(emu):
    emu.set_faults(idempotency="never", lose_submit_answers=4)
    async with client_for(emu) as client:
        with pytest.raises(SubmitOutcomeUnknown) as info:
            await client.generate("lost again and again")
        with pytest.raises(SubmitOutcomeUnknown, match="the resend got no definite answer"):
            await client.resend(info.value.idempotency_key)
        assert client.pending()[0].outcome_unknown
    assert emu.counters()["submit_attempts"] == 2 and billed(emu) == 2


async def test_a_server_error_inside_a_200_while_polling_never_ends_the_wait(emu):
    import httpx

    polls = 0

    def host(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        if request.method == "POST":
            return httpx.Response(200, json={"code": 200, "data": [{"task_id": "task_1", "status": "submitted"}]})
        if request.url.host == "cdn.test.example":
            return httpx.Response(200, content=_png(), headers={"content-type": "image/png"})
        polls += 1
        if polls <= 2:
            return httpx.Response(200, json={"error": {"code": "upstream_error", "type": "server_error", "message": "busy"}})
        return httpx.Response(200, json={"code": 200, "data": {"id": "task_1", "status": "completed",
                                         "result": {"images": [{"url": ["https://cdn.test.example/a.png"]}]}}})

    async with AsyncClient("sk-unit", "https://api.test.example", transport=httpx.MockTransport(host),
                           retry=FAST_RETRY, poll=PollPolicy.for_latency(0.05)) as client:
        generation = await client.generate("x")
    assert generation.images and polls >= 3


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_a_plain_500_on_submit_is_sent_once_and_its_outcome_is_unknown(emu):
    import httpx

    sent = []

    def host(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500, json={"error": {"code": 500, "message": "upstream exploded", "type": "server_error"}})

    async with AsyncClient("sk-unit", "https://api.test.example", transport=httpx.MockTransport(host),
                           retry=FAST_RETRY) as client:
        with pytest.raises(SubmitOutcomeUnknown, match="HTTP 500: upstream exploded") as info:
            await client.generate("x")
        assert client.pending()[0].outcome_unknown and client.pending()[0].key == info.value.idempotency_key
    assert len(sent) == 1


async def test_idempotency_in_progress_to_the_last_attempt_leaves_the_outcome_unknown():
    import httpx

    sent = []

    def host(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(409, headers={"Retry-After": "0"}, json={"error": {
            "code": "idempotency_in_progress", "message": "still processing", "type": "invalid_request_error"}})

    async with AsyncClient("sk-unit", "https://api.test.example", transport=httpx.MockTransport(host),
                           retry=RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_cap=0.02)) as client:
        with pytest.raises(SubmitOutcomeUnknown) as info:
            await client.generate("forever in progress")
        (entry,) = client.pending()
    assert entry.outcome_unknown and "nothing more was resent" in str(info.value)
    assert len(sent) == 3 and len({r.headers["idempotency-key"] for r in sent}) == 1


async def test_a_result_with_no_id_and_its_own_success_word_is_kept():
    import httpx

    def host(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, headers={"X-APIMart-Response-Version": "2026-07-27"}, json={
                "code": 200, "request_id": "req_9", "data": {
                    "object": "generation.result", "status": "SUCCEEDED",
                    "result": {"images": [{"url": ["https://cdn.test.example/a.png"]}]}}})
        return httpx.Response(200, content=_png(), headers={"content-type": "image/png"})

    async with AsyncClient("sk-unit", "https://api.test.example", transport=httpx.MockTransport(host),
                           retry=FAST_RETRY) as client:
        generation = await client.generate("x")
    assert generation.task_id == "req_9" and generation.images


def test_only_the_version_asked_for_proves_that_keys_are_honoured():
    from qimage_nb.providers.apimart import confirms_idempotency

    assert confirms_idempotency({"X-APIMart-Response-Version": "2026-07-27"})
    assert confirms_idempotency({"Idempotency-Replayed": "true"})
    assert not confirms_idempotency({"X-APIMart-Response-Version": ""})
    assert not confirms_idempotency({"X-APIMart-Response-Version": "2025-01-01"})
    assert not confirms_idempotency({})
