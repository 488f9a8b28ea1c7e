"""References to generated images: their URL while it is good, else the copy on disk."""

from __future__ import annotations

import time

import pytest
from PIL import Image

from qimage_nb import AsyncClient
from qimage_nb.core._retry import RetryPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.notebook._refs import _refs_from_value, ref_urls


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0.05, jitter=0.0) as emulator:
        yield emulator


def generated(origin: str, expires_at: float | None) -> Image.Image:
    image = Image.new("RGB", (32, 32), (200, 10, 10))
    image.info.update(
        source_url="https://cdn.example/images/task_X/0.png",
        origin=origin,
        expires_at="" if expires_at is None else str(int(expires_at)),
    )
    return image


@pytest.mark.parametrize(
    ("case", "uploads"),
    [("fresh, same API", 0), ("expired", 1), ("another API", 1)],
)
async def test_generated_image_reference(emu, case, uploads):
    before = emu.counters()["uploads"]
    origin = "https://elsewhere.example" if case == "another API" else emu.base_url
    expires = time.time() - 10 if case == "expired" else time.time() + 86400
    [ref] = _refs_from_value(generated(origin, expires), "imgs[0]")
    said = []
    async with AsyncClient(emu.api_key, emu.base_url, retry=RetryPolicy(max_attempts=2)) as client:
        [url] = await ref_urls(client, [ref], said.append)
    assert emu.counters()["uploads"] - before == uploads
    if uploads:
        assert url.startswith(emu.cdn_url)
        assert any("copy on disk" in line for line in said)
    else:
        assert url == "https://cdn.example/images/task_X/0.png"
