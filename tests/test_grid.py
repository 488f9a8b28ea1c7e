"""One grid for many: qimage_nb.grid and generate_many's results, as static HTML with a text fallback."""

from __future__ import annotations

import base64
import html
import re

import pytest
from PIL import Image

import qimage_nb
from qimage_nb.core._client import AsyncClient
from qimage_nb.core._polling import PollPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.journal._store import Store

DATA_URI = re.compile(r'src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)"')
PROMPTS = [f"product shot {i}: a ceramic cup, colour {c}" for i, c in enumerate(["red", "teal", "ochre", "plum"])]


@pytest.fixture
async def generations(tmp_path):
    emu = Emulator(latency=0.05, jitter=0.02, seed=5)
    async with AsyncClient(emu.api_key, emu.in_process_base_url, transport=emu.transport(),
                           poll=PollPolicy.for_latency(emu.latency), store=Store(tmp_path)) as client:
        yield await client.generate_many(PROMPTS)


def captions(page: str) -> list[str]:
    return [html.unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", page)]


async def test_many_generations_show_as_one_labelled_grid(generations):
    shown = qimage_nb.grid(generations, cols=2)
    bundle = shown._repr_mimebundle_()
    page = bundle["text/html"]
    assert page.count('class="qimage-grid"') == 1  # one grid, not a gallery per item
    assert captions(page) == PROMPTS  # the prompt under each picture, in input order
    assert "grid-template-columns:repeat(2," in page
    thumbs = DATA_URI.findall(page)
    assert len(thumbs) == 4
    for mime, b64 in thumbs:
        data = base64.b64decode(b64)
        assert mime == "image/jpeg" and len(data) <= 16 * 1024
        with Image.open(__import__("io").BytesIO(data)) as small:
            assert max(small.size) == 256  # crisp enough to enlarge, small enough to keep
    assert "<script" not in page and 'tabindex="0"' in page and ":focus" in page  # click to enlarge, CSS only
    assert bundle["text/plain"].splitlines()[0] == "<Grid of 4 images>"
    assert all(prompt in bundle["text/plain"] for prompt in PROMPTS)


async def test_generate_many_results_draw_themselves_as_one_grid(generations):
    assert isinstance(generations, list)
    bundle = generations._repr_mimebundle_()
    assert captions(bundle["text/html"]) == PROMPTS
    assert "4 generations" in bundle["text/html"]
    assert bundle["text/plain"].count("<Generation ") == 4


async def test_labels_by_provenance_key_function_or_list(generations):
    images = [im for gen in generations for im in gen.images]
    assert captions(qimage_nb.grid(images, label="task_id").html()) == [g.task_id for g in generations]
    assert captions(qimage_nb.grid(images, label=lambda im: im.size[0]).html()) == ["1024"] * 4
    assert captions(qimage_nb.grid(images, label=list("abcd")).html()) == list("abcd")
    with pytest.raises(ValueError, match="label has 2 entries for 4 images"):
        qimage_nb.grid(images, label=["a", "b"])
    with pytest.raises(ValueError, match="cols must be a whole number"):
        qimage_nb.grid(images, cols=0)
    with pytest.raises(TypeError, match="not a str"):
        qimage_nb.grid("cats")


async def test_the_grid_survives_nbconvert(generations):
    nbformat = pytest.importorskip("nbformat")
    nbconvert = pytest.importorskip("nbconvert")
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("qimage_nb.grid(gens)")
    cell.outputs = [nbformat.v4.new_output("display_data", data=qimage_nb.grid(generations)._repr_mimebundle_())]
    notebook.cells = [cell]
    body, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    assert len(DATA_URI.findall(body)) == 4 and all(p in html.unescape(body) for p in PROMPTS)
