"""Export: full-size PNGs with provenance, manifest.csv, index.html and a zip, from a run or the journal."""

from __future__ import annotations

import csv
import html
import io
import re
import zipfile

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from PIL import Image

import qimage_nb
from qimage_nb import ValidationError
from qimage_nb.core._client import AsyncClient
from qimage_nb.core._polling import PollPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.journal._store import Store
from qimage_nb.notebook import _session
from qimage_nb.notebook._magics import QImageMagics
from qimage_nb.notebook._session import get_session

PROMPTS = ["a red teapot on white", "a blue mug, studio light", "a green vase & <flowers>"]


@pytest.fixture
def emu():
    return Emulator(latency=0.05, jitter=0.02, seed=3)


@pytest.fixture
async def run(emu, tmp_path):
    store = Store(tmp_path / "home")
    async with AsyncClient(emu.api_key, emu.in_process_base_url, transport=emu.transport(),
                           poll=PollPolicy.for_latency(emu.latency), store=store) as client:
        generations = await client.generate_many(PROMPTS)
        assert all(g.ok for g in generations)
        yield generations, store


def _manifest(path):
    with open(path, newline="", encoding="utf-8") as fp:
        return list(csv.DictReader(fp))


async def test_a_three_image_run_exports_pngs_manifest_contact_sheet_and_zip(run, tmp_path):
    generations, store = run
    done = qimage_nb.export(generations, tmp_path / "out", zip=True, store=store)

    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert [p.name for p in pngs] == [p.name for p in done.images] and len(pngs) == 3
    for path, gen in zip(done.images, generations, strict=True):
        with Image.open(path) as opened:
            assert opened.text["prompt"] == gen.request.prompt
            assert opened.text["task_id"] == gen.task_id
            assert opened.size == (1024, 1024)  # full size, not a thumbnail
        assert path.read_bytes().startswith(gen.paths[0].read_bytes()[:64])  # the journal's bytes

    rows = _manifest(done.manifest)
    assert [r["prompt"] for r in rows] == PROMPTS
    assert [r["file"] for r in rows] == [p.name for p in done.images]
    assert [r["task_id"] for r in rows] == [g.task_id for g in generations]
    for row, gen in zip(rows, generations, strict=True):
        assert row["model"] == "qwen-image-2.0" and row["size"] == "1:1" and row["width"] == "1024"
        assert float(row["cost"]) == pytest.approx(gen.cost) and gen.cost > 0
        assert row["host"].startswith("apimart") and row["created"]

    page = done.index.read_text("utf-8")
    shown = html.unescape(re.sub(r"<[^>]+>", "\n", page))
    for prompt in PROMPTS:
        assert prompt in shown
    links = set(re.findall(r'href="([^"]+)"', page))
    assert {p.name for p in done.images} | {"manifest.csv"} <= links
    assert "<script" not in page  # opens offline, anywhere

    assert done.archive == tmp_path / "out.zip"
    with zipfile.ZipFile(done.archive) as archive:
        names = set(archive.namelist())
        assert names == {f"out/{p.name}" for p in done.images} | {"out/manifest.csv", "out/index.html"}
        for path in [*done.images, done.manifest, done.index]:
            assert archive.read(f"out/{path.name}") == path.read_bytes()


