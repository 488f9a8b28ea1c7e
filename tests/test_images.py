"""The journal's image modules: download safety and lazy opening (_images), PNG provenance (_png_text),
thumbnails (_thumbnails) and upload preparation (_uploads)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from qimage_nb._contract import UPLOAD_MAX_BYTES
from qimage_nb._exceptions import ImageError, ValidationError
from qimage_nb.journal import _thumbnails, _uploads
from qimage_nb.journal._images import MAX_DOWNLOAD_BYTES, MAX_PIXELS, inspect_image, open_lazy
from qimage_nb.journal._png_text import add_png_text, png_with_text, read_provenance, sidecar_path
from qimage_nb.journal._thumbnails import thumbnail, thumbnail_data_uri, thumbnail_mime
from qimage_nb.journal._uploads import prepare_upload

PROVENANCE = {
    "prompt": "雪中的红狐狸, a red fox in snow 🦊",
    "negative_prompt": "模糊, blurry",
    "model": "qwen-image-2.0-pro",
    "size": "16:9",
    "resolution": "2K",
    "task_id": "task_01JGXYZ",
    "source_url": "https://cdn.example/t/0.png",
    "created": "2026-01-02T03:04:05+00:00",
}


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(size=(64, 48), mode="RGB", color=(200, 30, 30), **save) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG", **save)
    return out.getvalue()


def gradient(size=(256, 256)) -> Image.Image:
    """An image whose pixels differ everywhere, so a wrong decode cannot pass by luck."""
    w, h = size
    red = Image.linear_gradient("L").resize(size)
    green = red.transpose(Image.Transpose.ROTATE_90).resize(size)
    blue = Image.radial_gradient("L").resize(size)
    assert (w, h) == red.size
    return Image.merge("RGB", (red, green, blue))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def declared_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares width x height (greyscale): a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (min(width, 100_000) + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def see_through_palette(size) -> Image.Image:
    """A P-mode image: left half opaque blue, right half palette entry 1, marked transparent."""
    image = Image.new("P", size, 1)
    image.putpalette([0, 0, 255, 255, 0, 0])
    image.paste(0, (0, 0, size[0] // 2, size[1]))
    image.info["transparency"] = 1
    return image


@pytest.fixture
def no_decode(monkeypatch):
    """Fail the test if any pixels are decoded while it is active; yields a call counter."""
    calls = []

    def refuse(self, *args, **kwargs):
        calls.append(self)
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    return calls


# --- inspect_image -----------------------------------------------------------------------------


def test_inspect_reports_facts_of_a_good_png(tmp_path):
    data = png_bytes((1152, 864))
    facts = inspect_image(write(tmp_path / "a.png", data))
    assert (facts.format, facts.width, facts.height, facts.bytes) == ("PNG", 1152, 864, len(data))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF"])
def test_inspect_accepts_other_web_formats_a_cdn_might_send(tmp_path, fmt):
    out = io.BytesIO()
    gradient((120, 80)).save(out, fmt)
    facts = inspect_image(write(tmp_path / "x", out.getvalue()))
    assert (facts.format, facts.width, facts.height) == (fmt, 120, 80)


def test_inspect_reads_the_header_only(tmp_path, no_decode):
    path = write(tmp_path / "a.png", png_bytes((2048, 2048)))
    assert inspect_image(path).width == 2048
    assert no_decode == []


@pytest.mark.parametrize(
    ("body", "looks_like"),
    [
        (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body></body></html>",
         "an HTML page ('502 Bad Gateway')"),
        (b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>', "an XML document"),
        (b'{"error": {"message": "expired"}}', "JSON text"),
        (b"", "an empty file"),
        (b"\x00\x01\x02\x03garbage" * 10, "unrecognised binary data"),
    ],
)  # fmt: skip
def test_inspect_says_what_a_non_image_looked_like(tmp_path, body, looks_like):
    path = write(tmp_path / "0.png", body)
    with pytest.raises(ImageError) as info:
        inspect_image(path, url="https://cdn.example/t/0.png", task_id="task_9")
    message = str(info.value)
    assert "not an image" in message and looks_like in message
    assert "cdn.example" in message and "task_9" in message
    assert "\n" not in message
    assert info.value.task_id == "task_9" and info.value.url == "https://cdn.example/t/0.png"


def test_inspect_refuses_a_declared_bomb_before_decoding(tmp_path, no_decode):
    path = write(tmp_path / "bomb.png", declared_bomb(60000, 60000))
    assert path.stat().st_size < 10_000
    with pytest.raises(ImageError, match=r"60000x60000 .*decompression bomb"):
        inspect_image(path)
    assert no_decode == []


def test_inspect_refuses_a_real_image_over_the_pixel_cap(tmp_path):
    # Decodable and under Pillow's own default limit: only our cap stands in the way.
    side = 4200
    assert side * side > MAX_PIXELS
    assert side * side < Image.MAX_IMAGE_PIXELS
    path = write(tmp_path / "huge.png", png_bytes((side, side), "L", 90, compress_level=1))
    with pytest.raises(ImageError, match="4200x4200"):
        inspect_image(path)


def test_inspect_does_not_depend_on_pillows_global_limit(tmp_path, monkeypatch):
    bomb = write(tmp_path / "bomb.png", declared_bomb(20000, 20000))
    good = write(tmp_path / "good.png", png_bytes((2048, 2048)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # a user who switched Pillow's check off
    with pytest.raises(ImageError):
        inspect_image(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # ... or set it very low
    assert inspect_image(good).width == 2048
    with pytest.raises(Image.DecompressionBombError):  # where Pillow's own open would refuse
        Image.open(good)


def test_inspect_detects_a_png_cut_short_without_decoding(tmp_path, no_decode):
    data = png_bytes((512, 512), color=(1, 2, 3))
    for cut in (len(data) // 2, len(data) - 1, len(data) - 12):
        path = write(tmp_path / f"cut{cut}.png", data[:cut])
        with pytest.raises(ImageError, match="cut short") as info:
            inspect_image(path, task_id="task_1")
        assert getattr(info.value, "truncated", False) is True
    assert no_decode == []


def test_inspect_keeps_a_complete_png_with_bytes_after_iend(tmp_path):
    path = write(tmp_path / "tail.png", png_bytes((32, 32)) + b"\n\x00junk from an old encoder")
    assert inspect_image(path).width == 32


def test_inspect_detects_a_webp_cut_short(tmp_path):
    out = io.BytesIO()
    gradient((200, 200)).save(out, "WEBP", quality=90)
    data = out.getvalue()
    with pytest.raises(ImageError, match="cut short") as info:
        inspect_image(write(tmp_path / "cut.webp", data[: len(data) - 40]))
    assert getattr(info.value, "truncated", False) is True


def test_inspect_refuses_a_body_over_the_byte_cap(tmp_path):
    path = tmp_path / "big.png"
    with open(path, "wb") as sink:
        sink.write(png_bytes((8, 8)))
        sink.truncate(MAX_DOWNLOAD_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ImageError, match=str(MAX_DOWNLOAD_BYTES)):
        inspect_image(path)


def test_inspect_refuses_formats_no_cdn_should_send(tmp_path):
    out = io.BytesIO()
    gradient((16, 16)).save(out, "ICO")
    with pytest.raises(ImageError, match="ICO"):
        inspect_image(write(tmp_path / "x.ico", out.getvalue()))


# --- provenance --------------------------------------------------------------------------------


def test_png_text_chunks_are_readable_by_pillow_including_non_latin_text(tmp_path):
    path = write(tmp_path / "a.png", png_bytes())
    add_png_text(path, PROVENANCE)
    text = Image.open(path).text
    for key, value in PROVENANCE.items():
        assert text[key] == value
    assert text["Software"] == "qimage_nb"
    assert read_provenance(path) == text


def test_png_text_leaves_every_received_byte_in_place(tmp_path):
    original = gradient((300, 200))
    received = io.BytesIO()
    original.save(received, "PNG")
    data = received.getvalue()
    tagged = png_with_text(data, PROVENANCE)
    # Everything before IEND is the received file, byte for byte; only text chunks were added.
    assert tagged.startswith(data[:-12]) and tagged.endswith(data[-12:])
    assert len(tagged) > len(data)
    with Image.open(io.BytesIO(tagged)) as reopened:
        assert reopened.tobytes() == original.tobytes()


def test_png_text_is_refused_on_a_png_cut_short():
    with pytest.raises(ValueError, match="IEND"):
        png_with_text(png_bytes()[:-20], PROVENANCE)


def test_non_png_gets_a_sidecar_and_keeps_its_bytes(tmp_path):
    out = io.BytesIO()
    gradient((64, 64)).save(out, "JPEG")
    path = write(tmp_path / "a.jpg", out.getvalue())
    add_png_text(path, PROVENANCE)
    assert path.read_bytes() == out.getvalue()
    assert sidecar_path(path) == tmp_path / "a.jpg.json"
    found = read_provenance(path)
    assert found["prompt"] == PROVENANCE["prompt"] and found["Software"] == "qimage_nb"


def test_read_provenance_of_an_untagged_image_is_empty(tmp_path):
    assert read_provenance(write(tmp_path / "a.png", png_bytes())) == {}


# --- open_lazy ---------------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count descriptors")
def test_open_lazy_holds_no_descriptor_and_decodes_nothing_for_2000_images(tmp_path, monkeypatch):
    data = png_bytes((40, 30), color=(10, 200, 30))
    paths = [write(tmp_path / f"{i}.png", data) for i in range(2000)]
    decodes = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decodes.append(1) or real_load(self))

    before = _open_fds()
    images = [open_lazy(p, {**PROVENANCE, "task_id": f"task_{i}"}) for i, p in enumerate(paths)]
    assert _open_fds() - before < 5  # Image.open would hold 2000 here
    assert all(im.size == (40, 30) and im.mode == "RGB" for im in images)
    assert images[7].info["task_id"] == "task_7" and images[7].info["path"] == str(paths[7])
    assert images[7].info["prompt"] == PROVENANCE["prompt"]
    assert decodes == []

    assert images[0].getpixel((3, 3)) == (10, 200, 30)
    assert len(decodes) == 1
    assert _open_fds() - before < 5


def test_open_lazy_pixels_are_right_whenever_used(tmp_path):
    original = gradient((320, 200))
    path = tmp_path / "g.png"
    original.save(path)
    add_png_text(path, PROVENANCE)
    info = {"prompt": "shown prompt", "path": "ignored: the real path wins"}

    assert open_lazy(path, info).tobytes() == original.tobytes()
    lazy = open_lazy(path, info)
    assert lazy.load() is not None
    assert lazy.tobytes() == original.tobytes()
    assert lazy.info["prompt"] == "shown prompt"  # the caller's provenance wins over the file's
    assert lazy.info["Software"] == "qimage_nb"  # text after the pixels arrives with them
    assert lazy.info["path"] == str(path)

    small = open_lazy(path, info).resize((32, 20))
    assert small.size == (32, 20)
    assert small.tobytes() == original.resize((32, 20)).tobytes()
    out = io.BytesIO()
    open_lazy(path, info).save(out, "PNG")
    assert Image.open(out).tobytes() == original.tobytes()
    assert open_lazy(path, info).convert("L").tobytes() == original.convert("L").tobytes()


def test_open_lazy_keeps_palette_and_transparency(tmp_path):
    path = tmp_path / "p.png"
    see_through_palette((20, 10)).save(path)
    lazy = open_lazy(path, {})
    assert lazy.mode == "P"
    assert lazy.convert("RGBA").tobytes() == Image.open(path).convert("RGBA").tobytes()


def test_open_lazy_refuses_non_images_and_bombs(tmp_path):
    with pytest.raises(ImageError, match="HTML page"):
        open_lazy(write(tmp_path / "x.png", b"<html><body>nope</body></html>"), {})
    with pytest.raises(ImageError, match="decompression bomb"):
        open_lazy(write(tmp_path / "b.png", declared_bomb(30000, 30000)), {})


# --- thumbnails --------------------------------------------------------------------------------


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_thumbnail_of_a_2k_png_is_small_and_right(tmp_path):
    original = gradient((2048, 2048))
    path = tmp_path / "big.png"
    original.save(path)
    data = thumbnail(path)
    thumb = _decoded(data)
    assert (thumb.format, thumb.size) == ("JPEG", (256, 256))
    assert len(data) < 40_000
    # Looks like the original: each corner's colour within a few levels of a reference resize.
    expected = original.resize((256, 256), Image.Resampling.BICUBIC)
    for xy in ((8, 8), (247, 8), (8, 247), (247, 247), (128, 128)):
        got, want = thumb.getpixel(xy), expected.getpixel(xy)
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 8, (xy, got, want)


def test_thumbnail_keeps_the_aspect_ratio_and_never_enlarges(tmp_path):
    wide = tmp_path / "wide.png"
    gradient((2048, 1152)).save(wide)
    assert _decoded(thumbnail(wide)).size == (256, 144)
    assert _decoded(thumbnail(wide, max_side=100)).size == (100, 56)
    small = tmp_path / "small.png"
    gradient((100, 50)).save(small)
    assert _decoded(thumbnail(small)).size == (100, 50)


def test_thumbnail_of_a_jpeg_file_uses_draft_and_stays_correct(tmp_path):
    path = tmp_path / "photo.jpg"
    gradient((2048, 1536)).save(path, quality=90)
    thumb = _decoded(thumbnail(path, fmt="WEBP"))
    assert (thumb.format, thumb.size) == ("WEBP", (256, 192))


def test_thumbnail_flattens_transparency_onto_white_for_jpeg(tmp_path):
    clear = Image.new("RGBA", (600, 400), (0, 0, 0, 0))
    clear.paste((0, 0, 0, 255), (0, 0, 300, 400))  # left half opaque black, right half see-through
    for source in (clear, clear.convert("LA"), clear.convert("PA"), see_through_palette((600, 400))):
        thumb = _decoded(thumbnail(source)).convert("RGB")
        assert thumb.size == (256, 171)
        assert min(thumb.getpixel((250, 85))) > 240, source.mode  # transparent -> white, not black
        assert thumb.getpixel((5, 85))[0] < 15, source.mode


def test_thumbnail_webp_keeps_alpha():
    clear = Image.new("RGBA", (600, 400), (0, 0, 0, 0))
    thumb = _decoded(thumbnail(clear, fmt="webp"))
    assert thumb.mode == "RGBA" and thumb.getpixel((10, 10))[3] == 0


@pytest.mark.parametrize("mode", ["L", "1", "I;16", "CMYK", "F"])
def test_thumbnail_handles_other_modes(mode):
    source = gradient((800, 600)).convert("L").convert(mode) if mode != "I;16" else Image.new("I;16", (800, 600), 40000)
    thumb = _decoded(thumbnail(source))
    assert thumb.size == (256, 192) and thumb.mode in ("L", "RGB")
    if mode == "I;16":
        assert 150 < thumb.getpixel((10, 10)) < 160  # 40000/65535 of full scale, not clipped to white


def test_thumbnail_does_not_touch_a_callers_image():
    image = gradient((1024, 768))
    before = image.tobytes()
    thumbnail(image)
    assert image.size == (1024, 768) and image.tobytes() == before


def test_thumbnail_of_a_replaced_file_is_not_stale(tmp_path):
    path = tmp_path / "t.png"
    Image.new("RGB", (400, 400), (255, 0, 0)).save(path)
    first = _decoded(thumbnail(path)).getpixel((5, 5))
    Image.new("RGB", (400, 400), (0, 0, 255)).save(path)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-clock filesystems
    second = _decoded(thumbnail(path)).getpixel((5, 5))
    assert first[0] > 200 and second[2] > 200


def test_thumbnail_of_a_lazy_image_works_and_does_not_decode_it(tmp_path):
    path = tmp_path / "g.png"
    gradient((1024, 1024)).save(path)
    lazy = open_lazy(path, {"prompt": "p"})
    assert _decoded(thumbnail(lazy)).size == (256, 256)
    assert _decoded(thumbnail(lazy.resize((512, 256)))).size == (256, 128)


def test_thumbnail_rejects_bad_options_and_non_images(tmp_path):
    image = gradient((10, 10))
    with pytest.raises(ValueError, match="GIF"):
        thumbnail(image, fmt="GIF")
    with pytest.raises(ValueError, match="max_side"):
        thumbnail(image, max_side=0)
    with pytest.raises(ImageError, match="not an image"):
        thumbnail(write(tmp_path / "x.png", b"<html></html>"))


def test_thumbnail_data_uri():
    uri = thumbnail_data_uri(gradient((300, 300)), fmt="WEBP", max_side=64)
    assert uri.startswith("data:image/webp;base64,")


# --- thumbnails within a byte budget ------------------------------------------------------------


def emulator_png(tmp_path: Path, size: str = "1:1", resolution: str = "1K") -> Path:
    """A flat, very compressible picture: the emulator's gradient, shapes and text."""
    from qimage_nb.emulator._render import render_png

    data = render_png(prompt="a red fox in snow", index=0, n=1, size=size, resolution=resolution, model="qwen-image-2.0")
    return write(tmp_path / f"emu-{size.replace(':', 'x')}-{resolution}.png", data)


