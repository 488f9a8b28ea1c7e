"""%%qimage and %qimage through a real InteractiveShell, against the emulator over loopback.

Each test asserts what a user would see (the output area's final HTML and text, printed lines,
the one-line error) and what the emulator received (its counters, and the requests it recorded).
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from PIL import Image

from qimage_nb.notebook import _session
from qimage_nb.notebook._magics import QImageCellError, QImageMagics
from qimage_nb.notebook._session import EMULATOR_BANNER, get_session

DATA_URI = re.compile(r'src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)"')
NAMES = ("qimages", "cats", "pics", "bg", "grid", "again", "mine", "refs", "x", "y", "back", "slow", "hats")


# --- fixtures --------------------------------------------------------------------------------


class Publisher(CapturingDisplayPublisher):
    """Records every display and update; ``hook`` sees each one as it is published."""

    hook = None

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False):
        super().publish(data, metadata, source, transient=transient, update=update)
        if self.hook is not None:
            self.hook(data)


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    saved = sh.display_pub
    sh.display_pub = Publisher()
    # %config also merges into the shell's config; forget it so each test starts from defaults.
    sh.config.pop("QImageMagics", None)
    sh.register_magics(QImageMagics)  # a fresh instance per test
    yield sh
    sh.config.pop("QImageMagics", None)
    sh.display_pub = saved
    for name in NAMES:
        sh.user_ns.pop(name, None)


@pytest.fixture
def emu(shell):
    session = get_session()
    emulator = session.start_emulator(latency=0.1, jitter=0.05)
    yield emulator
    _close_session()


@pytest.fixture
def no_session():
    yield
    _close_session()


def _close_session():
    from qimage_nb.core._sync import run_sync

    session = get_session()
    if session._client is not None:
        run_sync(session._client.aclose())
    _session.reset_session()


def magics(sh) -> QImageMagics:
    return sh.magics_manager.registry["QImageMagics"]


def outputs(sh) -> list[dict]:
    """The final state of every output area (display_id updates applied), in display order."""
    areas: dict[str, dict] = {}
    order: list[str] = []
    for i, out in enumerate(sh.display_pub.outputs):
        key = (out.get("transient") or {}).get("display_id") or f"plain-{i}"
        if key not in areas:
            order.append(key)
        areas[key] = out["data"]
    return [areas[k] for k in order]


def last_html(sh) -> str:
    return outputs(sh)[-1]["text/html"]


def visible(html_text: str) -> str:
    """The words an HTML output shows on screen (tags dropped, entities decoded)."""
    text = re.sub(r"<style>.*?</style>", "", html_text, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "\n", text))


def user_sees(sh, capsys) -> str:
    """Everything the user sees for the cells run so far: each output area as it ended (as HTML, what
    JupyterLab draws), printed lines, and the error line IPython prints for a failed cell."""
    printed = capsys.readouterr()
    return "\n".join([*(visible(area.get("text/html", "")) for area in outputs(sh)), printed.out, printed.err])


def thumbs(html_text: str) -> list[tuple[str, bytes]]:
    return [(mime, base64.b64decode(b64)) for mime, b64 in DATA_URI.findall(html_text)]


def received(emulator, task_id: str) -> dict:
    """The request body the emulator recorded for a task: what actually arrived on the wire."""
    with emulator._state.lock:
        return dict(emulator._state.tasks[task_id].request)


def png_file(path, size=(96, 64), color=(10, 120, 200)):
    Image.new("RGB", size, color).save(path, "PNG")
    return path


# --- loading and help ------------------------------------------------------------------------


def test_load_ext_is_silent_light_and_offline():
    code = textwrap.dedent(
        """
        import io, sys, contextlib
        from IPython.core.interactiveshell import InteractiveShell
        sh = InteractiveShell.instance()
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            sh.run_line_magic("load_ext", "qimage_nb")
        heavy = [m for m in ("PIL", "httpx", "ipywidgets", "qimage_nb.core._client",
                             "qimage_nb.notebook._session", "qimage_nb.emulator", "socket_opened") if m in sys.modules]
        print(repr(out.getvalue()), heavy, sh.find_cell_magic("qimage") is not None,
              sh.find_line_magic("qimage") is not None)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIMAGE_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "'' [] True True", done.stdout + done.stderr


def test_help_is_generated_from_the_arguments(shell, capsys):
    doc = shell.find_cell_magic("qimage").__doc__
    assert "%%qimage [-o NAME]" in doc
    for option in ("--model", "--pro", "--size", "--resolution", "-n N", "--negative", "--ref", "--new",
                   "--background", "--timeout"):
        assert option in doc
    assert "default: qimages" in doc
    shell.run_cell("%%qimage?")
    help_text = capsys.readouterr().out
    assert "Usage: %%qimage [-o NAME]" in help_text
    # Plain words, not reStructuredText markup shown raw.
    assert "::" not in help_text and "``" not in help_text
    shell.run_line_magic("qimage", "help")
    printed = capsys.readouterr().out
    for sub in ("login", "logout", "config", "emulator", "models", "resume", "history", "pending", "panel"):
        assert f"%qimage {sub}" in printed


# --- generating ------------------------------------------------------------------------------