async def test_exporting_again_is_a_no_op_and_other_files_are_never_overwritten_silently(run, tmp_path):
    generations, store = run
    first = qimage_nb.export(generations, tmp_path / "out", zip=True, store=store)
    again = qimage_nb.export(generations, tmp_path / "out", zip=True, store=store)
    assert again.written == [] and len(again.unchanged) == 6  # 3 PNGs, manifest, index, zip

    before = {p: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(ValidationError, match=r"already holds other files named manifest.csv, index.html: nothing was written.*overwrite=True"):
        qimage_nb.export(generations[1:], tmp_path / "out", store=store)
    assert {p: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before

    replaced = qimage_nb.export(generations[1:], tmp_path / "out", store=store, overwrite=True)
    assert len(_manifest(replaced.manifest)) == 2 and first.manifest == replaced.manifest


async def test_after_a_restart_by_task_ids_or_the_last_n(run, tmp_path):
    generations, store = run
    reopened = Store(store.root)  # a new kernel: only the journal is left
    by_id = qimage_nb.export([g.task_id for g in generations[:2]], tmp_path / "ids", store=reopened)
    assert [r["prompt"] for r in _manifest(by_id.manifest)] == PROMPTS[:2]

    last = qimage_nb.export(None, tmp_path / "last", last=3, store=reopened)
    assert sorted(r["prompt"] for r in _manifest(last.manifest)) == sorted(PROMPTS)
    assert all(float(r["cost"]) > 0 for r in _manifest(last.manifest))  # prices from the files

    with pytest.raises(ValidationError, match="no journal entry 'task_nope'"):
        qimage_nb.export(["task_nope"], tmp_path / "bad", store=reopened)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValidationError, match="nothing to export"):
        qimage_nb.export([], tmp_path / "empty", store=reopened)


async def test_images_read_back_typed_while_png_text_stays_text(run, tmp_path):
    generations, _ = run
    image = generations[0].images[0]
    assert image.info["cost"] == repr(generations[0].cost)  # the file's text
    typed = image.provenance
    assert typed["cost"] == pytest.approx(generations[0].cost) and isinstance(typed["cost"], float)
    assert typed["n"] == 1 and typed["index"] == 0 and isinstance(typed["expires_at"], int)
    assert (typed["width"], typed["height"]) == (1024, 1024)
    assert typed["prompt"] == PROMPTS[0]


def test_an_image_made_elsewhere_is_written_as_a_png_with_what_it_says(tmp_path):
    picture = Image.new("RGB", (64, 32), "orange")
    picture.info["prompt"] = "my own sketch"
    done = qimage_nb.export([picture], tmp_path / "own")
    with Image.open(done.images[0]) as opened:
        assert opened.format == "PNG" and opened.size == (64, 32)
        assert opened.text["prompt"] == "my own sketch"
    assert _manifest(done.manifest)[0]["width"] == "64"


# --- the magic ---------------------------------------------------------------------------------


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    sh.register_magics(QImageMagics)
    yield sh
    for name in ("cats", "qimages"):
        sh.user_ns.pop(name, None)


@pytest.fixture
def kernel_emu(shell):
    emulator = get_session().start_emulator(latency=0.05, jitter=0.02)
    yield emulator
    from qimage_nb.core._sync import run_sync

    session = get_session()
    if session._client is not None:
        run_sync(session._client.aclose())
    _session.reset_session()


def test_the_magic_exports_a_variable_then_the_journal_after_the_name_is_gone(shell, kernel_emu, tmp_path, capsys):
    shell.run_cell_magic("qimage", "-o cats -n 3", "three cats on a sofa")
    capsys.readouterr()
    shell.run_line_magic("qimage", f"export cats {tmp_path / 'cats'} --zip")
    said = capsys.readouterr().out
    assert f"exported 3 images -> {tmp_path / 'cats'}" in said and "cats.zip" in said
    rows = _manifest(tmp_path / "cats" / "manifest.csv")
    assert [r["prompt"] for r in rows] == ["three cats on a sofa"] * 3
    with zipfile.ZipFile(tmp_path / "cats.zip") as archive:
        assert len([n for n in archive.namelist() if n.endswith(".png")]) == 3

    del shell.user_ns["cats"]  # a restarted kernel: the name is gone, the journal is not
    with pytest.raises(UsageError, match="no journal entry 'cats'"):
        shell.run_line_magic("qimage", f"export cats {tmp_path / 'again'}")
    shell.run_line_magic("qimage", f"export --last 1 {tmp_path / 'again'}")
    assert len(_manifest(tmp_path / "again" / "manifest.csv")) == 3
    with pytest.raises(UsageError, match="say what to export before the folder"):
        shell.run_line_magic("qimage", f"export {tmp_path / 'x'}")
    assert kernel_emu.counters()["submits_accepted"] == 1


async def test_the_exported_png_opens_as_the_full_image(run, tmp_path):
    generations, store = run
    done = qimage_nb.export(generations[0], tmp_path / "one", store=store)
    with Image.open(io.BytesIO(done.images[0].read_bytes())) as opened:
        opened.load()
        assert opened.size == generations[0].images[0].size
