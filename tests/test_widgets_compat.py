"""notebook/_widgets.py: where ipywidgets 7.7 and 8 differ, each case on the installed version.

The main suite runs this file on ipywidgets 8; scripts/colab_stack.sh runs it again inside Colab's
pinned stack (ipywidgets 7.7.1, IPython 7.34). Each test drives the widgets the way that version's
front end does (its own message shapes, through ``set_state``) and asserts on the state the browser
is sent, which is what a user ends up seeing.
"""

from __future__ import annotations

import datetime
import io
import warnings

import ipywidgets as W
import pytest
from PIL import Image

from qimage_nb import AsyncClient, Panel, PollPolicy
from qimage_nb.emulator import Emulator
from qimage_nb.notebook import _widgets as compat
from qimage_nb.notebook._panel_parts import walk_widgets

MAJOR = int(W.__version__.split(".")[0])
DROPPED = "Passing unrecognized arguments"  # traitlets' words for a keyword a widget does not have


def png(color=(200, 40, 40), size=(300, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def browser_uploads(uploader: W.FileUpload, files: list[tuple[str, bytes]]) -> None:
    """What this version's front end sends when the user picks files (widgetsnbextension 3.6's
    FileUploadView, or 8's): the state update as it arrives from the browser."""
    if MAJOR >= 8:
        uploader.set_state({"value": [
            {"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
             "last_modified": 1_700_000_000_000}
            for name, data in files
        ]})  # fmt: skip
    else:
        uploader.set_state({
            "metadata": [{"name": name, "type": "image/png", "size": len(data), "lastModified": 1_700_000_000_000}
                         for name, data in files],
            "data": [memoryview(data) for _name, data in files],
            "_counter": uploader._counter + len(files),
        })  # fmt: skip


def test_the_installed_version_is_one_the_package_declares():
    assert MAJOR in (7, 8)
    assert compat.ipywidgets_major() == MAJOR


@pytest.mark.parametrize("make", [
    lambda: W.Dropdown(options=["a", "b"]),
    lambda: W.Text(),
    lambda: W.Checkbox(description="Watermark", indent=False),
    lambda: W.ToggleButtons(options=["x", "y"]),
    lambda: W.FileUpload(),
    lambda: W.Button(description="Go"),
])  # fmt: skip
def test_a_tooltip_reaches_the_browser(make):
    widget = make()
    compat.set_tooltip(widget, "what this does")
    state = widget.get_state()
    # 8: every widget's `tooltip`; 7: `tooltip` on Button, the label's `description_tooltip` elsewhere.
    synced = state.get("tooltip") or state.get("description_tooltip")
    assert synced == "what this does"
    assert compat.tooltip_of(widget) == "what this does"
    if MAJOR >= 8:
        assert "description_tooltip" not in state  # the deprecated name is not what 8 is sent


def test_layout_keeps_what_this_version_draws_and_drops_the_rest_quietly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lay = compat.layout(border_top="1px solid #eef0f3", padding="4px 0", width="100%")
    state = lay.get_state()
    assert state["padding"] == "4px 0" and state["width"] == "100%"
    if MAJOR >= 8:
        assert state["border_top"] == "1px solid #eef0f3"
    else:
        assert "border_top" not in state and state["border"] is None  # no box drawn instead of a line


def test_style_keys_of_a_button():
    keys = compat.style(W.Button, button_color="transparent", font_weight="bold", text_color="red")
    button = W.Button(style=keys)
    assert button.style.button_color == "transparent" and button.style.font_weight == "bold"
    assert ("text_color" in keys) == (MAJOR >= 8)


def test_an_upload_reads_as_name_and_bytes_and_clearing_drops_the_bytes():
    uploader = W.FileUpload(multiple=True)
    seen = []
    uploader.observe(lambda change: seen.append(compat.uploaded_files(change["new"])), names="value")
    first, second = png(), png((0, 90, 200))
    browser_uploads(uploader, [("a.png", first), ("b.png", second)])
    assert seen == [[("a.png", first), ("b.png", second)]]
    assert all(type(data) is bytes for _name, data in seen[0])  # 8 hands out memoryviews

    compat.clear_upload(uploader)
    assert seen[-1] == [] and compat.uploaded_files(uploader.value) == []
    state = uploader.get_state()
    assert first not in repr(state).encode() and not state.get("data")  # nothing a notebook would save

    browser_uploads(uploader, [("c.png", first)])  # the widget still takes the next pick
    assert seen[-1] == [("c.png", first)]


def test_the_display_bundle_names_the_widget_model():
    box = W.VBox([W.HTML("hi")])
    bundle = compat.mimebundle(box)
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == box.model_id
    assert "VBox" in bundle["text/plain"]


# --- the panel on this version ---------------------------------------------------------------


@pytest.fixture
def emu():
    with Emulator(latency=0.1, jitter=0.05) as emulator:
        yield emulator


@pytest.fixture
async def panel(emu, tmp_path):
    client = AsyncClient(emu.api_key, emu.base_url, poll=PollPolicy.for_latency(emu.latency))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = Panel(client=client, folder=tmp_path / "saved")
    dropped = [str(w.message) for w in caught if DROPPED in str(w.message)]
    assert dropped == []  # every keyword the panel passes is one this ipywidgets has
    await p.wait()
    yield p
    p.cancel()
    await p.wait()
    p.close()
    await client.aclose()


async def test_the_panel_builds_uploads_and_generates_on_this_version(panel, emu):
    assert "qimage-panel" in panel.root._dom_classes
    assert compat.tooltip_of(panel.provider).startswith("the host the panel sends to")  # then each host by name
    assert compat.tooltip_of(panel.seed) == "the APIMart API takes no seed"  # disabled for this host

    data = png()
    browser_uploads(panel.uploader, [("mine.png", data)])
    assert compat.uploaded_files(panel.uploader.value) == []  # taken at once, not kept in widget state
    await panel.wait()
    assert emu.counters()["uploads"] == 1
    (ref,) = panel.references
    assert ref.url.startswith("http") and ref.thumb is not None

    panel.prompt.value = "make it blue"
    assert not panel.generate_button.disabled
    panel.generate_button.click()
    await panel.wait()
    (generation,) = panel.generations
    assert generation.ok and generation.request.image_urls == (ref.url,)
    thumbs = [w for w in walk_widgets(panel.root) if "qimage-thumb-img" in getattr(w, "_dom_classes", ())]
    assert len(thumbs) == 1 and Image.open(io.BytesIO(thumbs[0].value)).format == "JPEG"
    bundle = panel._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.root.model_id


def test_uploaded_files_reads_the_value_of_either_version():
    # 8: a tuple of dicts (last_modified a datetime once deserialised); 7: a dict by file name.
    value = ({"name": "x.png", "content": memoryview(b"12"), "last_modified": datetime.datetime.now()},)
    assert compat.uploaded_files(value) == [("x.png", b"12")]
    assert compat.uploaded_files({"x.png": {"metadata": {"name": "x.png"}, "content": b"12"}}) == [("x.png", b"12")]
