"""The contract: validation before traffic, and the seed API's parsers for every envelope (API.md 1-7)."""

from __future__ import annotations

import json

import pytest

from qimage_nb._contract import (
    MODELS,
    PIXEL_SIZES,
    RATIOS,
    RESOLUTIONS,
    GenerationRequest,
)
from qimage_nb._exceptions import ProtocolError, ValidationError
from qimage_nb.providers import check, get_provider
from qimage_nb.providers.apimart import (
    error_in_success,
    parse_balance,
    parse_error,
    parse_models,
    parse_submit,
    parse_task,
    parse_upload,
)

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
    ({"size": "5:4"}, "size", "1:1, 4:3"),
    ({"size": 169}, "size", "must be a ratio"),
    ({"resolution": "4K"}, "resolution", "1K, 2K"),
    ({"model": ""}, "model", "must be a model id"),
    ({"seed": -1}, "seed", "0 to 2147483647"),
    ({"seed": 2**31}, "seed", "0 to 2147483647"),
    ({"prompt_extend": "yes"}, "prompt_extend", "True, False or None"),
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


@pytest.mark.parametrize(
    ("model", "fragment"),
    [("qwen-image-2", "did you mean 'qwen-image-2.0'"), ("dall-e-3", "known: qwen-image-2.0, qwen-image-2.0-pro")],
)
def test_a_model_the_seed_api_neither_documents_nor_lists_is_refused_with_the_known_names(model, fragment):
    request = GenerationRequest.create("a cat", model=model)
    with pytest.raises(ValidationError) as info:
        get_provider("apimart").check(request, listed=())
    assert info.value.field == "model" and fragment in str(info.value) and "\n" not in str(info.value)


def test_a_listed_model_passes_with_the_universal_checks_only():
    request = GenerationRequest.create("a cat", model="qwen-image-4.0", size="21:9", n=6)
    get_provider("apimart").check(request, listed=["qwen-image-2.0", "qwen-image-4.0"])
    assert request.size == "21:9" and request.pixel_size is None


def test_the_seed_api_refuses_options_it_does_not_document_in_one_line_naming_it():
    # Each refusal names exactly the hosts that take the option.
    takers = {"seed": "dashscope, fal, replicate", "prompt_extend": "dashscope, fal, replicate",
              "watermark": "dashscope"}
    for option, value in (("seed", 7), ("prompt_extend", False), ("watermark", True)):
        request = GenerationRequest.create("a cat", **{option: value})
        with pytest.raises(ValidationError, match=rf"APIMart API does not support {option}.*\({takers[option]}\)"):
            check(get_provider("apimart"), request)
    with pytest.raises(ValidationError, match="ratio and a resolution, not 1024x768"):
        get_provider("apimart").check(GenerationRequest.create("a cat", size="1024x768"))


def test_every_model_a_provider_documents_is_one_the_contract_checks_as_qwen_image():
    from qimage_nb._contract import QWEN_IMAGE_MODELS
    from qimage_nb.providers import all_providers

    for provider in all_providers():
        assert set(provider.models) <= set(QWEN_IMAGE_MODELS), provider


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
    submitted = parse_submit(payload)
    assert submitted.task_id == "task_A" and submitted.result is None
    assert not submitted.confirms_idempotency  # a legacy answer proves nothing about keys


def test_parse_submit_versioned_202_confirms_idempotency_and_replays():
    payload = {"code": 202, "data": {"object": "generation.task", "id": "task_V", "status": "QUEUED"}, "request_id": "r1"}
    fresh = parse_submit(payload, {"x-apimart-response-version": "2026-07-27"})
    assert (fresh.task_id, fresh.confirms_idempotency, fresh.replayed) == ("task_V", True, False)
    replay = parse_submit(payload, {"Idempotency-Replayed": "true"})
    assert replay.confirms_idempotency and replay.replayed


def test_parse_submit_generation_result_is_a_finished_task():
    payload = {"code": 200, "data": {"object": "generation.result", "id": "gen_1", "status": "Completed",
                                     "result": {"images": [{"url": ["https://cdn.example/a.png"], "expires_at": 5}]},
                                     "cost": 0.01}}
    submitted = parse_submit(payload)
    assert submitted.task_id == "gen_1"
    assert submitted.result.status == "completed" and submitted.result.urls == ("https://cdn.example/a.png",)
    assert submitted.result.cost == 0.01 and submitted.result.expires_at == 5


