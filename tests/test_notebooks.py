"""Every demo notebook, executed headless by nbclient the way CI and ``demo.sh --headless`` run it.

No key is set, so each notebook starts the emulator inside its own kernel (``%qimage emulator
--auto``), exactly what a newcomer gets. The kernel is this interpreter's (the venv's), its
environment holds no ``QIMAGE_*`` variable except a private ``QIMAGE_HOME``, and its working
directory is a temporary folder, so a notebook that writes next to itself would be caught by the
clean-tree check. The five notebooks run concurrently (each in its own kernel) to keep this fast.

Then the saved outputs are what is asserted on: no errors, the emulator said so, the expected number
of thumbnails (static ``<img class="qimage-thumb">`` data URIs, small), the bound PIL images have the
right sizes (read in the kernel by a probe cell, or asserted by a notebook's last cell), and the saved
file stays small. The quickstart then runs a second time in a fresh kernel with the same journal, as
after Restart Kernel and Run All: every image comes from the journal, though its emulator is new.

One more run uses a key: the quickstart and the batches notebook against an emulator in this test
process standing in for the real API, to show a key makes the notebooks use that API unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from PIL import Image  # noqa: E402

from qimage_nb.emulator import Emulator  # noqa: E402

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
THUMB = re.compile(r'<img class="qimage-thumb" src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)"')
ANY_DATA_URI = re.compile(r"data:image/[a-z]+;base64,")
ORDER = ["quickstart", "panel", "image_to_image", "batches", "resume_and_cache", "providers", "hosts"]

# name -> (static thumbnails in the HTML outputs, images the notebook binds in total)
EXPECTED = {
    "quickstart": (5, 5),  # the lighthouse twice (the second from cache), cats, hats
    "panel": (2, 2),  # its widgets counted in the kernel (PROBE); the static gallery at the end
    "image_to_image": (4, 4),
    "batches": (11, 11),  # the catalogue (--each), generate_many's one display, three ratios
    "resume_and_cache": (4, 3),  # teapots three times (one from cache, one --new), then boats
    "providers": (7, 7),  # the fox on each host, two seeds, one free pixel size, 2.0 beside 3.0
    "hosts": (11, 11),  # the kite on fal and on Replicate, a grid of four hosts, five on fal
}

# What a notebook binds, read in its kernel (a tutorial does not end with test code: no demo has
# an assert cell, its checks are here).
SIZES = {
    "quickstart": {"qimages": [[1024, 1024]], "cats": [[1280, 720], [1280, 720]], "hats": [[1024, 1024]]},
    "panel": {},
    "image_to_image": {"base": [[1152, 864]], "refined": [[1152, 864]], "from_sketch": [[1152, 864]] * 2},
    "batches": {"catalogue": [[1152, 864]] * 4, "ratios": [[1024, 1024], [1280, 720], [720, 1280]]},
    "resume_and_cache": {"teapots": [[1024, 1024]], "boats": [[1024, 1024]]},
    "providers": {"on_apimart": [[1280, 720]], "on_dashscope": [[1280, 720]], "seeds": [[1024, 1024]] * 2,
                  "banner": [[1536, 640]], "versions": [[1024, 1024], [2560, 1440]]},
    "hosts": {"on_fal": [[1280, 720]], "on_replicate": [[1280, 720]], "hosts": [[1280, 720]] * 4,
              "five": [[1024, 1024]] * 5},
}

# Appended for the run and removed before saving: facts only the live kernel knows.
PROBE = """
import json as _json, sys as _sys
_facts = {"executable": _sys.executable}
from PIL import Image as _Image
_lists = {_k: _v for _k, _v in list(globals().items())
          if not _k.startswith("_") and isinstance(_v, list) and _v and all(isinstance(_im, _Image.Image) for _im in _v)}