def test_thumbnail_within_a_roomy_budget_is_the_plain_thumbnail(tmp_path):
    path = emulator_png(tmp_path)
    plain = thumbnail(path)
    assert thumbnail(path, max_bytes=len(plain)) == plain
    assert thumbnail_mime(plain) == "image/jpeg"


def test_thumbnail_steps_down_in_quality_never_in_pixels_to_fit_its_budget(tmp_path):
    path = emulator_png(tmp_path)
    plain = thumbnail(path)
    for budget in (len(plain) // 2, len(plain) // 3):
        data = thumbnail(path, max_bytes=budget)
        assert len(data) <= budget, (budget, len(data))
        shown = _decoded(data)
        assert shown.format == {"image/jpeg": "JPEG", "image/webp": "WEBP"}[thumbnail_mime(data)]
        assert shown.size == (256, 256)  # the size it is shown at: fewer pixels would blur its text


def test_thumbnail_over_budget_even_at_the_floor_returns_the_floor_quality_at_full_size(tmp_path):
    path = emulator_png(tmp_path, size="16:9")
    data = thumbnail(path, max_bytes=1)
    shown = _decoded(data)
    assert shown.size == (256, 144)
    fmt = shown.format
    # The floor quality: what the same pixels cost there, within encoder noise.
    at_floor = _thumbnails._encode(shown.convert("RGB"), fmt, _thumbnails.THUMB_FLOOR_QUALITY[fmt])
    assert len(data) <= len(at_floor) * 1.25


def test_thumbnail_under_a_budget_never_enlarges_nor_shrinks_below_max_side(tmp_path):
    small = tmp_path / "small.png"
    gradient((100, 50)).save(small)
    assert _decoded(thumbnail(small, max_bytes=1)).size == (100, 50)  # never enlarged
    mid = tmp_path / "mid.png"
    gradient((400, 300)).save(mid)
    assert _decoded(thumbnail(mid, max_side=64, max_bytes=1)).size == (64, 48)
    assert _decoded(thumbnail(gradient((1000, 500)), max_bytes=1)).size == (256, 128)  # PIL images too


def test_thumbnail_budget_decodes_once_and_only_encodes_again(tmp_path, monkeypatch):
    path = emulator_png(tmp_path, resolution="2K")
    shrinks, encodes = [], []
    shrink, encode = _thumbnails._shrink, _thumbnails._encode
    monkeypatch.setattr(_thumbnails, "_shrink", lambda *a, **k: shrinks.append(1) or shrink(*a, **k))
    monkeypatch.setattr(_thumbnails, "_encode", lambda *a, **k: encodes.append(1) or encode(*a, **k))
    thumbnail(path, max_bytes=600)
    assert len(shrinks) == 1 and len(encodes) > 1


def test_thumbnail_budget_is_part_of_the_cache_key(tmp_path):
    path = emulator_png(tmp_path)
    _thumbnails._THUMB_CACHE.clear()
    plain = thumbnail(path)
    squeezed = thumbnail(path, max_bytes=len(plain) // 3)
    assert len(squeezed) <= len(plain) // 3 < len(plain)
    assert thumbnail(path) == plain  # the budgeted one did not replace it
    assert thumbnail(path, max_bytes=len(plain) // 3) == squeezed
    assert {key[-1] for key in _thumbnails._THUMB_CACHE} == {None, len(plain) // 3}


def test_thumbnail_rejects_a_bad_budget():
    with pytest.raises(ValueError, match="max_bytes"):
        thumbnail(gradient((10, 10)), max_bytes=1.5)


# --- prepare_upload ----------------------------------------------------------------------------


def test_upload_of_a_missing_path_says_what_to_pass(tmp_path):
    with pytest.raises(ValidationError) as info:
        prepare_upload("x.png")
    assert str(info.value) == (
        "reference 'x.png' does not exist: pass an existing image file, a public http(s) URL, or a PIL image"
    )
    assert isinstance(info.value, ValueError) and info.value.field == "image"
    with pytest.raises(ValidationError, match="not a file"):
        prepare_upload(tmp_path)


def test_upload_refuses_what_is_not_an_image(tmp_path):
    with pytest.raises(ValidationError, match=r"'notes\.png' is not an image: it looks like plain text"):
        prepare_upload(write(tmp_path / "notes.png", b"shopping list: eggs, milk"))
    with pytest.raises(ValidationError, match="HTML page"):
        prepare_upload(b"<!doctype html><html></html>")
    with pytest.raises(ValidationError, match="not usable"):
        prepare_upload(12345)  # type: ignore[arg-type]


def test_upload_of_a_url_points_to_image_urls():
    with pytest.raises(ValidationError, match="image_urls"):
        prepare_upload("https://example.com/cat.png")


@pytest.mark.parametrize(("fmt", "mime", "ext"), [("PNG", "image/png", ".png"), ("JPEG", "image/jpeg", ".jpg"),
                                                  ("WEBP", "image/webp", ".webp"), ("GIF", "image/gif", ".gif")])  # fmt: skip
def test_upload_sends_web_formats_byte_for_byte(tmp_path, fmt, mime, ext):
    out = io.BytesIO()
    gradient((90, 60)).save(out, fmt)
    path = write(tmp_path / f"ref{ext}", out.getvalue())
    for source in (path, str(path), out.getvalue()):
        upload = prepare_upload(source)
        assert upload.data == out.getvalue() and upload.content_type == mime
    assert prepare_upload(path).filename == f"ref{ext}"


def test_upload_fixes_an_extension_that_lies(tmp_path):
    out = io.BytesIO()
    gradient((30, 30)).save(out, "JPEG")
    upload = prepare_upload(write(tmp_path / "photo.png", out.getvalue()))
    assert (upload.filename, upload.content_type) == ("photo.jpg", "image/jpeg")


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_upload_converts_other_formats_to_png(tmp_path, fmt):
    original = gradient((120, 90))
    path = tmp_path / f"scan.{fmt.lower()}"
    original.save(path, fmt)
    upload = prepare_upload(path)
    assert (upload.filename, upload.content_type) == ("scan.png", "image/png")
    assert _decoded(upload.data).tobytes() == original.tobytes()


def test_upload_encodes_a_pil_image_as_png():
    original = gradient((64, 64)).convert("RGBA")
    upload = prepare_upload(original)
    assert upload.content_type == "image/png" and upload.filename.endswith(".png")
    assert _decoded(upload.data).tobytes() == original.tobytes()
    cmyk = prepare_upload(gradient((8, 8)).convert("CMYK"))
    assert _decoded(cmyk.data).mode == "RGB"
    assert "bytes=" in repr(upload) and len(repr(upload)) < 200


def test_upload_of_a_lazy_image_sends_the_file(tmp_path):
    path = tmp_path / "a.png"
    gradient((50, 50)).save(path)
    assert prepare_upload(open_lazy(path, {})).data == path.read_bytes()


def test_upload_over_the_limit_says_what_to_do(tmp_path, monkeypatch):
    # A valid PNG over 20 MB (a big private ancillary chunk): refused, with advice.
    data = png_bytes((16, 16))
    big = data[:-12] + _chunk(b"prVt", b"\x00" * (UPLOAD_MAX_BYTES + 1)) + data[-12:]
    assert Image.open(io.BytesIO(big)).size == (16, 16)
    with pytest.raises(ValidationError, match="over the upload limit of 20 MB: resize it or save it as JPEG"):
        prepare_upload(write(tmp_path / "big.png", big))
    # Converted formats are checked after conversion (a lowered limit keeps this test fast).
    monkeypatch.setattr(_uploads, "UPLOAD_MAX_BYTES", 20_000)
    noisy = Image.frombytes("RGB", (100, 100), os.urandom(30_000))
    noisy.save(tmp_path / "n.bmp")
    with pytest.raises(ValidationError, match="the PNG it converts to is"):
        prepare_upload(tmp_path / "n.bmp")
    with pytest.raises(ValidationError, match="upload limit"):
        prepare_upload(noisy)


# --- hygiene -----------------------------------------------------------------------------------


def test_importing_does_nothing(tmp_path):
    code = (
        "import PIL.Image as I; before = I.MAX_IMAGE_PIXELS\n"
        "import qimage_nb.journal._images, qimage_nb.journal._png_text, qimage_nb.journal._thumbnails\n"
        "import qimage_nb.journal._uploads, qimage_nb.journal._store\n"
        "assert I.MAX_IMAGE_PIXELS == before\n"
        "s = qimage_nb.journal._store.Store()\n"
        "import os; print(sorted(os.listdir(os.environ['QIMAGE_HOME'])))\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "QIMAGE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
