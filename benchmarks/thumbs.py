"""Milliseconds per 256 px thumbnail of a 2048x2048 image (median of 20 runs, cache cleared each run).

    .venv/bin/python benchmarks/thumbs.py

Budget: 60 ms for a 2K PNG on a 2-core machine. PNG decoding cannot be reduced (every row of the
zlib stream must be inflated and unfiltered), so a PNG's cost is dominated by how hard its pixels
compress: flat emulator pictures are cheap, noisy photographs are not. Both are measured, plus a
JPEG (draft path) and a plain full decode of the same PNG as the floor no thumbnailer can beat.
The last columns are the tile a saved notebook keeps (``tile_for(..., stored=True)``): its thumbnail
within the byte budget (the larger of 2 % of the file's base64 and 16 KB, markup included), time
and size.
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qimage_nb.journal import _images, _thumbnails
from qimage_nb.view._gallery import tile_for

RUNS = 20
SIZE = (2048, 2048)


def photographic() -> Image.Image:
    """Noise, gradients and detail that compress like a photograph (~3.5 MB as PNG)."""
    noise = Image.effect_noise(SIZE, 40).convert("L")
    ramp = Image.linear_gradient("L").resize(SIZE)
    detail = Image.effect_mandelbrot(SIZE, (-2, -1.5, 1, 1.5), 100)
    return Image.merge("RGB", (noise, ramp, detail)).filter(ImageFilter.GaussianBlur(1))


def emulator_png() -> bytes:
    """The emulator's 2K picture exactly as its CDN serves it (flat colours, compress_level=1)."""
    from qimage_nb.emulator._render import render_png

    return render_png(prompt="a red fox in snow", index=0, n=1, size="1:1", resolution="2K", model="qwen-image-2.0")


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue()


def median_ms(fn) -> float:
    times = []
    for _ in range(RUNS):
        _thumbnails._THUMB_CACHE.clear()  # measure the work, not the in-memory cache
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photo = photographic()
        cases = {
            "PNG 2K, emulator picture": emulator_png(),
            "PNG 2K, photographic": encoded(photo, "PNG"),
            "JPEG 2K, photographic": encoded(photo, "JPEG"),
        }
        print(f"thumbnail(path, max_side=256, fmt='JPEG'), median of {RUNS} runs")
        for index, (name, data) in enumerate(cases.items()):
            path = root / f"{index}.img"
            path.write_bytes(data)
            thumb_ms = median_ms(lambda p=path: _thumbnails.thumbnail(p))
            decode_ms = median_ms(lambda p=path: Image.open(p).load())
            size = len(_thumbnails.thumbnail(path))
            tile_ms = median_ms(lambda p=path: tile_for(_images.open_lazy(p, {}), stored=True))
            tile = tile_for(_images.open_lazy(path, {}), stored=True)
            print(
                f"  {name:28s} {thumb_ms:6.1f} ms   (full decode alone {decode_ms:5.1f} ms; "
                f"file {path.stat().st_size / 1e6:.1f} MB; thumb {size / 1e3:.1f} KB)   "
                f"budgeted tile {tile_ms:5.1f} ms, {tile.mime[6:]} {Image.open(io.BytesIO(tile.thumb)).size} "
                f"{len(tile.thumb) / 1e3:.1f} KB"
            )
        cached = root / "cached.png"
        cached.write_bytes(emulator_png())
        _thumbnails.thumbnail(cached)
        start = time.perf_counter()
        _thumbnails.thumbnail(cached)
        print(f"  repeat of a cached file      {(time.perf_counter() - start) * 1000:6.2f} ms")


if __name__ == "__main__":
    main()