def test_cell_binds_pil_images_in_api_order_and_leaves_static_thumbnails(shell, emu, capsys):
    shell.run_cell_magic("qimage", "-o cats --size 16:9 -n 3", "\n  a cat in a teacup  \n\n")

    cats = shell.user_ns["cats"]
    assert isinstance(cats, list) and len(cats) == 3
    assert all(isinstance(im, Image.Image) and im.size == (1280, 720) for im in cats)
    assert [im.info["index"] for im in cats] == ["0", "1", "2"]
    task_id = cats[0].info["task_id"]
    assert received(emu, task_id)["prompt"] == "a cat in a teacup"  # whitespace trimmed

    areas = outputs(shell)
    assert len(areas) == 1, "one output area, updated in place"
    final = areas[0]
    shown = thumbs(final["text/html"])
    assert len(shown) == 3
    for mime, data in shown:
        assert mime in ("image/jpeg", "image/webp")  # WebP where JPEG would not fit the byte budget
        assert len(data) <= 16 * 1024
        assert Image.open(io.BytesIO(data)).size == (256, 144)  # the size it is shown at: crisp
    for needle in ("a cat in a teacup", "qwen-image-2.0", "16:9", task_id, "from the emulator"):
        assert needle in final["text/html"]
        assert needle in final["text/plain"]
    # %qimage emulator showed the banner once; each output only names the emulator.
    assert "qimage-banner" not in final["text/html"] and EMULATOR_BANNER not in final["text/plain"]
    assert "<script" not in final["text/html"]
    counters = emu.counters()
    assert counters["submits_accepted"] == 1
    assert counters["cdn_authorization_headers"] == 0
    assert emu.api_key not in str(shell.display_pub.outputs) + capsys.readouterr().out


def test_progress_is_shown_while_polling_then_thumbnails_fill_in(shell, no_session):
    get_session().start_emulator(latency=3.0, jitter=0.0)  # long enough to be seen running
    shell.run_cell_magic("qimage", "-n 2", "two lanterns")
    updates = [o for o in shell.display_pub.outputs if o["update"]]
    texts = [u["data"]["text/plain"] for u in updates]
    assert any("submitting" in t for t in texts)
    assert any(re.search(r"(queued|running \d+%)", t) for t in texts)
    counts = [len(thumbs(u["data"]["text/html"])) for u in updates]
    assert counts[-1] == 2
    assert 1 in counts or counts.count(2) >= 1  # thumbnails appear as each image lands
    assert counts == sorted(counts), "thumbnails only ever get added"


def test_every_option_reaches_the_api(shell, emu):
    shell.run_cell_magic(
        "qimage", '--pro --resolution 2K --size 3:4 -n 2 --negative "blurry, text" --timeout 120', "a lighthouse"
    )
    images = shell.user_ns["qimages"]  # the documented default name
    assert [im.size for im in images] == [(1536, 2048)] * 2
    body = received(emu, images[0].info["task_id"])
    assert body["model"] == "qwen-image-2.0-pro"
    assert (body["size"], body["resolution"], body["n"]) == ("3:4", "2K", 2)
    assert body["negative_prompt"] == "blurry, text"
    assert not body.get("image_urls")

    shell.run_cell_magic("qimage", "-o pics --model pro --size 9:16", "a lighthouse")
    assert received(emu, shell.user_ns["pics"][0].info["task_id"])["model"] == "qwen-image-2.0-pro"


@pytest.mark.parametrize(
    "prompt",
    [
        'a sign that says "{x}" and costs $y (or ${x}) \\n',
        "一只戴着帽子的猫，写着“你好”",
        "it's {name!r} {{braces}} %s %(x)s `ticks`",
    ],
)
def test_prompt_arrives_intact(shell, emu, prompt):
    shell.user_ns.update(x="EXPANDED", y="EXPANDED")
    shell.run_cell(f'%%qimage --negative "{{x}} $y"\n{prompt}\n')
    image = shell.user_ns["qimages"][0]
    body = received(emu, image.info["task_id"])
    assert body["prompt"] == prompt
    assert body["negative_prompt"] == "{x} $y"
    from qimage_nb.journal._png_text import read_provenance

    assert read_provenance(image.info["path"])["prompt"] == prompt


# --- bad input sends nothing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "body", "says"),
    [
        ("--size 5:4", "a cat", "5:4"),
        ("-n 9", "a cat", "1 to 6"),
        ("-n 0", "a cat", "1 to 6"),
        ("-n two", "a cat", "invalid int"),
        ("--resolution 4K", "a cat", "4K"),
        ("--bogus", "a cat", "--bogus"),
        ("-o 1abc", "a cat", "1abc"),
        ("-o class", "a cat", "class"),
        ("--timeout -3", "a cat", "timeout"),
        ("--pro --model qwen-image-2.0", "a cat", "--pro"),
        ("--negative", "a cat", "--negative"),
        ("", "   \n  ", "prompt"),
        ("", "x" * 801, "800"),
        ("--ref https://a.example/1.png https://a.example/2.png https://a.example/3.png --ref https://a.example/4.png",
         "a cat", "1 to 3"),
        ("--ref ftp://a.example/1.png", "a cat", "ftp"),
        ("--ref no_such_file.png", "a cat", "no_such_file.png"),
        ("--ref undefined_name", "a cat", "undefined_name"),
        ("--ref 42", "a cat", "int"),
        # what this provider (the seed's API, on its emulator) does not take, named as such
        ("--seed 7", "a cat", "the APIMart API does not support seed"),
        ("--seed 1,2 --size 1:1,16:9", "a cat", "the APIMart API does not support seed"),
        ("--no-extend", "a cat", "the APIMart API does not support prompt_extend"),
        ("--watermark", "a cat", "the APIMart API does not support watermark"),
        ("--size 1024x768", "a cat", "takes a ratio and a resolution, not 1024x768"),
        ("--size 16:9,1024x768", "a cat", "not 1024x768"),
        ("--seed seven", "a cat", "whole number"),
        ("--seed -1", "a cat", "0 to 2147483647"),
        ("--extend --no-extend", "a cat", "disagree"),
        ("--provider nowhere", "a cat", "unknown provider 'nowhere'; choose one of apimart, dashscope"),
    ],
)
def test_bad_arguments_are_one_usage_error_and_send_nothing(shell, emu, line, body, says):
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("qimage", line, body)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message
    assert emu.counters()["api_requests"] == 0
    assert "qimages" not in shell.user_ns


