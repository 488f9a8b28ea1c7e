"""The contract module: validation before traffic, and one parser per endpoint for every envelope."""

from __future__ import annotations

import json

import pytest

from qimage_nb._contract import (
    MODELS,
    PIXEL_SIZES,
    RATIOS,
    RESOLUTIONS,
    GenerationRequest,
    parse_balance,
    parse_error,
    parse_submit,
    parse_task,
    parse_upload,
)
from qimage_nb._exceptions import ProtocolError, ValidationError

# --- the pixel table, straight from API.md --------------------------------------------------

API_TABLE = """
1:1 1024x1024 2048x2048
4:3 1152x864 2048x1536
3:4 864x1152 1536x2048
16:9 1280x720 2048x1152
9:16 720x1280 1152x2048
3:2 1248x832 2048x1360
2:3 832x1248 1360x2048
"""


def test_pixel_table_matches_api_md():
    rows = [line.split() for line in API_TABLE.strip().splitlines()]
    expected = {}
    for ratio, one_k, two_k in rows:
        expected[(ratio, "1K")] = tuple(int(v) for v in one_k.split("x"))
        expected[(ratio, "2K")] = tuple(int(v) for v in two_k.split("x"))
    assert expected == PIXEL_SIZES
    assert len(PIXEL_SIZES) == len(RATIOS) * len(RESOLUTIONS) == 14


def test_defaults_and_body():
    request = GenerationRequest.create("a red fox")
    assert request.to_json() == {"model": "qwen-image-2.0", "prompt": "a red fox", "size": "1:1", "resolution": "1K", "n": 1}
    assert request.pixel_size == (1024, 1024)


def test_full_body_and_normalisation():
    request = GenerationRequest.create(
        "海边的灯塔 {x} $HOME \"quoted\"",
        model="QWEN-IMAGE-2.0-PRO",
        size="16:9",
        resolution="2k",
        n=6,
        negative_prompt="blurry",
        image_urls=["https://example.org/a.png"],
    )
    body = request.to_json()
    assert body["prompt"] == "海边的灯塔 {x} $HOME \"quoted\""
    assert body["model"] == "qwen-image-2.0-pro"
    assert body["resolution"] == "2K"
    assert body["image_urls"] == ["https://example.org/a.png"]
    assert body["negative_prompt"] == "blurry"
    assert request.pixel_size == (2048, 1152)


def test_fingerprint_is_stable_and_distinguishes():
    a = GenerationRequest.create("cat", size="4:3")
    b = GenerationRequest.create("cat", size="4:3", model="Qwen-Image-2.0")
    c = GenerationRequest.create("cat", size="4:3", n=2)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert GenerationRequest.from_json(c.to_json()) == c


BAD_INPUTS = [
    ({"prompt": ""}, "prompt", "empty"),
    ({"prompt": "   \n"}, "prompt", "empty"),
    ({"prompt": None}, "prompt", "required"),
    ({"prompt": 42}, "prompt", "must be text"),
    ({"prompt": "x" * 801}, "prompt", "801 characters"),
    ({"negative_prompt": "y" * 501}, "negative_prompt", "at most 500"),
    ({"negative_prompt": 3}, "negative_prompt", "must be text"),
    ({"n": 0}, "n", "1 to 6"),
    ({"n": 7}, "n", "1 to 6"),
    ({"n": "3"}, "n", "whole number"),
    ({"n": True}, "n", "whole number"),
    ({"n": 2.0}, "n", "whole number"),
    ({"size": "5:4"}, "size", "one of 1:1"),
    ({"size": 169}, "size", "must be one of"),
    ({"resolution": "4K"}, "resolution", "1K, 2K"),
    ({"model": "qwen-image-2"}, "model", "did you mean"),
    ({"model": "dall-e-3"}, "model", "qwen-image-2.0, qwen-image-2.0-pro"),
    ({"image_urls": "https://example.org/a.png"}, "image_urls", "must be a list"),
    ({"image_urls": ["https://e.org/1.png"] * 4}, "image_urls", "1 to 3"),
    ({"image_urls": ["data:image/png;base64,AAAA"]}, "image_urls[0]", "data: URI"),
    ({"image_urls": ["/home/me/cat.png"]}, "image_urls[0]", "local path"),
    ({"image_urls": ["C:\\pics\\cat.png"]}, "image_urls[0]", "local path"),
    ({"image_urls": ["file:///tmp/cat.png"]}, "image_urls[0]", "local path"),
    ({"image_urls": ["ftp://example.org/cat.png"]}, "image_urls[0]", "ftp: scheme"),
    ({"image_urls": ["https://"]}, "image_urls[0]", "no host"),
    ({"image_urls": [b"https://e.org/x.png"]}, "image_urls[0]", "bytes"),
    ({"image_urls": [""]}, "image_urls[0]", "empty"),
]


@pytest.mark.parametrize(("fields", "field", "fragment"), BAD_INPUTS)
def test_bad_inputs_raise_one_clear_line(fields, field, fragment):
    kwargs = {"prompt": "a cat", **fields}
    prompt = kwargs.pop("prompt")
    with pytest.raises(ValidationError) as info:
        GenerationRequest.create(prompt, **kwargs)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.field == field
    assert fragment in str(error)
    assert "\n" not in str(error)


