"""The bundled emulator, driven with plain httpx over loopback HTTP (and in-process), as a client sees it.

Every assertion is about what comes over the wire: statuses, bodies, headers, PNG pixels, timings,
and the counters a client test would read.
"""

from __future__ import annotations

import email.utils
import io
import json
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image, UnidentifiedImageError

from qimage_nb._contract import PIXEL_SIZES
from qimage_nb.emulator import Emulator, Faults

KEY = "sk-test-emulator"
AUTH = {"Authorization": f"Bearer {KEY}"}
DROP = object()
# Nothing here speaks TLS, but every httpx client builds an SSL context (~50 ms): share one.
SSL = ssl.create_default_context()


@pytest.fixture
def emu():
    with Emulator(api_key=KEY, latency=0.1, jitter=0.03, seed=1) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def plain():
    """A client without credentials, shared: building one (and its SSL context) per call is slow."""
    with httpx.Client(verify=SSL, timeout=5) as client:
        yield client


@pytest.fixture
def api(emu):
    with httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH, timeout=5) as client:
        yield client


def body(**fields):
    payload = {"model": "qwen-image-2.0", "prompt": "a lighthouse at dusk"}
    payload.update(fields)
    return {k: v for k, v in payload.items() if v is not DROP}


def submit(api, key=None, **fields) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return api.post("/v1/images/generations", json=body(**fields), headers=headers)


