"""The fal emulator driven with raw httpx over loopback: the queue as fal documents it
(shared/PROVIDERS.md 2): 202 until done, queue positions, the status stream with keepalives, the
result, cancel answers, 422 detail lists, throttling, a lost submit answer. tests/test_fal_sdk.py
checks the same server against the official SDK."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from qimage_nb.emulator.fal import FalEmulator

T2I = "/fal-ai/qwen-image-2/text-to-image"


@pytest.fixture
def emu():
    # Long enough that the second task is still queued when a loaded machine looks (0.3 s was not)
    emulator = FalEmulator(latency=1.0, jitter=0, keepalive=0.1, max_concurrent=1).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def client(emu):
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Key {emu.api_key}"}, timeout=10) as http:
        yield http


def events(client, url):
    """(seconds since start, kind, payload) of each line of a status stream."""
    start, seen = time.monotonic(), []
    with client.stream("GET", url) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/event-stream"
        for line in answer.iter_lines():
            if line.startswith("data: "):
                seen.append((time.monotonic() - start, "data", json.loads(line[6:])))
            elif line.startswith(":"):
                seen.append((time.monotonic() - start, "comment", line))
    return seen


def test_status_is_202_until_done_then_200_and_positions_count_down(client):
    first = client.post(T2I, json={"prompt": "one"}).json()
    second = client.post(T2I, json={"prompt": "two"}).json()
    assert set(first) >= {"request_id", "response_url", "status_url", "cancel_url"}
    answer = client.get(second["status_url"])
    assert answer.status_code == 202
    # behind the first: 1 ahead while the first is still queued, 0 once it runs (a loaded machine
    # may look only then); positions only count down from there
    assert answer.json()["status"] == "IN_QUEUE" and answer.json()["queue_position"] in (0, 1)
    positions = [answer.json()["queue_position"]]
    assert client.get(second["response_url"]).status_code == 400  # not done yet
    deadline = time.monotonic() + 10
    while (answer := client.get(second["status_url"], params={"logs": 1})).status_code == 202:
        assert time.monotonic() < deadline
        if answer.json()["status"] == "IN_QUEUE":
            positions.append(answer.json()["queue_position"])
        time.sleep(0.03)
    assert positions == sorted(positions, reverse=True), positions
    body = answer.json()
    assert body["status"] == "COMPLETED" and body["logs"] and "inference_time" in body["metrics"]
    assert client.get(second["response_url"]).json()["images"][0]["url"].startswith("http://")


def test_the_stream_sends_each_change_keepalives_while_queued_and_closes_after_completed(client):
    client.post(T2I, json={"prompt": "ahead"})
    queued = client.post(T2I, json={"prompt": "behind"}).json()
    seen = events(client, queued["status_url"] + "/stream?logs=1")
    statuses = [payload["status"] for _, kind, payload in seen if kind == "data"]
    assert statuses[0] == "IN_QUEUE" and statuses[-1] == "COMPLETED" and "IN_PROGRESS" in statuses
    assert any(kind == "comment" for _, kind, _ in seen), "a quiet stream sends keepalive comments"
    final = seen[-1]
    assert final[1] == "data" and final[2]["logs"][-1]["message"].endswith("4/4")


def test_cancel_answers_and_billing(emu, client):
    running = client.post(T2I, json={"prompt": "running"}).json()
    queued = client.post(T2I, json={"prompt": "queued"}).json()
    time.sleep(0.1)
    assert client.put(queued["cancel_url"]).json() == {"status": "CANCELLATION_REQUESTED"}
    assert client.put(running["cancel_url"]).status_code == 202
    assert client.put(running["cancel_url"]).json() == {"status": "ALREADY_COMPLETED"}
    missing = client.put(running["cancel_url"].replace(running["request_id"], "0" * 8 + running["request_id"][8:]))
    assert missing.status_code == 404
    counters = emu.counters()
    assert counters["cancels"] == {"queued": 1, "running": 1, "ALREADY_COMPLETED": 1, "NOT_FOUND": 1}
    assert counters["requests_billed"] == 1  # the running one; the queued one never ran


def test_a_refused_input_ends_completed_with_a_422_detail_list_and_is_billed(emu, client):
    sent = client.post(T2I, json={"prompt": "", "image_size": {"width": 4000, "height": 4000},
                                  "output_format": "gif"}).json()
    time.sleep(0.2)
    status = client.get(sent["status_url"]).json()
    assert status["status"] == "COMPLETED" and status["error_type"] == "validation_error"
    answer = client.get(sent["response_url"])
    assert answer.status_code == 422
    fields = [item["loc"][-1] for item in answer.json()["detail"]]
    assert fields == ["prompt", "output_format", "image_size"]
    assert emu.counters()["refusals_billed"] == 1


def test_auth_throttling_and_unknown_apps(emu, client):
    assert httpx.post(emu.base_url + T2I, json={"prompt": "x"}).status_code == 401
    assert client.post("/fal-ai/not-an-app/run", json={"prompt": "x"}).status_code == 404
    emu.set_faults(rate_limit_submits=1, retry_after=2)
    throttled = client.post(T2I, json={"prompt": "x"})
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "2"
    assert "detail" in throttled.json()
    assert emu.counters()["tasks"] == 0


def test_a_lost_submit_answer_still_creates_exactly_one_request(emu, client):
    emu.set_faults(lose_submit_answers=1, lose_mode="reset")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(T2I, json={"prompt": "lost"})
    deadline = time.monotonic() + 5  # the lost request runs to its end, and is billed once
    while emu.counters()["requests_billed"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    counters = emu.counters()
    assert counters["tasks"] == 1 and counters["requests_billed"] == 1


def test_in_process_transport_streams_too(emu):
    http = httpx.Client(transport=emu.sync_transport(), base_url=emu.in_process_base_url,
                        headers={"Authorization": f"Key {emu.api_key}"})
    sent = http.post(T2I, json={"prompt": "in process"}).json()
    seen = events(http, sent["status_url"] + "/stream")
    assert [p["status"] for _, kind, p in seen if kind == "data"][-1] == "COMPLETED"


def test_command_line_serves_fal_and_says_how_to_point_at_it():
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "qimage_nb.emulator", "--provider", "fal", "--latency", "0.05", "--jitter", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        base_url = process.stdout.readline().strip()
        lines = [process.stdout.readline().strip() for _ in range(3)]
        key = lines[1].removeprefix("key:  ")
        assert lines[2] == f"use:  FAL_QUEUE_RUN_HOST={base_url} FAL_KEY={key}"
        sent = httpx.post(base_url + T2I, json={"prompt": "from the command line"},
                          headers={"Authorization": f"Key {key}"}, timeout=10)
        assert sent.status_code == 200 and sent.json()["status_url"].startswith(base_url)
    finally:
        process.terminate()
        process.wait(timeout=10)
