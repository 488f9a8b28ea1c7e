"""Issue 21 through a real InteractiveShell: ``--model qwen-image-3.0`` with no size, ``--param``,
a local ``--ref`` sent inline, ``%qimage models``, ``%qimage config`` naming the region and why,
and ``%qimage login dashscope REGION``."""

from __future__ import annotations

import json

import pytest
from IPython.core.error import UsageError
from PIL import Image
from test_magic_providers import dashscope_jobs, session  # noqa: F401  (the fixture)
from test_magics import shell  # noqa: F401  (the fixture)


def test_a_3_0_cell_with_no_size_lets_the_model_choose_and_params_reach_the_host(shell, session, capsys):  # noqa: F811
    shell.run_line_magic("qimage", "emulator --provider dashscope --latency 0.1")
    emulator = session.emulator_for("dashscope")
    shell.run_cell_magic(
        "qimage", "-o ds --model qwen-image-3.0 --param enable_thinking=false --param prompt_extend_mode=agent",
        "a wide harbour panorama at dusk",
    )
    (image,) = shell.user_ns["ds"]
    assert image.size == (2560, 1440)  # chosen by the model, read back from the answer
    assert image.info["output_size"] == "2560x1440" and image.info["size"] == "auto"
    assert json.loads(image.info["host_params"]) == {"enable_thinking": False, "prompt_extend_mode": "agent"}
    (job,) = dashscope_jobs(emulator)
    assert (job.model, job.size_chosen, job.extend_mode) == ("qwen-image-3.0", True, "agent")


def test_a_local_file_ref_goes_inline_on_dashscope(shell, session, tmp_path):  # noqa: F811
    shell.run_line_magic("qimage", "emulator --provider dashscope --latency 0.1")
    emulator = session.emulator_for("dashscope")
    path = tmp_path / "photo.png"
    Image.new("RGB", (600, 400), "olive").save(path)
    shell.run_cell_magic("qimage", f"-o ds --model qwen-image-3.0-pro --ref {path}", "make it snow")
    (job,) = dashscope_jobs(emulator)
    assert job.images[0].startswith("data:image/png;base64,")
    assert shell.user_ns["ds"][0].size[0] > shell.user_ns["ds"][0].size[1]  # the reference's 3:2 kept


def test_a_bad_param_is_one_usage_line_and_a_known_models_rules_still_hold(shell, session):  # noqa: F811
    shell.run_line_magic("qimage", "emulator --provider dashscope --latency 0.1")
    with pytest.raises(UsageError, match="not NAME=VALUE"):
        shell.run_cell_magic("qimage", "--param justaword", "a cat")
    with pytest.raises(UsageError, match=r"Qwen Image 3\.0 parameter"):
        shell.run_cell_magic("qimage", "--model qwen-image-2.0 --param prompt_extend_mode=direct", "a cat")
    assert dashscope_jobs(session.emulator_for("dashscope")) == []


def test_models_lists_3_0_and_config_names_the_region_and_why(shell, session, monkeypatch, capsys):  # noqa: F811
    shell.run_line_magic("qimage", "models --provider dashscope")
    printed = capsys.readouterr().out
    assert "qwen-image-3.0" in printed and "qwen-image-3.0-pro" in printed
    monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-ds-from-env-0001")
    monkeypatch.setenv("QIMAGE_PROVIDER", "dashscope")
    shell.run_line_magic("qimage", "config")
    printed = capsys.readouterr().out
    assert "https://dashscope-intl.aliyuncs.com/api/v1 (default: Singapore, the international endpoint" in printed
    monkeypatch.setenv("DASHSCOPE_API_REGION", "eu-central-1")
    monkeypatch.setenv("DASHSCOPE_WORKSPACE_ID", "ws-9f")
    shell.run_line_magic("qimage", "config")
    printed = capsys.readouterr().out
    assert ("https://ws-9f.eu-central-1.maas.aliyuncs.com/api/v1 ($DASHSCOPE_API_REGION=eu-central-1 (Frankfurt) "
            "with $DASHSCOPE_WORKSPACE_ID)") in printed


def test_login_dashscope_takes_a_region_and_never_echoes_what_it_refuses(shell, session, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "sk-dashscope-typed-0002")
    shell.run_line_magic("qimage", "login dashscope beijing")
    assert "using Alibaba Model Studio (DashScope) at https://dashscope.aliyuncs.com/api/v1" in capsys.readouterr().out
    assert session.base_url_source("dashscope") == "%qimage login beijing"
    shell.run_line_magic("qimage", "login dashscope us-east-1 --workspace ws-77")
    assert session.base_url_for("dashscope") == "https://ws-77.us-east-1.maas.aliyuncs.com/api/v1"
    for line in ("login dashscope sk-pasted-here-0003", "login dashscope us-east-1 --workspace evil.com/x#"):
        with pytest.raises(UsageError) as caught:
            shell.run_line_magic("qimage", line)
        assert "sk-pasted" not in str(caught.value) and "evil.com" not in str(caught.value)


def test_an_interrupt_cancels_a_queued_dashscope_task_on_the_host(shell, session, capsys):  # noqa: F811
    from test_magics import user_sees

    emulator = session.start_emulator("dashscope", latency=3.0, jitter=0.0, pickup=0.95)

    def hook(data):
        if "queued" in data.get("text/plain", ""):
            shell.display_pub.hook = None
            raise KeyboardInterrupt  # while the task waits in the host's queue

    shell.display_pub.hook = hook
    shell.run_cell_magic("qimage", "-o ds --provider dashscope --model qwen-image-plus", "a kite over the dunes")
    everything = user_sees(shell, capsys)
    assert "the host cancelled it; nothing is billed" in everything, everything
    assert emulator.counters()["tasks_by_status"] == {"CANCELED": 1}
    assert emulator.counters()["generations_billed"] == 0


def test_a_generated_image_goes_by_url_while_it_lives_and_inline_once_it_expired(shell, session):  # noqa: F811
    shell.run_line_magic("qimage", "emulator --provider dashscope --latency 0.1")
    emulator = session.emulator_for("dashscope")
    shell.run_cell_magic("qimage", "-o ds --model qwen-image-3.0 --size 1024x768", "a teapot")
    first = shell.user_ns["ds"][0]
    assert int(first.info["expires_at"]) > 0  # read from the signed URL's Expires
    shell.run_cell_magic("qimage", "-o edit --model qwen-image-3.0 --ref ds[0]", "make it green")
    shell.run_cell_magic("qimage", "-o edit --model qwen-image-3.0-pro --ref ds[0]", "make it red")
    first.info["expires_at"] = "1"  # as if a day had passed: the CDN would refuse its URL now
    shell.run_cell_magic("qimage", "-o edit --model qwen-image-3.0 --ref ds[0] --new", "make it blue")
    jobs = dashscope_jobs(emulator)
    assert jobs[1].images == (first.info["source_url"],) and jobs[2].images == (first.info["source_url"],)
    assert jobs[3].images[0].startswith("data:image/png;base64,")