def task_id(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["data"][0]["task_id"]


def poll(api, tid) -> dict:
    response = api.get(f"/v1/tasks/{tid}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def wait(api, tid, timeout=5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = poll(api, tid)
        if data["status"] in ("completed", "failed", "cancelled"):
            return data
        time.sleep(0.02)
    raise AssertionError(f"task {tid} did not finish in {timeout}s")


def urls(data) -> list[str]:
    found = []
    for item in data["result"]["images"]:
        found.extend([item["url"]] if isinstance(item["url"], str) else item["url"])
    return found


def png(content: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


def red_pixels(image: Image.Image) -> int:
    """Pure red pixels: the colour of the reference images these tests upload."""
    return dict((colour, count) for count, colour in image.convert("RGB").getcolors(1 << 24)).get((255, 0, 0), 0)


def error_of(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["error"]


# --- import, images ------------------------------------------------------------------------------


def test_import_starts_nothing_and_loads_no_pillow():
    code = (
        "import sys, threading, qimage_nb.emulator as e\n"
        "assert 'PIL' not in sys.modules, 'Pillow loaded at import'\n"
        "assert threading.active_count() == 1\n"
        "e.Emulator(latency=0)\n"
        "assert threading.active_count() == 1, 'constructing must not start threads'\n"
        "print(sorted(e.__all__))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['DashScopeEmulator', 'Emulator', 'FalEmulator', 'Faults', 'ReplicateEmulator']"


def test_every_ratio_and_tier_renders_a_png_of_the_contracted_size(api, plain):
    ids = {key: task_id(submit(api, size=key[0], resolution=key[1], prompt=f"size {key}")) for key in PIXEL_SIZES}
    assert len(ids) == 14
    for key, tid in ids.items():
        data = wait(api, tid)
        assert data["status"] == "completed"
        [url] = urls(data)
        response = plain.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        image = png(response.content)
        assert image.format == "PNG"
        assert image.size == PIXEL_SIZES[key], key


def test_a_2k_picture_renders_fast():
    from qimage_nb.emulator._render import render_png

    best = min(
        _timed(lambda: render_png(prompt="speed " * 60, index=0, n=1, size="1:1", resolution="2K",
                                  model="qwen-image-2.0-pro"))
        for _ in range(3)
    )
    assert best < 0.3, f"a 2K render took {best:.3f}s"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_n6_gives_six_distinct_images_in_a_stable_order(api, plain):
    first = wait(api, task_id(submit(api, n=6, prompt="six lanterns")))
    second = wait(api, task_id(submit(api, n=6, prompt="six lanterns")))
    first_urls, second_urls = urls(first), urls(second)
    assert len(first_urls) == 6 and [u.rsplit("/", 1)[1] for u in first_urls] == [f"{i}.png" for i in range(6)]
    first_bytes = [plain.get(u).content for u in first_urls]
    assert len(set(first_bytes)) == 6
    assert all(png(b).size == (1024, 1024) for b in first_bytes)
    # Pictures derive from (prompt, index): the same request gives the same image at the same place.
    assert [plain.get(u).content for u in second_urls] == first_bytes


# --- lifecycle ---------------------------------------------------------------------------------------


def test_lifecycle_pending_processing_completed_with_honest_progress():
    # 0.8 s: the pending pickup (10 %) lasts long enough to be seen even on a loaded machine
    with Emulator(api_key=KEY, latency=0.8, jitter=0, overstate=1.5) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        before = time.time()
        tid = task_id(submit(api, n=2))
        seen = []
        while True:
            data = poll(api, tid)
            seen.append(data)
            if data["status"] == "completed":
                break
            assert "result" not in data and "completed" not in data and "actual_time" not in data
            time.sleep(0.01)
    statuses = [d["status"] for d in seen]
    assert statuses[0] == "pending"
    assert "processing" in statuses
    order = {"pending": 0, "processing": 1, "completed": 2}
    assert [order[s] for s in statuses] == sorted(order[s] for s in statuses)
    progress = [d["progress"] for d in seen]
    assert progress == sorted(progress) and progress[-1] == 100
    assert all(0 <= d["progress"] < 100 for d in seen if d["status"] == "processing")
    assert len({d["progress"] for d in seen if d["status"] == "processing"}) >= 3  # it really rises
    done = seen[-1]
    assert isinstance(done["created"], int) and abs(done["created"] - before) <= 1
    assert done["completed"] >= done["created"]
    assert done["estimated_time"] == 2  # ceil(0.8 s * 1.5)
    assert done["actual_time"] >= 1 and done["estimated_time"] >= done["actual_time"]
    assert done["cost"] == pytest.approx(0.012)
    assert all(item["expires_at"] > done["completed"] for item in done["result"]["images"])


def test_pickup_zero_reports_progress_from_the_submit_and_the_timeline_matches():
    # pickup=0: no pending phase, progress counts from the submit, as some providers report it.
    with Emulator(api_key=KEY, latency=1.0, jitter=0, pickup=0) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        sent = time.monotonic()
        tid = task_id(submit(api))
        first = poll(api, tid)
        read_at = time.monotonic()
        assert first["status"] == "processing"
        time.sleep(1.1)
        assert poll(api, tid)["status"] == "completed"
        timeline = httpx.get(emu.base_url + "/_emulator/timeline").json()
    assert timeline["clock"] == "monotonic"
    (task,) = timeline["tasks"]
    assert task["id"] == tid and task["outcome"] == "completed" and task["polls"] == 2
    # The server's instants are on this host's monotonic clock, so a client can time against them.
    assert sent <= task["created"] == task["processing"] <= read_at
    assert task["end"] == pytest.approx(task["created"] + 1.0)
    assert first["progress"] <= 100 * (read_at - task["created"]) / 1.0


def test_pickup_and_overstate_are_checked():
    with pytest.raises(ValueError, match="pickup"):
        Emulator(pickup=1.0)
    with pytest.raises(ValueError, match="overstate"):
        Emulator(overstate=0)


def test_durations_are_seeded_and_estimates_overstated():
    def estimates(seed):
        emu = Emulator(api_key=KEY, latency=2, jitter=1.5, seed=seed, overstate=10)
        with httpx.Client(verify=SSL, transport=emu.sync_transport(), base_url=emu.in_process_base_url, headers=AUTH) as api:
            return [poll(api, task_id(submit(api)))["estimated_time"] for _ in range(4)]

    first = estimates(7)
    assert first == estimates(7)
    assert first != estimates(8)
    assert all(5 <= e <= 35 for e in first)  # ceil((2 +/- 1.5) s * 10)


def test_max_concurrent_queues_fifo():
    with Emulator(api_key=KEY, latency=0.2, jitter=0, max_concurrent=1, overstate=10) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        ids = [task_id(submit(api, prompt=f"queued {i}")) for i in range(3)]
        estimates = [poll(api, tid)["estimated_time"] for tid in ids]
        finished: list[str] = []
        saw_queue = False
        while len(finished) < 3:
            states = {tid: poll(api, tid) for tid in ids}
            statuses = [s["status"] for s in states.values()]
            assert statuses.count("processing") <= 1
            saw_queue |= statuses.count("processing") == 1 and "pending" in statuses
            for tid in ids:
                if states[tid]["status"] == "pending":
                    assert states[tid]["progress"] == 0
                if states[tid]["status"] == "completed" and tid not in finished:
                    finished.append(tid)
            time.sleep(0.01)
    assert finished == ids and saw_queue
    assert estimates[0] < estimates[1] < estimates[2]  # the estimate includes the wait for a slot


# --- submit validation, auth, balance -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "status", "type_", "param"),
    [
        ({"prompt": DROP}, 400, "invalid_request_error", "prompt"),
        ({"prompt": ""}, 400, "invalid_request_error", "prompt"),
        ({"prompt": "   "}, 400, "invalid_request_error", "prompt"),
        ({"prompt": "x" * 801}, 400, "invalid_request_error", "prompt"),
        ({"prompt": 5}, 400, "invalid_request_error", "prompt"),
        ({"negative_prompt": "x" * 501}, 400, "invalid_request_error", "negative_prompt"),
        ({"n": 0}, 400, "invalid_request_error", "n"),
        ({"n": 7}, 400, "invalid_request_error", "n"),
        ({"n": "2"}, 400, "invalid_request_error", "n"),
        ({"n": 2.0}, 400, "invalid_request_error", "n"),
        ({"n": True}, 400, "invalid_request_error", "n"),
        ({"size": "5:4"}, 400, "invalid_request_error", "size"),
        ({"size": "1024x1024"}, 400, "invalid_request_error", "size"),
        ({"resolution": "4K"}, 400, "invalid_request_error", "resolution"),
        ({"image_urls": "https://example.com/a.png"}, 400, "invalid_request_error", "image_urls"),
        ({"image_urls": []}, 400, "invalid_request_error", "image_urls"),
        ({"image_urls": ["https://example.com/a.png"] * 4}, 400, "invalid_request_error", "image_urls"),
        ({"image_urls": ["data:image/png;base64,iVBORw0KGgo="]}, 400, "invalid_request_error", "image_urls"),
        ({"image_urls": ["ftp://example.com/a.png"]}, 400, "invalid_request_error", "image_urls"),
        ({"image_urls": ["/home/me/a.png"]}, 400, "invalid_request_error", "image_urls"),
        ({"model": DROP}, 400, "invalid_request_error", "model"),
        ({"model": "qwen-image-3.0"}, 503, "model_not_found", "model"),
    ],
)
def test_submit_validation_errors(emu, api, fields, status, type_, param):
    response = submit(api, key="k", **fields)
    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == status and error["type"] == type_ and error["param"] == param
    assert error["message"]
    counters = emu.counters()
    assert counters["submits_accepted"] == 0 and counters["submits_rejected"] == 1 and counters["tasks"] == 0


def test_submit_rejects_a_body_that_is_not_json(api):
    response = api.post("/v1/images/generations", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and error_of(response)["type"] == "invalid_request_error"


def test_submit_accepts_the_limits_and_every_model(api):
    for model in ("qwen-image-2.0", "qwen-image-2.0-pro"):
        response = submit(api, model=model, prompt="p" * 800, negative_prompt="n" * 500, n=6,
                          image_urls=["https://example.com/1.png", "http://example.com/2.jpg", "https://x.example/3"])
        assert task_id(response).startswith("task_01")
        assert len(task_id(response)) == len("task_01") + 23 and task_id(response)[7:].isupper()


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}]
)
def test_every_endpoint_needs_the_bearer_key(emu, headers):
    with httpx.Client(verify=SSL, base_url=emu.base_url, headers=headers) as anon:
        answers = [
            anon.post("/v1/images/generations", json=body()),
            anon.get("/v1/tasks/task_01AAAAAAAAAAAAAAAAAAAAAAA"),
            anon.get("/v1/balance"),
            anon.post("/v1/uploads/images", files={"file": ("a.png", _png_bytes(), "image/png")}),
        ]
    for response in answers:
        assert response.status_code == 401
        assert error_of(response)["type"] == "authentication_error"
    counters = emu.counters()
    assert counters["api_requests_without_valid_auth"] == 4
    assert counters["tasks"] == 0 and counters["uploads"] == 0 and counters["polls"] == 0


def test_insufficient_balance_is_402_and_in_flight_tasks_are_reserved():
    with Emulator(api_key=KEY, latency=0.1, jitter=0, balance=0.01, price_per_image=0.006) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        refused = submit(api, n=2)
        assert refused.status_code == 402 and error_of(refused)["type"] == "payment_required"
        tid = task_id(submit(api, n=1))
        assert submit(api, n=1).status_code == 402  # 0.004 left once the running task is paid
        wait(api, tid)
        balance = api.get("/v1/balance").json()
        assert balance["remain_balance"] == pytest.approx(0.004)
        assert submit(api, n=1).status_code == 402
        assert emu.counters()["submits_rejected"] == 3


def test_unknown_task_is_404_and_a_malformed_id_is_400(api):
    response = api.get("/v1/tasks/task_01ZZZZZZZZZZZZZZZZZZZZZZZ", params={"language": "zh"})
    assert response.status_code == 404 and error_of(response)["code"] == 404
    response = api.get("/v1/tasks/not.a;task")
    assert response.status_code == 400 and error_of(response)["message"] == "Invalid task ID"


def test_language_parameter_is_accepted(api):
    tid = task_id(submit(api))
    for language in ("en", "zh", "ko", "ja"):
        assert api.get(f"/v1/tasks/{tid}", params={"language": language}).json()["data"]["id"] == tid


def test_balance_decreases_by_billed_images_only(emu, api):
    start = api.get("/v1/balance").json()
    assert start == {"success": True, "remain_balance": 100.0, "remain_credits": 10000.0,
                     "used_balance": 0.0, "used_credits": 0.0, "unlimited_quota": False}
    done = wait(api, task_id(submit(api, n=3)))
    refused = wait(api, task_id(submit(api, n=2, prompt="FAIL_MODERATION please")))
    assert done["status"] == "completed" and refused["status"] == "failed"
    after = api.get("/v1/balance").json()
    assert after["remain_balance"] == pytest.approx(100 - 3 * 0.006)
    assert after["used_balance"] == pytest.approx(0.018) and after["used_credits"] == pytest.approx(1.8)
    counters = emu.counters()
    assert counters["images_billed"] == 3 and counters["balance_reads"] == 2


def test_billing_happens_at_completion_even_when_nobody_polls():
    with Emulator(api_key=KEY, latency=0.3, jitter=0) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        task_id(submit(api, n=2))
        assert api.get("/v1/balance").json()["used_balance"] == 0.0
        time.sleep(0.4)
        assert api.get("/v1/balance").json()["used_balance"] == pytest.approx(0.012)


# --- idempotency --------------------------------------------------------------------------------------


def test_the_same_idempotency_key_returns_the_same_task_and_bills_once(emu, api):
    first = task_id(submit(api, key="key-1", n=2))
    again = task_id(submit(api, key="key-1", n=2))
    other = task_id(submit(api, key="key-2", n=2))
    bare = task_id(submit(api, n=2))
    assert first == again and len({first, other, bare}) == 3
    for tid in (first, other, bare):
        wait(api, tid)
    counters = emu.counters()
    assert counters["submit_attempts"] == 4
    assert counters["submits_accepted"] == 3 and counters["submit_replays"] == 1
    assert counters["submits_without_idempotency_key"] == 1
    assert counters["images_billed"] == 6


def test_a_replay_is_answered_even_when_the_balance_is_spent():
    with Emulator(api_key=KEY, latency=0.1, jitter=0, balance=0.006) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        tid = task_id(submit(api, key="only"))
        assert task_id(submit(api, key="only")) == tid
        assert submit(api, key="another").status_code == 402
        assert emu.counters()["submits_accepted"] == 1


# --- faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
def test_rate_limited_submits_carry_retry_after(emu, api, fmt):
    emu.set_faults(rate_limit_submits=2, retry_after=3 if fmt == "http-date" else 0.5, retry_after_format=fmt)
    answers = [submit(api, key="same") for _ in range(3)]
    assert [r.status_code for r in answers] == [429, 429, 200]
    assert error_of(answers[0])["type"] == "rate_limit_error"
    hint = answers[0].headers["Retry-After"]
    if fmt == "seconds":
        assert hint == "0.5"
    else:
        delay = email.utils.parsedate_to_datetime(hint).timestamp() - time.time()
        assert 1 <= delay <= 4
    counters = emu.counters()
    assert counters["submits_accepted"] == 1 and counters["submits_rejected"] == 2
    assert counters["faults_injected"]["rate_limit_submit"] == 2
    assert emu.faults.rate_limit_submits == 0


def test_rate_limited_polls(emu, api):
    tid = task_id(submit(api))
    emu.set_faults(rate_limit_polls=1, retry_after=2)
    first = api.get(f"/v1/tasks/{tid}")
    assert first.status_code == 429 and first.headers["Retry-After"] == "2"
    assert api.get(f"/v1/tasks/{tid}").status_code == 200
    assert emu.counters()["polls_per_task"] == {tid: 2}


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [("500", 500, "application/json"), ("503", 503, "application/json"),
     ("html502", 502, "text/html"), ("429", 429, "application/json")],
)
def test_poll_faults_answered(emu, api, kind, status, content_type):
    tid = task_id(submit(api))
    emu.set_faults(poll_fault_rate=1.0, poll_fault_kinds=(kind,))
    response = api.get(f"/v1/tasks/{tid}")
    assert response.status_code == status
    assert response.headers["content-type"].startswith(content_type)
    if kind == "html502":
        assert response.text.lstrip().startswith("<html") and "502 Bad Gateway" in response.text
        with pytest.raises(json.JSONDecodeError):
            response.json()
    else:
        assert error_of(response)["code"] == status
    if kind == "429":
        assert "Retry-After" in response.headers
    emu.set_faults(poll_fault_rate=0.0)
    assert api.get(f"/v1/tasks/{tid}").status_code == 200
    assert emu.counters()["faults_injected"] == {f"poll_{kind}": 1}


def test_poll_fault_timeout_holds_the_answer(emu, api):
    tid = task_id(submit(api))
    emu.set_faults(poll_fault_rate=1.0, poll_fault_kinds=("timeout",), slow_seconds=0.4)
    with pytest.raises(httpx.ReadTimeout):
        api.get(f"/v1/tasks/{tid}", timeout=0.15)
    start = time.monotonic()
    late = api.get(f"/v1/tasks/{tid}", timeout=3)
    assert late.status_code == 200 and time.monotonic() - start >= 0.38


def test_poll_fault_reset_closes_without_an_answer(emu, api):
    tid = task_id(submit(api))
    emu.set_faults(poll_fault_rate=1.0, poll_fault_kinds=("reset",))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.get(f"/v1/tasks/{tid}")
    emu.set_faults(poll_fault_rate=0)
    assert api.get(f"/v1/tasks/{tid}").status_code == 200


def test_random_poll_faults_are_seeded():
    def run(seed):
        emu = Emulator(api_key=KEY, latency=5, seed=seed,
                       faults=Faults(poll_fault_rate=0.5, poll_fault_kinds=("500", "503")))
        with httpx.Client(verify=SSL, transport=emu.sync_transport(), base_url=emu.in_process_base_url, headers=AUTH) as api:
            tid = task_id(submit(api))
            return [api.get(f"/v1/tasks/{tid}").status_code for _ in range(40)]

    first = run(3)
    assert first == run(3) and first != run(4)
    assert 8 <= sum(code != 200 for code in first) <= 32 and {500, 503, 200} == set(first)


@pytest.mark.parametrize("mode", ["reset", "html502", "timeout"])
def test_a_lost_submit_answer_still_creates_one_task_and_a_retry_gets_it(emu, api, mode):
    emu.set_faults(lose_submit_answers=1, lose_mode=mode, slow_seconds=0.6)
    if mode == "html502":
        lost = submit(api, key="lost-key", n=2)
        assert lost.status_code == 502 and lost.headers["content-type"].startswith("text/html")
    else:
        expected = httpx.ReadTimeout if mode == "timeout" else (httpx.RemoteProtocolError, httpx.ReadError)
        with pytest.raises(expected):
            api.post("/v1/images/generations", json=body(n=2), headers={"Idempotency-Key": "lost-key"}, timeout=0.3)
    retry = task_id(submit(api, key="lost-key", n=2))
    assert wait(api, retry)["status"] == "completed"
    counters = emu.counters()
    assert counters["tasks"] == 1 and counters["submits_accepted"] == 1 and counters["submit_replays"] == 1
    assert counters["images_billed"] == 2
    assert counters["faults_injected"] == {f"lose_submit_answer_{mode}": 1}


def _completed_url(api, **fields) -> str:
    return urls(wait(api, task_id(submit(api, **fields))))[0]


def test_cdn_truncate_sends_the_full_length_but_half_the_body(emu, api, plain):
    url = _completed_url(api)
    emu.set_faults(cdn_truncate=1)
    with plain.stream("GET", url) as response:
        promised = int(response.headers["content-length"])
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_bytes():
                received.extend(chunk)
    assert 0 < len(received) < promised
    whole = plain.get(url)
    assert len(whole.content) == promised and png(whole.content).size == (1024, 1024)
    assert whole.content.startswith(bytes(received))


def test_cdn_delay_and_drip(emu, api, plain):
    url = _completed_url(api)
    size = len(plain.get(url).content)
    emu.set_faults(cdn_delay=0.25)
    with pytest.raises(httpx.ReadTimeout):
        plain.get(url, timeout=0.1)
    start = time.monotonic()
    assert plain.get(url).status_code == 200 and time.monotonic() - start >= 0.24
    emu.set_faults(cdn_delay=0.0, cdn_bytes_per_second=size / 0.4)
    start = time.monotonic()
    dripped = plain.get(url)
    assert time.monotonic() - start >= 0.3 and len(dripped.content) == size
    assert emu.counters()["faults_injected"]["cdn_drip"] == 1


def test_moderation_words_fail_the_task_without_billing(emu, api):
    data = wait(api, task_id(submit(api, prompt="a cat, FAIL_MODERATION")))
    assert data["status"] == "failed" and "result" not in data and data["cost"] == 0
    assert data["error"] == {"code": 400, "message": "Input data may contain inappropriate content",
                             "type": "content_policy_violation"}
    emu.set_faults(moderation_words=("forbidden",))
    assert wait(api, task_id(submit(api, prompt="Something FORBIDDEN")))["status"] == "failed"
    assert wait(api, task_id(submit(api, prompt="a cat, FAIL_MODERATION")))["status"] == "completed"
    counters = emu.counters()
    assert counters["images_billed"] == 1 and counters["faults_injected"]["moderation"] == 2


@pytest.mark.parametrize(("switch", "status"), [("fail_rate", "failed"), ("cancel_rate", "cancelled")])
def test_fail_and_cancel_rates(emu, api, switch, status):
    emu.set_faults(**{switch: 1.0})
    data = wait(api, task_id(submit(api, n=2)))
    assert data["status"] == status and "result" not in data and 0 <= data["progress"] < 100
    assert ("error" in data) == (status == "failed")
    counters = emu.counters()
    assert counters["tasks_by_status"] == {status: 1} and counters["images_billed"] == 0
    assert api.get("/v1/balance").json()["used_balance"] == 0


def test_unknown_status_then_back_to_normal(emu, api):
    tid = task_id(submit(api))
    emu.set_faults(unknown_status=1)
    assert poll(api, tid)["status"] == "paused"
    assert poll(api, tid)["status"] in ("pending", "processing", "completed")


def test_malformed_json_is_a_200_that_does_not_parse(emu, api):
    emu.set_faults(malformed_json=1)
    broken = api.get("/v1/balance")
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        broken.json()
    assert api.get("/v1/balance").json()["success"] is True


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        ("list", lambda t: {"code": 200, "data": [{"status": "submitted", "task_id": t}]}),
        ("object", lambda t: {"code": 200, "data": {"task_id": t, "status": "submitted"}}),
        ("object-id", lambda t: {"code": 200, "data": {"id": t, "status": "submitted"}}),
        ("code-success", lambda t: {"code": "success", "data": [{"status": "submitted", "task_id": t}]}),
    ],
)
def test_submit_envelope_variants(emu, api, envelope, expected):
    emu.set_faults(submit_envelope=envelope)
    answer = submit(api).json()
    data = answer["data"][0] if isinstance(answer["data"], list) else answer["data"]
    tid = data.get("task_id") or data.get("id")
    assert answer == expected(tid)
    assert poll(api, tid)["id"] == tid