_facts["sizes"] = {_k: [list(_im.size) for _im in _v] for _k, _v in _lists.items()}
_facts["info"] = {_k: [{"prompt": _im.info.get("prompt"), "origin": _im.info.get("origin"),
                        "provider": _im.info.get("provider"), "task_id": _im.info.get("task_id"),
                        "size": _im.info.get("size"), "output_size": _im.info.get("output_size"),
                        "pixels": __import__("hashlib").sha256(_im.tobytes()).hexdigest()} for _im in _v]
                  for _k, _v in _lists.items()}
if "panel" in globals():
    from qimage_nb.notebook._panel import walk_widgets as _walk
    _facts["panel_thumbs"] = sum("qimage-thumb" in getattr(w, "_dom_classes", ()) for w in _walk(panel.root))
    _facts["panel_images"] = [list(_im.size) for _im in panel.images]
    _facts["panel_generations"] = [_g.ok for _g in panel.generations]
print("PROBE" + _json.dumps(_facts))
"""


@dataclass
class Executed:
    name: str
    nb: nbformat.NotebookNode
    seconds: float
    saved: bytes
    facts: dict
    workdir: Path

    def outputs(self) -> list:
        return [out for cell in self.nb.cells for out in cell.get("outputs", [])]

    def texts(self) -> str:
        parts = []
        for out in self.outputs():
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
        return "\n".join(parts)


def _kernel_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIMAGE_")}
    env["QIMAGE_HOME"] = str(home)
    # The kernel and anything it starts resolve to this interpreter's environment.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


async def _execute(name: str, root: Path, *, run: str = "", **extra_env: str) -> Executed:
    """Run one notebook in a fresh kernel; ``run`` names another run of it that shares its journal."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE.strip()))
    workdir = root / name / f"cwd{run}"
    workdir.mkdir(parents=True)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        store_widget_state=True,
    )
    started = time.perf_counter()
    await client.async_execute(env=_kernel_env(root / name / "home", **extra_env))
    seconds = time.perf_counter() - started
    probe = nb.cells.pop()
    printed = "".join(out.get("text", "") for out in probe.outputs)
    facts = json.loads(printed.split("PROBE", 1)[1])
    path = root / name / f"{name}{run}.ipynb"
    nbformat.write(nb, path)
    return Executed(name, nb, seconds, path.read_bytes(), facts, workdir)


async def _execute_all(root: Path, names: list[str], **extra_env: str) -> dict[str, Executed]:
    results = await asyncio.gather(*(_execute(name, root, **extra_env) for name in names))
    return {r.name: r for r in results}


async def _execute_all_and_rerun_quickstart(root: Path) -> dict[str, Executed]:
    async def quickstart_twice() -> list[Executed]:
        first = await _execute("quickstart", root)
        again = await _execute("quickstart", root, run="-again")  # a new kernel, the same journal
        again.name = "quickstart-again"
        return [first, again]

    others = [_execute(name, root) for name in ORDER if name != "quickstart"]
    twice, *rest = await asyncio.gather(quickstart_twice(), *others)
    return {r.name: r for r in [*twice, *rest]}


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[str, Executed]:
    return asyncio.run(_execute_all_and_rerun_quickstart(tmp_path_factory.mktemp("notebooks")))


# --- the committed files ---------------------------------------------------------------------


def test_the_notebooks_are_there_and_committed_clean():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(ORDER)
    for name in ORDER:
        path = NOTEBOOKS / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        assert "widgets" not in nb.metadata, f"{name}: saved widget state"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs committed"
        sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
        # Offline by default, and the real API unchanged when a key is set.
        assert any("%qimage emulator --auto" in s for s in sources), name
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
        assert path.stat().st_size < 20_000


# --- executed without a key ------------------------------------------------------------------


