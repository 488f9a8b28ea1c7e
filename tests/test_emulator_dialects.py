"""The emulator's deployments of API.md section 7, driven with raw httpx (never the qimage_nb client).

Each test asserts what a client would see on the wire: statuses, bodies, headers, PNG sizes, and the
counters that prove how many tasks were created and billed. The default emulator must keep serving
the documented contract (sections 1-6); tests/test_emulator.py checks that in depth.
"""

from __future__ import annotations

import io
import json
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from qimage_nb._contract import PIXEL_SIZES
from qimage_nb.emulator import Emulator, Faults

KEY = "sk-test-dialects"
AUTH = {"Authorization": f"Bearer {KEY}"}
VERSION = {"X-APIMart-Response-Version": "2026-07-27"}
SSL = ssl.create_default_context()
TERMINAL = ("completed", "failed", "cancelled")


@pytest.fixture
def emu():
    with Emulator(api_key=KEY, latency=0.1, jitter=0, seed=3) as emulator:
        yield emulator


@pytest.fixture
def api(emu):
    with httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH, timeout=5) as client:
        yield client


@pytest.fixture(scope="module")
def plain():
    with httpx.Client(verify=SSL, timeout=5) as client:
        yield client


def body(**fields):
    return {"model": "qwen-image-2.0", "prompt": "a lighthouse at dusk", **fields}


def submit(api, key=None, versioned=False, **fields) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    if versioned:
        headers.update(VERSION)
    return api.post("/v1/images/generations", json=body(**fields), headers=headers)