@pytest.mark.parametrize("line", ["--model dall-e-3", "--model standard,dall-e-3 --size 1:1,16:9"])
def test_an_unknown_model_costs_one_look_at_the_model_list_and_no_submit(shell, emu, line):
    # A model no provider documents may still be served (API.md 7.7): the host's list decides.
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("qimage", line, "a cat")
    assert "model 'dall-e-3' is not served by the APIMart API" in str(caught.value)
    counters = emu.counters()
    assert counters["submit_attempts"] == 0 and counters["uploads"] == 0
    assert counters["api_requests"] == 1  # GET /v1/models, once
    assert "qimages" not in shell.user_ns


def test_a_file_that_is_not_an_image_is_refused_before_anything_is_sent(shell, emu, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    with pytest.raises(UsageError, match=r"notes\.png"):
        shell.run_cell_magic("qimage", f"--ref {notes}", "a cat")
    with pytest.raises(UsageError, match="folder"):
        shell.run_cell_magic("qimage", f"--ref {tmp_path}", "a cat")
    counters = emu.counters()
    assert counters["api_requests"] == 0 and counters["uploads"] == 0


def test_without_a_key_the_message_says_how_to_set_one(shell, no_session):
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("qimage", "", "a cat")
    message = str(caught.value)
    for needle in ("QIMAGE_API_KEY", "%qimage login", "%qimage emulator"):
        assert needle in message
    # One line, and what works without a key comes first.
    assert "\n" not in message
    assert message.index("%qimage emulator") < message.index("%qimage login") < message.index("QIMAGE_API_KEY")


@pytest.mark.parametrize("cell", ["%%qimage", "%%qimage\n", "%%qimage -n 2\n", "%%qimage\n   \n\t\n"])
def test_an_empty_or_blank_cell_says_the_prompt_is_empty(shell, emu, capsys, cell):
    result = shell.run_cell(cell)
    assert isinstance(result.error_in_exec, UsageError)
    printed = "".join(capsys.readouterr())  # IPython prints a UsageError to stderr
    assert "UsageError: prompt is empty: describe the image" in printed
    assert "line magic" not in printed
    assert emu.counters()["api_requests"] == 0


def test_a_misspelt_option_suggests_the_real_one(shell, emu):
    with pytest.raises(UsageError, match=r"--sise 16:9 \(did you mean --size\?\)"):
        shell.run_cell_magic("qimage", "--sise 16:9", "a cat")
    with pytest.raises(UsageError, match=r"did you mean --background\?"):
        shell.run_cell_magic("qimage", "--backgrund", "a cat")
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("qimage", "--colour red", "a cat")
    assert "did you mean" not in str(caught.value)  # nothing close: no guess
    assert emu.counters()["api_requests"] == 0


# --- references ------------------------------------------------------------------------------


def test_ref_to_a_generated_image_reuses_its_source_url(shell, emu):
    shell.run_cell_magic("qimage", "", "a red fox")
    first = shell.user_ns["qimages"][0]
    shell.run_cell_magic("qimage", "-o again --ref qimages[0]", "the same fox in snow")
    body = received(emu, shell.user_ns["again"][0].info["task_id"])
    assert body["image_urls"] == [first.info["source_url"]]
    shell.run_cell_magic("qimage", "-o refs --ref qimages", "the fox, sketched")
    assert received(emu, shell.user_ns["refs"][0].info["task_id"])["image_urls"] == [first.info["source_url"]]
    assert emu.counters()["uploads"] == 0


def test_ref_to_a_local_file_is_uploaded_once_and_reruns_hit_the_cache(shell, emu, tmp_path, capsys):
    cat = png_file(tmp_path / "cat.png")
    shell.run_cell_magic("qimage", f"--ref {cat}", "this cat as a painting")
    assert user_sees(shell, capsys).count("uploaded cat.png as a reference") == 1  # said once, in the output
    counters = emu.counters()
    assert counters["uploads"] == 1 and counters["submits_accepted"] == 1
    body = received(emu, shell.user_ns["qimages"][0].info["task_id"])
    assert len(body["image_urls"]) == 1 and body["image_urls"][0].startswith("http")

    shell.run_cell_magic("qimage", f"--ref {cat}", "this cat as a painting")
    counters = emu.counters()
    assert counters["uploads"] == 1 and counters["submits_accepted"] == 1
    assert "from cache" in last_html(shell)


def test_ref_to_another_pil_image_and_a_url_mix(shell, emu, capsys):
    shell.user_ns["mine"] = Image.new("RGB", (64, 48), (200, 10, 10))
    shell.run_cell_magic("qimage", "--ref mine https://example.com/a.png", "combine these")
    assert user_sees(shell, capsys).count("uploaded mine (a 64x48 image) as a reference") == 1
    body = received(emu, shell.user_ns["qimages"][0].info["task_id"])
    assert body["image_urls"][1] == "https://example.com/a.png"
    assert emu.counters()["uploads"] == 1


# --- failures, interrupts, background --------------------------------------------------------


def test_a_refusal_is_said_once_in_one_red_line(shell, emu, capsys):
    emu.set_faults(moderation_words=("FAIL_MODERATION",))
    result = shell.run_cell("%%qimage\nFAIL_MODERATION a cat\n")
    assert isinstance(result.error_in_exec, QImageCellError)  # the cell counts as failed
    everything = user_sees(shell, capsys)
    assert everything.count("Input data may contain inappropriate content") == 1, everything
    assert everything.count("✕ failed") == 1  # a small mark where the image would have been
    assert "Traceback" not in everything and "File " not in everything
    assert "qimages" not in shell.user_ns
    # The red line is IPython's error output; the gallery keeps a small mark, not a 256 px box.
    assert result.error_in_exec._render_traceback_()[0].startswith("\x1b[0;31mTaskFailedError")
    assert "qimage-marker" in last_html(shell) and "height:256px" not in last_html(shell)


def test_interrupt_stops_the_wait_and_says_how_to_resume(shell, capsys):
    session = get_session()
    emulator = session.start_emulator(latency=3.0, jitter=0.0)
    try:
        seen = threading.Event()

        def hook(data):
            if re.search(r"running \d+% .* task_", data.get("text/plain", "")):
                seen.set()

        shell.display_pub.hook = hook

        def interrupter():
            if seen.wait(30):
                os.kill(os.getpid(), signal.SIGINT)  # what "Interrupt the kernel" sends

        threading.Thread(target=interrupter, daemon=True).start()
        shell.run_cell_magic("qimage", "", "a slow cathedral")
        everything = user_sees(shell, capsys)
        match = re.search(r"%qimage resume (\S+)", everything)
        assert match, everything
        assert "Traceback" not in everything and "qimages" not in shell.user_ns
        task_id = match.group(1)
        assert everything.count("%qimage resume") == 1 and everything.count("stopped waiting") == 1, everything
        assert "qimage-marker" in last_html(shell) and "height:256px" not in last_html(shell)

        shell.display_pub.hook = None
        shell.run_line_magic("qimage", "pending")
        assert task_id in outputs(shell)[-1]["text/plain"]

        shell.run_line_magic("qimage", f"resume {task_id}")
        images = shell.user_ns["qimages"]
        assert len(images) == 1 and images[0].info["task_id"] == task_id
        assert len(thumbs(last_html(shell))) == 1
        assert emulator.counters()["submits_accepted"] == 1
    finally:
        shell.display_pub.hook = None
        _close_session()


def test_background_returns_at_once_and_binds_when_the_images_arrive(shell, capsys):
    session = get_session()
    emulator = session.start_emulator(latency=1.0, jitter=0.0)
    try:
        shell.run_cell_magic("qimage", "--background -o bg -n 2", "a paper boat")
        assert "bg will be bound" in capsys.readouterr().out.replace("is bound", "will be bound")
        assert "bg" not in shell.user_ns  # the task takes a second; the cell returned already
        magics(shell)._join_background(60)
        assert len(shell.user_ns["bg"]) == 2
        areas = outputs(shell)
        assert len(areas) == 1 and len(thumbs(areas[0]["text/html"])) == 2

        emulator.set_faults(moderation_words=("FAIL_MODERATION",))
        shell.run_cell_magic("qimage", "--background -o back", "FAIL_MODERATION boat")
        magics(shell)._join_background(60)
        assert "back" not in shell.user_ns
        # No error line can follow a cell that already returned: the output area says it, once.
        assert visible(last_html(shell)).count("inappropriate content") == 1
        assert "inappropriate content" in outputs(shell)[-1]["text/plain"]
    finally:
        _close_session()


# --- re-running without paying ---------------------------------------------------------------


def test_an_identical_rerun_comes_from_the_cache_and_new_pays_again(shell, emu):
    shell.run_cell_magic("qimage", "-n 2 --size 4:3", "a quiet harbour")
    first = [im.info["task_id"] for im in shell.user_ns["qimages"]]
    before = emu.counters()
    assert before["submits_accepted"] == 1

    shell.run_cell_magic("qimage", "--size 4:3 -n 2", "  a quiet harbour\n")
    after = emu.counters()
    assert after["submits_accepted"] == 1
    assert after["api_requests"] == before["api_requests"]  # not even a poll
    assert after["cdn_hits"] == before["cdn_hits"]
    assert [im.info["task_id"] for im in shell.user_ns["qimages"]] == first
    final = outputs(shell)[-1]
    assert "from cache" in final["text/html"] and "--new for fresh images" in final["text/plain"]
    assert len(thumbs(final["text/html"])) == 2

    shell.run_cell_magic("qimage", "--size 4:3 -n 2 --new", "a quiet harbour")
    assert emu.counters()["submits_accepted"] == 2
    assert shell.user_ns["qimages"][0].info["task_id"] != first[0]


def test_rerunning_a_cell_that_timed_out_reattaches_instead_of_paying_again(shell, no_session):
    from qimage_nb.notebook._magics import QImageCellError

    emu = get_session().start_emulator(latency=1.0, jitter=0.0)  # outlives the first cell's timeout
    # at 0.2 s the task is queued or running (a loaded machine, or Python 3.13, sees it queued):
    # either way the message says it is unfinished, not failed
    with pytest.raises(QImageCellError, match=r"still (running|queued)"):
        shell.run_cell_magic("qimage", "--timeout 0.2", "a slow lighthouse")
    assert emu.counters()["submits_accepted"] == 1
    shell.run_cell_magic("qimage", "", "a slow lighthouse")
    assert emu.counters()["submits_accepted"] == 1  # the re-run waited for the task it had paid for
    assert len(shell.user_ns["qimages"]) == 1
    final = outputs(shell)[-1]
    assert "not billed again" in final["text/plain"] + final["text/html"]


# --- after a kernel restart, on the in-kernel emulator ----------------------------------------


def _restart(shell):
    """What a kernel restart does to the session: the emulator and the namespace are gone; the
    journal (QIMAGE_HOME) stays."""
    _close_session()
    for name in NAMES:
        shell.user_ns.pop(name, None)


def test_a_rerun_after_a_restart_is_served_from_the_journal_refs_included(shell, no_session):
    first = get_session().start_emulator(latency=0.1, jitter=0.0)
    shell.run_cell_magic("qimage", "-o cats --size 16:9 -n 2", "a ginger cat")
    shell.run_cell_magic("qimage", "-o hats --ref cats[0]", "the same cat, in a hat")
    made = [im.info["task_id"] for im in shell.user_ns["cats"] + shell.user_ns["hats"]]
    assert first.counters()["submits_accepted"] == 2
    old_url = first.base_url

    _restart(shell)
    second = get_session().start_emulator(latency=0.1, jitter=0.0)
    assert second.base_url != old_url  # a new port, as in a new kernel
    shell.run_cell_magic("qimage", "-o cats --size 16:9 -n 2", "a ginger cat")
    assert "from cache" in outputs(shell)[-1]["text/html"]
    shell.run_cell_magic("qimage", "-o hats --ref cats[0]", "the same cat, in a hat")
    final = outputs(shell)[-1]
    assert "from cache" in final["text/html"] and len(thumbs(final["text/html"])) == 1
    assert [im.info["task_id"] for im in shell.user_ns["cats"] + shell.user_ns["hats"]] == made
    assert [im.size for im in shell.user_ns["cats"]] == [(1280, 720), (1280, 720)]
    # Nothing reached the new emulator: no submit, no upload of cats[0], not even a poll.
    assert second.counters()["api_requests"] == 0 and second.counters()["uploads"] == 0
    assert second.counters()["cdn_hits"] == 0

    shell.run_cell_magic("qimage", "-o hats --ref cats[0] --new", "the same cat, in a hat")
    # --new pays on this emulator: the old URL of cats[0] is dead, so its copy on disk is uploaded.
    assert second.counters()["submits_accepted"] == 1 and second.counters()["uploads"] == 1
    assert shell.user_ns["hats"][0].info["task_id"] not in made


def test_emulator_pictures_never_serve_an_api_request_nor_the_reverse(shell, no_session):
    from qimage_nb.emulator import Emulator

    session = get_session()
    emulator = session.start_emulator(latency=0.1, jitter=0.0)
    shell.run_cell_magic("qimage", "", "a red kite")
    on_emulator = shell.user_ns["qimages"][0].info["task_id"]
    assert emulator.counters()["submits_accepted"] == 1
    session.stop_emulator()

    # A server standing in for a real API, reached with a key: it must be asked, not the journal.
    with Emulator(api_key="sk-stand-in-KEY-4242", latency=0.1, jitter=0.0) as api:
        session.set_base_url(api.base_url)
        session.login("sk-stand-in-KEY-4242")
        shell.run_cell_magic("qimage", "", "a red kite")
        assert api.counters()["submits_accepted"] == 1
        on_api = shell.user_ns["qimages"][0].info["task_id"]
        assert on_api != on_emulator and "from cache" not in outputs(shell)[-1]["text/html"]

        # Back on the emulator (a new one, new port): served from the emulator's own entry.
        again = session.start_emulator(latency=0.1, jitter=0.0)
        shell.run_cell_magic("qimage", "", "a red kite")
        assert shell.user_ns["qimages"][0].info["task_id"] == on_emulator
        assert "from cache" in outputs(shell)[-1]["text/html"]
        assert again.counters()["api_requests"] == 0 and api.counters()["submits_accepted"] == 1


def test_a_gone_emulators_task_is_named_as_such_and_never_polled(shell, no_session, capsys):
    from qimage_nb import AsyncClient
    from qimage_nb.core._sync import run_sync
    from qimage_nb.emulator import Emulator

    first = get_session().start_emulator(latency=3.0, jitter=0.0)
    with pytest.raises(QImageCellError, match="keeps running on the server"):
        shell.run_cell_magic("qimage", "--timeout 0.2", "a slow comet")
    task_id = get_session().client().pending()[0].task_id
    old_url = first.base_url
    capsys.readouterr()

    _restart(shell)
    second = get_session().start_emulator(latency=0.1, jitter=0.0)
    polls_before = first.counters()["polls"]
    shell.run_line_magic("qimage", "pending")
    printed = capsys.readouterr().out
    assert "no pending tasks" in outputs(shell)[-1]["text/plain"]
    assert f"1 task of an emulator that is gone ({task_id})" in printed
    result = shell.run_cell(f"%qimage resume {task_id}")
    shown = result.error_in_exec and str(result.error_in_exec)
    shown = (shown or "") + outputs(shell)[-1]["text/plain"]
    assert f"{task_id} belonged to the emulator at {old_url}, which is gone" in shown
    assert second.counters()["api_requests"] == 0 and first.counters()["polls"] == polls_before

    # Another kernel's emulator, still running its own task for the same prompt: this kernel's
    # re-run pays its own emulator and leaves that task alone (it is not "failed").
    with Emulator(latency=3.0, jitter=0.0) as other:
        elsewhere = AsyncClient(other.api_key, other.base_url, cache_scope=Emulator.cache_scope)
        their_task = run_sync(elsewhere.submit("a slow comet, elsewhere"))
        shell.run_cell_magic("qimage", "", "a slow comet, elsewhere")
        assert second.counters()["submits_accepted"] == 1 and other.counters()["polls"] == 0
        assert get_session().client().store.get(their_task).status == "pending"
        run_sync(elsewhere.aclose())


# --- comparison grid -------------------------------------------------------------------------


def test_comma_values_run_a_labelled_comparison_grid_in_order(shell, emu):
    shell.run_line_magic("config", "QImageMagics.concurrency = 2")
    shell.run_cell_magic("qimage", "-o grid --model standard,pro --size 1:1,16:9", "a bicycle")
    grid = shell.user_ns["grid"]
    assert [(im.info["model"], im.info["size"]) for im in grid] == [
        ("qwen-image-2.0", "1:1"),
        ("qwen-image-2.0", "16:9"),
        ("qwen-image-2.0-pro", "1:1"),
        ("qwen-image-2.0-pro", "16:9"),
    ]
    assert [im.size for im in grid] == [(1024, 1024), (1280, 720), (1024, 1024), (1280, 720)]
    final = last_html(shell)
    labels = re.findall(r'class="qimage-label"[^>]*>([^<]+)<', final)
    assert labels == ["standard · 1:1 · 1K", "standard · 16:9 · 1K", "pro · 1:1 · 1K", "pro · 16:9 · 1K"]
    assert "grid-template-columns:repeat(2," in final
    assert len(thumbs(final)) == 4
    assert emu.counters()["submits_accepted"] == 4

    shell.run_cell_magic("qimage", "-o grid --resolution 1K,2K -n 2", "a bicycle")
    assert [im.size for im in shell.user_ns["grid"]] == [(1024, 1024)] * 2 + [(2048, 2048)] * 2


# --- configuration ---------------------------------------------------------------------------


def test_config_traitlets_set_the_defaults(shell, emu):
    for line in (
        'QImageMagics.model = "qwen-image-2.0-pro"',
        'QImageMagics.size = "16:9"',
        "QImageMagics.n = 2",
        'QImageMagics.output = "pics"',
        "QImageMagics.thumb_px = 96",
        'QImageMagics.thumb_format = "WEBP"',
    ):
        shell.run_line_magic("config", line)
    shell.run_cell_magic("qimage", "", "a kite")
    pics = shell.user_ns["pics"]
    assert len(pics) == 2 and pics[0].size == (1280, 720) and pics[0].info["model"] == "qwen-image-2.0-pro"
    shown = thumbs(last_html(shell))
    assert [mime for mime, _ in shown] == ["image/webp"] * 2
    assert all(max(Image.open(io.BytesIO(data)).size) <= 96 for _, data in shown)


def test_config_model_takes_the_same_short_names_as_the_option(shell, emu):
    shell.run_line_magic("config", 'QImageMagics.model = "pro"')
    shell.run_cell_magic("qimage", "-o kites", "a kite")
    assert shell.user_ns["kites"][0].info["model"] == "qwen-image-2.0-pro"


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ('QImageMagics.size = "5:4"', "QImageMagics.size"),
        ("QImageMagics.n = 9", "QImageMagics.n"),
        ('QImageMagics.model = "gpt"', "QImageMagics.model"),
        ('QImageMagics.resolution = "8K"', "QImageMagics.resolution"),
        ('QImageMagics.thumb_format = "GIF"', "QImageMagics.thumb_format"),
        ("QImageMagics.thumb_px = 5", "QImageMagics.thumb_px"),
        ('QImageMagics.output = "not a name"', "QImageMagics.output"),
        ("QImageMagics.timeout = -1.0", "QImageMagics.timeout"),
        ("QImageMagics.concurrency = 0", "QImageMagics.concurrency"),
    ],
)
def test_a_broken_config_value_is_one_clear_line_and_sends_nothing(shell, emu, setting, says):
    shell.run_line_magic("config", setting)
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("qimage", "", "a kite")
    assert says in str(caught.value) and "\n" not in str(caught.value)
    # An unknown model asks the host's model list (nothing else); nothing is submitted.
    assert emu.counters()["api_requests"] == (1 if "model" in setting else 0)
    assert emu.counters()["submit_attempts"] == 0


