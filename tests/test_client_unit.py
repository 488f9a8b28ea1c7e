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
    TaskFailedError,
    ValidationError,
)
from qimage_nb._polling import PollPolicy
from qimage_nb._retry import RetryPolicy, parse_retry_after

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

    def __init__(self, *, n_images: int = 1, polls_before_done: int = 1) -> None:
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


async def test_submit_retries_reuse_one_idempotency_key():
    fake = FakeAPI()
    fake.submit_answers = [
        httpx.Response(500, json={"error": {"code": 500, "message": "boom", "type": "server_error"}}),
        httpx.Response(502, text="<html><title>502 Bad Gateway</title></html>", headers={"content-type": "text/html"}),
    ]
    async with make(fake) as client:
        gen = await client.generate("x")
    submits = [r for r in fake.requests if r.method == "POST"]
    assert len(submits) == 3
    keys = {r.headers["idempotency-key"] for r in submits}
    assert len(keys) == 1 and gen.idempotency_key in keys


async def test_two_generates_use_two_keys():
    fake = FakeAPI()
    async with make(fake) as client:
        await client.generate("x")
        await client.generate("x")
    keys = [r.headers["idempotency-key"] for r in fake.requests if r.method == "POST"]
    assert len(keys) == 2 and keys[0] != keys[1]


async def test_non_retryable_error_is_raised_at_once():
    fake = FakeAPI()
    fake.submit_answers = [
        httpx.Response(400, json={"error": {"code": 400, "message": "prompt is bad", "type": "invalid_request_error", "param": "prompt"}})
    ]
    async with make(fake) as client:
        with pytest.raises(BadRequestError, match="prompt is bad") as info:
            await client.generate("x")
    assert info.value.param == "prompt"
    assert len([r for r in fake.requests if r.method == "POST"]) == 1


async def test_html_error_page_becomes_a_clear_error():
    fake = FakeAPI()
    page = httpx.Response(502, text="<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", headers={"content-type": "text/html"})
    fake.submit_answers = [page] * 4
    async with make(fake) as client:
        with pytest.raises(ServerError) as info:
            await client.generate("x")
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


async def test_unknown_status_is_tolerated_briefly_then_loud():
    weird = httpx.Response(200, json={"code": 200, "data": {"id": "task_T1", "status": "paused", "progress": 5}})
    fake = FakeAPI()
    fake.poll_answers = [weird]
    async with make(fake) as client:
        gen = await client.generate("x")
    assert gen.images  # one odd answer did not cost the paid task
    fake2 = FakeAPI()
    fake2.poll_answers = [weird] * 3
    async with make(fake2) as client:
        with pytest.raises(ProtocolError, match="paused") as info:
            await client.generate("x")
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


async def test_malformed_json_is_retried_then_reported():
    fake = FakeAPI()
    fake.submit_answers = [httpx.Response(200, text="{not json")] * 4
    async with make(fake) as client:
        with pytest.raises(ProtocolError, match="not valid JSON"):
            await client.generate("x")
    keys = {r.headers["idempotency-key"] for r in fake.requests if r.method == "POST"}
    assert len(keys) == 1


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
    fake = FakeAPI()
    fake.submit_answers = [
        httpx.Response(500, json={"error": {"code": 500, "message": "maybe created", "type": "server_error"}}),
        httpx.Response(402, json={"error": {"code": 402, "message": "balance spent", "type": "payment_required"}}),
    ]
    async with make(fake) as client:
        with pytest.raises(InsufficientBalanceError):
            await client.generate("x")
        pending = client.pending()
    assert len(pending) == 1 and pending[0].task_id is None  # resume will replay the same key


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
        with pytest.raises(GenerationTimeout, match="still processing"):
            await client.generate("x", timeout=0.1)
    assert len([r for r in fake.requests if "/v1/tasks/" in str(r.url)]) == 1


async def test_the_key_is_in_no_header_dict_of_ours():
    fake = FakeAPI()
    async with make(fake) as client:
        auth = client._auth()
        assert KEY not in repr(auth) and KEY not in repr(vars(auth))
        await client.generate("x")
    assert fake.api_requests()[0].headers["authorization"] == f"Bearer {KEY}"
