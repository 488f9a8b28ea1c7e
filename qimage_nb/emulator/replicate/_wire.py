"""What Replicate's predictions API accepts and answers for the Qwen Image models: the models, their
input schemas, the prediction object, RFC 7807 problem answers.

Written from shared/PROVIDERS.md sections 3 and 5, with the official ``replicate`` 1.0.7 read for
what the sheet leaves open (which fields its Prediction model requires); no code taken from it.
Plain data and functions: the handler owns the routes, timing and faults.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from .._messages import Response, json_response

SEED_MAX = 2_147_483_647
PIXELS_MIN, PIXELS_MAX = 512 * 512, 2048 * 2048
WAIT_MAX = 60  # Prefer: wait holds at most 60 s
RETENTION_SECONDS = 3600  # API inputs, outputs, files and logs are deleted after an hour
PREDICTIONS = "/v1/predictions"
MODEL_PREDICTIONS = re.compile(r"^/v1/models/([^/]+)/([^/]+)/predictions$")
PREDICTION = re.compile(r"^/v1/predictions/([a-z0-9]+)(/cancel)?$")
_SIZE = re.compile(r"^(\d{2,5})\*(\d{2,5})$")
_WAIT = re.compile(r"^wait(?:=(\d+))?$")

# Pixels for an aspect ratio (Replicate does not publish them; the seed's 1K table, plus 2:1 and 1:2).
ASPECT_PIXELS = {
    "1:1": (1024, 1024), "16:9": (1280, 720), "9:16": (720, 1280), "4:3": (1152, 864),
    "3:4": (864, 1152), "3:2": (1248, 832), "2:3": (832, 1248), "2:1": (1440, 720), "1:2": (720, 1440),
}  # fmt: skip
_RATIOS_2 = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
_RATIOS_3 = (*_RATIOS_2, "2:1", "1:2")


@dataclass(frozen=True)
class Model:
    """One Qwen Image model on Replicate and its published input schema."""

    owner: str
    name: str
    label: str  # what the picture says made it
    sized: bool  # takes size "W*H" (qwen-image-2-pro) rather than aspect_ratio
    ratios: tuple[str, ...]
    version_prefix: str

    @property
    def id(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def version(self) -> str:
        # A stable 64-hex version id starting with the published prefix (PROVIDERS.md 3).
        tail = hashlib.sha256(self.id.encode()).hexdigest()
        return (self.version_prefix + tail)[:64]


MODELS = {
    model.id: model
    for model in (
        Model("qwen", "qwen-image-2", "qwen-image-2.0", False, _RATIOS_2, "266e594f"),
        Model("qwen", "qwen-image-2-pro", "qwen-image-2.0-pro", True, (), "23a89744"),
        Model("alibaba", "qwen-image-3", "qwen-image-3.0", False, _RATIOS_3, "3a1b0c00"),
        Model("alibaba", "qwen-image-3-pro", "qwen-image-3.0-pro", False, _RATIOS_3, "3a1b0c01"),
    )
}


@dataclass(frozen=True)
class Job:
    model: Model
    input: dict[str, Any]
    prompt: str
    width: int
    height: int
    seed: int | None
    image: str | None


class Invalid(Exception):
    """Input validation failed: Replicate's 422 with ``invalid_fields``."""

    def __init__(self, fields: list[dict[str, str]]) -> None:
        super().__init__(fields[0]["description"])
        self.fields = fields


def _field(name: str, kind: str, description: str) -> dict[str, str]:
    return {"type": kind, "field": f"input.{name}" if name else "input", "description": description}


def parse(body: bytes, model: Model, size_of: Any) -> Job:
    """The model's reading of ``{"input": {...}}``; :class:`Invalid` lists the fields it refuses.
    Inputs the schema does not name are ignored, as Cog does."""
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise Invalid([_field("", "invalid_json", "the request body is not valid JSON")]) from None
    data = payload.get("input") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise Invalid([_field("", "required", "input is required and must be an object")])
    problems: list[dict[str, str]] = []
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append(_field("prompt", "required", "prompt is required"))
    negative = data.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        problems.append(_field("negative_prompt", "invalid_type", "Invalid type. Expected: string"))
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        problems.append(_field("seed", "number_range", f"Must be between 0 and {SEED_MAX}"))
        seed = None
    for flag in ("enable_prompt_expansion", "match_input_image"):
        if flag in data and not isinstance(data[flag], bool):
            problems.append(_field(flag, "invalid_type", "Invalid type. Expected: boolean"))
    image = data.get("image")
    if image is not None and (not isinstance(image, str) or not image.startswith(("http://", "https://", "data:"))):
        problems.append(_field("image", "format", "Does not match format 'uri'"))
        image = None
    width, height = _pixels(data, model, image, size_of, problems)
    if problems:
        raise Invalid(problems)
    assert isinstance(prompt, str)
    return Job(model, dict(data), prompt, width, height, seed, image)


def _pixels(data: dict[str, Any], model: Model, image: str | None, size_of: Any,
            problems: list[dict[str, str]]) -> tuple[int, int]:
    if model.sized:
        size = data.get("size", "1024*1024")
        match = _SIZE.match(size) if isinstance(size, str) else None
        if match is None:
            problems.append(_field("size", "format", 'size must be "WIDTH*HEIGHT", e.g. "1024*1024"'))
            return 1024, 1024
        width, height = int(match.group(1)), int(match.group(2))
        if not PIXELS_MIN <= width * height <= PIXELS_MAX:
            problems.append(_field("size", "value", "size must have between 512*512 and 2048*2048 pixels"))
            return 1024, 1024
        return width, height
    if data.get("match_input_image") and image is not None:
        return size_of(image) or ASPECT_PIXELS["1:1"]
    ratio = data.get("aspect_ratio", "1:1")
    if ratio not in model.ratios:
        allowed = ", ".join(model.ratios)
        problems.append(_field("aspect_ratio", "enum", f"aspect_ratio must be one of the following: {allowed}"))
        return ASPECT_PIXELS["1:1"]
    return ASPECT_PIXELS[ratio]


def prefer_wait(header: str) -> float | None:
    """Seconds a ``Prefer`` header asks the create call to hold (``wait`` = 60, ``wait=n``), else None."""
    for part in header.split(","):
        match = _WAIT.match(part.strip().lower())
        if match:
            asked = int(match.group(1)) if match.group(1) else WAIT_MAX
            return float(max(1, min(WAIT_MAX, asked)))
    return None


def iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall * 1e6) % 1000000:06d}Z"


def problem(status: int, title: str, detail: str, headers: list[tuple[str, str]] | None = None,
            **extra: Any) -> Response:
    """An RFC 7807 problem answer, as Replicate sends its errors."""
    body = {"type": f"https://replicate.com/docs/reference/http#{status}", "title": title, "status": status,
            "detail": detail, **extra}
    response = json_response(status, body, headers)
    response.headers[0] = ("Content-Type", "application/problem+json")
    return response


def invalid(fields: list[dict[str, str]]) -> Response:
    detail = "".join(f"- {item['field']}: {item['description']}\n" for item in fields)
    return problem(422, "Input validation failed", detail, invalid_fields=fields)