def test_ipython_config_file_values_reach_the_magics(shell):
    shell.config.QImageMagics.model = "qwen-image-2.0-pro"
    shell.config.QImageMagics.thumb_px = 128
    try:
        shell.register_magics(QImageMagics)
        assert magics(shell).model == "qwen-image-2.0-pro" and magics(shell).thumb_px == 128
    finally:
        del shell.config["QImageMagics"]


# --- the key ---------------------------------------------------------------------------------


def test_login_config_logout_never_show_the_key(shell, no_session, monkeypatch, capsys):
    from qimage_nb.emulator import Emulator

    secret = "sk-live-Zq8vN3kP0wX5-secret"
    with Emulator(api_key=secret, latency=0.1, jitter=0.0) as server:
        monkeypatch.setenv("QIMAGE_BASE_URL", server.base_url)
        monkeypatch.setattr("getpass.getpass", lambda prompt="": secret)
        shell.run_line_magic("qimage", "login")
        shell.run_line_magic("qimage", "config")
        shell.run_cell_magic("qimage", "", "a small boat")
        shell.run_line_magic("qimage", "history")
        printed = capsys.readouterr().out
        assert "key set for this kernel" in printed
        assert "set (from %qimage login" in printed
        assert "balance:" in printed and "unavailable" not in printed
        assert len(shell.user_ns["qimages"]) == 1

        with pytest.raises(UsageError) as caught:
            shell.run_line_magic("qimage", f"login {secret}")
        assert secret not in str(caught.value)

        shell.run_line_magic("qimage", "logout")
        shell.run_line_magic("qimage", "config")
        printed += capsys.readouterr().out
        assert re.search(r"key: +not set", printed)
        everything = printed + repr(shell.display_pub.outputs)
        assert secret not in everything
        assert server.counters()["submits_accepted"] == 1