@pytest.mark.parametrize("name", ORDER)
def test_notebook_runs_offline_and_shows_what_it_promises(executed, name):
    run = executed[name]
    outputs = run.outputs()

    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, "\n".join(f"{o.ename}: {o.evalue}" for o in errors)
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "Traceback" not in stderr, stderr
    assert run.seconds < 60, f"{name} took {run.seconds:.0f} s"

    # The kernel was this environment's, and the emulator announced itself.
    assert Path(run.facts["executable"]).parent == Path(sys.executable).parent, run.facts
    assert "EMULATOR: images come from qimage_nb's bundled offline emulator" in run.texts()
    assert run.facts["sizes"] == SIZES[name], run.facts["sizes"]
    assert not [c for c in run.nb.cells if c.cell_type == "code" and re.search(r"^\s*assert\b", c.source, re.M)]

    thumbs_expected, images = EXPECTED[name]
    thumbs = [t for o in outputs for t in THUMB.findall(o.get("data", {}).get("text/html", ""))]
    assert len(thumbs) == thumbs_expected
    for mime, b64 in thumbs:
        data = base64.b64decode(b64)
        assert mime in ("image/jpeg", "image/webp") and len(data) < 40_000
        assert max(Image.open(io.BytesIO(data)).size) <= 256
    if name == "panel":
        assert run.facts["panel_thumbs"] == images

    # Every rich output has a plain-text fallback, and no full-size picture is embedded.
    for out in outputs:
        data = out.get("data", {})
        if data:
            assert "text/plain" in data, out
        for mime in ("image/png", "image/jpeg"):
            if mime in data:
                assert len(base64.b64decode(data[mime])) < 50_000, f"{name}: a large {mime} output"

    # Small on disk: tens of kilobytes per image. Widget state (the panel's controls) is apart.
    saved = json.loads(run.saved)
    widgets = json.dumps(saved["metadata"].pop("widgets", {}))
    body = len(json.dumps(saved, indent=1))
    assert body / images < 100_000, f"{name}: {body} bytes for {images} images"
    assert len(widgets) < 300_000, f"{name}: {len(widgets)} bytes of widget state"
    assert not ANY_DATA_URI.search(widgets) or name == "panel"

    # Nothing written next to the notebook, but what the batches notebook exports on purpose.
    assert [p.name for p in run.workdir.iterdir()] == (["exports"] if name == "batches" else [])


def _magic_cells(run: Executed) -> list:
    return [c for c in run.nb.cells if c.cell_type == "code" and c.source.startswith("%%qimage")]


def _cell_text(cell) -> str:
    return "\n".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in cell.outputs)


def test_the_hosts_notebook_runs_one_cell_on_four_hosts_and_five_images_as_two_submits(executed):
    info = executed["hosts"].facts["info"]
    assert [i["provider"] for i in info["hosts"]] == ["apimart", "dashscope", "fal", "replicate"]
    assert [i["provider"] for i in info["on_fal"] + info["on_replicate"]] == ["fal", "replicate"]
    assert len(info["five"]) == 5 and len({i["task_id"] for i in info["five"]}) == 2  # fal: 4 a submit


def test_the_quickstart_shows_a_rerun_served_from_the_journal(executed):
    cells = [_cell_text(c) for c in _magic_cells(executed["quickstart"])]
    assert ["from cache" in text for text in cells] == [False, False, False, True], cells
    # Its last image cell repeats the first one: the same task, no second request.
    ids = [re.findall(r"task_\w+", text) for text in cells]
    assert ids[0] and set(ids[-1]) == set(ids[0]), ids


def test_after_a_restart_every_image_of_the_quickstart_comes_from_the_journal(executed):
    first, again = executed["quickstart"], executed["quickstart-again"]
    assert not [o for o in again.outputs() if o.output_type == "error"]
    assert "emulator running at" in again.texts()  # a new emulator in the new kernel
    cells = [_cell_text(c) for c in _magic_cells(again)]
    assert cells and all("from cache" in text for text in cells), cells
    # The same pictures: every task id shown is one the first run made; sizes as before.
    before = set(re.findall(r"task_\w+", first.texts()))
    after = set(re.findall(r"task_\w+", "\n".join(cells)))
    assert after and after <= before, (after, before)
    assert again.facts["sizes"] == SIZES["quickstart"]
    thumbs = [t for o in again.outputs() for t in THUMB.findall(o.get("data", {}).get("text/html", ""))]
    assert len(thumbs) == EXPECTED["quickstart"][0]
    for _, b64 in thumbs:
        assert max(Image.open(io.BytesIO(base64.b64decode(b64))).size) <= 256