def test_url_format_string_and_multi_url_one_item(emu, api):
    emu.set_faults(url_format="string")
    items = wait(api, task_id(submit(api, n=2)))["result"]["images"]
    assert [type(item["url"]) for item in items] == [str, str]
    emu.set_faults(url_format="list", multi_url="one-item")
    [item] = wait(api, task_id(submit(api, n=3)))["result"]["images"]
    assert [u.rsplit("/", 1)[1] for u in item["url"]] == ["0.png", "1.png", "2.png"]
    with pytest.raises(ValueError):
        emu.set_faults(url_format="string")  # one item cannot hold three URLs as a string


def test_hostile_cdn_bodies(emu, api, plain):
    url = _completed_url(api)
    emu.set_faults(cdn_body="bomb")
    bomb = plain.get(url)
    assert bomb.status_code == 200 and len(bomb.content) < 100_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb.content))
    emu.set_faults(cdn_body="huge")
    huge = plain.get(url)
    with Image.open(io.BytesIO(huge.content)) as image:
        assert image.size == (6000, 6000)
    emu.set_faults(cdn_body="not-image")
    page = plain.get(url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(page.content))


def test_fault_switches_are_validated():
    with pytest.raises(ValueError):
        Faults(poll_fault_rate=1.5)
    with pytest.raises(ValueError):
        Faults(poll_fault_kinds=("teapot",))
    with pytest.raises(ValueError):
        Faults(lose_mode="vanish")
    with pytest.raises(ValueError):
        Faults().replace(rate_limit_polls=-1)
    with pytest.raises(ValueError, match="unknown fault"):
        Emulator().set_faults(rate_limit_poll=1)