def test_emulator_subcommand_auto_stop_and_banner(shell, no_session, monkeypatch, capsys):
    shell.run_line_magic("qimage", "emulator --auto --latency 0.1")
    session = get_session()
    assert session.using_emulator
    banner = visible(outputs(shell)[-1]["text/html"])
    assert EMULATOR_BANNER in outputs(shell)[-1]["text/plain"] and EMULATOR_BANNER in banner
    # It says what really switches (at once, no restart) and what --stop does.
    assert "%qimage login switches to the real API at once" in banner and "restart" not in banner
    assert "%qimage emulator --stop stops it" in " ".join(banner.split())
    shell.run_cell_magic("qimage", "-o x", "a kite")
    shell.run_cell_magic("qimage", "-o y", "a second kite")
    shown = [visible(area.get("text/html", "")) for area in outputs(shell)]
    assert sum(EMULATOR_BANNER in text for text in shown) == 1  # once, not above every output
    shell.run_line_magic("qimage", "emulator --stop")
    assert not session.using_emulator
    assert "stopped the APIMart API emulator" in capsys.readouterr().out

    monkeypatch.setenv("QIMAGE_API_KEY", "sk-from-env-1234")
    shell.run_line_magic("qimage", "emulator --auto")
    assert not session.using_emulator
    printed = capsys.readouterr().out
    assert "using the real API at" in printed and "sk-from-env-1234" not in printed


