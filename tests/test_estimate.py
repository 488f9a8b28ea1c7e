"""Price before spending: client.estimate and generate_many(max_cost=...) against the emulator."""

from __future__ import annotations

import logging

import pytest

from qimage_nb import ValidationError
from qimage_nb.core._client import AsyncClient
from qimage_nb.core._polling import PollPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.journal._store import Store


def make(emu, store):
    return AsyncClient(emu.api_key, emu.in_process_base_url, transport=emu.transport(),
                       poll=PollPolicy.for_latency(emu.latency), store=store)


@pytest.fixture
def emu():
    return Emulator(latency=0.05, jitter=0.02, seed=4, price_per_image=0.01)


async def test_the_estimate_uses_the_price_table_then_what_the_host_charged(emu, tmp_path):
    async with make(emu, Store(tmp_path)) as client:
        first = await client.estimate(["a", "b", {"prompt": "c", "n": 2}])
        assert (first.generations, first.images) == (3, 4)
        assert first.cost == pytest.approx(4 * 0.006)  # the provider's table (its documented example)
        assert "price table" in str(first) and "about $0.024" in str(first)
        assert emu.counters()["submits_accepted"] == 0  # an estimate sends nothing

        await client.generate("learn the price")
        again = await client.estimate(["a", "b", {"prompt": "c", "n": 2}])
        assert again.cost == pytest.approx(4 * 0.01)  # what the host said it charged, from the journal
        assert "journal's last price" in str(again)

        cached = await client.estimate(["learn the price", "new one"], cache=True)
        assert cached.cached == 1 and cached.cost == pytest.approx(0.01)


async def test_a_cap_below_the_estimate_submits_nothing(emu, tmp_path):
    async with make(emu, Store(tmp_path)) as client:
        with pytest.raises(ValidationError, match=r"the estimate is \$0\.03 for 5 generations \(5 images\), over "
                                                  r"max_cost \$0\.02: nothing was sent"):
            await client.generate_many([f"item {i}" for i in range(5)], max_cost=0.02)
        with pytest.raises(ValidationError, match=r"no price is known for qwen-image-2\.0-pro 1K"):
            await client.generate_many([{"prompt": "pro", "model": "qwen-image-2.0-pro"}], max_cost=5)
        with pytest.raises(ValidationError, match="max_cost must be an amount of money"):
            await client.generate_many(["x"], max_cost=-1)
    assert emu.counters()["submits_accepted"] == 0


async def test_a_batch_stops_submitting_when_spent_and_in_flight_would_pass_the_cap(emu, tmp_path, caplog):
    emu = Emulator(latency=0.05, jitter=0.0, seed=4, price_per_image=0.02)  # dearer than the table says
    async with make(emu, Store(tmp_path)) as client:
        with caplog.at_level(logging.WARNING, logger="qimage_nb"):
            results = await client.generate_many([f"catalogue {i}" for i in range(5)], concurrency=1, max_cost=0.05)
    assert [r.ok for r in results] == [True, True, False, False, False]
    assert emu.counters()["submits_accepted"] == 2
    assert sum(r.cost for r in results if r.ok) <= 0.05
    refused = results[2].error
    assert isinstance(refused, ValidationError) and "would pass max_cost $0.05" in str(refused)
    assert results[2].task_id is None and results[2].status == "not sent"
    lines = [r.getMessage() for r in caplog.records if "max_cost" in r.getMessage()]
    assert lines == ["qimage_nb: stopped at max_cost $0.05: 3 of 5 generations not sent ($0.04 spent)"]


async def test_within_the_cap_everything_runs(emu, tmp_path):
    async with make(emu, Store(tmp_path)) as client:
        results = await client.generate_many(["one", "two"], max_cost=1)
    assert all(r.ok for r in results) and emu.counters()["submits_accepted"] == 2


def test_the_sync_client_estimates_too(emu, tmp_path):
    from qimage_nb import Client

    with Client(emu.api_key, emu.in_process_base_url, transport=emu.transport(), store=Store(tmp_path)) as client:
        assert client.estimate("one cat").images == 1