def test_initial_faults_are_copied_not_consumed():
    mine = Faults(unknown_status=1)
    emu = Emulator(api_key=KEY, latency=1, faults=mine)
    with httpx.Client(verify=SSL, transport=emu.sync_transport(), base_url=emu.in_process_base_url,
                      headers=AUTH) as api:
        tid = task_id(submit(api))
        assert poll(api, tid)["status"] == "paused"
        assert poll(api, tid)["status"] in ("pending", "processing")
    assert mine.unknown_status == 1 and emu.faults.unknown_status == 0


def test_chunked_request_bodies_are_read(api):
    response = api.post("/v1/images/generations", content=iter([json.dumps(body()).encode()]),
                        headers={"Content-Type": "application/json"})
    assert task_id(response).startswith("task_01")


def test_control_endpoints_set_faults_read_counters_and_reset(emu, api):
    control = httpx.Client(verify=SSL, base_url=emu.base_url)  # no key: test-only endpoints
    answer = control.post("/_emulator/faults", json={"unknown_status": 1, "poll_fault_kinds": ["500"]})
    assert answer.status_code == 200 and answer.json()["unknown_status"] == 1
    assert emu.faults.poll_fault_kinds == ("500",)
    assert control.post("/_emulator/faults", json={"nope": 1}).status_code == 400
    assert control.post("/_emulator/faults", json={"fail_rate": 2}).status_code == 400
    tid = task_id(submit(api))
    assert poll(api, tid)["status"] == "paused"
    counters = control.get("/_emulator/counters").json()
    assert counters["polls"] == 1 and counters["tasks"] == 1 and counters == emu.counters()
    assert control.post("/_emulator/reset").status_code == 200
    assert emu.faults == Faults()
    assert emu.counters()["tasks"] == 0 and api.get(f"/v1/tasks/{tid}").status_code == 404
    control.close()


