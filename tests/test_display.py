"""view._gallery and notebook._display: what a saved notebook keeps per shown image (the byte budget) and the gallery markup."""

from __future__ import annotations

import base64
import io
import random
import re
from pathlib import Path

import pytest
from PIL import Image

from qimage_nb._contract import GenerationRequest
from qimage_nb.core._client import Generation
from qimage_nb.emulator._render import render_png
from qimage_nb.journal import _thumbnails
from qimage_nb.journal._images import open_lazy
from qimage_nb.journal._png_text import add_png_text
from qimage_nb.notebook._display import LiveGallery, LiveSlot
from qimage_nb.view._gallery import (
    NOTEBOOK_FLOOR_BYTES,
    NOTEBOOK_SHARE,
    gallery_bundle,
    gallery_html,
    notebook_budget,
    stored_caption,
    tile_for,
)

TASK_ID = "task_0101M8ANZ33G8Z3GX22HNP6KJ"
DATA_URI = re.compile(r'<img class="qimage-thumb" src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)"')


def _stored_as_the_client_does(path: Path, request: GenerationRequest) -> Generation:
    """The file with the client's provenance chunks, opened lazily with the client's info."""
    info = {
        "prompt": request.prompt, "negative_prompt": request.negative_prompt or "", "model": request.model,
        "size": request.size, "resolution": request.resolution, "n": str(request.n), "index": "0",
        "task_id": TASK_ID, "source_url": f"https://cdn.example.net/{TASK_ID}/0.png?Expires=1767225600&Signature=abc",
        "expires_at": "1767225600", "origin": "https://api.example.net", "created": "2026-01-02T03:04:05+00:00",
    }  # fmt: skip
    add_png_text(path, info)
    image = open_lazy(path, {**info, "path": str(path)})
    return Generation(task_id=TASK_ID, request=request, images=[image], paths=[path])


def _emulator_generation(tmp_path: Path, size: str, resolution: str) -> Generation:
    request = GenerationRequest.create("a lighthouse at dusk", size=size, resolution=resolution)
    data = render_png(prompt=request.prompt, index=0, n=1, size=size, resolution=resolution, model=request.model)
    path = tmp_path / f"{size.replace(':', 'x')}-{resolution}.png"
    path.write_bytes(data)
    return _stored_as_the_client_does(path, request)


def _photo_like_generation(tmp_path: Path) -> Generation:
    """Smooth structure plus grain, compressing like a photograph (~1.4 MB as PNG)."""
    rng = random.Random(6)
    coarse = Image.frombytes("RGB", (32, 32), bytes(rng.randrange(256) for _ in range(32 * 32 * 3)))
    grain = Image.effect_noise((1024, 1024), 12).convert("RGB")
    picture = Image.blend(coarse.resize((1024, 1024), Image.Resampling.BICUBIC), grain, 0.15)
    path = tmp_path / "photo.png"
    picture.save(path, "PNG")
    return _stored_as_the_client_does(path, GenerationRequest.create("a photo-like picture"))


def _stored(bundle: dict) -> int:
    return sum(len(value.encode("utf-8")) for value in bundle.values())


def _full_base64(generation: Generation) -> int:
    return sum(len(base64.b64encode(Path(p).read_bytes())) for p in generation.paths)


def _thumbs(html_text: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b64))) for _mime, b64 in DATA_URI.findall(html_text)]


@pytest.fixture(autouse=True)
def _no_cached_thumbnails():
    _thumbnails._THUMB_CACHE.clear()


def _sharpness(image: Image.Image) -> float:
    """Mean absolute difference between neighbouring pixels: high for crisp edges, low when blurred."""
    grey = image.convert("L")
    w, h = grey.size
    px = grey.load()
    total = sum(abs(px[x, y] - px[x + 1, y]) for y in range(h) for x in range(w - 1))
    return total / (h * (w - 1))


