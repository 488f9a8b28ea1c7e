"""AsyncClient against httpx.MockTransport: the wire behaviour, request by request."""

from __future__ import annotations

import email.utils
import io
import json
import time

import httpx
import pytest
from PIL import Image

from qimage_nb import AsyncClient, Client
from qimage_nb._exceptions import (
    AuthenticationError,
    BadRequestError,
    GenerationTimeout,
    ImageError,
    InsufficientBalanceError,
    ProtocolError,
    RateLimitError,
    ServerError,
    SubmitOutcomeUnknown,
    TaskFailedError,
    ValidationError,
)
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy, parse_retry_after

KEY = "sk-unit-test-SECRET-1234"
API = "https://api.test.example"
CDN = "https://cdn.test.example"
FAST_RETRY = RetryPolicy(max_attempts=4, backoff_base=0.001, backoff_cap=0.002)
FAST_POLL = PollPolicy(floor=0.001, ceiling=0.01, first=0.001)


def png_bytes(size=(64, 48), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


class FakeAPI:
    """A scripted provider: answers are queued per route; every request is recorded."""

    def __init__(self, *, n_images: int = 1, polls_before_done: int = 1, versioned: bool = False) -> None:
        # versioned: answer submits in the versioned contract (API.md 7.1), which proves keys are honoured
        self.versioned = versioned
        self.requests: list[httpx.Request] = []
        self.submit_answers: list[httpx.Response] = []
        self.poll_answers: list[httpx.Response] = []
        self.n_images = n_images
        self.polls_before_done = polls_before_done
        self.polls = 0
        self.images = {f"{CDN}/img/{i}.png": png_bytes(color=(i * 40, 10, 10)) for i in range(n_images)}

    def completed(self) -> dict:
        return {
            "code": 200,
            "data": {
                "id": "task_T1",
                "status": "completed",
                "progress": 100,
                "result": {"images": [{"url": [u]} for u in self.images]},
                "estimated_time": 10,
            },
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.extensions["sent_at"] = time.monotonic()
        self.requests.append(request)
        url = str(request.url)
        if request.method == "POST" and url == f"{API}/v1/images/generations":
            if self.submit_answers:
                return self.submit_answers.pop(0)
            if self.versioned:
                return httpx.Response(
                    202, headers={"X-APIMart-Response-Version": "2026-07-27"},
                    json={"code": 202, "data": {"object": "generation.task", "id": "task_T1", "status": "queued"}},
                )
            return httpx.Response(200, json={"code": 200, "data": [{"status": "submitted", "task_id": "task_T1"}]})
        if request.method == "GET" and url.startswith(f"{API}/v1/tasks/"):
            if self.poll_answers:
                return self.poll_answers.pop(0)
            self.polls += 1
            if self.polls < self.polls_before_done:
                return httpx.Response(200, json={"code": 200, "data": {"id": "task_T1", "status": "processing", "progress": 50}})
            return httpx.Response(200, json=self.completed())
        if url in self.images:
            return httpx.Response(200, content=self.images[url], headers={"content-type": "image/png"})
        return httpx.Response(404, json={"error": {"code": 404, "message": "no route"}})

    def api_requests(self):
        return [r for r in self.requests if str(r.url).startswith(API)]

    def cdn_requests(self):
        return [r for r in self.requests if str(r.url).startswith(CDN)]


def make(fake: FakeAPI, **kwargs) -> AsyncClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("poll", FAST_POLL)
    return AsyncClient(KEY, API, transport=httpx.MockTransport(fake), **kwargs)


async def test_generate_end_to_end_and_provenance():
    fake = FakeAPI(n_images=3, polls_before_done=2)
    async with make(fake) as client:
        updates = []
        gen = await client.generate("a lighthouse", size="4:3", n=3, on_update=updates.append)
    assert gen.task_id == "task_T1"
    assert gen.urls == list(fake.images)
    assert [im.getpixel((0, 0)) for im in gen.images] == [(0, 10, 10), (40, 10, 10), (80, 10, 10)]
    info = gen.images[1].info
    assert (info["prompt"], info["size"], info["task_id"], info["source_url"]) == (
        "a lighthouse", "4:3", "task_T1", f"{CDN}/img/1.png"
    )
    stages = [u.stage for u in updates]
    assert stages[0] == "submitting" and stages[-1] == "done"
    assert stages.count("downloading") == 3
    assert all(p.exists() for p in gen.paths)


async def test_authorization_only_to_the_api_origin():
    fake = FakeAPI(n_images=2)
    async with make(fake) as client:
        await client.generate("x", n=2)
    assert fake.api_requests() and all(r.headers["authorization"] == f"Bearer {KEY}" for r in fake.api_requests())
    assert len(fake.cdn_requests()) == 2
    assert all("authorization" not in r.headers for r in fake.cdn_requests())


def _submits(fake: FakeAPI) -> list[httpx.Request]:
    return [r for r in fake.requests if r.method == "POST"]


HTML_502 = httpx.Response(502, text="<html><title>502 Bad Gateway</title></html>", headers={"content-type": "text/html"})


async def test_every_submit_carries_the_key_and_the_versioned_contract_header():
    fake = FakeAPI()
    async with make(fake) as client:
        await client.generate("x")
    (submit,) = _submits(fake)
    assert submit.headers["x-apimart-response-version"] == "2026-07-27"
    assert len(submit.headers["idempotency-key"]) >= 32


async def test_on_an_origin_that_honours_keys_a_lost_answer_is_resent_with_the_same_key():
    fake = FakeAPI(versioned=True)
    async with make(fake) as client:
        await client.generate("x")  # its versioned answer proves keys are honoured here
        fake.submit_answers = [HTML_502, httpx.Response(503, json={"error": {"message": "busy"}})]
        gen = await client.generate("y")
    later = _submits(fake)[1:]
    assert len(later) == 3
    assert {r.headers["idempotency-key"] for r in later} == {gen.idempotency_key}
    assert len({r.content for r in later}) == 1  # the identical body every time


async def test_on_an_unproven_origin_a_lost_answer_is_reported_never_resent():
    fake = FakeAPI()  # legacy answers: nothing proves this host honours Idempotency-Key
    fake.submit_answers = [HTML_502]
    async with make(fake) as client:
        with pytest.raises(SubmitOutcomeUnknown) as info:
            await client.generate("x")
        (entry,) = client.pending()
    message = str(info.value)
    assert len(_submits(fake)) == 1
    assert "may exist and may be billed" in message and "\n" not in message
    assert f"%qimage resume --resend {info.value.idempotency_key}" in message
    assert entry.outcome_unknown and entry.key == info.value.idempotency_key
    # the user chooses to resend: the identical body under the same key, once
    async with make(fake) as client:
        gen = await client.resend(entry.key)
    first, second = _submits(fake)
    assert gen.images and second.headers["idempotency-key"] == first.headers["idempotency-key"]
    assert second.content == first.content


async def test_a_500_on_submit_is_shown_at_once_and_never_resent():
    fake = FakeAPI(versioned=True)
    fake.submit_answers = [httpx.Response(500, json={"error": {
        "code": "build_request_failed", "message": "build_request_failed: invalid size", "type": "server_error",
        "param": "size"}})]
    async with make(fake) as client:
        with pytest.raises(BadRequestError) as info:
            await client.generate("x")
        assert client.pending() == []
    assert len(_submits(fake)) == 1
    error = info.value
    assert (error.status_code, error.code, error.param) == (500, "build_request_failed", "size")
    assert "invalid size" in str(error) and "\n" not in str(error)


async def test_a_rate_limited_submit_is_resent_with_the_same_key_even_on_an_unproven_origin():
    fake = FakeAPI()
    fake.submit_answers = [httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"message": "slow"}})]
    async with make(fake) as client:
        gen = await client.generate("x")
    assert len(_submits(fake)) == 2 and {r.headers["idempotency-key"] for r in _submits(fake)} == {gen.idempotency_key}


