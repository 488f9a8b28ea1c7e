"""The DashScope emulator driven with raw httpx over loopback: what a client of Alibaba Model Studio
sees on each path (sync call, async task, cancel, unknown task), each error, sizes, n and faults.

The protocol facts come from shared/PROVIDERS.md section 1; tests/test_dashscope_sdk.py checks the
same server against the official SDK.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from qimage_nb.emulator import DashScopeEmulator

SYNC = "/services/aigc/multimodal-generation/generation"
ASYNC = "/services/aigc/text2image/image-synthesis"
ASYNC_HEADER = {"X-DashScope-Async": "enable"}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")


@pytest.fixture
def emu():
    emulator = DashScopeEmulator(latency=0.2, jitter=0).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def client(emu):
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {emu.api_key}"},
                      timeout=10) as http:
        yield http


def sync_body(prompt="a lighthouse at dusk", model="qwen-image-2.0", images=(), **parameters):
    content = [{"image": url} for url in images] + [{"text": prompt}]
    return {"model": model, "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": parameters}


def async_body(prompt="a lighthouse at dusk", model="qwen-image", **parameters):
    return {"model": model, "input": {"prompt": prompt}, "parameters": parameters}


def images_of(response: httpx.Response) -> list[str]:
    content = response.json()["output"]["choices"][0]["message"]["content"]
    return [part["image"] for part in content]


def picture(url: str) -> Image.Image:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(answer.content))


def assert_error(response: httpx.Response, status: int, code: str, mentions: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"request_id", "code", "message"}
    assert body["code"] == code
    assert mentions in body["message"]


def wait_for(client, task_id, statuses=("SUCCEEDED", "FAILED", "CANCELED"), timeout=5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/tasks/{task_id}").json()
        if body["output"]["task_status"] in statuses:
            return body
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never reached {statuses}")


# -- sync: multimodal-generation ----------------------------------------------------------------


def test_sync_call_answers_after_the_work_with_n_images_of_the_requested_size(emu, client):
    started = time.monotonic()
    response = client.post(SYNC, json=sync_body(size="1024*768", n=2))
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert elapsed >= 0.18  # the answer is held for the emulated latency
    body = response.json()
    assert set(body) == {"output", "usage", "request_id"}
    choice = body["output"]["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert body["usage"] == {"width": 1024, "height": 768, "image_count": 2}
    urls = images_of(response)
    assert len(urls) == 2 and urls[0] != urls[1]
    assert all(url.startswith(emu.cdn_url) and "Expires=" in url for url in urls)
    first, second = picture(urls[0]), picture(urls[1])
    assert first.size == second.size == (1024, 768)
    assert first.tobytes() != second.tobytes()
    counters = emu.counters()
    assert counters["images_billed"] == 2 and counters["generations_billed"] == 1
    assert counters["cdn_authorization_headers"] == 0


def test_sync_defaults_2048_square_for_the_2_0_family_and_1664x928_for_max(client):
    default = client.post(SYNC, json=sync_body())
    assert default.json()["usage"] == {"width": 2048, "height": 2048, "image_count": 1}
    assert picture(images_of(default)[0]).size == (2048, 2048)
    maximum = client.post(SYNC, json=sync_body(model="qwen-image-max"))
    assert maximum.json()["usage"] == {"width": 1664, "height": 928, "image_count": 1}


@pytest.mark.parametrize("model", ["qwen-image-2.0-pro", "qwen-image-2.0-2026-03-03",
                                   "qwen-image-2.0-pro-2026-03-03", "qwen-image-plus", "qwen-image"])
def test_sync_serves_every_model_of_the_sheet(client, model):
    size = "1024*1024" if "2.0" in model else "1328*1328"
    response = client.post(SYNC, json=sync_body(model=model, size=size))
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["image_count"] == 1


@pytest.mark.parametrize("size", ["512*512", "2048*2048", "512*2048", "1328*1328"])
def test_sync_accepts_free_sizes_within_bounds_for_2_0(client, size):
    response = client.post(SYNC, json=sync_body(size=size))
    width, height = map(int, size.split("*"))
    assert response.json()["usage"]["width"] == width and response.json()["usage"]["height"] == height


@pytest.mark.parametrize("size", ["511*1024", "1024*2049", "4096*1024", "1024x1024", "1024", 1024, "0*0"])
def test_sync_refuses_sizes_out_of_bounds_or_malformed(client, size):
    assert_error(client.post(SYNC, json=sync_body(size=size)), 400, "InvalidParameter", "parameters.size")


def test_max_and_plus_take_only_their_fixed_sizes_and_one_image(client):
    assert_error(client.post(SYNC, json=sync_body(model="qwen-image-max", size="1024*1024")),
                 400, "InvalidParameter", "parameters.size")
    assert_error(client.post(SYNC, json=sync_body(model="qwen-image-plus", n=2)),
                 400, "InvalidParameter", "parameters.n")
    tall = client.post(SYNC, json=sync_body(model="qwen-image-max", size="928*1664"))
    assert tall.json()["usage"] == {"width": 928, "height": 1664, "image_count": 1}


@pytest.mark.parametrize("n, ok", [(1, True), (6, True), (0, False), (7, False), (True, False), ("2", False)])
def test_n_is_1_to_6_for_2_0(client, n, ok):
    response = client.post(SYNC, json=sync_body(size="512*512", n=n))
    if ok:
        assert len(images_of(response)) == n
    else:
        assert_error(response, 400, "InvalidParameter", "parameters.n")


@pytest.mark.parametrize("seed, ok", [(0, True), (2147483647, True), (-1, False), (2147483648, False),
                                      ("7", False), (1.5, False)])
def test_seed_range(client, seed, ok):
    response = client.post(SYNC, json=sync_body(size="512*512", seed=seed))
    if ok:
        assert response.status_code == 200
    else:
        assert_error(response, 400, "InvalidParameter", "parameters.seed")


def test_prompt_and_negative_prompt_lengths(client):
    assert client.post(SYNC, json=sync_body("p" * 800, size="512*512")).status_code == 200
    assert_error(client.post(SYNC, json=sync_body("p" * 801)), 400, "InvalidParameter", "800")
    assert_error(client.post(SYNC, json=sync_body("   ")), 400, "InvalidParameter", "text")
    assert_error(client.post(SYNC, json=sync_body(negative_prompt="n" * 501)),
                 400, "InvalidParameter", "negative_prompt")
    in_input = sync_body()
    in_input["input"]["negative_prompt"] = "n" * 501  # where the SDK's ImageSynthesis puts it
    assert_error(client.post(SYNC, json=in_input), 400, "InvalidParameter", "negative_prompt")


def test_flags_must_be_booleans(client):
    assert_error(client.post(SYNC, json=sync_body(prompt_extend="yes")), 400, "InvalidParameter", "prompt_extend")
    assert_error(client.post(SYNC, json=sync_body(watermark=1)), 400, "InvalidParameter", "watermark")


def test_body_shape_errors(client):
    assert_error(client.post(SYNC, content=b"{not json"), 400, "InvalidParameter", "JSON")
    no_model = sync_body()
    del no_model["model"]
    assert_error(client.post(SYNC, json=no_model), 400, "BadRequest.EmptyModel", "model")
    assert_error(client.post(SYNC, json=sync_body(model="qwen-image-3")), 400, "InvalidParameter", "Model not exist")
    assert_error(client.post(SYNC, json={"model": "qwen-image-2.0", "parameters": {}}),
                 400, "BadRequest.EmptyInput", "input")
    two_texts = sync_body()
    two_texts["input"]["messages"][0]["content"].append({"text": "again"})
    assert_error(client.post(SYNC, json=two_texts), 400, "InvalidParameter", "one text item")


def test_edit_takes_up_to_three_images_and_defaults_to_the_last_ones_size(client):
    source = images_of(client.post(SYNC, json=sync_body(size="768*1024")))[0]
    edit = client.post(SYNC, json=sync_body("make it blue", images=[source]))
    assert edit.json()["usage"] == {"width": 768, "height": 1024, "image_count": 1}
    assert picture(images_of(edit)[0]).size == (768, 1024)
    assert_error(client.post(SYNC, json=sync_body(images=[source] * 4)), 400, "InvalidParameter", "at most 3")
    assert_error(client.post(SYNC, json=sync_body(images=["ftp://example.invalid/a.png"])), 400, "InvalidURL")
    assert_error(client.post(SYNC, json=sync_body(model="qwen-image-max", images=[source])),
                 400, "InvalidParameter", "no input images")


def test_async_header_on_the_sync_endpoint_is_refused(client):
    assert_error(client.post(SYNC, json=sync_body(), headers=ASYNC_HEADER),
                 403, "AccessDenied", "current user api does not support asynchronous calls")


# -- auth, inspection, throttling, failures ------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "sk-emulator-local"}])
def test_a_missing_or_wrong_key_is_401_invalid_api_key(emu, headers):
    for path, body, extra in ((SYNC, sync_body(), {}), (ASYNC, async_body(), ASYNC_HEADER)):
        response = httpx.post(emu.base_url + path, json=body, headers={**headers, **extra})
        assert_error(response, 401, "InvalidApiKey", "Invalid API-key provided.")
    assert_error(httpx.get(emu.base_url + "/tasks/abc", headers=headers), 401, "InvalidApiKey")
    assert emu.counters()["tasks"] == 0


def test_a_prompt_failing_inspection_is_400_and_never_billed(emu, client):
    assert_error(client.post(SYNC, json=sync_body("a FAIL_MODERATION cat")), 400, "DataInspectionFailed")
    assert_error(client.post(SYNC, json=sync_body(negative_prompt="fail_moderation")), 400, "DataInspectionFailed")
    assert_error(client.post(ASYNC, json=async_body("FAIL_MODERATION"), headers=ASYNC_HEADER),
                 400, "DataInspectionFailed")
    assert emu.counters()["tasks"] == 0


def test_throttling_is_429_rate_quota_on_submits_and_polls(emu, client):
    emu.set_faults(rate_limit_submits=1, rate_limit_polls=1)
    assert_error(client.post(SYNC, json=sync_body()), 429, "Throttling.RateQuota")
    assert client.post(SYNC, json=sync_body(size="512*512")).status_code == 200
    assert_error(client.get("/tasks/whatever"), 429, "Throttling.RateQuota")
    assert client.get("/tasks/whatever").status_code == 200


def test_a_failed_generation_is_500_internal_error_when_sync_and_failed_when_async(emu, client):
    emu.set_faults(fail_rate=1.0)
    assert_error(client.post(SYNC, json=sync_body()), 500, "InternalError")
    task_id = client.post(ASYNC, json=async_body(), headers=ASYNC_HEADER).json()["output"]["task_id"]
    output = wait_for(client, task_id)["output"]
    assert output["task_status"] == "FAILED"
    assert output["code"] == "InternalError" and output["message"]
    assert "results" not in output
    assert emu.counters()["images_billed"] == 0


@pytest.mark.parametrize("mode", ["reset", "timeout"])
def test_a_lost_sync_answer_still_did_and_billed_the_work(emu, mode):
    emu.set_faults(lose_submit_answers=1, lose_mode=mode, slow_seconds=2.0)
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with pytest.raises(httpx.TransportError):  # a reset or a read timeout: the outcome is unknown
        httpx.post(emu.base_url + SYNC, json=sync_body(size="512*512", n=3), headers=headers, timeout=1.0)
    counters = emu.counters()
    assert counters["generations_billed"] == 1 and counters["images_billed"] == 3
    assert counters["faults_injected"] == {f"lose_answer_{mode}": 1}


# -- async: text2image tasks ----------------------------------------------------------------------


def test_async_task_goes_pending_running_succeeded_with_the_hosts_fields():
    # Long enough phases (0.3 s each) that a poll lands in each even on a loaded machine.
    emu = DashScopeEmulator(latency=0.6, jitter=0, pickup=0.5).start()
    try:
        with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {emu.api_key}"},
                          timeout=10) as client:
            _check_async_lifecycle(emu, client)
    finally:
        emu.stop()


def _check_async_lifecycle(emu, client):
    submitted = client.post(ASYNC, json=async_body("a red kite", negative_prompt="fog", size="1664*928"),
                            headers=ASYNC_HEADER)
    assert submitted.status_code == 200, submitted.text
    body = submitted.json()
    assert set(body) == {"output", "request_id"}
    assert body["output"]["task_status"] == "PENDING"
    task_id = body["output"]["task_id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", task_id)

    seen = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        polled = client.get(f"/tasks/{task_id}").json()
        seen.add(polled["output"]["task_status"])
        if polled["output"]["task_status"] == "SUCCEEDED":
            break
        time.sleep(0.02)
    assert seen == {"PENDING", "RUNNING", "SUCCEEDED"}
    output = polled["output"]
    for key in ("submit_time", "scheduled_time", "end_time"):
        assert TIMESTAMP.match(output[key]), output[key]
    assert output["submit_time"] <= output["scheduled_time"] <= output["end_time"]
    assert polled["usage"] == {"image_count": 1}
    [result] = output["results"]
    assert result["orig_prompt"] == "a red kite"
    assert result["actual_prompt"].startswith("a red kite") and result["actual_prompt"] != "a red kite"
    assert picture(result["url"]).size == (1664, 928)
    counters = emu.counters()
    assert counters["polls_per_task"] == {task_id: counters["polls"]}


def _moment(stamp: str) -> float:
    day, clock = stamp.split(" ")
    hours, minutes, seconds = clock.split(":")
    return int(day.replace("-", "")) * 86400.0 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_async_tasks_queue_briefly_then_run_their_whole_length_with_no_progress():
    # Issue 24: a host that gives no hints. Each task waits PENDING for its own draw of 0.5x to
    # 1.5x `queue`, then RUNs for its whole duration; only the host's times tell the two apart.
    emu = DashScopeEmulator(latency=0.4, jitter=0, queue=0.3, seed=3).start()
    try:
        with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {emu.api_key}"},
                          timeout=10) as http:
            ids = [http.post(ASYNC, json=async_body(f"kite {i}"), headers=ASYNC_HEADER).json()["output"]["task_id"]
                   for i in range(6)]
            answers = {task_id: [] for task_id in ids}
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not all(
                    a and a[-1]["task_status"] == "SUCCEEDED" for a in answers.values()):
                for task_id in ids:
                    answers[task_id].append(http.get(f"/tasks/{task_id}").json()["output"])
                time.sleep(0.02)
        queues = []
        for seen in answers.values():
            assert [s["task_status"] for s in seen][-1] == "SUCCEEDED"
            assert all("progress" not in s and "estimated_time" not in s for s in seen)
            done = seen[-1]
            submitted, scheduled, ended = (_moment(done[k]) for k in ("submit_time", "scheduled_time", "end_time"))
            assert ended - scheduled == pytest.approx(0.4, abs=0.0015)  # the whole run, after the queue
            queues.append(scheduled - submitted)
        assert all(0.15 - 0.0015 <= q <= 0.45 + 0.0015 for q in queues)
        assert max(queues) - min(queues) > 0.01  # each task its own queue
        timeline = {t["id"]: t for t in httpx.get(emu.origin + "/_emulator/timeline").json()["tasks"]}
        assert all(t["end"] - t["processing"] == pytest.approx(0.4, abs=1e-6) for t in timeline.values())
    finally:
        emu.stop()


def test_async_without_prompt_extend_reports_no_actual_prompt(client):
    task_id = client.post(ASYNC, json=async_body(prompt_extend=False), headers=ASYNC_HEADER).json()["output"]["task_id"]
    [result] = wait_for(client, task_id)["output"]["results"]
    assert "actual_prompt" not in result and result["orig_prompt"] == "a lighthouse at dusk"


def test_async_endpoint_rules(client):
    assert_error(client.post(ASYNC, json=async_body()), 403, "AccessDenied",
                 "current user api does not support synchronous calls")
    assert_error(client.post(ASYNC, json=async_body(model="qwen-image-2.0"), headers=ASYNC_HEADER),
                 400, "InvalidParameter", "qwen-image-2.0")
    assert_error(client.post(ASYNC, json=async_body(n=2), headers=ASYNC_HEADER), 400, "InvalidParameter", "parameters.n")
    assert_error(client.post(ASYNC, json=async_body(size="1024*1024"), headers=ASYNC_HEADER),
                 400, "InvalidParameter", "parameters.size")
    assert_error(client.post(ASYNC, json=async_body(prompt=""), headers=ASYNC_HEADER),
                 400, "InvalidParameter", "input.prompt")
    default = client.post(ASYNC, json=async_body(), headers=ASYNC_HEADER).json()["output"]["task_id"]
    [result] = wait_for(client, default)["output"]["results"]
    assert picture(result["url"]).size == (1328, 1328)


def test_an_unknown_task_is_http_200_with_status_unknown(client):
    response = client.get("/tasks/00000000-0000-4000-8000-000000000000")
    assert response.status_code == 200
    assert response.json()["output"] == {"task_id": "00000000-0000-4000-8000-000000000000",
                                         "task_status": "UNKNOWN"}


def test_cancel_works_only_while_pending():
    # One worker: the second task waits PENDING for the whole first run (1 s).
    emulator = DashScopeEmulator(latency=1.0, jitter=0, max_concurrent=1).start()
    try:
        with httpx.Client(base_url=emulator.base_url, timeout=10,
                          headers={"Authorization": f"Bearer {emulator.api_key}", **ASYNC_HEADER}) as client:
            first = client.post(ASYNC, json=async_body("first")).json()["output"]["task_id"]
            queued = client.post(ASYNC, json=async_body("second")).json()["output"]["task_id"]
            wait_for(client, first, statuses=("RUNNING",))
            assert_error(client.post(f"/tasks/{first}/cancel"), 400, "UnsupportedOperation", "PENDING")
            assert client.get(f"/tasks/{queued}").json()["output"]["task_status"] == "PENDING"
            cancelled = client.post(f"/tasks/{queued}/cancel")
            assert cancelled.status_code == 200 and set(cancelled.json()) == {"request_id"}
            output = client.get(f"/tasks/{queued}").json()["output"]
            assert output["task_status"] == "CANCELED" and TIMESTAMP.match(output["end_time"])
            assert "scheduled_time" not in output and "results" not in output
            assert_error(client.post(f"/tasks/{queued}/cancel"), 400, "UnsupportedOperation")
            assert_error(client.post("/tasks/no-such-task/cancel"), 400, "UnsupportedOperation")
            assert wait_for(client, first)["output"]["task_status"] == "SUCCEEDED"
        counters = emulator.counters()
        assert counters["tasks_by_status"] == {"SUCCEEDED": 1, "CANCELED": 1}
        assert counters["images_billed"] == 1
    finally:
        emulator.stop()


# -- CDN, control endpoints, entry points ----------------------------------------------------------


def test_result_urls_are_signed_and_expire_after_24_hours(emu, client):
    url = images_of(client.post(SYNC, json=sync_body(size="512*512")))[0]
    tampered = url.replace("/0.png", "/1.png")
    assert httpx.get(tampered).status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in httpx.get(tampered).text
    assert httpx.get(url).status_code == 200
    emu._state.wall = lambda: time.time() + 25 * 3600  # a day later on the emulator's wall clock
    expired = httpx.get(url)
    assert expired.status_code == 403 and "Request has expired" in expired.text


def test_unknown_urls_and_control_endpoints(emu, client):
    assert_error(client.get("/services/aigc/multimodal-generation/generation"), 400, "InvalidParameter", "url")
    client.post(SYNC, json=sync_body(size="512*512"))
    counters = httpx.get(emu.origin + "/_emulator/counters").json()
    assert counters["requests_per_endpoint"] == {"unknown": 1, "POST multimodal-generation": 1}
    faults = httpx.post(emu.origin + "/_emulator/faults", json={"rate_limit_submits": 1}).json()
    assert faults["rate_limit_submits"] == 1
    assert_error(client.post(SYNC, json=sync_body()), 429, "Throttling.RateQuota")
    assert httpx.post(emu.origin + "/_emulator/reset").json() == {"ok": True}
    assert httpx.get(emu.origin + "/_emulator/counters").json()["requests_per_endpoint"] == {}


async def test_in_process_transport_serves_the_same_host():
    emulator = DashScopeEmulator(latency=0.05, jitter=0)
    async with httpx.AsyncClient(transport=emulator.transport(), base_url=emulator.in_process_base_url,
                                 headers={"Authorization": f"Bearer {emulator.api_key}"}) as client:
        response = await client.post(SYNC, json=sync_body(size="768*512"))
        assert response.status_code == 200, response.text
        image = await client.get(images_of(response)[0])
        assert Image.open(io.BytesIO(image.content)).size == (768, 512)


def test_command_line_prints_the_base_url_first_then_how_to_use_it():
    process = subprocess.Popen(
        [sys.executable, "-m", "qimage_nb.emulator", "--provider", "dashscope", "--latency", "0.05",
         "--jitter", "0", "--key", "sk-cli"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        base_url = process.stdout.readline().strip()
        lines = [process.stdout.readline().strip() for _ in range(3)]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", base_url)
        assert lines[2] == f"use:  DASHSCOPE_HTTP_BASE_URL={base_url} DASHSCOPE_API_KEY=sk-cli"
        response = httpx.post(base_url + SYNC, json=sync_body(size="512*512"),
                              headers={"Authorization": "Bearer sk-cli"}, timeout=10)
        assert response.status_code == 200, response.text
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_import_and_construction_start_nothing():
    code = (
        "import sys, threading\n"
        "import qimage_nb.emulator.dashscope as package\n"
        "assert 'PIL' not in sys.modules, 'Pillow loaded at import'\n"
        "emulator = package.DashScopeEmulator(latency=0)\n"
        "assert 'dashscope' not in sys.modules, 'the emulator must not need the SDK'\n"
        "assert threading.active_count() == 1, 'constructing must not start threads'\n"
        "print(emulator)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "<DashScopeEmulator not started latency=0.0s>"