# --- the journal -----------------------------------------------------------------------------


def test_history_lists_the_journal_and_resume_all(shell, emu, capsys):
    shell.run_cell_magic("qimage", "-n 2", "a lantern festival")
    task_id = shell.user_ns["qimages"][0].info["task_id"]
    shell.run_line_magic("qimage", "history")
    table = outputs(shell)[-1]
    for needle in (task_id, "a lantern festival", "completed", "qwen-image-2.0 · 1:1 1K"):
        assert needle in table["text/plain"]
        assert needle in table["text/html"]
    assert "standard" not in table["text/plain"]  # the model's name, as everywhere else
    shell.run_line_magic("qimage", "resume --all")
    assert "nothing to resume" in capsys.readouterr().out
    shell.run_line_magic("qimage", f"resume {task_id} -o again")
    assert [im.info["task_id"] for im in shell.user_ns["again"]] == [task_id, task_id]
    assert emu.counters()["submits_accepted"] == 1


def test_unknown_subcommand_is_a_usage_error(shell):
    with pytest.raises(UsageError, match="%%qimage cell"):
        shell.run_line_magic("qimage", "a cat on a mat")


def test_panel_subcommand_shows_the_panel(shell, emu):
    before = len(shell.display_pub.outputs)
    shell.run_line_magic("qimage", "panel")
    shown = shell.display_pub.outputs[before:]
    assert shown, "the panel was displayed"
    assert any("application/vnd.jupyter.widget-view+json" in o["data"] or "Panel" in o["data"].get("text/plain", "")
               for o in shown)
    assert emu.counters()["api_requests"] == 0


