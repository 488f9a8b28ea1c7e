"""Qwen Image 3.0 on the seed's API (issue 21, point 2): sent through the same task API where the
host lists it, checked against the host's own ``/v1/model-schema`` answer where it serves one
(API.md 7.7), else against qimage_nb's table (a ratio, 1K or 2K, 1 to 4 images)."""

from __future__ import annotations

import pytest

from qimage_nb import AsyncClient
from qimage_nb._exceptions import ValidationError
from qimage_nb.core._polling import PollPolicy
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.emulator._faults import Faults

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.02, backoff_cap=0.1)


def client_for(emu) -> AsyncClient:
    return AsyncClient(emu.api_key, emu.base_url, retry=FAST_RETRY, poll=PollPolicy.for_latency(emu.latency))


async def test_3_0_is_submitted_through_the_task_api_where_the_host_lists_it():
    with Emulator(latency=0.1, jitter=0.0, faults=Faults(extra_models=("qwen-image-3.0",))) as emu:
        async with client_for(emu) as client:
            generation = await client.generate("a red kite", model="qwen-image-3.0", size="16:9", resolution="2K", n=4)
        counters = emu.counters()
    assert len(generation.images) == 4
    assert generation.images[0].size == (2496, 1392)  # the emulator's 3.0 sizes, not the 2.0 table's
    assert generation.images[0].info["model"] == "qwen-image-3.0"
    # The list, the schema, the submit, its polls: the schema was read once, before the submit.
    assert counters["submit_attempts"] == 1 and counters["api_requests"] >= 3


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"n": 5}, r"n is 5; it takes 1 to 4"),
        ({"size": "21:9"}, r"size '21:9' is not one of 1:1"),
        ({"host_params": {"quality": "max"}}, r"takes no quality"),
        ({"size": "1024x1024"}, r"takes a ratio|not one of"),
    ],
)
async def test_the_hosts_schema_refuses_what_3_0_does_not_take_before_anything_is_sent(fields, fragment):
    with Emulator(latency=0.1, faults=Faults(extra_models=("qwen-image-3.0",))) as emu:
        async with client_for(emu) as client:
            with pytest.raises(ValidationError, match=fragment) as info:
                await client.generate("a cat", model="qwen-image-3.0", **fields)
        assert "\n" not in str(info.value)
        assert emu.counters()["submit_attempts"] == 0


async def test_without_a_schema_the_table_decides_and_where_unlisted_3_0_is_refused_naming_the_list():
    with Emulator(latency=0.1, faults=Faults(extra_models=("qwen-image-3.0",))) as emu:
        async with client_for(emu) as client:
            # A host that serves no schema: qimage_nb's own table (1 to 4 images) decides.
            from qimage_nb.core import _account

            _account._MODEL_SCHEMAS[("apimart", emu.base_url, "qwen-image-3.0")] = None
            with pytest.raises(ValidationError, match="1 to 4 images"):
                await client.generate("a cat", model="qwen-image-3.0", n=6)
    with Emulator(latency=0.1) as plain:
        async with client_for(plain) as client:
            with pytest.raises(ValidationError, match="not served by the APIMart API"):
                await client.generate("a cat", model="qwen-image-3.0")
        assert plain.counters()["submit_attempts"] == 0


async def test_the_wild_hosts_loose_schema_lets_its_own_sizes_through():
    with Emulator(latency=0.1, faults=Faults(dialect="wild")) as emu:
        async with client_for(emu) as client:
            generation = await client.generate("a cat", model="qwen-image-3.0", size="21:9")
    assert generation.images and generation.request.size == "21:9"
