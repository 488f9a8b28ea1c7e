"""The image pipeline: thumbnail time, bytes a notebook keeps per shown image, decodes per image.

Inputs are real emulator outputs (``render_png``) at 1K and 2K for three aspect ratios, written to
disk as the client stores them. Baselines, in the same run: a thumbnail by full decode + one
full-size LANCZOS resize (what ``Image.open(p).resize(...)`` code does), and embedding the full PNG
as base64 (what ``display(Image(data=png))`` stores in the notebook).
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageFile

from qimage_nb import _images
from qimage_nb.emulator._render import render_png

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
            _images._THUMB_CACHE.clear()  # measure the work, not the cache
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
    from qimage_nb._client import AsyncClient
    from qimage_nb._store import Store
    from qimage_nb.emulator import Emulator

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
            _images._THUMB_CACHE.clear()
            _images.thumbnail(image)  # already decoded: thumbnails from the pixels in memory
    return pipeline.count, use.count, thumb.count


def _photo_like() -> Image.Image:
    """Smooth structure plus fine grain, like a photograph (seeded, so the size is repeatable)."""
    import random

    rng = random.Random(6)
    coarse = Image.frombytes("RGB", (32, 32), bytes(rng.randrange(256) for _ in range(32 * 32 * 3)))
    base = coarse.resize((1024, 1024), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((1024, 1024), 12).convert("RGB")
    return Image.blend(base, grain, 0.15)


def run(quick: bool = False) -> list[Row]:
    rounds = 2 if quick else 5
    root = Path(tempfile.mkdtemp(prefix="qimage-bench-images-"))
    rows: list[Row] = []
    two_k = _files(root, "2K")
    ours = _time_ms(lambda p: _images.thumbnail(p, max_side=256), two_k, rounds)
    naive = _time_ms(_naive_thumbnail, two_k, rounds)
    rows.append(Row("thumbnail of a 2K PNG (256 px JPEG)", ours, "ms", naive,
                    "full decode + full-size LANCZOS", "<= 60 ms", ours <= 60))
    webp = _time_ms(lambda p: _images.thumbnail(p, max_side=256, fmt="WEBP"), two_k, rounds)
    rows.append(Row("thumbnail of a 2K PNG (256 px WebP)", webp, "ms", naive,
                    "full decode + full-size LANCZOS", "<= 60 ms", webp <= 60))

    from qimage_nb._client import Generation
    from qimage_nb._contract import GenerationRequest
    from qimage_nb._display import gallery_bundle

    for resolution in ("1K", "2K"):
        paths = two_k if resolution == "2K" else _files(root, "1K")
        stored, full = [], []
        for path, ratio in zip(paths, RATIOS, strict=True):
            request = GenerationRequest.create("a lighthouse at dusk", size=ratio, resolution=resolution)
            image = _images.open_lazy(path, {"prompt": request.prompt, "path": str(path)})
            bundle = gallery_bundle([Generation(task_id="task_x", request=request, images=[image], paths=[path])])
            stored.append(sum(len(v.encode()) for v in bundle.values()))
            full.append(len(base64.b64encode(path.read_bytes())))
        ratio = sum(stored) / sum(full)
        rows.append(Row(f"notebook bytes per shown {resolution} image (gallery output)", sum(stored) / len(stored),
                        "B", sum(full) / len(full), "base64 of the full PNG", "<= 2 % of baseline",
                        ratio <= 0.02))

    # The emulator's pictures are flat gradients and text (76 KB per 1K PNG); generated photographs
    # are 1-3 MB. The same measurement on a deterministic photo-like 1K picture, for scale:
    photo = root / "photo-1K.png"
    _photo_like().save(photo, "PNG")
    request = GenerationRequest.create("a photo-like picture")
    image = _images.open_lazy(photo, {"prompt": request.prompt, "path": str(photo)})
    bundle = gallery_bundle([Generation(task_id="task_x", request=request, images=[image], paths=[photo])])
    stored = sum(len(v.encode()) for v in bundle.values())
    full = len(base64.b64encode(photo.read_bytes()))
    rows.append(Row(f"notebook bytes per shown photo-like 1K image ({photo.stat().st_size // 1024} KB PNG)",
                    stored, "B", full, "base64 of the full PNG", "<= 2 % of baseline", stored / full <= 0.02))

    pipeline, use, thumb = asyncio.run(_download_one(root))
    rows.append(Row("decodes: download, check, provenance, journal, open", pipeline, "decodes", None, "",
                    "0", pipeline == 0))
    rows.append(Row("decodes: first pixel use, then reuse (load, getpixel, load)", use, "decodes", None, "",
                    "1", use == 1))
    rows.append(Row("decodes: thumbnail of an already-decoded image", thumb, "decodes", None, "", "0",
                    thumb == 0))
    return rows