# --- CDN and uploads -----------------------------------------------------------------------------------


def test_cdn_is_another_origin_needs_no_key_and_counts_leaked_keys(emu, api, plain):
    assert emu.cdn_url != emu.base_url and emu.cdn_url.startswith("http://127.0.0.1:")
    url = _completed_url(api)
    assert url.startswith(emu.cdn_url + "/")
    assert plain.get(url).status_code == 200
    assert api.get(url).status_code == 200  # the api client carries the key: a leak
    counters = emu.counters()
    assert counters["cdn_hits"] == 2 and counters["cdn_authorization_headers"] == 1
    assert plain.get(emu.cdn_url + "/images/task_01NOPE/0.png").status_code == 404
    assert plain.get(url.replace("/0.png", "/1.png")).status_code == 404  # n=1: no second image
    # The API origin does not serve images, and the CDN does not serve the API.
    assert plain.get(emu.base_url + url[len(emu.cdn_url):]).status_code == 404
    assert plain.get(emu.cdn_url + "/v1/balance", headers=AUTH).status_code == 404


def test_images_are_not_served_before_completion(plain):
    with Emulator(api_key=KEY, latency=0.5, jitter=0) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        tid = task_id(submit(api))
        early = f"{emu.cdn_url}/images/{tid}/0.png"
        assert plain.get(early).status_code == 404
        assert poll(api, tid)["status"] != "completed"
        assert urls(wait(api, tid)) == [early]
        assert plain.get(early).status_code == 200