def test_what_the_demos_bound_is_what_they_promised(executed):
    panel = executed["panel"].facts
    assert panel["panel_images"] == [[1248, 832], [1248, 832]] and panel["panel_generations"] == [True]
    providers = executed["providers"].facts["info"]
    assert providers["on_apimart"][0]["origin"] != providers["on_dashscope"][0]["origin"]  # two hosts
    assert providers["seeds"][0]["pixels"] != providers["seeds"][1]["pixels"]  # two seeds, two pictures
    assert providers["versions"][1]["output_size"] == "2560x1440" and providers["versions"][1]["size"] == "auto"
    boats = executed["resume_and_cache"].facts["info"]["boats"]
    assert boats[0]["prompt"] == "a paper boat on a rainy street, reflections"


def test_the_batches_notebook_prices_runs_shows_and_exports_a_table_of_products(executed):
    import csv
    import zipfile

    run = executed["batches"]
    texts = run.texts()
    products = ["ceramic teapot", "linen tote bag", "brass desk lamp", "walnut cutting board"]
    assert "dry run, nothing sent: 4 generations, 4 images, about $0.024" in texts
    catalogue = run.facts["info"]["catalogue"]
    assert [product in im["prompt"] for product, im in zip(products, catalogue, strict=True)] == [True] * 4
    # One progress line for each batch (the cell's and generate_many's), never a line per generation.
    assert texts.count("4 of 4 done · $0.024 spent") == 2
    assert "4 generations, 4 images, about $0.024 (the journal's last price" in texts
    exported = run.workdir / "exports" / "catalogue"
    with open(exported / "manifest.csv", newline="", encoding="utf-8") as fp:
        rows = list(csv.DictReader(fp))
    assert [r["item"] for r in rows] == ["0", "1", "2", "3"]
    assert all(p in r["prompt"] for p, r in zip(products, rows, strict=True))
    page = (exported / "index.html").read_text("utf-8")
    assert all(f'href="{r["file"]}"' in page for r in rows)
    with zipfile.ZipFile(run.workdir / "exports" / "catalogue.zip") as archive:
        assert sorted(n.rsplit("/", 1)[1] for n in archive.namelist()) == sorted(
            [r["file"] for r in rows] + ["manifest.csv", "index.html"]
        )
    assert len(list((run.workdir / "exports" / "lifestyle").glob("*.png"))) == 4
    assert "this session: $0.066 for 11 generations" in texts  # Python's images counted too


def test_the_interrupted_wait_is_resumed_without_paying_twice(executed):
    texts = executed["resume_and_cache"].texts()
    interrupted = re.search(r"Task (task_\w+) keeps running on the server", texts)
    assert interrupted, texts
    assert f"resuming {interrupted.group(1)}" in texts
    assert "from cache" in texts
    assert "uploaded sketch.png as a reference" in executed["image_to_image"].texts()