@pytest.mark.parametrize(
    ("size", "resolution", "shown"),
    [("1:1", "1K", (256, 256)), ("16:9", "1K", (256, 144)), ("3:4", "1K", (192, 256)), ("1:1", "2K", (256, 256))],
)
def test_display_of_a_flat_picture_is_crisp_at_the_size_it_is_shown_within_16_kb(tmp_path, size, resolution, shown):
    generation = _emulator_generation(tmp_path, size, resolution)
    bundle = gallery_bundle([generation])
    assert set(bundle) == {"text/html", "text/plain"}  # no second copy of the picture as image/*
    assert _stored(bundle) <= max(NOTEBOOK_SHARE * _full_base64(generation), NOTEBOOK_FLOOR_BYTES)
    (thumb,) = _thumbs(bundle["text/html"])
    assert thumb.size == shown  # every pixel it is shown at: never stretched up from fewer
    # As sharp as a plain high-quality thumbnail of the same picture (a blurred one scores far less).
    reference = Image.open(generation.paths[0]).convert("RGB")
    reference.thumbnail(shown, Image.Resampling.LANCZOS)
    assert _sharpness(thumb) >= 0.85 * _sharpness(reference)


def test_display_of_a_photo_like_picture_stays_near_1_percent_at_full_size(tmp_path):
    generation = _photo_like_generation(tmp_path)
    bundle = gallery_bundle([generation])
    assert _stored(bundle) <= 0.012 * _full_base64(generation)  # the share, not the floor, is what binds
    (thumb,) = _thumbs(bundle["text/html"])
    assert (thumb.format, thumb.size) == ("JPEG", (256, 256))


def test_notebook_budget_is_2_percent_of_the_file_or_16_kb_whichever_is_more():
    assert notebook_budget(75_000) == NOTEBOOK_FLOOR_BYTES == 16 * 1024
    assert notebook_budget(3_000_000) == int(0.02 * 4_000_000)


def _magic_output(generations: list[Generation], **slot: str) -> dict:
    """What %%qimage leaves behind: its live gallery, finished (title and subtitle as the magic words them)."""
    request = generations[0].request
    live = LiveGallery(
        [LiveSlot(request=g.request, **slot) for g in generations],
        title=request.prompt,
        subtitle=f"{request.model} · {request.size} {request.resolution} · 1 image -> images",
        banner=None,
        thumb_px=256,
        fmt="JPEG",
    )
    live.finish(generations)
    return live.bundle()


def test_magic_output_of_a_flat_picture_keeps_its_budget_and_says_things_once(tmp_path):
    generation = _emulator_generation(tmp_path, "16:9", "1K")
    bundle = _magic_output([generation])
    assert _stored(bundle) <= notebook_budget(generation.paths[0].stat().st_size)
    html_text = bundle["text/html"]
    assert [t.size for t in _thumbs(html_text)] == [(256, 144)]
    # The title and subtitle name the prompt, model and size; the status line the task: no caption
    # or tooltip repeats them under the image.
    assert "qimage-caption" not in html_text and "title=" not in html_text
    for needle in ("a lighthouse at dusk", "qwen-image-2.0", "16:9 1K", TASK_ID):
        assert html_text.count(needle) == 1, needle
        assert needle in bundle["text/plain"]


def test_shared_css_is_sent_once_per_output_not_per_tile(tmp_path):
    generations = [_emulator_generation(tmp_path, size, "1K") for size in ("1:1", "16:9", "3:4")]
    html_text = gallery_bundle(generations)["text/html"]
    assert len(_thumbs(html_text)) == 3
    assert html_text.count("<style>") == 1
    assert html_text.count("qimage-caption{") == 1 and html_text.count('class="qimage-caption"') == 3
    assert not re.search(r"<img [^>]*style=", html_text)
    assert 'class="qimage-gallery"' in html_text
    # Every thumbnail is shown at the gallery's size whatever its pixel size under the budget.
    assert re.findall(r'width="(\d+)" height="(\d+)"', html_text) == [("256", "256"), ("256", "144"), ("192", "256")]