def _png_bytes(colour=(255, 0, 0), size=(64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def test_upload_round_trip_and_image_to_image(emu, api, plain):
    data = _png_bytes()
    answer = api.post("/v1/uploads/images", files={"file": ("my photo.png", data, "application/octet-stream")})
    assert answer.status_code == 200, answer.text
    upload = answer.json()
    assert upload["url"].startswith(emu.cdn_url + "/f/image/") and upload["url"].endswith("-my_photo.png")
    assert upload["content_type"] == "image/png" and upload["bytes"] == len(data)
    assert upload["filename"] == "my_photo.png" and isinstance(upload["created_at"], int)
    served = plain.get(upload["url"])
    assert served.content == data and served.headers["content-type"] == "image/png"

    own = png(plain.get(_completed_url(api, prompt="edit", image_urls=[upload["url"]])).content)
    foreign = png(plain.get(_completed_url(api, prompt="edit", image_urls=["https://example.com/a.png"])).content)
    red = red_pixels(own)
    assert red > 1000, "the uploaded reference is pasted into the picture"
    assert red_pixels(foreign) < red
    assert emu.counters()["uploads"] == 1


@pytest.mark.parametrize(
    ("fmt", "mime"), [("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")]
)
def test_upload_sniffs_the_format_from_the_bytes(api, fmt, mime):
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 128, 255)).save(out, fmt)
    answer = api.post("/v1/uploads/images", files={"file": ("x.bin", out.getvalue(), "text/plain")})
    assert answer.status_code == 200 and answer.json()["content_type"] == mime