def test_local_reference_error_points_to_upload():
    with pytest.raises(ValidationError, match=r"public http\(s\) URL.*upload"):
        GenerationRequest.create("x", image_urls=["data:image/png;base64,AAAA"])


# --- submit envelopes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"code": 200, "data": [{"status": "submitted", "task_id": "task_A"}]},
        {"code": 200, "data": {"task_id": "task_A", "status": "submitted"}},
        {"code": 200, "data": {"id": "task_A", "status": "submitted"}},
        {"code": "success", "data": [{"status": "submitted", "task_id": "task_A"}]},
        {"code": "success", "data": {"id": "task_A"}, "extra": {"ignored": True}},
    ],
)
def test_parse_submit_accepts_every_variant(payload):
    assert parse_submit(payload) == "task_A"


@pytest.mark.parametrize(
    "payload",
    [
        {"code": 200, "data": []},
        {"code": 200, "data": [{"status": "submitted"}]},
        {"code": 500, "data": [{"task_id": "task_A"}], "message": "boom"},
        ["task_A"],
        "task_A",
    ],
)
def test_parse_submit_rejects_broken_answers(payload):
    with pytest.raises(ProtocolError):
        parse_submit(payload)


# --- task status -----------------------------------------------------------------------------


def _task(**data):
    return {"code": 200, "data": {"id": "task_B", **data}}


def test_parse_task_documented_shape():
    status = parse_task(
        _task(
            status="completed", progress=100,
            result={"images": [{"url": ["https://cdn.example/0.png"], "expires_at": 1780493458}]},
            created=1780407010, completed=1780407058, estimated_time=60, actual_time=48, cost=0.006,
        )
    )
    assert status.task_id == "task_B"
    assert status.status == "completed" and status.terminal
    assert status.urls == ("https://cdn.example/0.png",)
    assert status.expires_at == 1780493458
    assert (status.estimated_time, status.actual_time, status.cost) == (60, 48, 0.006)


def test_parse_task_url_as_string_and_order_kept():
    one_item = parse_task(_task(status="completed", result={"images": [{"url": ["u1", "u2", "u3"]}]}))
    per_item = parse_task(_task(status="completed", result={"images": [{"url": "u1"}, {"url": ["u2"]}, {"url": "u3"}]}))
    assert one_item.urls == per_item.urls == ("u1", "u2", "u3")


@pytest.mark.parametrize("status", ["pending", "processing", "failed", "cancelled"])
def test_parse_task_known_statuses(status):
    parsed = parse_task(_task(status=status, progress=40, credits_cost=3, brand_new_field=[1, 2]))
    assert parsed.status == status
    assert parsed.cost == 3


def test_parse_task_progress_is_clamped_and_tolerant():
    assert parse_task(_task(status="processing", progress=150)).progress == 100
    assert parse_task(_task(status="processing", progress="35%")).progress == 35
    assert parse_task(_task(status="processing")).progress == 0


def test_parse_task_failure_carries_reason():
    parsed = parse_task(
        _task(status="failed", error={"code": 400, "message": "Input data may contain inappropriate content", "type": "x"})
    )
    assert parsed.error.message == "Input data may contain inappropriate content"
    assert parsed.error.code == 400


def test_parse_task_rejects_unknown_status_loudly():
    with pytest.raises(ProtocolError, match=r"'paused'.*not one the contract knows") as info:
        parse_task(_task(status="paused"))
    assert info.value.task_id == "task_B"


def test_parse_task_completed_without_images_is_an_error():
    with pytest.raises(ProtocolError, match="no image URL"):
        parse_task(_task(status="completed", result={"images": []}))


# --- upload, balance, errors -----------------------------------------------------------------


def test_parse_upload_and_balance():
    upload = parse_upload(
        {"url": "https://upload.cdn.example/f/image/1-a-photo.jpg", "filename": "photo.jpg",
         "content_type": "image/jpeg", "bytes": 235680, "created_at": 1743436800}
    )
    assert upload.url.endswith("photo.jpg") and upload.bytes == 235680
    balance = parse_balance(
        {"success": True, "remain_balance": 12.5, "remain_credits": 1250, "used_balance": 3.1,
         "used_credits": 310, "unlimited_quota": False}
    )
    assert balance.remain_balance == 12.5 and balance.remain_credits == 1250
    with pytest.raises(ProtocolError):
        parse_upload({"url": "ftp://x"})


def test_parse_error_json_and_html():
    body = json.dumps({"error": {"code": 400, "message": "prompt too long", "type": "invalid_request_error", "param": "prompt"}})
    info = parse_error(400, "application/json", body.encode())
    assert (info.message, info.type, info.param) == ("prompt too long", "invalid_request_error", "prompt")
    html = parse_error(502, "text/html", b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head></html>")
    assert html.html and "502 Bad Gateway" in html.message and "\n" not in html.message
    junk = parse_error(500, "text/plain", b"oops")
    assert junk.message == "HTTP 500: oops"


def test_models_are_the_documented_two():
    assert MODELS == ("qwen-image-2.0", "qwen-image-2.0-pro")
