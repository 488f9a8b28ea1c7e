"""What fal's queue accepts and answers for the Qwen Image apps: the apps, their inputs and limits,
the 422 ``detail`` list, the shapes of status and result answers.

Written from shared/PROVIDERS.md sections 2 and 5, with the official ``fal-client`` 1.0.3 read for
what the sheet leaves open (which keys its status parser needs); no code taken from it. Plain data
and functions: the handler owns the routes, timing and faults.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .._messages import Response, json_response

SEED_MAX = 2_147_483_647
NEGATIVE_PROMPT_MAX = 500
EDIT_PROMPT_MAX = 800
IMAGES_MAX = 3
NUM_IMAGES_MAX = 4
PIXELS_MIN, PIXELS_MAX = 512 * 512, 2048 * 2048
OUTPUT_FORMATS = ("png", "jpeg", "webp")
# fal's preset names (the shared image_size enum of its image apps).
PRESETS = {
    "square_hd": (1024, 1024), "square": (512, 512),
    "portrait_4_3": (768, 1024), "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576),
}  # fmt: skip
DEFAULT_PRESET = "square_hd"
# Keepalive comments on the status stream (fal: every 15 s); emulators in tests pass less.
KEEPALIVE_SECONDS = 15.0

REQUESTS_PATH = re.compile(r"^/([^/]+)/([^/]+)/requests/([^/]+)(/status(?:/stream)?|/cancel)?$")


@dataclass(frozen=True)
class App:
    """One fal app serving Qwen Image."""

    id: str  # owner/app[/path], as submitted to
    model: str  # what the picture says made it
    edit: bool
    price_1k: float  # USD per image (fal's pages, via PROVIDERS.md: estimated)
    price_2k: float
    side_max: int  # Qwen Image 3.0 makes one side up to 2560 within the same pixel area


def _apps() -> dict[str, App]:
    apps = [
        App("fal-ai/qwen-image-2/text-to-image", "qwen-image-2.0", False, 0.035, 0.035, 2048),
        App("fal-ai/qwen-image-2/edit", "qwen-image-2.0", True, 0.035, 0.035, 2048),
        App("fal-ai/qwen-image-2/pro/text-to-image", "qwen-image-2.0-pro", False, 0.075, 0.075, 2048),
        App("fal-ai/qwen-image-2/pro/edit", "qwen-image-2.0-pro", True, 0.075, 0.075, 2048),
    ]
    # Qwen Image 3.0 is published under alibaba/, with fal-ai/ as an alias (PROVIDERS.md 5).
    for owner in ("alibaba", "fal-ai"):
        apps.append(App(f"{owner}/qwen-image-3/text-to-image", "qwen-image-3.0", False, 0.04, 0.075, 2560))
        apps.append(App(f"{owner}/qwen-image-3/edit", "qwen-image-3.0", True, 0.04, 0.075, 2560))
    return {app.id: app for app in apps}


APPS = _apps()


@dataclass(frozen=True)
class Job:
    """One accepted input, as the app reads it."""

    app: App
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_images: int
    seed: int | None
    prompt_expansion: bool
    safety_checker: bool
    output_format: str
    image_urls: tuple[str, ...]

    @property
    def price(self) -> float:
        return self.app.price_2k if self.width * self.height > 1536 * 1536 else self.app.price_1k


class Invalid(Exception):
    """The input breaks the app's schema: fal's 422 ``detail`` list (one entry per field)."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(detail[0]["msg"] if detail else "invalid input")
        self.detail = detail


def _entry(field: str | tuple[Any, ...], msg: str, type_: str, value: Any = None, **ctx: Any) -> dict[str, Any]:
    loc = ["body", *(field if isinstance(field, tuple) else (field,))]
    entry: dict[str, Any] = {"loc": loc, "msg": msg, "type": type_}
    if value is not None:
        entry["input"] = value
    if ctx:
        entry["ctx"] = ctx
    return entry