def test_upload_errors(api):
    text = api.post("/v1/uploads/images", files={"file": ("notes.png", b"just some text", "image/png")})
    assert text.status_code == 400 and error_of(text)["param"] == "file"
    missing = api.post("/v1/uploads/images", files={"image": ("a.png", _png_bytes(), "image/png")})
    assert missing.status_code == 400 and "file" in error_of(missing)["message"]
    not_multipart = api.post("/v1/uploads/images", json={"file": "x"})
    assert not_multipart.status_code == 400
    too_big = _png_bytes() + b"\0" * (20 * 1024 * 1024)
    big = api.post("/v1/uploads/images", files={"file": ("big.png", too_big, "image/png")})
    assert big.status_code == 413 and error_of(big)["code"] == 413


# --- in-process transports ---------------------------------------------------------------------------


def _shape(response: httpx.Response) -> tuple:
    try:
        payload = response.json()
    except ValueError:
        return response.status_code, response.text[:20]
    data = payload.get("data") if isinstance(payload, dict) else None
    if isinstance(data, dict):
        payload = {**payload, "data": {k: v for k, v in data.items() if k not in ("id", "created", "completed")}}
    return response.status_code, payload


def test_socket_and_in_process_answers_are_the_same(emu, api):
    with httpx.Client(verify=SSL, transport=emu.sync_transport(), base_url=emu.in_process_base_url, headers=AUTH) as local:
        for client in (api, local):
            assert client.get("/v1/tasks/task_01NOTHERE").status_code == 404
        pairs = [
            (submit(api, n=7), submit(local, n=7)),
            (submit(api, model="x"), submit(local, model="x")),
            (api.get("/v1/balance"), local.get("/v1/balance")),
            (api.get("/v1/tasks/task_01NOTHERE"), local.get("/v1/tasks/task_01NOTHERE")),
        ]
        for over_socket, in_process in pairs:
            assert _shape(over_socket) == _shape(in_process)
        # One state: a task submitted in-process is visible over loopback, with the CDN of each origin.
        tid = task_id(submit(local, key="shared"))
        assert task_id(submit(api, key="shared")) == tid
        assert urls(wait(local, tid))[0].startswith("http://cdn.emulator.localhost/images/")
        assert urls(wait(api, tid))[0].startswith(emu.cdn_url)
        image = local.get(urls(wait(local, tid))[0])
        assert image.status_code == 200 and png(image.content).size == (1024, 1024)