async def test_idempotency_in_progress_waits_retry_after_and_resends_the_same_key():
    fake = FakeAPI()
    fake.submit_answers = [httpx.Response(409, headers={"Retry-After": "0.2"}, json={"error": {
        "code": "idempotency_in_progress", "message": "still processing", "type": "invalid_request_error"}})]
    async with make(fake) as client:
        gen = await client.generate("x")
    first, second = _submits(fake)
    assert gen.images and first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert second.extensions["sent_at"] - first.extensions["sent_at"] >= 0.2


async def test_a_reused_key_is_a_clear_error_and_not_resent():
    fake = FakeAPI()
    fake.submit_answers = [httpx.Response(409, json={"error": {
        "code": "idempotency_key_reused", "message": "key used with another body", "type": "invalid_request_error"}})]
    async with make(fake) as client:
        with pytest.raises(BadRequestError, match="key used with another body") as info:
            await client.generate("x")
        assert client.pending() == []
    assert info.value.code == "idempotency_key_reused" and len(_submits(fake)) == 1


async def test_an_indeterminate_idempotency_result_is_outcome_unknown_not_resent():
    fake = FakeAPI()
    fake.submit_answers = [httpx.Response(409, json={"error": {"code": "idempotency_result_indeterminate", "message": "cannot tell"}})]
    async with make(fake) as client:
        with pytest.raises(SubmitOutcomeUnknown, match="cannot tell whether it created the task"):
            await client.generate("x")
        assert client.pending()[0].outcome_unknown
    assert len(_submits(fake)) == 1