def test_a_timeout_stops_waiting_and_says_how_to_resume(shell, no_session, capsys):
    emulator = get_session().start_emulator(latency=3.0, jitter=0.0)
    result = shell.run_cell("%%qimage --timeout 0.5 -o slow\na slow sunrise\n")
    assert isinstance(result.error_in_exec, QImageCellError)
    everything = user_sees(shell, capsys)
    match = re.search(r"%qimage resume (task_\w+)", everything)
    assert match and "Traceback" not in everything, everything
    assert everything.count("%qimage resume") == 1, everything
    assert "slow" not in shell.user_ns
    shell.run_line_magic("qimage", f"resume {match.group(1)} -o slow")
    assert len(shell.user_ns["slow"]) == 1
    assert emulator.counters()["submits_accepted"] == 1


def test_an_interrupt_before_the_task_id_is_known_names_the_journal_entry(shell, no_session, capsys):
    emulator = get_session().start_emulator(latency=0.5, jitter=0.0)

    def hook(data):
        if "submitting..." in data.get("text/plain", ""):
            shell.display_pub.hook = None
            raise KeyboardInterrupt  # lands while the submit is about to go out

    shell.display_pub.hook = hook
    shell.run_cell_magic("qimage", "", "an early interrupt")
    everything = user_sees(shell, capsys)
    # The submit may or may not have reached the API: only the user can decide to send it again,
    # and the line gives the exact command, with this cell's journal key (not --all).
    match = re.search(r"%qimage resume --resend (\S+)", everything)
    assert match, everything
    assert everything.count("%qimage resume") == 1 and "may be billed" in everything, everything
    shell.run_line_magic("qimage", f"resume --resend {match.group(1)}")
    assert shell.user_ns["qimages"][0].info["prompt"] == "an early interrupt"
    assert emulator.counters()["submits_accepted"] == 1


# --- a bad $QIMAGE_BASE_URL ------------------------------------------------------------------

BAD_BASE_URLS = [
    ("plain-http-remote", "http://api.example.com", r"plain http to a non-loopback host.*use https"),
    ("credentials", "https://qimage-user:hunter2-SECRET@api.example.com", r"must not carry credentials"),
]


@pytest.mark.parametrize("run", ["%%qimage\na cat", "%qimage config", "%qimage history", "%qimage emulator --auto"])
@pytest.mark.parametrize(("case", "url", "says"), BAD_BASE_URLS, ids=[c[0] for c in BAD_BASE_URLS])
def test_a_bad_base_url_is_one_usage_error_line_never_a_traceback(
    shell, no_session, monkeypatch, capsys, run, case, url, says
):
    monkeypatch.setenv("QIMAGE_API_KEY", "sk-test-KEY-0000")
    monkeypatch.setenv("QIMAGE_BASE_URL", url)
    result = shell.run_cell(run)
    assert not result.success
    error = result.error_in_exec
    assert isinstance(error, UsageError), repr(error)
    message = str(error)
    assert re.search(says, message) and "\n" not in message
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    seen = printed.out + printed.err + message + repr(shell.display_pub.outputs)
    for secret in ("hunter2", "qimage-user", "sk-test-KEY"):
        assert secret not in seen
    assert not get_session().using_emulator