def documented_id(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert item["status"] == "submitted"
    return item["task_id"]


def versioned_id(response: httpx.Response, *, replayed: bool = False) -> str:
    assert response.status_code == 202, response.text
    assert response.headers["X-APIMart-Response-Version"] == "2026-07-27"
    assert response.headers.get("Idempotency-Replayed") == ("true" if replayed else None)
    payload = response.json()
    assert payload["code"] == 202 and payload["request_id"].startswith("req_")
    assert payload["data"]["object"] == "generation.task" and payload["data"]["status"] == "queued"
    return payload["data"]["id"]


def wait(api, tid, timeout=5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = api.get(f"/v1/tasks/{tid}").json()["data"]
        if data["status"].lower() in TERMINAL:
            return data
        time.sleep(0.02)
    raise AssertionError(f"task {tid} did not finish in {timeout}s")


def urls(data) -> list[str]:
    found = []
    for item in data["result"]["images"]:
        found.extend([item["url"]] if isinstance(item["url"], str) else item["url"])
    return found


def png_size(content: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(content)) as image:
        assert image.format == "PNG"
        return image.size


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


def settled(emu, seconds=0.3) -> dict:
    """The counters once every task has ended (billing happens at completion)."""
    time.sleep(seconds)
    return emu.counters()


# --- the default is the documented contract ---------------------------------------------------------


def test_the_default_emulator_speaks_the_documented_contract(emu, api):
    assert Faults().dialect == "documented" and Faults().idempotency == "always"
    tid = documented_id(submit(api, key="k1"))
    first = api.get(f"/v1/tasks/{tid}").json()["data"]
    assert first["status"] in ("pending", "processing") and "credits_cost" not in first
    assert wait(api, tid)["status"] == "completed"
    failed = wait(api, documented_id(submit(api, prompt="FAIL_MODERATION please")))
    assert failed["status"] == "failed" and failed["error"]["code"] == 400
    models = api.get("/v1/models").json()
    assert models == {"object": "list", "data": [{"id": "qwen-image-2.0", "object": "model"},
                                                  {"id": "qwen-image-2.0-pro", "object": "model"}]}
    refused = submit(api, model="qwen-image-3.0")
    assert refused.status_code == 503 and error_of(refused)["type"] == "model_not_found"
    bad = submit(api, size="5:4")
    assert bad.status_code == 400 and error_of(bad) == {
        "code": 400, "message": "size must be one of 1:1, 4:3, 3:4, 16:9, 9:16, 3:2, 2:3",
        "type": "invalid_request_error", "param": "size"}
    assert api.get("/v1/tasks/task_01NOPE").json()["error"]["message"] == "Task not found: task_01NOPE"


def test_models_need_the_key(emu, plain):
    answer = plain.get(emu.base_url + "/v1/models")
    assert answer.status_code == 401 and error_of(answer)["type"] == "authentication_error"


# --- dialect wild ---------------------------------------------------------------------------------------


def test_wild_statuses_run_submitted_queued_in_progress_completed_with_cost_from_the_start():
    # Long enough (0.15 s per phase) to watch every word; each answer is also checked against the
    # task's own timeline, so a word reported at the wrong moment fails even if every word shows up.
    with Emulator(api_key=KEY, latency=0.6, jitter=0, pickup=0.5, faults=Faults(dialect="wild")) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        answer = submit(api)
        assert answer.json()["data"][0]["status"] == "submitted"
        tid = answer.json()["data"][0]["task_id"]
        samples = []
        while True:
            before = time.monotonic()
            data = api.get(f"/v1/tasks/{tid}").json()["data"]
            samples.append((before, time.monotonic(), data))
            if data["status"] in TERMINAL:
                break
            time.sleep(0.01)
        (line,) = httpx.get(emu.base_url + "/_emulator/timeline").json()["tasks"]
    halfway = line["created"] + (line["processing"] - line["created"]) / 2

    def expected(t):
        if t < halfway:
            return "submitted"
        if t < line["processing"]:
            return "queued"
        return "in_progress" if t < line["end"] else "completed"

    words = [data["status"] for _, _, data in samples]
    assert list(dict.fromkeys(words)) == ["submitted", "queued", "in_progress", "completed"]
    for before, after, data in samples:
        assert data["status"] in (expected(before), expected(after))
        assert data["cost"] == 0.006 and data["credits_cost"] == 0.6  # shown while pending too
    assert samples[-1][2]["progress"] == 100 and len(urls(samples[-1][2])) == 1


def test_wild_failures_carry_string_codes_and_are_not_charged():
    with Emulator(api_key=KEY, latency=0.05, jitter=0, faults=Faults(dialect="wild")) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        refused = wait(api, documented_id(submit(api, prompt="FAIL_MODERATION now")))
        assert refused["status"] == "failed"
        assert refused["error"]["code"] == "OutputImageSensitiveContentDetected"
        assert refused["error"]["message"] and refused["error"]["type"]
        emu.set_faults(fail_rate=1.0)
        broken = wait(api, documented_id(submit(api)))
        assert broken["error"]["code"] == "task_failed" and broken["error"]["type"] == "server_error"
        assert broken["cost"] == 0 and broken["credits_cost"] == 0 and "result" not in broken
        missing = api.get("/v1/tasks/task_01GONE")
        assert missing.status_code == 404 and error_of(missing)["message"] == "task does not exist or has expired"
        counters = emu.counters()
    assert counters["images_billed"] == 0 and counters["tasks_billed"] == 0


def test_wild_lists_and_accepts_newer_models_at_sizes_outside_the_2_0_table(plain):
    table = set(PIXEL_SIZES.values())
    with Emulator(api_key=KEY, latency=0.05, jitter=0, faults=Faults(dialect="wild")) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        listed = [m["id"] for m in api.get("/v1/models").json()["data"]]
        assert listed[:2] == ["qwen-image-2.0", "qwen-image-2.0-pro"] and "qwen-image-3.0" in listed
        assert any(not m.startswith("qwen") for m in listed)
        sizes = {}
        for ratio in ("1:1", "16:9"):
            data = wait(api, documented_id(submit(api, model="qwen-image-3.0", size=ratio, resolution="4K")))
            image = plain.get(urls(data)[0])
            assert image.status_code == 200
            sizes[ratio] = png_size(image.content)
        assert sizes == {"1:1": (1328, 1328), "16:9": (1664, 928)} and not table & set(sizes.values())
        # Its own parameters, but the universal checks still hold.
        too_long = submit(api, model="qwen-image-3.0", prompt="x" * 801)
        assert too_long.status_code == 500 and error_of(too_long)["param"] == "prompt"
        not_a_ratio = submit(api, model="qwen-image-3.0", size="1024x1024")
        assert not_a_ratio.status_code == 500 and error_of(not_a_ratio)["param"] == "size"


def test_extra_models_are_listed_and_accepted_in_any_dialect(plain):
    faults = Faults(extra_models=("acme-image-1",))
    with Emulator(api_key=KEY, latency=0.05, jitter=0, faults=faults) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        listed = [m["id"] for m in api.get("/v1/models").json()["data"]]
        assert listed == ["qwen-image-2.0", "qwen-image-2.0-pro", "acme-image-1"]
        data = wait(api, documented_id(submit(api, model="acme-image-1", size="7:5", n=2)))
        sizes = {png_size(plain.get(url).content) for url in urls(data)}
        assert len(urls(data)) == 2 and len(sizes) == 1 and sizes.pop() not in set(PIXEL_SIZES.values())
        assert submit(api, model="qwen-image-3.0").status_code == 503  # not listed here
        refs = submit(api, model="acme-image-1", image_urls=["data:image/png;base64,AAAA"])
        assert refs.status_code == 400 and error_of(refs)["param"] == "image_urls"


@pytest.mark.parametrize("faults", [Faults(dialect="wild"), Faults(submit_500_for_bad_params=True)])
def test_bad_submit_parameters_answer_500_build_request_failed(faults):
    with Emulator(api_key=KEY, latency=0.05, faults=faults) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        answer = submit(api, key="once", size="5:4")
        assert answer.status_code == 500
        assert answer.json() == {"error": {"code": "build_request_failed", "message": "build_request_failed: invalid size",
                                           "type": "server_error", "param": "size"}}
        n = submit(api, n=9)
        assert n.status_code == 500 and error_of(n)["message"] == "build_request_failed: invalid n"
        counters = emu.counters()
    assert counters["submit_attempts"] == 2 and counters["tasks"] == 0 and counters["submits_rejected"] == 2


# --- idempotency modes and the versioned contract ---------------------------------------------------------


def test_always_honours_the_key_and_refuses_it_with_another_body(emu, api):
    first = documented_id(submit(api, key="k"))
    assert documented_id(submit(api, key="k")) == first
    # The same body with its keys in another order is the same request.
    same = api.post("/v1/images/generations", headers={"Idempotency-Key": "k"},
                    content=json.dumps({"prompt": "a lighthouse at dusk", "model": "qwen-image-2.0"}))
    assert documented_id(same) == first
    other = submit(api, key="k", n=2)
    assert other.status_code == 409 and error_of(other) == {
        "code": "idempotency_key_reused", "type": "invalid_request_error",
        "message": "this Idempotency-Key was already used with a different request body"}
    counters = emu.counters()
    assert counters["tasks"] == 1 and counters["submit_replays"] == 2 and counters["submits_per_key"] == {"k": 4}


def test_versioned_contract_answers_202_and_replays_the_original_task(emu, api):
    tid = versioned_id(submit(api, key="v", versioned=True))
    assert versioned_id(submit(api, key="v", versioned=True), replayed=True) == tid
    reused = submit(api, key="v", versioned=True, prompt="another picture")
    assert reused.status_code == 409 and error_of(reused)["code"] == "idempotency_key_reused"
    assert wait(api, tid)["status"] == "completed"
    counters = settled(emu, 0)
    assert counters["tasks"] == 1 and counters["tasks_billed"] == 1 and counters["submit_replays"] == 1
    assert counters["submits_with_version_header"] == 3


def test_versioned_idempotency_bills_a_resend_without_the_header():
    with Emulator(api_key=KEY, latency=0.05, jitter=0, faults=Faults(idempotency="versioned")) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        bare = [documented_id(submit(api, key="bare")) for _ in range(2)]
        assert bare[0] != bare[1]
        tid = versioned_id(submit(api, key="vv", versioned=True))
        assert versioned_id(submit(api, key="vv", versioned=True), replayed=True) == tid
        counters = settled(emu)
    assert counters["tasks_per_key"] == {"bare": 2, "vv": 1} and counters["tasks_billed"] == 3
    assert counters["submit_replays"] == 1 and counters["images_billed"] == 3


def test_never_idempotent_knows_no_versioned_contract():
    # Conflict faults are armed, yet nothing answers them: this deployment has no such contract.
    faults = Faults(idempotency="never", idempotency_in_progress=1, idempotency_unavailable=1,
                    idempotency_indeterminate=1)
    with Emulator(api_key=KEY, latency=0.05, jitter=0, faults=faults) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        answers = [submit(api, key="n", versioned=True) for _ in range(2)]
        for answer in answers:
            assert "X-APIMart-Response-Version" not in answer.headers
            assert "Idempotency-Replayed" not in answer.headers
        assert len({documented_id(a) for a in answers}) == 2
        left = (emu.faults.idempotency_in_progress, emu.faults.idempotency_unavailable,
                emu.faults.idempotency_indeterminate)
        counters = settled(emu)
    assert left == (1, 1, 1)
    assert counters["tasks_per_key"] == {"n": 2} and counters["tasks_billed"] == 2 and counters["submit_replays"] == 0


def test_versioned_answers_off_keeps_the_documented_shape(emu, api):
    emu.set_faults(versioned_answers=False)
    first = submit(api, key="quiet", versioned=True)
    again = submit(api, key="quiet", versioned=True)
    assert documented_id(first) == documented_id(again)
    for answer in (first, again):
        assert "X-APIMart-Response-Version" not in answer.headers and "Idempotency-Replayed" not in answer.headers


@pytest.mark.parametrize(("case", "words"), [
    ("upper", ("SUBMITTED", "QUEUED", "COMPLETED")),
    ("title", ("Submitted", "Queued", "Completed")),
])
def test_status_case_applies_to_submit_answers_and_polls(emu, api, case, words):
    emu.set_faults(status_case=case)
    answer = submit(api)
    assert answer.json()["data"][0]["status"] == words[0]
    tid = answer.json()["data"][0]["task_id"]
    assert submit(api, key="c", versioned=True).json()["data"]["status"] == words[1]
    assert wait(api, tid)["status"] == words[2]


# --- synchronous models -------------------------------------------------------------------------------


def test_a_sync_model_answers_the_result_at_once_and_replays_it(plain):
    faults = Faults(sync_models=("qwen-image-2.0-pro",))
    with Emulator(api_key=KEY, latency=0.2, jitter=0, faults=faults) as emu, \
            httpx.Client(verify=SSL, base_url=emu.base_url, headers=AUTH) as api:
        start = time.monotonic()
        answer = submit(api, key="s", versioned=True, model="qwen-image-2.0-pro", n=2, size="16:9")
        took = time.monotonic() - start
        assert answer.status_code == 200 and answer.headers["X-APIMart-Response-Version"] == "2026-07-27"
        payload = answer.json()
        data = payload["data"]
        assert payload["code"] == 200 and payload["request_id"].startswith("req_")
        assert data["object"] == "generation.result" and data["status"] == "completed" and data["cost"] == 0.012
        assert took >= 0.2  # the answer waits for the generation
        # Downloadable the moment the answer arrives: nothing to poll.
        assert [png_size(plain.get(url).content) for url in urls(data)] == [(1280, 720)] * 2
        assert api.get(f"/v1/tasks/{data['id']}").status_code == 404
        replay = submit(api, key="s", versioned=True, model="qwen-image-2.0-pro", n=2, size="16:9")
        assert replay.headers["Idempotency-Replayed"] == "true" and replay.json()["data"]["id"] == data["id"]
        # Other models still make tasks.
        assert documented_id(submit(api)).startswith("task_01")
        counters = settled(emu)
    assert counters["tasks_per_key"] == {"s": 1} and counters["images_billed"] == 3 and counters["tasks_billed"] == 2


# --- errors inside a 200, balance variants --------------------------------------------------------------


def test_error_in_200_wraps_the_next_errors_of_any_endpoint(emu, api, plain):
    emu.set_faults(error_in_200=3, rate_limit_polls=1, retry_after=0.25)
    bad = submit(api, n=0)
    assert bad.status_code == 200
    assert bad.json() == {"code": 400, "error": {"code": 400, "message": "n must be an integer from 1 to 6",
                                                 "type": "invalid_request_error", "param": "n"}}
    anonymous = plain.get(emu.base_url + "/v1/balance")
    assert anonymous.status_code == 200 and anonymous.json()["code"] == 401
    limited = api.get("/v1/tasks/task_01ANY")
    assert limited.status_code == 200 and limited.json()["code"] == 429 and limited.headers["Retry-After"] == "0.25"
    after = api.get("/v1/tasks/task_01ANY")  # the switch is spent: a plain 404 again
    assert after.status_code == 404 and "code" not in after.json()
    counters = emu.counters()
    assert counters["faults_injected"]["error_in_200"] == 3 and counters["submits_rejected"] == 1


def test_balance_answers(emu, api, plain):
    emu.set_faults(balance_answer="unlimited")
    unlimited = api.get("/v1/balance").json()
    assert unlimited["success"] is True and unlimited["remain_balance"] == -1
    assert unlimited["unlimited_quota"] is True and "remain_credits" not in unlimited
    emu.set_faults(balance_answer="token-not-found")
    for client in (api, plain):
        answer = client.get(emu.base_url + "/v1/balance")
        assert answer.status_code == 200 and answer.json() == {"success": False, "message": "Token Not Found"}
    emu.set_faults(balance_answer="normal")
    assert api.get("/v1/balance").json()["remain_credits"] == 10000


# --- idempotency conflicts -------------------------------------------------------------------------------


def test_idempotency_in_progress_creates_the_task_and_a_resend_gets_it(emu, api):
    emu.set_faults(idempotency_in_progress=1, retry_after=0.2)
    documented_id(submit(api, key="plain"))  # without the version header: no conflict, the fault stays armed
    busy = submit(api, key="p", versioned=True)
    assert busy.status_code == 409 and busy.headers["Retry-After"] == "0.2"
    assert error_of(busy) == {"code": "idempotency_in_progress", "type": "invalid_request_error",
                              "message": "a request with this Idempotency-Key is still being processed"}
    tid = versioned_id(submit(api, key="p", versioned=True), replayed=True)
    assert wait(api, tid)["status"] == "completed"
    counters = emu.counters()
    assert counters["tasks_per_key"] == {"plain": 1, "p": 1} and counters["tasks_billed"] == 2
    assert counters["submits_rejected"] == 0


@pytest.mark.parametrize("creates", [True, False])
def test_idempotency_indeterminate(emu, api, creates):
    emu.set_faults(idempotency_indeterminate=1, indeterminate_creates_task=creates)
    unknown = submit(api, key="i", versioned=True)
    assert unknown.status_code == 409 and error_of(unknown)["code"] == "idempotency_result_indeterminate"
    assert emu.counters()["tasks"] == (1 if creates else 0)
    versioned_id(submit(api, key="i", versioned=True), replayed=creates)
    assert emu.counters()["tasks_per_key"] == {"i": 1}


def test_idempotency_unavailable_creates_nothing(emu, api):
    emu.set_faults(idempotency_unavailable=1, retry_after=0.1)
    down = submit(api, key="u", versioned=True)
    assert down.status_code == 503 and down.headers["Retry-After"] == "0.1"
    assert error_of(down)["code"] == "idempotency_unavailable" and emu.counters()["tasks"] == 0
    versioned_id(submit(api, key="u", versioned=True), replayed=False)
    assert emu.counters()["tasks"] == 1


# --- lost answers in every mode --------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "versioned", "replayed"), [
    ("always", False, True),
    ("versioned", True, True),
    ("versioned", False, False),
    ("never", True, False),
])
def test_a_lost_submit_answer_creates_one_billed_task_in_every_mode(emu, api, mode, versioned, replayed):
    emu.set_faults(idempotency=mode, lose_submit_answers=1)
    headers = {"Idempotency-Key": "lost", **(VERSION if versioned else {})}
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.post("/v1/images/generations", json=body(), headers=headers)
    counters = settled(emu)
    assert counters["tasks"] == 1 and counters["tasks_billed"] == 1 and counters["submits_accepted"] == 1
    resend = api.post("/v1/images/generations", json=body(), headers=headers)
    assert resend.is_success
    counters = settled(emu)
    # Where the key is honoured the resend is the original task; elsewhere it bills a second one.
    assert counters["tasks_per_key"] == {"lost": 1 if replayed else 2}
    assert counters["tasks_billed"] == (1 if replayed else 2) and counters["submit_replays"] == int(replayed)