async def test_idempotency_unavailable_is_retried_with_the_same_key():
    fake = FakeAPI()
    unavailable = httpx.Response(503, headers={"Retry-After": "0"}, json={"error": {"code": "idempotency_unavailable", "message": "later"}})
    fake.submit_answers = [unavailable]
    async with make(fake) as client:
        assert (await client.generate("x")).images
    assert len(_submits(fake)) == 2 and len({r.headers["idempotency-key"] for r in _submits(fake)}) == 1
    stuck = FakeAPI()
    stuck.submit_answers = [unavailable] * 4
    async with make(stuck) as client:
        with pytest.raises(ServerError, match="idempotency_unavailable"):
            await client.generate("x", new=True)  # the same request again, not from the journal
        assert client.pending() == []  # it never created anything: nothing to resend, nothing billed
    assert len(_submits(stuck)) == 4


async def test_html_error_page_becomes_a_clear_error():
    page = httpx.Response(502, text="<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", headers={"content-type": "text/html"})
    client = Client(KEY, API, transport=httpx.MockTransport(lambda request: page), retry=FAST_RETRY)
    with pytest.raises(ServerError) as info:
        client.balance()
    message = str(info.value)
    assert "502 Bad Gateway" in message and "HTML" in message and "\n" not in message
    assert "Traceback" not in message and "JSONDecodeError" not in message


async def test_rate_limit_retry_after_is_honoured():
    fake = FakeAPI()
    fake.submit_answers = [httpx.Response(429, headers={"Retry-After": "0.2"}, json={"error": {"code": 429, "message": "slow down", "type": "rate_limit_error"}})]
    async with make(fake) as client:
        started = time.monotonic()
        await client.generate("x")
        waited = time.monotonic() - started
    assert waited >= 0.2  # the hint, not our millisecond backoff, decided the wait


async def test_rate_limit_too_long_is_raised_with_the_hint():
    fake = FakeAPI()
    fake.submit_answers = [httpx.Response(429, headers={"Retry-After": "3600"}, json={"error": {"code": 429, "message": "quota", "type": "rate_limit_error"}})]
    async with make(fake) as client:
        with pytest.raises(RateLimitError, match="retry after 3600 s") as info:
            await client.generate("x")
    assert info.value.retry_after == 3600


def test_retry_after_parses_seconds_and_http_dates():
    now = time.time()
    assert parse_retry_after("7") == 7
    assert parse_retry_after(" 1.5 ") == 1.5
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


async def test_auth_error_says_what_to_do_and_never_echoes_the_key():
    fake = FakeAPI()
    fake.submit_answers = [httpx.Response(401, json={"error": {"code": 401, "message": f"invalid key {KEY}", "type": "authentication_error"}})]
    async with make(fake) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.generate("x")
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert "QIMAGE_API_KEY" in str(info.value)


async def test_no_key_is_refused_before_any_request():
    fake = FakeAPI()
    client = AsyncClient(None, API, transport=httpx.MockTransport(fake))
    with pytest.raises(ValidationError, match="QIMAGE_API_KEY"):
        await client.generate("x")
    assert fake.requests == []


def test_repr_hides_the_key(monkeypatch):
    monkeypatch.setenv("QIMAGE_API_KEY", KEY)
    client = Client(base_url=API)
    assert KEY not in repr(client) and "key=set" in repr(client)
    assert KEY not in repr(vars(client._async))


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.apimart.ai", True),
        ("http://127.0.0.1:8000", True),
        ("http://localhost:8000/", True),
        ("http://[::1]:8000", True),
        ("http://api.emulator.localhost", True),
        ("http://api.apimart.ai", False),
        ("http://10.0.0.5:8000", False),
        ("ftp://api.apimart.ai", False),
        ("api.apimart.ai", False),
        ("https://user:pw@api.apimart.ai", False),
        ("", False),
    ],
)
def test_base_url_rules(url, ok):
    if ok:
        assert AsyncClient(KEY, url).base_url == url.rstrip("/")
    else:
        with pytest.raises(ValidationError) as info:
            AsyncClient(KEY, url)
        assert info.value.field == "base_url"


def test_insecure_http_needs_an_explicit_opt_in():
    assert AsyncClient(KEY, "http://mirror.internal", allow_insecure_http=True).base_url == "http://mirror.internal"


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "5", True])
def test_bad_timeouts_are_refused(timeout):
    with pytest.raises(ValidationError, match="timeout"):
        AsyncClient(KEY, API, timeout=timeout)