# --- what --ref may name ---------------------------------------------------------------------


def _sourced(url: str, color=(10, 20, 30)) -> Image.Image:
    image = Image.new("RGB", (8, 8), color)
    image.info["source_url"] = url
    return image


def test_ref_follows_names_indexes_slices_and_attributes(shell, emu, tmp_path, monkeypatch):
    from types import SimpleNamespace

    a, b, c = (f"https://example.com/{name}.png" for name in "abc")
    shell.user_ns["pics"] = [_sourced(a), _sourced(b)]
    shell.user_ns["x"] = SimpleNamespace(images=[_sourced(c)])
    shell.run_cell_magic("qimage", "-o y --ref pics[-1] pics[0:1] x.images", "three references")
    assert received(emu, shell.user_ns["y"][0].info["task_id"])["image_urls"] == [b, a, c]
    # A relative path parses as a division; an existing file is still a file.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    png_file(tmp_path / "sub" / "cat.png")
    shell.run_cell_magic("qimage", "-o back --ref sub/cat.png", "a cat from a file")
    assert emu.counters()["uploads"] == 1


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("boom()", "Call"),
        ("\"__import__('os').getcwd()\"", "Call"),
        ("pics[0].__class__", "private attribute"),
        ("pics[len(pics)-1]", "index"),
        ("pics[0:boom()]", "slice"),
        ("[pics][0]", "List"),
        ("pics+pics", "BinOp"),
        ("42", "int"),
    ],
)
def test_ref_evaluates_no_code(shell, emu, token, says):
    called = []
    shell.user_ns["boom"] = lambda: called.append(1) or []
    shell.user_ns["pics"] = [_sourced("https://example.com/a.png")]
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("qimage", f"--ref {token}", "a cat")
    message = str(caught.value)
    assert token.strip('"') in message and says in message and "\n" not in message
    assert called == []
    assert emu.counters()["api_requests"] == 0
    shell.user_ns.pop("boom")


# --- reproduce_cell and the magic's parser ---------------------------------------------------


@pytest.mark.parametrize(
    "negative",
    ["dogs", "blur, 'noise'", 'say "cheese"', "-blurry", "--new -n 6", "tabs\tand  spaces", "$5 {today} %d %%s",
     "ünïcödé — “curly” ‘quotes’", "--ref https://evil.example/x.png"],
)
def test_reproduce_cell_round_trips_through_the_magics_parser(negative):
    from qimage_nb._contract import GenerationRequest
    from qimage_nb.notebook._magic_args import parse_cell_line, reproduce_cell, split_refs

    request = GenerationRequest.create(
        "a sign that says \"it's $5 {today}\"\n%%qimage --new\nthird line", model="qwen-image-2.0-pro",
        size="2:3", resolution="2K", n=2, negative_prompt=negative,
        image_urls=["https://example.com/a b.png?x=1&y=2", "https://example.com/-dash.png"],
    )
    line, body = reproduce_cell(request, name="pics").split("\n", 1)
    assert line.startswith("%%qimage ")
    args = parse_cell_line(line.removeprefix("%%qimage "))
    assert args.output == "pics" and not args.new and not args.background and not args.pro
    assert (args.model, args.size, args.resolution, args.n) == ([request.model], [request.size], [request.resolution], 2)
    assert args.negative == request.negative_prompt
    assert split_refs(args.ref) == list(request.image_urls)
    assert body.strip() == request.prompt


def test_reproduce_cell_refuses_a_line_break_in_an_argument():
    from qimage_nb._contract import GenerationRequest
    from qimage_nb.notebook._magic_args import reproduce_cell

    with pytest.raises(ValueError, match="line break"):
        reproduce_cell(GenerationRequest.create("a cat", negative_prompt="dogs\nwolves"))


# --- the network down ------------------------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once it is closed: connections are refused


def test_a_network_failure_shows_its_retries_then_one_line_naming_the_host(shell, no_session, monkeypatch, capsys):
    from qimage_nb.core._retry import RetryPolicy

    port = _closed_port()
    monkeypatch.setenv("QIMAGE_API_KEY", "sk-test-KEY-0000")
    monkeypatch.setenv("QIMAGE_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt, retry_after=None: 0.05)  # fast, same count
    while_waiting: list[str] = []
    shell.display_pub.hook = lambda data: while_waiting.append(visible(data.get("text/html", "")))
    try:
        result = shell.run_cell("%%qimage\na lighthouse in fog\n")
    finally:
        shell.display_pub.hook = None
    assert isinstance(result.error_in_exec, QImageCellError)
    # While it waits, the output says that it is retrying and why.
    retries = [t for t in while_waiting if re.search(r"submitting\.\.\. · submit: network error: could not connect .*; retry \d of 5 in", t)]
    assert retries, while_waiting
    assert any("retry 5 of 5" in t for t in retries)
    everything = user_sees(shell, capsys)
    # Then one line: the host, what failed, and what to check, each said once.
    assert everything.count("could not connect") == 1, everything
    line = next(line for line in everything.splitlines() if "could not connect" in line)
    assert f"cannot reach 127.0.0.1:{port} after 5 retries" in line
    assert line.count("network connection") == 1 and line.count("QIMAGE_BASE_URL") == 1

    # A refused connection never carried the request: nothing can be billed, nothing is pending.
    shell.run_line_magic("qimage", "pending")
    assert outputs(shell)[-1]["text/plain"] == "no pending tasks"


def test_config_names_the_data_folder(shell, no_session, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("QIMAGE_HOME", str(tmp_path))
    shell.run_line_magic("qimage", "config")
    printed = capsys.readouterr().out
    assert f"data folder: {tmp_path}" in printed
    assert "journal:" not in printed