# --- switches: Python, HTTP, in-process, command line --------------------------------------------------------


@pytest.mark.parametrize("switches", [
    {"dialect": "feral"}, {"idempotency": "sometimes"}, {"status_case": "camel"},
    {"balance_answer": "plenty"}, {"versioned_answers": "yes"}, {"submit_500_for_bad_params": 1},
    {"sync_models": "qwen-image-2.0"}, {"extra_models": [""]}, {"error_in_200": -1},
    {"idempotency_in_progress": True}, {"indeterminate_creates_task": None},
])
def test_new_switches_are_validated(switches):
    with pytest.raises(ValueError):
        Faults(**switches)


def test_switches_over_http_and_reset_restores_the_initial_ones(emu, api):
    control = f"{emu.base_url}/_emulator"
    answer = httpx.post(control + "/faults", json={"dialect": "wild", "sync_models": ["qwen-image-2.0"]})
    assert answer.status_code == 200 and answer.json()["sync_models"] == ["qwen-image-2.0"]
    assert emu.faults.sync_models == ("qwen-image-2.0",) and emu.faults.dialect == "wild"
    assert httpx.post(control + "/faults", json={"idempotency": "maybe"}).status_code == 400
    assert submit(api).json()["data"]["object"] == "generation.result"
    httpx.post(control + "/reset")
    assert emu.faults == Faults()
    with Emulator(api_key=KEY, faults=Faults(dialect="wild", error_in_200=1)) as wild:
        wild.set_faults(dialect="documented", error_in_200=0)
        wild.reset()
        assert wild.faults == Faults(dialect="wild", error_in_200=1)


