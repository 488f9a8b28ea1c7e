"""The image pipeline: thumbnail time, bytes a notebook keeps per shown image, decodes per image.

    .venv/bin/python -m benchmarks.bench_images      # this part of benchmarks/run.py alone

Inputs are real emulator outputs at 1K and 2K for three aspect ratios, fetched through the client
(so the files on disk carry the provenance it writes, as a user's do), plus a photo-like picture
for scale. Baselines, in the same run: a thumbnail by full decode + one full-size LANCZOS resize
(what ``Image.open(p).resize(...)`` code does), and embedding the full file as base64 (what
``display(Image(data=png))`` stores in the notebook). "Notebook bytes" is every byte of the output
bundle (HTML with the thumbnails, and the plain-text fallback) divided by the images shown.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageFile

from qimage_nb.emulator._render import render_png
from qimage_nb.journal import _images, _thumbnails

from ._common import Row

RATIOS = ("1:1", "16:9", "3:4")


def _files(root: Path, resolution: str) -> list[Path]:
    paths = []
    for k, ratio in enumerate(RATIOS):
        data = render_png(prompt=f"a lighthouse at dusk, {ratio}", index=0, n=1, size=ratio,
                          resolution=resolution, model="qwen-image-2.0")
        path = root / f"{resolution}-{k}.png"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _time_ms(fn, paths: list[Path], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        for path in paths:
            _thumbnails._THUMB_CACHE.clear()  # measure the work, not the cache
            started = time.perf_counter()
            fn(path)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _naive_thumbnail(path: Path) -> bytes:
    import io

    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = 256 / max(image.size)
        small = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=80)
    return out.getvalue()


class _DecodeCounter:
    """Counts pixel decodes: every decode of a file-backed image goes through ImageFile.load."""

    def __init__(self) -> None:
        self.count = 0
        self._original = ImageFile.ImageFile.load

    def __enter__(self) -> _DecodeCounter:
        counter, original = self, self._original

        def load(image, *args, **kwargs):
            if getattr(image, "tile", None):  # tiles left to decode: this call decodes pixels
                counter.count += 1
            return original(image, *args, **kwargs)

        ImageFile.ImageFile.load = load  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        ImageFile.ImageFile.load = self._original  # type: ignore[method-assign]


async def _download_one(root: Path) -> tuple[int, int, int]:
    """Decodes during download + check + provenance + journal + lazy open; then on first use."""
    from qimage_nb.core._client import AsyncClient
    from qimage_nb.emulator import Emulator
    from qimage_nb.journal._store import Store

    emu = Emulator(latency=0.2, jitter=0.0)
    async with AsyncClient(emu.api_key, emu.in_process_base_url, transport=emu.transport(),
                           store=Store(root / "store")) as client:
        with _DecodeCounter() as pipeline:
            generation = await client.generate("decode count", resolution="2K")
            image = generation.images[0]
            _ = image.size, image.info["prompt"]
        with _DecodeCounter() as use:
            image.load()
            image.getpixel((0, 0))
            image.load()
        with _DecodeCounter() as thumb:
            _thumbnails._THUMB_CACHE.clear()
            _thumbnails.thumbnail(image)  # already decoded: thumbnails from the pixels in memory
    return pipeline.count, use.count, thumb.count


def _photo_like() -> Image.Image:
    """Smooth structure plus fine grain, like a photograph (seeded, so the size is repeatable)."""
    import random

    rng = random.Random(6)
    coarse = Image.frombytes("RGB", (32, 32), bytes(rng.randrange(256) for _ in range(32 * 32 * 3)))
    base = coarse.resize((1024, 1024), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((1024, 1024), 12).convert("RGB")
    return Image.blend(base, grain, 0.15)


async def _generations(root: Path) -> dict[str, list]:
    """Emulator pictures at 1K and 2K, three ratios each, as the client stores them."""
    from qimage_nb.core._client import AsyncClient
    from qimage_nb.emulator import Emulator
    from qimage_nb.journal._store import Store

    emu = Emulator(latency=0.05, jitter=0.0)
    async with AsyncClient(emu.api_key, emu.in_process_base_url, transport=emu.transport(),
                           store=Store(root / "store-gens")) as client:
        return {
            resolution: [await client.generate("a lighthouse at dusk", size=ratio, resolution=resolution)
                         for ratio in RATIOS]
            for resolution in ("1K", "2K")
        }


def _thumbs(html_text: str) -> list[Image.Image]:
    """The thumbnails an HTML output keeps, decoded (what a reader of the notebook sees)."""
    import io
    import re

    found = re.findall(r'src="data:image/[a-z]+;base64,([A-Za-z0-9+/=]+)"', html_text)
    return [Image.open(io.BytesIO(base64.b64decode(b64))) for b64 in found]


def _stored(bundle: dict) -> int:
    return sum(len(v.encode("utf-8")) for v in bundle.values())


def _full(paths) -> int:
    return sum(len(base64.b64encode(Path(p).read_bytes())) for p in paths)


def _magic_bundle(gen) -> dict:
    """The output ``%%qimage`` leaves behind for one finished generation (its live gallery, final)."""
    from qimage_nb._contract import _short
    from qimage_nb.notebook._display import LiveGallery, LiveSlot

    request = gen.request
    live = LiveGallery([LiveSlot(request=request)], title=_short(request.prompt, 200),
                       subtitle=f"{request.model} · {request.size} {request.resolution} · {request.n} image -> images",
                       banner=None, thumb_px=256, fmt="JPEG")
    live.finish([gen])
    return live.bundle()


def run(quick: bool = False) -> list[Row]:
    rounds = 2 if quick else 5
    root = Path(tempfile.mkdtemp(prefix="qimage-bench-images-"))
    rows: list[Row] = []
    two_k = _files(root, "2K")
    ours = _time_ms(lambda p: _thumbnails.thumbnail(p, max_side=256), two_k, rounds)
    naive = _time_ms(_naive_thumbnail, two_k, rounds)
    rows.append(Row("thumbnail of a 2K PNG (256 px JPEG)", ours, "ms", naive,
                    "full decode + full-size LANCZOS", "<= 60 ms", ours <= 60))
    webp = _time_ms(lambda p: _thumbnails.thumbnail(p, max_side=256, fmt="WEBP"), two_k, rounds)
    rows.append(Row("thumbnail of a 2K PNG (256 px WebP)", webp, "ms", naive,
                    "full decode + full-size LANCZOS", "<= 60 ms", webp <= 60))

    from qimage_nb.view._gallery import gallery_bundle, tile_for

    gens = asyncio.run(_generations(root))
    two_k_images = [gen.images[0] for gen in gens["2K"]]
    by_path = {str(image.info["path"]): image for image in two_k_images}
    # The whole tile, as a gallery makes it for a saved notebook: the thumbnail within its byte budget.
    budgeted = _time_ms(lambda p: tile_for(_images.open_lazy(p, by_path[str(p)].info), stored=True),
                        [Path(p) for p in by_path], rounds)
    rows.append(Row("tile of a 2K PNG within the notebook byte budget", budgeted, "ms", naive,
                    "full decode + full-size LANCZOS", "<= 60 ms", budgeted <= 60))

    from qimage_nb.view._gallery import notebook_budget

    def budget(paths) -> int:
        return sum(notebook_budget(Path(p).stat().st_size) for p in paths)

    def sides(bundle) -> str:
        return "/".join(str(max(t.size)) for t in _thumbs(bundle["text/html"]))

    for resolution in ("1K", "2K"):
        generations = gens[resolution]
        bundles = [gallery_bundle([gen]) for gen in generations]
        stored = sum(_stored(b) for b in bundles)
        paths = [p for gen in generations for p in gen.paths]
        full, count = _full(paths), len(paths)
        shown = ", ".join(sides(b) for b in bundles)
        crisp = all(max(t.size) >= 256 for b in bundles for t in _thumbs(b["text/html"]))
        rows.append(Row(f"notebook bytes per shown {resolution} image (display(gen)), thumbnails {shown} px",
                        stored / count, "B", full / count, "base64 of the full PNG",
                        "<= max(2 %, 16 KB), 256 px", stored <= budget(paths) and crisp))
    generations = gens["1K"]
    bundles = [_magic_bundle(gen) for gen in generations]
    stored = sum(_stored(b) for b in bundles)
    paths = [p for gen in generations for p in gen.paths]
    full = _full(paths)
    crisp = all(max(t.size) >= 256 for b in bundles for t in _thumbs(b["text/html"]))
    rows.append(Row("notebook bytes per shown 1K image (%%qimage output)", stored / len(generations), "B",
                    full / len(generations), "base64 of the full PNG", "<= max(2 %, 16 KB), 256 px",
                    stored <= budget(paths) and crisp))

    # The emulator's pictures are flat gradients and text (~70 KB per 1K PNG); generated photographs
    # are 1-3 MB. The same measurement on a deterministic photo-like 1K picture, for scale:
    from qimage_nb.core._client import Generation

    photo = root / "photo-1K.png"
    _photo_like().save(photo, "PNG")
    model = gens["1K"][0]
    image = _images.open_lazy(photo, {**model.images[0].info, "path": str(photo)})
    bundle = gallery_bundle([Generation(task_id=model.task_id, request=model.request, images=[image], paths=[photo])])
    stored, full = _stored(bundle), _full([photo])
    rows.append(Row(f"notebook bytes per shown photo-like 1K image ({photo.stat().st_size // 1024} KB PNG), "
                    f"thumbnail {sides(bundle)} px", stored, "B", full, "base64 of the full PNG",
                    "about 1 %, 256 px", stored <= 0.012 * full and sides(bundle) == "256"))
    # HiDPI: what a 2x-dense thumbnail would cost for the same photograph (informational; the
    # gallery shows 256 px, see the README's Performance notes for the choice).
    for side in (384, 512):
        _thumbnails._THUMB_CACHE.clear()
        data = _thumbnails.thumbnail(photo, max_side=side)
        stored_side = 4 * -(-len(data) // 3)
        rows.append(Row(f"photo-like 1K image as a {side} px JPEG (HiDPI), base64", stored_side, "B", full,
                        "base64 of the full PNG", "", None))

    pipeline, use, thumb = asyncio.run(_download_one(root))
    rows.append(Row("decodes: download, check, provenance, journal, open", pipeline, "decodes", None, "",
                    "0", pipeline == 0))
    rows.append(Row("decodes: first pixel use, then reuse (load, getpixel, load)", use, "decodes", None, "",
                    "1", use == 1))
    rows.append(Row("decodes: thumbnail of an already-decoded image", thumb, "decodes", None, "", "0",
                    thumb == 0))
    return rows


if __name__ == "__main__":
    import argparse

    from .run import table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    print(table(run(quick=parser.parse_args().quick)))
