"""%%qimage --each VAR, --dry-run and --max-cost through a real InteractiveShell, against the emulator.

What is judged is what reached the server (the bodies it recorded, its counters) and what the user
sees (one progress line, one grid, one-line errors).
"""

from __future__ import annotations

import html
import re

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from qimage_nb.notebook import _session
from qimage_nb.notebook._magics import QImageMagics
from qimage_nb.notebook._session import get_session

NAMES = ("qimages", "shots", "products", "colours", "rows", "df", "bad", "n")


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    saved = sh.display_pub
    sh.display_pub = CapturingDisplayPublisher()
    sh.config.pop("QImageMagics", None)
    sh.register_magics(QImageMagics)
    yield sh
    sh.display_pub = saved
    for name in NAMES:
        sh.user_ns.pop(name, None)


@pytest.fixture
def emu(shell):
    emulator = get_session().start_emulator(latency=0.05, jitter=0.02)
    yield emulator
    from qimage_nb.core._sync import run_sync

    session = get_session()
    if session._client is not None:
        run_sync(session._client.aclose())
    _session.reset_session()


def submitted_prompts(emulator) -> list[str]:
    """The prompts the server received, in the order the tasks were created."""
    with emulator._state.lock:
        return [task.request["prompt"] for task in emulator._state.tasks.values()]


def outputs(sh) -> list[dict]:
    areas: dict[str, dict] = {}
    order: list[str] = []
    for i, out in enumerate(sh.display_pub.outputs):
        key = (out.get("transient") or {}).get("display_id") or f"plain-{i}"
        if key not in areas:
            order.append(key)
        areas[key] = out["data"]
    return [areas[k] for k in order]


def visible(html_text: str) -> str:
    text = re.sub(r"<style>.*?</style>", "", html_text, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "\n", text))


def test_each_over_strings_submits_one_task_per_item_and_binds_in_item_order(shell, emu):
    shell.user_ns["colours"] = ["red", "teal", "ochre"]
    shell.run_cell_magic("qimage", "-o shots --each colours", "a {} ceramic cup on white, {{studio}}")
    expected = [f"a {c} ceramic cup on white, {{studio}}" for c in ["red", "teal", "ochre"]]
    assert sorted(submitted_prompts(emu)) == sorted(expected)
    assert emu.counters()["submits_accepted"] == 3
    shots = shell.user_ns["shots"]
    assert [im.info["prompt"] for im in shots] == expected  # item order, filled prompts
    assert [im.provenance["item"] for im in shots] == [0, 1, 2]
    assert all("--each colours" in im.info["label"] for im in shots)

    [area] = outputs(shell)
    seen = visible(area["text/html"])
    assert seen.count("3 of 3 done") == 1 and "task " not in seen.split("3 of 3 done")[1].split("\n")[0]
    assert area["text/html"].count("data:image/") == 3  # thumbnails in one grid
    assert "--each colours: 3 items" in seen


def test_each_over_dicts_and_a_dataframe_fills_columns(shell, emu):
    shell.user_ns["rows"] = [{"name": "teapot", "finish": "matte"}, {"name": "vase", "finish": "glossy"}]
    shell.run_cell_magic("qimage", "-o shots --each rows -n 2", "a {finish} {name}, product photo")
    assert sorted(submitted_prompts(emu)) == ["a glossy vase, product photo", "a matte teapot, product photo"]
    assert [im.info["prompt"] for im in shell.user_ns["shots"]] == ["a matte teapot, product photo"] * 2 + [
        "a glossy vase, product photo"
    ] * 2
    pandas = pytest.importorskip("pandas")
    shell.user_ns["df"] = pandas.DataFrame({"product": ["lamp", "chair"], "price": [19.5, 120.0]})
    shell.run_cell_magic("qimage", "-o shots --each df", "a {product} priced {price:.0f} dollars")
    assert "a lamp priced 20 dollars" in submitted_prompts(emu)
    assert "a chair priced 120 dollars" in submitted_prompts(emu)
    assert emu.counters()["submits_accepted"] == 4


