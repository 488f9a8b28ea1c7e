"""The Replicate emulator driven with raw httpx over loopback: Prefer: wait holding the create call,
the prediction object, cancel, throttling with Retry-After, RFC 7807 problems, a lost create answer.
tests/test_replicate_sdk.py checks the same server against the official SDK."""

from __future__ import annotations

import time

import httpx
import pytest

from qimage_nb.emulator.replicate import ReplicateEmulator

CREATE = "/v1/models/qwen/qwen-image-2/predictions"


@pytest.fixture
def emu():
    emulator = ReplicateEmulator(latency=0.6, jitter=0).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def client(emu):
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {emu.api_key}"}, timeout=10) as http:
        yield http


def test_prefer_wait_holds_until_done(client):
    start = time.monotonic()
    answer = client.post(CREATE, json={"input": {"prompt": "held"}}, headers={"Prefer": "wait=5"})
    took = time.monotonic() - start
    assert answer.status_code == 201
    body = answer.json()
    assert body["status"] == "succeeded" and body["output"].endswith("/out-0.png")
    assert 0.5 <= took < 1.5
    assert answer.headers["location"] == body["urls"]["get"]


def test_a_held_answer_that_runs_out_says_starting_while_get_says_where_it_is(emu):
    with ReplicateEmulator(latency=2.5, jitter=0) as slow, httpx.Client(
            base_url=slow.base_url, headers={"Authorization": f"Bearer {slow.api_key}"}, timeout=10) as http:
        start = time.monotonic()
        body = http.post(CREATE, json={"input": {"prompt": "slow"}}, headers={"Prefer": "wait=1"}).json()
        assert 0.9 <= time.monotonic() - start < 1.6
        assert body["status"] == "starting" and body["output"] is None
        assert http.get(body["urls"]["get"]).json()["status"] == "processing"
        assert http.post(body["urls"]["cancel"]).json()["status"] == "canceled"
        assert slow.counters()["held_creates"] == {"ran_out": 1}


def test_without_prefer_the_answer_is_immediate(client):
    start = time.monotonic()
    body = client.post(CREATE, json={"input": {"prompt": "now"}}).json()
    assert time.monotonic() - start < 0.3 and body["status"] == "starting"


def test_problems_are_rfc7807(emu, client):
    unauthenticated = httpx.post(emu.base_url + CREATE, json={"input": {"prompt": "x"}})
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["content-type"] == "application/problem+json"
    assert set(unauthenticated.json()) >= {"type", "title", "status", "detail"}
    refused = client.post("/v1/models/qwen/qwen-image-2-pro/predictions",
                          json={"input": {"prompt": "x", "size": "4096*4096"}})
    assert refused.status_code == 422 and "input.size" in refused.json()["detail"]
    assert emu.counters()["tasks"] == 0


def test_throttling_answers_429_with_retry_after(emu, client):
    emu.set_faults(rate_limit_submits=1, retry_after=3)
    throttled = client.post(CREATE, json={"input": {"prompt": "x"}})
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "3"
    assert "throttled" in throttled.json()["detail"]
    emu.set_faults(rate_limit_polls=1)
    created = client.post(CREATE, json={"input": {"prompt": "x"}}).json()
    assert client.get(created["urls"]["get"]).status_code == 429
    assert client.get(created["urls"]["get"]).status_code == 200


def test_a_lost_create_answer_still_creates_exactly_one_prediction(emu, client):
    emu.set_faults(lose_submit_answers=1, lose_mode="html502")
    assert client.post(CREATE, json={"input": {"prompt": "lost"}}).status_code == 502
    time.sleep(0.7)
    counters = emu.counters()
    assert counters["tasks"] == 1 and counters["predictions_billed"] == 1


def test_command_line_serves_replicate_and_says_how_to_point_at_it():
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "qimage_nb.emulator", "--provider", "replicate", "--latency", "0.05",
         "--jitter", "0", "--key", "r8_cli"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        base_url = process.stdout.readline().strip()
        lines = [process.stdout.readline().strip() for _ in range(3)]
        assert lines[2] == f"use:  REPLICATE_BASE_URL={base_url} REPLICATE_API_TOKEN=r8_cli"
        made = httpx.post(base_url + CREATE, json={"input": {"prompt": "cli"}}, timeout=10,
                          headers={"Authorization": "Bearer r8_cli", "Prefer": "wait"})
        assert made.status_code == 201 and made.json()["status"] == "succeeded"
    finally:
        process.terminate()
        process.wait(timeout=10)