async def test_an_unfamiliar_status_word_means_still_running():
    weird = httpx.Response(200, json={"code": 200, "data": {"id": "task_T1", "status": "paused", "progress": 5}})
    fake = FakeAPI()
    fake.poll_answers = [weird] * 5
    async with make(fake) as client:
        gen = await client.generate("x")
    assert gen.images  # a word the documents do not know did not cost the paid task


async def test_an_answer_with_no_status_is_tolerated_briefly_then_loud():
    broken = httpx.Response(200, json={"code": 200, "data": {"id": "task_T1", "progress": 5}})
    fake = FakeAPI()
    fake.poll_answers = [broken]
    async with make(fake) as client:
        assert (await client.generate("x")).images
    fake2 = FakeAPI()
    fake2.poll_answers = [broken] * 3
    async with make(fake2) as client:
        with pytest.raises(ProtocolError, match="no status") as info:
            await client.generate("x", new=True)  # the same request again, not from the journal
    assert info.value.task_id == "task_T1"


async def test_task_failure_is_typed_with_reason_and_id():
    fake = FakeAPI()
    fake.poll_answers = [
        httpx.Response(200, json={"code": 200, "data": {"id": "task_T1", "status": "failed", "error": {"code": 400, "message": "Input data may contain inappropriate content", "type": "moderation"}}})
    ]
    async with make(fake) as client:
        with pytest.raises(TaskFailedError, match="inappropriate content") as info:
            await client.generate("x")
    assert info.value.task_id == "task_T1"


async def test_wait_deadline_raises_timeout_with_task_id():
    fake = FakeAPI(polls_before_done=10**6)
    async with make(fake) as client:
        with pytest.raises(GenerationTimeout) as info:
            await client.generate("x", timeout=0.2)
    assert info.value.task_id == "task_T1"
    assert isinstance(info.value, TimeoutError)
    assert "resume('task_T1')" in str(info.value)


async def test_non_image_body_is_a_clear_error():
    fake = FakeAPI()
    url = next(iter(fake.images))
    fake.images[url] = b"<html><body>Not found</body></html>"
    async with make(fake) as client:
        with pytest.raises(ImageError) as info:
            await client.generate("x")
    assert info.value.task_id == "task_T1"


async def test_a_garbled_submit_answer_is_outcome_unknown_unless_keys_are_honoured():
    fake = FakeAPI()
    fake.submit_answers = [httpx.Response(200, text="{not json")] * 4
    async with make(fake) as client:
        with pytest.raises(SubmitOutcomeUnknown, match="could not be read"):
            await client.generate("x")
    assert len(_submits(fake)) == 1
    confirmed = FakeAPI(versioned=True)
    async with make(confirmed) as client:
        await client.generate("first")
        confirmed.submit_answers = [httpx.Response(200, text="{not json")] * 2
        gen = await client.generate("x")
    later = _submits(confirmed)[1:]
    assert gen.images and len(later) == 3 and len({r.headers["idempotency-key"] for r in later}) == 1


def test_sync_facade_in_a_plain_script():
    fake = FakeAPI(n_images=2)
    with Client(KEY, API, transport=httpx.MockTransport(fake), retry=FAST_RETRY, poll=FAST_POLL) as client:
        gen = client.generate("sync please", n=2)
        again = client.resume(gen.task_id)
    assert len(gen.images) == 2 and gen.images[0].size == (64, 48)
    assert [p for p in again.paths] == gen.paths
    assert len([r for r in fake.requests if r.method == "POST"]) == 1


def test_upload_sends_multipart_and_returns_url(tmp_path):
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["ctype"] = request.headers["content-type"]
        seen["body"] = request.read()
        return httpx.Response(200, json={"url": f"{CDN}/f/image/1-photo.png", "filename": "photo.png"})

    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes())
    client = Client(KEY, API, transport=httpx.MockTransport(handler), retry=FAST_RETRY)
    assert client.upload(path) == f"{CDN}/f/image/1-photo.png"
    assert seen["ctype"].startswith("multipart/form-data")
    assert b'name="file"' in seen["body"] and png_bytes() in seen["body"]


def test_balance_parses():
    def handler(request):
        return httpx.Response(200, content=json.dumps({"success": True, "remain_balance": 4.5, "remain_credits": 450}))

    client = Client(KEY, API, transport=httpx.MockTransport(handler))
    assert client.balance().remain_balance == 4.5


