"""Resume and history: resume binds to the cell's name, pending says when each status was seen,
an unknown task id is one line that writes nothing."""

from __future__ import annotations

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell

from qimage_nb import NotFoundError
from qimage_nb.notebook import _session
from qimage_nb.notebook._magics import QImageCellError, QImageMagics
from qimage_nb.notebook._session import get_session


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    saved = sh.display_pub
    sh.display_pub = CapturingDisplayPublisher()
    sh.register_magics(QImageMagics)
    yield sh
    sh.display_pub = saved
    for name in ("storm", "calm", "qimages"):
        sh.user_ns.pop(name, None)
    from qimage_nb.core._sync import run_sync

    session = get_session()
    if session._client is not None:
        run_sync(session._client.aclose())
    _session.reset_session()


def test_resume_all_binds_each_task_to_the_name_its_cell_chose(shell):
    emu = get_session().start_emulator(latency=1.5, jitter=0.0)
    for name, prompt in (("storm", "a storm at sea"), ("calm", "a calm lake")):
        with pytest.raises(QImageCellError, match="resume"):
            shell.run_cell_magic("qimage", f"-o {name} --timeout 0.2", prompt)
    assert "storm" not in shell.user_ns and "calm" not in shell.user_ns
    shell.run_line_magic("qimage", "pending")
    table = shell.display_pub.outputs[-1]["data"]["text/plain"]
    assert table.count(", last seen ") == 2 and "just now" in table
    shell.run_line_magic("qimage", "resume --all")
    assert [im.info["prompt"] for im in shell.user_ns["storm"]] == ["a storm at sea"]
    assert [im.info["prompt"] for im in shell.user_ns["calm"]] == ["a calm lake"]
    assert "qimages" not in shell.user_ns
    assert emu.counters()["submits_accepted"] == 2


def test_resume_of_one_task_binds_to_its_cell_name_unless_o_says_otherwise(shell):
    get_session().start_emulator(latency=1.0, jitter=0.0)
    with pytest.raises(QImageCellError) as info:
        shell.run_cell_magic("qimage", "-o storm --timeout 0.2", "a storm at dusk")
    task_id = info.value.task_id
    shell.run_line_magic("qimage", f"resume {task_id}")
    assert shell.user_ns["storm"][0].info["task_id"] == task_id
    shell.run_line_magic("qimage", f"resume {task_id} -o calm")
    assert shell.user_ns["calm"][0].info["task_id"] == task_id


def test_an_unknown_task_id_is_the_same_one_line_each_time_and_writes_nothing(shell):
    emu = get_session().start_emulator(latency=0.05, jitter=0.0)
    store = get_session().client().store
    before = store.history(100)
    lines = []
    for _ in range(2):
        result = shell.run_cell("%qimage resume nonsense")
        assert isinstance(result.error_in_exec, QImageCellError) and result.error_in_exec.kind == NotFoundError.__name__
        lines.append(str(result.error_in_exec))
    assert lines[0] == lines[1] and "\n" not in lines[0]
    assert lines[0].startswith("nonsense is not a task of") and "nothing was resumed or recorded" in lines[0]
    assert store.history(100) == before == []
    assert emu.counters()["submits_accepted"] == 0