async def test_in_process_transport_serves_the_wild_versioned_deployment():
    emu = Emulator(api_key=KEY, latency=0.1, jitter=0, faults=Faults(dialect="wild", idempotency="versioned"))
    async with httpx.AsyncClient(verify=SSL, transport=emu.transport(), base_url=emu.in_process_base_url,
                                 headers=AUTH) as api:
        headers = {"Idempotency-Key": "t", **VERSION}
        payload = body(model="qwen-image-3.0")
        tid = versioned_id(await api.post("/v1/images/generations", json=payload, headers=headers))
        again = await api.post("/v1/images/generations", json=payload, headers=headers)
        assert versioned_id(again, replayed=True) == tid
        seen = []
        while (data := (await api.get(f"/v1/tasks/{tid}")).json()["data"])["status"] not in TERMINAL:
            seen.append(data["status"])
            assert "credits_cost" in data
            await _sleep(0.01)
        assert set(seen) <= {"submitted", "queued", "in_progress"} and "in_progress" in seen
        async with httpx.AsyncClient(transport=emu.transport()) as cdn:
            image = await cdn.get(urls(data)[0])
        assert png_size(image.content) == (1328, 1328)
    assert emu.counters()["tasks"] == 1


async def _sleep(seconds):
    import asyncio

    await asyncio.sleep(seconds)