def test_cells_queued_behind_a_waiting_magic_run_in_order(tmp_path):
    """JupyterLab's Run All sends every cell at once: the kernel must take them one by one.

    nbclient waits for each reply before sending the next cell, so the notebooks above cannot
    show this. A magic that blocked by re-entering the kernel's loop (nest_asyncio) picked up the
    queued cell mid-wait, and ipykernel 7 then failed with "cannot enter context" and hung.
    """
    from jupyter_client.manager import start_new_kernel

    cells = [
        "%load_ext qimage_nb\n%qimage emulator --auto --latency 0.5",
        "%%qimage -o first\na queued lighthouse",
        "from qimage_nb import Client\nprint('between', [im.size for im in first])",
        "%%qimage -o second --size 16:9\na queued harbour",
        "print('after', [im.size for im in second])",
    ]
    km, kc = start_new_kernel(kernel_name="python3", env=_kernel_env(tmp_path / "home"), cwd=str(tmp_path))
    try:
        ids = [kc.execute(code) for code in cells]  # all at once, as Run All does
        replies = {}
        while len(replies) < len(ids):
            reply = kc.get_shell_msg(timeout=60)
            # (a late reply to start_new_kernel's own kernel_info request may come first: not ours)
            if reply["parent_header"].get("msg_id") in ids:
                replies[reply["parent_header"]["msg_id"]] = reply["content"]["status"]
        assert [replies[i] for i in ids] == ["ok"] * len(ids)
        printed = []
        while True:
            msg = kc.get_iopub_msg(timeout=5)
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle" and (
                msg["parent_header"].get("msg_id") == ids[-1]
            ):
                break
        assert "".join(printed) == "between [(1024, 1024)]\nafter [(1280, 720)]\n"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_the_providers_notebook_shows_the_same_cell_on_both_hosts(executed):
    run = executed["providers"]
    first, second, seeds, banner, versions = (_cell_text(c) for c in _magic_cells(run))
    assert "on the APIMart API · from the emulator" in first and "$0.006" in first
    assert "on Alibaba Model Studio (DashScope) · from the emulator" in second
    assert "from cache" not in second  # another host: a generation of its own
    assert "seed 1: done" in seeds and "seed 2: done" in seeds and "prompt as written" in seeds
    assert "1536x640" in banner
    assert "standard · 1:1 · 1K · seed 1" in versions and "qwen-image-3.0 · size chosen by the model" in versions
    texts = run.texts()
    assert "qwen-image-3.0 (2560, 1440) chosen by the model" in texts
    assert "refused: the APIMart API does not support seed" in texts
    assert "Alibaba Model Studio (DashScope) has no model listing" in texts
    assert "this session: $0.006 for 1 generation" in texts


# --- executed with a key ---------------------------------------------------------------------


def test_with_a_key_the_notebooks_use_that_api_unchanged(tmp_path):
    with Emulator(api_key="sk-notebooks-KEY-5d1e", latency=1.0, jitter=0.3) as api:
        runs = asyncio.run(
            _execute_all(tmp_path, ["quickstart", "batches"],
                         QIMAGE_API_KEY=api.api_key, QIMAGE_BASE_URL=api.base_url)
        )  # fmt: skip
        counters = api.counters()
    for run in runs.values():
        outputs = run.outputs()
        assert not [o for o in outputs if o.output_type == "error"]
        texts = run.texts()
        assert "using the real API at" in texts and "emulator running at" not in texts
        assert "bundled offline emulator" not in texts
        assert api.api_key.encode() not in run.saved
    # quickstart 3 cells; batches 4 rows with --each, 4 through Client.generate_many, 3 ratios
    assert counters["submits_accepted"] == 3 + 11


def test_with_both_keys_the_providers_notebook_uses_both_apis_unchanged(tmp_path):
    from qimage_nb.emulator import DashScopeEmulator

    with Emulator(api_key="sk-apimart-KEY-77", latency=0.5) as api, \
            DashScopeEmulator(api_key="sk-dashscope-KEY-88", latency=0.5) as dashscope:
        runs = asyncio.run(_execute_all(
            tmp_path, ["providers"], QIMAGE_API_KEY=api.api_key, QIMAGE_BASE_URL=api.base_url,
            DASHSCOPE_API_KEY=dashscope.api_key, DASHSCOPE_HTTP_BASE_URL=dashscope.base_url,
        ))
        billed = api.counters()["submits_accepted"], dashscope.counters()["generations_billed"]
    run = runs["providers"]
    assert not [o for o in run.outputs() if o.output_type == "error"]
    texts = run.texts()
    assert "using the real API at" in texts and "using the real API of Alibaba Model Studio (DashScope) at" in texts
    assert "bundled offline emulator" not in texts and "from the emulator" not in texts
    assert b"sk-apimart-KEY" not in run.saved and b"sk-dashscope-KEY" not in run.saved
    # The fox on the seed's API; the fox, two seeds, the banner, 2.0 and 3.0 on DashScope.
    assert billed == (1, 6)