def test_a_missing_field_or_a_bad_variable_submits_nothing(shell, emu):
    shell.user_ns["rows"] = [{"name": "teapot", "colour": "red"}, {"name": "vase"}]
    with pytest.raises(UsageError, match=r"--each rows: item 1 has no field 'colour'; its fields: name$"):
        shell.run_cell_magic("qimage", "--each rows", "a {colour} {name}")
    with pytest.raises(UsageError, match="no variable named products"):
        shell.run_cell_magic("qimage", "--each products", "a {}")
    shell.user_ns["n"] = 5
    with pytest.raises(UsageError, match="--each n is a int: pass a list or tuple of strings"):
        shell.run_cell_magic("qimage", "--each n", "a {}")
    shell.user_ns["colours"] = ["red", ""]
    with pytest.raises(UsageError, match=re.escape("holds strings: {} is the whole item; it has no field {name}")):
        shell.run_cell_magic("qimage", "--each colours", "a {name}")
    with pytest.raises(UsageError, match="lone brace"):
        shell.run_cell_magic("qimage", "--each colours", "a {} }")
    with pytest.raises(UsageError, match="every item would get the same prompt"):
        shell.run_cell_magic("qimage", "--each colours", "a cup")
    shell.user_ns["colours"] = ["red", "   "]
    with pytest.raises(UsageError, match="--each colours: item 1: prompt"):
        shell.run_cell_magic("qimage", "--each colours", "{}")
    assert emu.counters()["submits_accepted"] == 0


def test_dry_run_shows_the_plan_and_cost_and_sends_nothing(shell, emu, capsys):
    shell.user_ns["colours"] = ["red", "teal", "ochre"]
    shell.run_cell_magic("qimage", "--each colours --size 1:1,16:9 --dry-run", "a {} cup")
    said = capsys.readouterr().out
    assert said.startswith("dry run, nothing sent: 6 generations, 6 images, about $0.036")
    assert "a teal cup" in said
    assert emu.counters()["submits_accepted"] == 0 and "qimages" not in shell.user_ns


def test_a_cap_below_the_estimate_submits_nothing_and_a_cap_above_runs(shell, emu):
    shell.user_ns["colours"] = ["red", "teal", "ochre"]
    with pytest.raises(UsageError, match=r"the estimate is \$0\.018 for 3 generations .* over --max-cost \$0\.01"):
        shell.run_cell_magic("qimage", "--each colours --max-cost 0.01", "a {} cup")
    assert emu.counters()["submits_accepted"] == 0
    with pytest.raises(UsageError, match="--max-cost 'lots' is not an amount of money"):
        shell.run_cell_magic("qimage", "--each colours --max-cost lots", "a {} cup")
    shell.run_cell_magic("qimage", "--each colours --max-cost $0.05", "a {} cup")
    assert emu.counters()["submits_accepted"] == 3


def test_a_rerun_of_an_each_cell_is_served_from_the_journal(shell, emu):
    shell.user_ns["colours"] = ["red", "teal"]
    shell.run_cell_magic("qimage", "-o shots --each colours", "a {} bowl")
    shell.run_cell_magic("qimage", "-o shots --each colours", "a {} bowl")
    assert emu.counters()["submits_accepted"] == 2
    seen = visible(outputs(shell)[-1]["text/html"])
    assert "2 of 2 done (2 from the journal" in seen


def test_each_in_the_background_binds_when_done(shell, emu):
    shell.user_ns["colours"] = ["red", "teal"]
    shell.run_cell_magic("qimage", "-o shots --each colours --background", "a {} jug")
    shell.magics_manager.registry["QImageMagics"]._join_background(30)
    assert [im.info["prompt"] for im in shell.user_ns["shots"]] == ["a red jug", "a teal jug"]
