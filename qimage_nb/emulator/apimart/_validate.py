"""Submit validation, the emulator's own (written from API.md, not borrowed from the client: an
independent server is what catches a client that validates wrongly).

The contract's models get every rule of section 1; the other listed models (``_catalogue``) only the
universal ones. How a refusal is worded depends on the deployment: the documented 400, or the 500
``build_request_failed`` that section 7.3 says the provider really answers.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from ..._contract import (
    MODELS,
    N_MAX,
    N_MIN,
    NEGATIVE_PROMPT_MAX,
    PIXEL_SIZES,
    PROMPT_MAX,
    RATIOS,
    REFS_MAX,
    REFS_MIN,
    RESOLUTIONS,
)
from .._faults import Faults
from .._messages import Response, error_response
from ._catalogue import QWEN3_N_MAX, free_pixels, is_free_model, is_qwen3, qwen3_pixels


class Invalid(Exception):
    """A refused submit; :meth:`response` words it for the deployment."""

    def __init__(self, status: int, message: str, type_: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param

    def response(self, faults: Faults) -> Response:
        if self.status == 400 and faults.bad_params_answer_500:
            # What the provider really answers (section 7.3): a 500 that only names the field.
            what = self.param or "request body"
            return error_response(500, f"build_request_failed: invalid {what}", "server_error", self.param,
                                  code="build_request_failed")
        return error_response(self.status, self.message, self.type, self.param)


def _bad(message: str, param: str | None = None) -> Invalid:
    return Invalid(400, message, "invalid_request_error", param)


def validate_submit(body: bytes, faults: Faults) -> tuple[dict[str, Any], tuple[int, int]]:
    """The accepted request's fields and the pixel size its images render at; raises :class:`Invalid`
    naming the first bad field in ``param``."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _bad("The request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _bad("The request body must be a JSON object")
    model = payload.get("model")
    if model is None:
        raise _bad("model is required", "model")
    if not isinstance(model, str):
        raise _bad("model must be a string", "model")
    qwen3 = is_qwen3(model, faults)
    free = is_free_model(model, faults) and not qwen3
    if model not in MODELS and not free and not qwen3:
        raise Invalid(503, f"The model {model!r} does not exist or is not available", "model_not_found", "model")
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad("prompt is required: 1 to 800 characters", "prompt")
    if len(prompt) > PROMPT_MAX:
        raise _bad(f"prompt is too long: {len(prompt)} characters, at most {PROMPT_MAX}", "prompt")
    negative = payload.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise _bad("negative_prompt must be a string", "negative_prompt")
    if not free and negative is not None and len(negative) > NEGATIVE_PROMPT_MAX:
        raise _bad(f"negative_prompt is too long: at most {NEGATIVE_PROMPT_MAX} characters", "negative_prompt")
    size = payload.get("size", RATIOS[0])
    resolution = payload.get("resolution", RESOLUTIONS[0])
    if qwen3:
        if size not in RATIOS:
            raise _bad(f"size must be one of {', '.join(RATIOS)}", "size")
        if resolution not in RESOLUTIONS:
            raise _bad(f"resolution must be one of {', '.join(RESOLUTIONS)}", "resolution")
        pixels = qwen3_pixels(size, resolution) or (1328, 1328)
    elif free:
        pixels = free_pixels(size) if isinstance(size, str) else None
        if pixels is None:
            raise _bad("size must be an aspect ratio W:H, at most 4:1", "size")
        resolution = resolution if isinstance(resolution, str) else RESOLUTIONS[0]  # its own tiers: not ours
    else:
        if size not in RATIOS:
            raise _bad(f"size must be one of {', '.join(RATIOS)}", "size")
        if resolution not in RESOLUTIONS:
            raise _bad(f"resolution must be one of {', '.join(RESOLUTIONS)}", "resolution")
        pixels = PIXEL_SIZES[(size, resolution)]
    n = payload.get("n", 1)
    n_max = QWEN3_N_MAX if qwen3 else N_MAX
    if isinstance(n, bool) or not isinstance(n, int) or not N_MIN <= n <= n_max:
        raise _bad(f"n must be an integer from {N_MIN} to {n_max}", "n")
    known = {"model", "prompt", "negative_prompt", "size", "resolution", "n", "image_urls"}
    if qwen3 and set(payload) - known:
        raise _bad(f"unknown parameter {sorted(set(payload) - known)[0]}", sorted(set(payload) - known)[0])
    urls = _reference_urls(payload.get("image_urls"), strict=not free)
    fields = {
        "model": model,
        "prompt": prompt,
        "negative_prompt": negative,
        "size": size,
        "resolution": resolution,
        "n": n,
        "image_urls": urls,
    }
    return fields, pixels


def _reference_urls(urls: Any, *, strict: bool) -> list[str]:
    if urls is None:
        return []
    if not isinstance(urls, list) or not (REFS_MIN <= len(urls) <= REFS_MAX if strict else urls):
        raise _bad(f"image_urls must be a list of {REFS_MIN} to {REFS_MAX} URLs", "image_urls")
    for url in urls:
        if not isinstance(url, str):
            raise _bad("image_urls items must be strings", "image_urls")
        if url.strip()[:5].lower() == "data:":
            raise _bad("base64 / data: URIs are not accepted: pass a public http(s) URL", "image_urls")
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise _bad(f"image_urls must be public http(s) URLs, got {url[:60]!r}", "image_urls")
    return [u.strip() for u in urls]