def parse_input(body: bytes, app: App, size_of: Any) -> Job:
    """The app's reading of a submitted body; :class:`Invalid` lists every field it refuses.
    ``size_of(url)`` gives the pixel size of one of this emulator's own images (an edit's default)."""
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise Invalid([_entry((), "Input should be a valid dictionary", "dict_type")]) from None
    if not isinstance(payload, dict):
        raise Invalid([_entry((), "Input should be a valid dictionary", "dict_type")])
    problems: list[dict[str, Any]] = []
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append(_entry("prompt", "Field required" if prompt is None else "Input should be a non-empty string",
                               "missing" if prompt is None else "string_type", prompt))
    elif app.edit and len(prompt) > EDIT_PROMPT_MAX:
        problems.append(_entry("prompt", f"String should have at most {EDIT_PROMPT_MAX} characters",
                               "string_too_long", max_length=EDIT_PROMPT_MAX))
    negative = payload.get("negative_prompt", "")
    if not isinstance(negative, str):
        problems.append(_entry("negative_prompt", "Input should be a valid string", "string_type", negative))
        negative = ""
    elif len(negative) > NEGATIVE_PROMPT_MAX:
        problems.append(_entry("negative_prompt", f"String should have at most {NEGATIVE_PROMPT_MAX} characters",
                               "string_too_long", max_length=NEGATIVE_PROMPT_MAX))
    num = payload.get("num_images", 1)
    if isinstance(num, bool) or not isinstance(num, int):
        problems.append(_entry("num_images", "Input should be a valid integer", "int_type", num))
        num = 1
    elif not 1 <= num <= NUM_IMAGES_MAX:
        word, bound = ("greater than or equal to", 1) if num < 1 else ("less than or equal to", NUM_IMAGES_MAX)
        problems.append(_entry("num_images", f"Input should be {word} {bound}",
                               "greater_than_equal" if num < 1 else "less_than_equal", num,
                               **({"ge": 1} if num < 1 else {"le": NUM_IMAGES_MAX})))
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        problems.append(_entry("seed", f"Input should be an integer from 0 to {SEED_MAX}", "int_range", seed))
        seed = None
    flags = {}
    for name, default in (("enable_prompt_expansion", True), ("enable_safety_checker", True), ("sync_mode", False)):
        value = payload.get(name, default)
        if not isinstance(value, bool):
            problems.append(_entry(name, "Input should be a valid boolean", "bool_type", value))
            value = default
        flags[name] = value
    output_format = payload.get("output_format", "png")
    if output_format not in OUTPUT_FORMATS:
        problems.append(_entry("output_format", "Input should be 'png', 'jpeg' or 'webp'", "enum", output_format,
                               expected="'png', 'jpeg' or 'webp'"))
        output_format = "png"
    urls: tuple[str, ...] = ()
    if app.edit:
        given = payload.get("image_urls")
        if given is None:
            problems.append(_entry("image_urls", "Field required", "missing"))
        elif not isinstance(given, list) or not all(isinstance(u, str) and u.startswith(("http://", "https://", "data:"))
                                                    for u in given):
            problems.append(_entry("image_urls", "Input should be a list of image URLs", "list_type", given))
        elif not 1 <= len(given) <= IMAGES_MAX:
            problems.append(_entry("image_urls", f"List should have 1 to {IMAGES_MAX} items", "too_long"
                                   if given else "too_short", max_length=IMAGES_MAX))
        else:
            urls = tuple(given)
    width, height = _size(payload, app, urls, size_of, problems)
    if problems:
        raise Invalid(problems)
    assert isinstance(prompt, str)
    return Job(app, prompt, negative, width, height, num, seed, flags["enable_prompt_expansion"],
               flags["enable_safety_checker"], output_format, urls)


def _size(payload: dict[str, Any], app: App, urls: tuple[str, ...], size_of: Any,
          problems: list[dict[str, Any]]) -> tuple[int, int]:
    size = payload.get("image_size")
    if size is None:
        if app.edit and urls:
            return size_of(urls[-1]) or PRESETS[DEFAULT_PRESET]  # the last input's size
        return PRESETS[DEFAULT_PRESET]
    if isinstance(size, str):
        if size in PRESETS:
            return PRESETS[size]
        problems.append(_entry("image_size", f"Input should be one of {', '.join(PRESETS)} or an object "
                               "with width and height", "enum", size))
        return PRESETS[DEFAULT_PRESET]
    if isinstance(size, dict):
        width, height = size.get("width"), size.get("height")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
            problems.append(_entry(("image_size", "width"), "width and height should be integers", "int_type", size))
            return PRESETS[DEFAULT_PRESET]
        assert isinstance(width, int) and isinstance(height, int)
        if not PIXELS_MIN <= width * height <= PIXELS_MAX or max(width, height) > app.side_max or min(width, height) < 1:
            problems.append(_entry("image_size", f"The image size should have between {PIXELS_MIN} and "
                                   f"{PIXELS_MAX} pixels (512x512 to 2048x2048), each side at most {app.side_max}",
                                   "value_error", size))
            return PRESETS[DEFAULT_PRESET]
        return width, height
    problems.append(_entry("image_size", "Input should be a preset name or an object with width and height",
                           "model_type", size))
    return PRESETS[DEFAULT_PRESET]


def detail(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """fal's plain error shape: ``{"detail": "..."}``."""
    return json_response(status, {"detail": message}, headers)


def invalid(problems: list[dict[str, Any]], *, retryable: bool = False) -> Response:
    return json_response(422, {"detail": problems},
                         [("X-Fal-Retryable", "true" if retryable else "false")])