def test_command_line_flags_choose_the_deployment(plain):
    process = subprocess.Popen(
        [sys.executable, "-m", "qimage_nb.emulator", "--port", "0", "--latency", "0.05", "--jitter", "0",
         "--key", KEY, "--dialect", "wild", "--idempotency", "versioned", "--status-case", "upper",
         "--sync-model", "qwen-image-2.0-pro", "--extra-model", "acme-image-1", "--extra-model", "acme-image-2",
         "--balance-answer", "unlimited", "--no-versioned-answers"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = process.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        faults = plain.get(base + "/_emulator/faults").json()
        assert {k: faults[k] for k in ("dialect", "idempotency", "status_case", "sync_models", "extra_models",
                                       "balance_answer", "versioned_answers", "submit_500_for_bad_params")} == {
            "dialect": "wild", "idempotency": "versioned", "status_case": "upper",
            "sync_models": ["qwen-image-2.0-pro"], "extra_models": ["acme-image-1", "acme-image-2"],
            "balance_answer": "unlimited", "versioned_answers": False, "submit_500_for_bad_params": False}
        with httpx.Client(verify=SSL, base_url=base, headers=AUTH) as api:
            listed = [m["id"] for m in api.get("/v1/models").json()["data"]]
            assert {"qwen-image-3.0", "acme-image-1", "acme-image-2"} <= set(listed)
            ids = [submit(api, key="cli").json()["data"][0] for _ in range(2)]
            assert [i["status"] for i in ids] == ["SUBMITTED"] * 2 and ids[0]["task_id"] != ids[1]["task_id"]
            assert submit(api, model="qwen-image-2.0-pro").json()["data"]["object"] == "generation.result"
            assert api.get("/v1/balance").json()["remain_balance"] == -1
            assert submit(api, size="5:4").status_code == 500  # wild implies it
            # reset goes back to the deployment the flags chose
            plain.post(base + "/_emulator/reset")
            assert plain.get(base + "/_emulator/faults").json()["dialect"] == "wild"
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "stopped" in out


def test_command_help_documents_every_deployment_flag():
    help_text = subprocess.run([sys.executable, "-m", "qimage_nb.emulator", "--help"],
                               capture_output=True, text=True, timeout=30).stdout
    for flag in ("--dialect", "--idempotency", "--no-versioned-answers", "--status-case", "--sync-model",
                 "--extra-model", "--balance-answer", "--submit-500-for-bad-params"):
        assert flag in help_text
