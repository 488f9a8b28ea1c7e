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


async def test_dashscope_prices_3_0_by_model_size_tier_and_references(tmp_path):
    """DashScope's table (shared/PROVIDERS.md 5): 3.0 one flat price, 3.0-pro by the output's area,
    $0.003 per reference of an edit; a model with no published price is said to be unknown."""
    from qimage_nb.emulator import DashScopeEmulator

    refs = ["https://example.com/a.png", "https://example.com/b.png"]
    with DashScopeEmulator(latency=0.05, jitter=0.0) as ds:
        async with AsyncClient(ds.api_key, ds.base_url, provider="dashscope", store=Store(tmp_path),
                               poll=PollPolicy.for_latency(ds.latency)) as client:
            flat = await client.estimate([
                {"prompt": "flat at 2K", "model": "qwen-image-3.0", "resolution": "2K"},
                {"prompt": "no size", "model": "qwen-image-3.0", "size": "auto"},
            ])
            assert flat.cost == pytest.approx(2 * 0.03)
            assert "Model Studio" in str(flat) and "price table" in str(flat), str(flat)
            pro = await client.estimate([
                {"prompt": "pro 1:1 1K", "model": "qwen-image-3.0-pro", "size": "1:1"},  # about 1 MP: the 1K tier
                {"prompt": "pro 1472 square", "model": "qwen-image-3.0-pro", "size": "1472x1472"},  # 2.17 MP
                {"prompt": "pro 1536 square", "model": "qwen-image-3.0-pro", "size": "1536x1536"},  # 2.36 MP
                {"prompt": "pro, the model picks", "model": "qwen-image-3.0-pro", "size": "auto"},  # dearer tier
            ])
            assert [p.per_image for p in pro.prices] == pytest.approx([0.04, 0.04, 0.075, 0.075])
            edit = await client.estimate({"prompt": "an edit", "model": "qwen-image-3.0", "image_urls": refs, "n": 2})
            assert edit.cost == pytest.approx(2 * 0.03 + 2 * 0.003)  # references priced per request
            unknown = await client.estimate("a 2.0 picture")  # DashScope's default model: no published price
            assert unknown.cost is None and "cost unknown (no price seen for qwen-image-2.0 1K" in str(unknown)

            # So a cap works there: over it nothing is sent; within it the batch runs.
            three = [{"prompt": f"poster {i}", "model": "qwen-image-3.0"} for i in range(3)]
            with pytest.raises(ValidationError, match=r"the estimate is \$0\.09 .* over max_cost \$0\.07: nothing was sent"):
                await client.generate_many(three, max_cost=0.07)
            assert ds.counters()["generations_billed"] == 0
            results = await client.generate_many(three, max_cost=0.09, progress=False)
    assert [r.ok for r in results] == [True] * 3 and ds.counters()["generations_billed"] == 3


async def test_an_alias_is_priced_as_the_model_it_names():
    """fal takes "standard" and "pro" for its 2.0 apps; an estimate prices them as those models."""
    from qimage_nb._contract import GenerationRequest
    from qimage_nb.providers import get_provider

    fal = get_provider("fal")
    for alias, model in (("standard", "qwen-image-2.0"), ("pro", "qwen-image-2.0-pro")):
        named = fal.estimated_price(GenerationRequest(prompt="x", model=model))
        assert named is not None and fal.estimated_price(GenerationRequest(prompt="x", model=alias)) == named