async def test_async_transport_full_flow_without_start():
    emu = Emulator(api_key=KEY, latency=0.1, jitter=0)
    async with httpx.AsyncClient(verify=SSL, transport=emu.transport(), base_url=emu.in_process_base_url, headers=AUTH) as api:
        upload = (await api.post("/v1/uploads/images", files={"file": ("r.png", _png_bytes(), "image/png")})).json()
        assert upload["url"].startswith("http://cdn.emulator.localhost/f/image/")
        answer = await api.post("/v1/images/generations", json=body(size="9:16", resolution="2K", image_urls=[upload["url"]]))
        tid = answer.json()["data"][0]["task_id"]
        while (data := (await api.get(f"/v1/tasks/{tid}")).json()["data"])["status"] != "completed":
            await _sleep(0.02)
        async with httpx.AsyncClient(verify=SSL, transport=emu.transport()) as cdn:  # a client without the key
            image = png((await cdn.get(urls(data)[0])).content)
        assert image.size == (1152, 2048)
        assert red_pixels(image) > 1000
        with pytest.raises(httpx.ConnectError):
            await api.get("https://api.apimart.ai/v1/balance")
    assert emu.counters()["cdn_authorization_headers"] == 0


async def _sleep(seconds):
    import asyncio

    await asyncio.sleep(seconds)


async def test_async_transport_maps_raw_faults_to_httpx_errors():
    emu = Emulator(api_key=KEY, latency=0.05, jitter=0)
    async with httpx.AsyncClient(verify=SSL, transport=emu.transport(), base_url=emu.in_process_base_url, headers=AUTH) as api:
        tid = (await api.post("/v1/images/generations", json=body())).json()["data"][0]["task_id"]
        emu.set_faults(poll_fault_rate=1.0, poll_fault_kinds=("reset",))
        with pytest.raises(httpx.RemoteProtocolError):
            await api.get(f"/v1/tasks/{tid}")
        emu.set_faults(poll_fault_kinds=("timeout",), slow_seconds=5)
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await api.get(f"/v1/tasks/{tid}", timeout=0.2)
        assert time.monotonic() - start < 1  # it waits the read timeout, not slow_seconds
        emu.set_faults(poll_fault_rate=0.0)
        while (data := (await api.get(f"/v1/tasks/{tid}")).json()["data"])["status"] != "completed":
            await _sleep(0.02)
        emu.set_faults(cdn_truncate=1)
        async with api.stream("GET", urls(data)[0]) as response:
            assert int(response.headers["content-length"]) > 0
            with pytest.raises(httpx.RemoteProtocolError):
                await response.aread()
        emu.set_faults(cdn_delay=1.0)
        with pytest.raises(httpx.ReadTimeout):
            await api.get(urls(data)[0], timeout=0.1)


def test_sync_transport_drip_and_truncate():
    emu = Emulator(api_key=KEY, latency=0.05, jitter=0)
    with httpx.Client(verify=SSL, transport=emu.sync_transport(), base_url=emu.in_process_base_url, headers=AUTH) as api:
        url = urls(wait(api, task_id(submit(api))))[0]
        size = len(api.get(url).content)
        emu.set_faults(cdn_bytes_per_second=size / 0.3)
        start = time.monotonic()
        assert len(api.get(url).content) == size and time.monotonic() - start >= 0.2
        emu.set_faults(cdn_bytes_per_second=None, cdn_truncate=1)
        with pytest.raises(httpx.RemoteProtocolError):
            api.get(url)


# --- lifecycle of the servers, the command ----------------------------------------------------------------


def test_stop_closes_pooled_connections_and_refuses_new_ones(plain):
    emu = Emulator(api_key=KEY, latency=0.05).start()
    base = emu.base_url
    with httpx.Client(verify=SSL, base_url=base, headers=AUTH) as api:
        assert api.get("/v1/balance").status_code == 200
        emu.stop()
        with pytest.raises(httpx.TransportError):
            api.get("/v1/balance")
    with pytest.raises(RuntimeError):
        _ = emu.base_url
    with pytest.raises(httpx.ConnectError):
        plain.get(base + "/v1/balance")


def test_command_serves_until_terminated(plain):
    process = subprocess.Popen(
        [sys.executable, "-m", "qimage_nb.emulator", "--port", "0", "--latency", "0.1", "--jitter", "0",
         "--key", "sk-cli"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = process.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        rest = [process.stdout.readline().strip() for _ in range(3)]
        assert rest[1] == "key:  sk-cli" and f"QIMAGE_BASE_URL={base} QIMAGE_API_KEY=sk-cli" in rest[2]
        cdn = rest[0].split()[-1]
        assert cdn.startswith("http://127.0.0.1:") and cdn != base
        answer = plain.get(base + "/v1/balance", headers={"Authorization": "Bearer sk-cli"})
        assert answer.status_code == 200 and answer.json()["remain_balance"] == 100.0
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "stopped" in out


def test_command_refuses_a_public_host_without_public_flag():
    result = subprocess.run(
        [sys.executable, "-m", "qimage_nb.emulator", "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and "--public" in result.stderr and result.stdout == ""
    help_text = subprocess.run(
        [sys.executable, "-m", "qimage_nb.emulator", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    assert "--max-concurrent" in help_text and "--latency" in help_text
