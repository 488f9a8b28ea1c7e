"""A notebook that uses the magic, executed by nbclient in a real kernel, then saved and inspected.

The kernel is a separate process: the emulator runs here, in the test process, and the kernel is
pointed at it through QIMAGE_BASE_URL / QIMAGE_API_KEY (and a private QIMAGE_HOME). The saved
.ipynb is what a user would commit: it must render without a kernel, stay small, and never hold the
key. Executing it a second time ("Restart and Run All") must not pay for anything.
"""

from __future__ import annotations

import base64
import io
import os
import re

import pytest
from PIL import Image

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from qimage_nb.emulator import Emulator  # noqa: E402

KEY = "sk-notebook-test-KEY-7c1f9e5a2b"
DATA_URI = re.compile(r"data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)")

CELLS = [
    "%load_ext qimage_nb",
    "%qimage emulator --auto",
    "%%qimage -o cats -n 2 --size 16:9\na cat reading a newspaper, \"Daily {Cat}\" costs $2",
    "[im.size for im in cats]",
    "%%qimage -o edits --ref cats[0] photo.png\nthe same cat, in watercolour",
    "%%qimage -o grid --model standard,pro\na lighthouse at dusk",
    "[(im.info['model'], im.size) for im in grid]",
    "%qimage history",
    "%qimage config",
]


def _run(path, workdir, env) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute(env=env)
    nbformat.write(nb, path)
    return nb


def _outputs(nb):
    return [out for cell in nb.cells for out in cell.get("outputs", [])]


@pytest.mark.slow
def test_executed_notebook_is_static_small_keyless_and_free_to_rerun(tmp_path):
    Image.new("RGB", (120, 90), (30, 140, 90)).save(tmp_path / "photo.png")
    path = tmp_path / "magic.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS]), path)

    emulator = Emulator(api_key=KEY, latency=0.2, jitter=0.1).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QIMAGE_")}
        env.update(QIMAGE_BASE_URL=emulator.base_url, QIMAGE_API_KEY=KEY, QIMAGE_HOME=str(tmp_path / "home"))

        nb = _run(path, tmp_path, env)
        first = emulator.counters()
        outputs = _outputs(nb)
        errors = [o for o in outputs if o.output_type == "error"]
        assert not errors, errors

        # The bound images, as the kernel saw them.
        texts = [o.get("data", {}).get("text/plain", "") for o in outputs if o.output_type == "execute_result"]
        assert "[(1280, 720), (1280, 720)]" in texts
        assert "[('qwen-image-2.0', (1024, 1024)), ('qwen-image-2.0-pro', (1024, 1024))]" in texts

        # Saved outputs: static HTML with small thumbnails, a text fallback, no widgets or scripts.
        galleries = [o for o in outputs if "qimage-gallery" in o.get("data", {}).get("text/html", "")]
        assert len(galleries) == 3
        thumbs = []
        for out in galleries:
            assert "text/plain" in out.data
            assert "<script" not in out.data["text/html"]
            assert "application/vnd.jupyter.widget-view+json" not in out.data
            thumbs += DATA_URI.findall(out.data["text/html"])
        assert len(thumbs) == 2 + 1 + 2
        for mime, b64 in thumbs:
            data = base64.b64decode(b64)
            # JPEG as configured, or WebP where that keeps the thumbnail within its byte budget.
            assert mime in ("image/jpeg", "image/webp") and len(data) < 40_000
            assert max(Image.open(io.BytesIO(data)).size) <= 256
        raw = path.read_bytes()
        assert len(raw) / len(thumbs) < 100_000, f"{len(raw)} bytes for {len(thumbs)} images"

        assert first["uploads"] == 1  # photo.png; cats[0] went by its source URL
        assert first["submits_accepted"] == 4
        assert first["cdn_authorization_headers"] == 0
        assert KEY.encode() not in raw
        assert b"Bearer" not in raw

        # Restart and Run All: the same notebook, a new kernel, the same journal.
        nb = _run(path, tmp_path, env)
        again = emulator.counters()
        assert again["submits_accepted"] == first["submits_accepted"]
        assert again["uploads"] == first["uploads"]
        assert not [o for o in _outputs(nb) if o.output_type == "error"]
        galleries = [o for o in _outputs(nb) if "qimage-gallery" in o.get("data", {}).get("text/html", "")]
        assert all("from cache" in o.data["text/plain"] for o in galleries)
        assert sum(len(DATA_URI.findall(o.data["text/html"])) for o in galleries) == 5
        assert KEY.encode() not in path.read_bytes()
    finally:
        emulator.stop()