async def test_a_long_retry_after_while_polling_is_honoured():
    fake = FakeAPI()
    fake.poll_answers = [
        httpx.Response(429, headers={"Retry-After": "0.4"}, json={"error": {"code": 429, "message": "slow", "type": "rate_limit_error"}})
    ]
    policy = RetryPolicy(max_attempts=4, backoff_base=0.001, backoff_cap=0.002, max_retry_after=0.01)
    async with make(fake, retry=policy) as client:
        await client.generate("x")
    polls = [r for r in fake.requests if "/v1/tasks/" in str(r.url)]
    times = [r.extensions.get("sent_at") for r in polls]
    assert len(polls) == 2  # the 429 did not make us hammer the server on our own schedule
    assert None not in times and times[1] - times[0] >= 0.4


async def test_408_while_polling_is_transient():
    fake = FakeAPI()
    fake.poll_answers = [httpx.Response(408, json={"error": {"code": 408, "message": "request timeout"}})] * 5
    async with make(fake) as client:
        generation = await client.generate("x")
    assert generation.images


async def test_a_refusal_after_an_ambiguous_attempt_keeps_the_submit_resumable():
    fake = FakeAPI(versioned=True)
    async with make(fake) as client:
        await client.generate("first")
        fake.submit_answers = [
            HTML_502,
            httpx.Response(402, json={"error": {"code": 402, "message": "balance spent", "type": "payment_required"}}),
        ]
        with pytest.raises(InsufficientBalanceError):
            await client.generate("x")
        pending = client.pending()
    assert len(pending) == 1 and pending[0].task_id is None and pending[0].outcome_unknown


async def test_errors_inside_a_200_are_typed_errors_of_their_code():
    fake = FakeAPI()
    fake.submit_answers = [httpx.Response(200, json={"code": 402, "error": {"code": 402, "message": "no money", "type": "payment_required"}})]
    async with make(fake) as client:
        with pytest.raises(InsufficientBalanceError, match="no money"):
            await client.generate("x")
    token = Client(KEY, API, transport=httpx.MockTransport(
        lambda request: httpx.Response(200, json={"success": False, "message": "Token Not Found"})))
    with pytest.raises(AuthenticationError) as info:
        token.balance()
    assert "Token Not Found" in str(info.value) and "QIMAGE_API_KEY" in str(info.value)
    assert "\n" not in str(info.value)


async def test_a_result_answered_at_once_is_downloaded_without_polling():
    fake = FakeAPI(n_images=2)
    fake.submit_answers = [httpx.Response(200, json={"code": 200, "data": {
        "object": "generation.result", "id": "gen_S1", "status": "completed", "cost": 0.02,
        "result": {"images": [{"url": [u]} for u in fake.images]}}})]
    async with make(fake) as client:
        gen = await client.generate("x", n=2)
        (entry,) = client.history(1)
    assert [r for r in fake.requests if "/v1/tasks/" in str(r.url)] == []
    assert gen.task_id == "gen_S1" and len(gen.images) == 2 and gen.cost == 0.02
    assert gen.images[0].info["task_id"] == "gen_S1" and gen.images[1].info["source_url"] == list(fake.images)[1]
    assert entry.status == "completed" and entry.cost == 0.02 and entry.downloaded


async def test_a_definite_refusal_closes_the_journal_entry():
    fake = FakeAPI()
    fake.submit_answers = [httpx.Response(402, json={"error": {"code": 402, "message": "no money", "type": "payment_required"}})]
    async with make(fake) as client:
        with pytest.raises(InsufficientBalanceError):
            await client.generate("x")
        assert client.pending() == []


async def test_a_short_key_never_corrupts_answers():
    fake = FakeAPI()
    async with AsyncClient("k", API, transport=httpx.MockTransport(fake), retry=FAST_RETRY, poll=FAST_POLL) as client:
        generation = await client.generate("x")
    assert generation.task_id == "task_T1"


async def test_a_deadline_shorter_than_the_first_poll_still_asks_once():
    fake = FakeAPI(polls_before_done=10**6)
    slow_first = PollPolicy(floor=0.001, ceiling=5, first=3.0)
    async with make(fake, poll=slow_first) as client:
        with pytest.raises(GenerationTimeout, match="still running"):
            await client.generate("x", timeout=0.1)
    assert len([r for r in fake.requests if "/v1/tasks/" in str(r.url)]) == 1


async def test_the_key_is_in_no_header_dict_of_ours():
    fake = FakeAPI()
    async with make(fake) as client:
        auth = client._auth()
        assert KEY not in repr(auth) and KEY not in repr(vars(auth))
        await client.generate("x")
    assert fake.api_requests()[0].headers["authorization"] == f"Bearer {KEY}"