@pytest.mark.parametrize(
    "payload",
    [
        {"code": 200, "data": []},
        {"code": 200, "data": [{"status": "submitted"}]},
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
    assert parsed.credits_cost == 3


@pytest.mark.parametrize(
    ("word", "status", "phase"),
    [
        ("submitted", "pending", "queued"), ("queued", "pending", "queued"), ("PENDING", "pending", "queued"),
        ("in_progress", "processing", "running"), ("Processing", "processing", "running"),
        ("paused", "processing", "running"), ("COMPLETED", "completed", "completed"),
        ("canceled", "cancelled", "cancelled"), ("Failed", "failed", "failed"),
    ],
)
def test_parse_task_reads_every_status_word_of_section_7(word, status, phase):
    extra = {"result": {"images": [{"url": "u"}]}} if status == "completed" else {}
    parsed = parse_task(_task(status=word, cost=0.02, **extra))
    assert (parsed.status, parsed.phase, parsed.raw_status) == (status, phase, word)
    assert parsed.terminal == (status in ("completed", "failed", "cancelled"))
    assert parsed.cost == 0.02


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


def test_parse_task_keeps_string_error_codes_type_and_param():
    parsed = parse_task(_task(status="failed", error={
        "code": "OutputImageSensitiveContentDetected", "message": "blocked", "type": "content_filter", "param": "prompt"}))
    failure = parsed.error
    assert (failure.code, failure.type, failure.param) == ("OutputImageSensitiveContentDetected", "content_filter", "prompt")
    assert "OutputImageSensitiveContentDetected" in failure.message and "blocked" in failure.message
    plain = parse_task(_task(status="failed", error="task_failed: upstream timeout"))
    assert plain.error.message == "task_failed: upstream timeout"


def test_parse_task_without_a_status_word_is_a_protocol_error():
    with pytest.raises(ProtocolError) as info:
        parse_task(_task(progress=3))
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


def test_an_unlimited_quota_is_never_a_negative_balance():
    balance = parse_balance({"success": True, "remain_balance": -1, "used_balance": 2, "unlimited_quota": True})
    assert balance.unlimited_quota and balance.remain_balance is None and balance.remain_credits is None
    assert parse_balance({"success": True, "remain_balance": -1}).unlimited_quota


@pytest.mark.parametrize(
    ("payload", "status", "code", "fragment"),
    [
        ({"code": 400, "error": {"code": 400, "message": "bad size", "type": "invalid_request_error"}}, 400, 400, "bad size"),
        ({"code": 500, "data": [{"task_id": "task_A"}], "message": "boom"}, 500, None, "boom"),
        ({"error": {"code": "content_rejected", "message": "no"}}, 400, "content_rejected", "content_rejected: no"),
        ({"error": "plain words"}, 400, None, "plain words"),
        ({"success": False, "message": "Token Not Found"}, 401, None, "Token Not Found"),
        ({"success": False, "message": "quota exhausted"}, 400, None, "quota exhausted"),
    ],
)
def test_errors_inside_a_200_are_read_as_the_errors_they_are(payload, status, code, fragment):
    found = error_in_success(payload)
    assert found is not None
    assert found[0] == status and found[1].code == code and fragment in found[1].message


def test_ordinary_answers_carry_no_error():
    for payload in ({"code": 200, "data": []}, {"code": "success", "data": {}}, {"success": True, "remain_balance": 1},
                    {"code": 202, "data": {"id": "t"}}, {"data": [{"id": "m"}]}):
        assert error_in_success(payload) is None


def test_parse_models_lists_ids_in_order():
    assert parse_models({"object": "list", "data": [{"id": "qwen-image-2.0"}, {"id": "qwen-image-3.0"}, {"x": 1}]}) == [
        "qwen-image-2.0", "qwen-image-3.0"]
    with pytest.raises(ProtocolError):
        parse_models({"data": "nope"})


def test_parse_error_json_and_html():
    body = json.dumps({"error": {"code": 400, "message": "prompt too long", "type": "invalid_request_error", "param": "prompt"}})
    info = parse_error(400, "application/json", body.encode())
    assert (info.message, info.type, info.param) == ("prompt too long", "invalid_request_error", "prompt")
    html = parse_error(502, "text/html", b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head></html>")
    assert html.html and "502 Bad Gateway" in html.message and "\n" not in html.message
    junk = parse_error(500, "text/plain", b"oops")
    assert junk.message == "HTTP 500: oops"
    coded = parse_error(500, "application/json", json.dumps({"error": {
        "code": "build_request_failed", "message": "build_request_failed: invalid size", "type": "server_error",
        "param": "size"}}).encode())
    assert (coded.code, coded.param, coded.message) == ("build_request_failed", "size", "build_request_failed: invalid size")
    plain = parse_error(400, "application/json", b'{"error": "Invalid task ID"}')
    assert plain.message == "Invalid task ID"


def test_models_are_the_documented_two():
    assert MODELS == ("qwen-image-2.0", "qwen-image-2.0-pro")