def test_stored_caption_says_only_what_the_heading_does_not_and_keeps_no_path_or_cdn_url():
    info = {
        "prompt": "a lighthouse at dusk, " * 5, "negative_prompt": "blurry", "model": "qwen-image-2.0-pro",
        "size": "16:9", "resolution": "2K", "task_id": TASK_ID,
        "source_url": "https://cdn.example.net/x.png?Signature=secret", "path": "/home/someone/.qimage/images/ab/cd.png",
    }  # fmt: skip
    caption, tooltip = stored_caption(info)
    assert caption.startswith("a lighthouse at dusk") and caption.endswith("· qwen-image-2.0-pro · 16:9 2K")
    assert f"prompt: {' '.join(info['prompt'].split())}" in tooltip  # the caption cut it: full in the tooltip
    assert "negative: blurry" in tooltip and TASK_ID in tooltip
    assert "Signature" not in tooltip and "/home/someone" not in tooltip

    caption, tooltip = stored_caption({**info, "prompt": "a cat"}, heading=f"a cat qwen-image-2.0-pro · 16:9 2K task {TASK_ID}")
    assert (caption, tooltip) == ("", "negative: blurry")
    # A grid's label names the model by its short name; a longer model name is not "said" by a shorter one.
    assert stored_caption({**info, "prompt": "a cat"}, heading="a cat\npro · 16:9 · 2K")[0] == ""
    plain = {**info, "prompt": "a cat", "model": "qwen-image-2.0"}
    assert stored_caption(plain, heading="a cat qwen-image-2.0-pro")[0] == "qwen-image-2.0 · 16:9 2K"


def test_panel_tiles_are_not_held_to_the_notebook_budget(tmp_path):
    generation = _emulator_generation(tmp_path, "1:1", "1K")
    tile = tile_for(generation.images[0])
    assert tile.mime == "image/jpeg"
    assert Image.open(io.BytesIO(tile.thumb)).size == (256, 256)
    assert "/" in tile.tooltip  # the panel's tooltip keeps the path, as before


def test_gallery_html_of_placeholders_and_labels_styles_them_once():
    from qimage_nb.view._gallery import placeholder

    tiles = [placeholder("40%", label="pro · 1:1 · 1K", width=1024, height=1024),
             placeholder("queued", label="standard · 1:1 · 1K", width=1024, height=1024)]  # fmt: skip
    html_text = gallery_html(tiles, columns=2)
    assert html_text.count("<style>") == 1 and html_text.count(".qimage-placeholder{") == 1
    assert re.findall(r'class="qimage-label">([^<]+)<', html_text) == ["pro · 1:1 · 1K", "standard · 1:1 · 1K"]
    assert html_text.count('class="qimage-placeholder" style="width:256px;height:256px"') == 2


def test_the_estimate_left_goes_down_as_progress_goes_up():
    """The server's estimate is fixed and pessimistic: alone it said "about 3 s left" at 50 % and at 71 %."""
    from qimage_nb.core._results import Update

    request = GenerationRequest.create("a slow lighthouse")
    live = LiveGallery([LiveSlot(request=request)], title="t", subtitle=None, banner=None, thumb_px=256, fmt="JPEG")
    said = []
    for progress, elapsed in ((50, 3.0), (71, 3.4), (80, 3.8)):
        live.on_update(Update(request=request, stage="running", task_id=TASK_ID, progress=progress,
                              elapsed=elapsed, estimated_time=6.0))
        said.append(live.status_lines()[0][0])
    seconds = [int(re.search(r"about (\d+) s left", line).group(1)) for line in said]
    assert seconds[0] == 3 and seconds[1] < seconds[0] and seconds[2] <= seconds[1], said
