"""What Alibaba Model Studio (DashScope) accepts and answers: models, limits, body parsing, shapes.

Written from shared/PROVIDERS.md section 1, with the official ``dashscope`` SDK 2.0.2 read for what the
sheet leaves open (no code taken from it). Plain data and functions: the handler owns the routes,
timing and faults. A refusal is raised as :class:`Refusal` carrying the host's HTTP status, ``code``
and a message that names the field, as the host's own messages do.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._messages import Response, json_response

API_PREFIX = "/api/v1"
SYNC_PATH = f"{API_PREFIX}/services/aigc/multimodal-generation/generation"
ASYNC_PATH = f"{API_PREFIX}/services/aigc/text2image/image-synthesis"
TASK_PATH = re.compile(rf"^{API_PREFIX}/tasks/([^/]+)$")
CANCEL_PATH = re.compile(rf"^{API_PREFIX}/tasks/([^/]+)/cancel$")

PROMPT_MAX = 800
NEGATIVE_PROMPT_MAX = 500
IMAGES_MAX = 3
SEED_MAX = 2_147_483_647
# qwen-image-2.0 family: free W*H. The sheet bounds the pixel count by 512*512..2048*2048; the task
# brief also bounds each side by 512..2048 (which implies the pixel bounds). Both kept as data.
SIDE_MIN, SIDE_MAX = 512, 2048
PIXELS_MIN, PIXELS_MAX = 512 * 512, 2048 * 2048
# qwen-image, -plus and -max: a fixed list (the sheet lists both 1472*1104 and 1472*1140 variants).
FIXED_SIZES = ("1664*928", "1472*1104", "1472*1140", "1328*1328", "1104*1472", "1140*1472", "928*1664")
# qwen-image-3.0 family (PROVIDERS.md 5): total pixels 512*512..2048*2048, aspect up to 8:1, a side
# up to 2560; size may be left out (the model picks one from the prompt); long prompts.
QWEN3_PIXELS_MIN, QWEN3_PIXELS_MAX, QWEN3_SIDE_MAX, QWEN3_ASPECT_MAX = 512 * 512, 2048 * 2048, 2560, 8
QWEN3_PROMPT_MAX = 25_000  # "about 4,500 tokens": the emulator's stand-in bound, far above 2.0's 800
EXTEND_MODES = ("direct", "agent")
# A reference image (the editing page): at most 10 MB decoded, each side 384..3072 pixels.
IMAGE_MAX_BYTES, IMAGE_SIDE_MIN, IMAGE_SIDE_MAX = 10 * 1024 * 1024, 384, 3072
RESULT_LIFETIME = 24 * 3600  # result URLs and tasks live 24 h
_SIZE = re.compile(r"^(\d{1,5})\*(\d{1,5})$")

# The messages a client sees; several are the host's own words (the sheet and SDK issues quote them).
INVALID_KEY = "Invalid API-key provided."
ASYNC_NOT_SUPPORTED = "current user api does not support asynchronous calls"
SYNC_NOT_SUPPORTED = "current user api does not support synchronous calls"
THROTTLED = "Requests rate limit exceeded, please try again later."
INTERNAL = "An internal error has occured, please try again later or contact service support."
INSPECTION = "Input data may contain inappropriate content."
NOT_PENDING = "Failed to cancel the task, please confirm if the task is in PENDING status."


@dataclass(frozen=True)
class Model:
    name: str
    sync: bool  # served by multimodal-generation
    async_: bool  # served by text2image/image-synthesis (with X-DashScope-Async)
    n_max: int
    free_size: bool  # any W*H within bounds (2.0 family) rather than FIXED_SIZES
    default_size: str
    edits: bool  # accepts 1-3 input images next to the prompt
    qwen3: bool = False  # 3.0's rules: optional size, long prompts, prompt_extend_mode, new usage




def _models() -> dict[str, Model]:
    family = [Model(name, True, False, 6, True, "", True, qwen3=True)
              for name in ("qwen-image-3.0", "qwen-image-3.0-pro")]
    for name in ("qwen-image-2.0", "qwen-image-2.0-pro"):
        for variant in (name, f"{name}-2026-03-03"):
            family.append(Model(variant, True, False, 6, True, "2048*2048", True))
    family += [
        Model("qwen-image-2.1-pro", True, False, 6, True, "2048*2048", True),
        Model("qwen-image-max", True, False, 1, False, "1664*928", False),
        Model("qwen-image-plus", True, True, 1, False, "1664*928", False),
        Model("qwen-image", True, True, 1, False, "1328*1328", False),
    ]
    return {model.name: model for model in family}


MODELS = _models()


class Refusal(Exception):
    """The host refuses the request: ``status`` + ``{"request_id","code","message"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _invalid(message: str) -> Refusal:
    return Refusal(400, "InvalidParameter", message)


@dataclass(frozen=True)
class Job:
    """One accepted generation request, whichever endpoint it came through."""

    model: str
    prompt: str
    negative_prompt: str | None
    images: tuple[str, ...]
    width: int
    height: int
    n: int
    seed: int | None
    prompt_extend: bool
    watermark: bool
    qwen3: bool = False
    size_chosen: bool = False  # no size was asked: the model picked this one
    extend_mode: str | None = None

    @property
    def size(self) -> str:
        return f"{self.width}*{self.height}"


# -- bodies ------------------------------------------------------------------------------------


def _object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _invalid("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise _invalid("The request body must be a JSON object.")
    return payload


def _model(payload: dict[str, Any], endpoint: str) -> Model:
    name = payload.get("model")
    if name is None or name == "":
        raise Refusal(400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
    if not isinstance(name, str) or name not in MODELS:
        raise _invalid("Model not exist.")
    model = MODELS[name]
    if endpoint == "sync" and not model.sync:
        raise _invalid(f"Model {name} is not served by multimodal-generation: use text2image/image-synthesis.")
    if endpoint == "async" and not model.async_:
        raise _invalid(
            f"Model {name} is not served by text2image/image-synthesis: use multimodal-generation/generation."
        )
    return model


def _check_prompt(prompt: Any, field: str, limit: int = PROMPT_MAX) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise _invalid(f"{field} is required: a text prompt of 1 to {limit} characters.")
    if len(prompt) > limit:
        raise _invalid(f"{field} is too long: {len(prompt)} characters, at most {limit}.")
    return prompt


def _check_image(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise _invalid("input.messages[0].content: an image item must be a URL string.")
    scheme = url.strip().split(":", 1)[0].lower()
    if scheme not in ("http", "https", "oss", "data"):
        raise Refusal(400, "InvalidURL", f"The image URL is not an http(s), oss:// or data: URL: {url[:60]!r}")
    if scheme == "data":
        _check_data_image(url.strip())
    return url.strip()


def data_image_size(url: str) -> tuple[int, int] | None:
    """The pixel size of a ``data:image/...;base64,`` reference (None if it is not one)."""
    if url[:5].lower() != "data:":
        return None
    return _check_data_image(url)


def _check_data_image(url: str) -> tuple[int, int]:
    head, _, body = url.partition(",")
    if not head.lower().startswith("data:image/") or not head.lower().endswith(";base64"):
        raise Refusal(400, "InvalidURL", "A data: image must be data:image/<type>;base64,<data>.")
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(400, "InvalidParameter", "The base64 data of the input image cannot be decoded.") from None
    if len(raw) > IMAGE_MAX_BYTES:
        raise _invalid(f"The input image is {len(raw)} bytes, larger than {IMAGE_MAX_BYTES} (10 MB).")
    size = _image_size(raw)
    if size is None:
        raise _invalid("The input image cannot be read: JPG, PNG, BMP, TIFF, WEBP or GIF.")
    width, height = size
    if not (IMAGE_SIDE_MIN <= width <= IMAGE_SIDE_MAX and IMAGE_SIDE_MIN <= height <= IMAGE_SIDE_MAX):
        raise _invalid(f"The input image is {width}x{height}: each side must be {IMAGE_SIDE_MIN} to {IMAGE_SIDE_MAX} pixels.")
    return size


def _image_size(raw: bytes) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def _messages(payload_input: dict[str, Any], prompt_max: int = PROMPT_MAX) -> tuple[str, tuple[str, ...]]:
    messages = payload_input.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("input.messages is required: one user message with a text item.")
    if len(messages) != 1 or not isinstance(messages[0], dict) or messages[0].get("role") != "user":
        raise _invalid("input.messages must hold exactly one message with role user.")
    content = messages[0].get("content")
    if not isinstance(content, list) or not content:
        raise _invalid("input.messages[0].content must be a list of {text} and {image} items.")
    texts, images = [], []
    for item in content:
        if not isinstance(item, dict) or len(item) != 1 or not ({"text", "image"} & item.keys()):
            raise _invalid("input.messages[0].content items are {\"text\": ...} or {\"image\": ...}.")
        if "text" in item:
            texts.append(item["text"])
        else:
            images.append(_check_image(item["image"]))
    if len(texts) != 1:
        raise _invalid(f"input.messages[0].content must hold exactly one text item, got {len(texts)}.")
    if len(images) > IMAGES_MAX:
        raise _invalid(f"input.messages[0].content holds {len(images)} images, at most {IMAGES_MAX}.")
    return _check_prompt(texts[0], "input.messages[0].content.text", prompt_max), tuple(images)


def _size(model: Model, value: Any, default: str) -> tuple[int, int]:
    size = default if value is None else value
    if model.qwen3:
        return _qwen3_size(size)
    match = _SIZE.match(size) if isinstance(size, str) else None
    if not match:
        raise _invalid(f"parameters.size must be a string \"W*H\" such as \"1024*1024\", got {size!r}.")
    width, height = int(match.group(1)), int(match.group(2))
    if model.free_size:
        if not (SIDE_MIN <= width <= SIDE_MAX and SIDE_MIN <= height <= SIDE_MAX
                and PIXELS_MIN <= width * height <= PIXELS_MAX):
            raise _invalid(
                f"parameters.size {size} is out of range: each side {SIDE_MIN} to {SIDE_MAX} pixels, "
                f"{PIXELS_MIN} to {PIXELS_MAX} pixels in all."
            )
    elif size not in FIXED_SIZES:
        raise _invalid(f"parameters.size {size} is not supported by {model.name}: one of {', '.join(FIXED_SIZES)}.")
    return width, height


def _qwen3_size(size: Any) -> tuple[int, int]:
    match = _SIZE.match(size) if isinstance(size, str) else None
    if not match:
        raise _invalid(f"parameters.size must be a string \"W*H\" such as \"1024*1024\", got {size!r}.")
    width, height = int(match.group(1)), int(match.group(2))
    if not (QWEN3_PIXELS_MIN <= width * height <= QWEN3_PIXELS_MAX and max(width, height) <= QWEN3_SIDE_MAX
            and max(width, height) <= QWEN3_ASPECT_MAX * min(width, height)):
        raise _invalid(
            f"parameters.size {size} is out of range: {QWEN3_PIXELS_MIN} to {QWEN3_PIXELS_MAX} pixels in all, "
            f"aspect ratio up to {QWEN3_ASPECT_MAX}:1, each side at most {QWEN3_SIDE_MAX}."
        )
    return width, height


def chosen_size(prompt: str, reference: tuple[int, int] | None) -> tuple[int, int]:
    """What 3.0 makes when no size is asked: an edit keeps its last reference's aspect at about
    2.4 megapixels; text-to-image reads the prompt (wide, tall, else square). None of these is in
    the seed's 1K/2K table, so a client that assumes a size is caught."""
    if reference is not None:
        width, height = reference
        scale = (1536 * 1536 / (width * height)) ** 0.5
        return max(16, round(width * scale / 16) * 16), max(16, round(height * scale / 16) * 16)
    words = prompt.casefold()
    if any(word in words for word in ("wide", "panorama", "landscape", "banner", "cinematic")):
        return 2560, 1440
    if any(word in words for word in ("tall", "portrait", "poster", "phone")):
        return 1440, 2560
    return 1440, 1440


def _flag(parameters: dict[str, Any], name: str, default: bool) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise _invalid(f"parameters.{name} must be true or false, got {value!r}.")
    return value


def _job(
    model: Model,
    payload: dict[str, Any],
    prompt: str,
    images: tuple[str, ...],
    default_size: str,
    size_of: Callable[[str], tuple[int, int] | None] = lambda url: None,
) -> Job:
    parameters = payload.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise _invalid("parameters must be a JSON object.")
    # The docs put negative_prompt in parameters; the SDK's ImageSynthesis sends it in input.
    negative = parameters.get("negative_prompt", payload["input"].get("negative_prompt"))
    if negative is not None and not isinstance(negative, str):
        raise _invalid("parameters.negative_prompt must be a string.")
    if negative is not None and not model.qwen3 and len(negative) > NEGATIVE_PROMPT_MAX:
        raise _invalid(
            f"parameters.negative_prompt is too long: {len(negative)} characters, at most {NEGATIVE_PROMPT_MAX}."
        )
    if images and not model.edits:
        raise _invalid(f"{model.name} takes no input images: use a qwen-image-2.0 model to edit.")
    chosen = model.qwen3 and parameters.get("size") is None
    if chosen:
        reference = size_of(images[-1]) if images else None
        width, height = chosen_size(prompt, reference)
    else:
        width, height = _size(model, parameters.get("size"), default_size)
    mode = parameters.get("prompt_extend_mode")
    if mode is not None:
        if not model.qwen3:
            raise _invalid(f"parameters.prompt_extend_mode is not supported by {model.name}.")
        if mode not in EXTEND_MODES or (mode == "agent" and images):
            raise _invalid(f"parameters.prompt_extend_mode must be direct, or agent for text-to-image, got {mode!r}.")
    thinking = parameters.get("enable_thinking")
    if thinking is not None and (not model.qwen3 or not isinstance(thinking, bool)):
        raise _invalid(f"parameters.enable_thinking must be true or false on a 3.0 model, got {thinking!r}.")
    n = parameters.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= model.n_max:
        allowed = "1" if model.n_max == 1 else f"an integer from 1 to {model.n_max}"
        raise _invalid(f"parameters.n must be {allowed} for {model.name}, got {n!r}.")
    seed = parameters.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        raise _invalid(f"parameters.seed must be an integer from 0 to {SEED_MAX}, got {seed!r}.")
    return Job(
        model=model.name,
        prompt=prompt,
        negative_prompt=negative,
        images=images,
        width=width,
        height=height,
        n=n,
        seed=seed,
        prompt_extend=_flag(parameters, "prompt_extend", True),
        watermark=_flag(parameters, "watermark", False),
        qwen3=model.qwen3,
        size_chosen=chosen,
        extend_mode=mode if isinstance(mode, str) else None,
    )


def _input(payload: dict[str, Any]) -> dict[str, Any]:
    value = payload.get("input")
    if value is None or value == {}:
        raise Refusal(400, "BadRequest.EmptyInput", 'Required parameter "input" missing from request.')
    if not isinstance(value, dict):
        raise _invalid("input must be a JSON object.")
    return value


def parse_sync(body: bytes, size_of: Callable[[str], tuple[int, int] | None]) -> Job:
    """A multimodal-generation body. ``size_of(url)`` knows the size of this emulator's own result
    images: an edit's default size is its last input image's (other URLs are not fetched)."""
    payload = _object(body)
    model = _model(payload, "sync")
    prompt, images = _messages(_input(payload), QWEN3_PROMPT_MAX if model.qwen3 else PROMPT_MAX)

    def known(url: str) -> tuple[int, int] | None:
        return data_image_size(url) or size_of(url)

    default = model.default_size
    if images and model.free_size:
        last = known(images[-1])
        default = f"{last[0]}*{last[1]}" if last else "1024*1024"
    return _job(model, payload, prompt, images, default, known)


def parse_async(body: bytes) -> Job:
    """A text2image/image-synthesis body: ``input.prompt`` (+ ``negative_prompt``) and parameters."""
    payload = _object(body)
    model = _model(payload, "async")
    prompt = _check_prompt(_input(payload).get("prompt"), "input.prompt")
    return _job(model, payload, prompt, (), model.default_size)


def flagged(job: Job, words: tuple[str, ...]) -> bool:
    """Input inspection: any moderation word in the prompt or negative prompt (case-insensitive)."""
    text = f"{job.prompt}\n{job.negative_prompt or ''}".casefold()
    return any(word.casefold() in text for word in words)


def extended(prompt: str) -> str:
    """What prompt_extend makes of a prompt: the host rewrites it into a longer, richer one. The
    emulator appends a fixed, recognisable tail so a client can tell the two apart."""
    return f"{prompt.rstrip()} (extended by the emulator: rich detail, balanced composition, soft natural light)"


# -- answers -----------------------------------------------------------------------------------


def new_request_id() -> str:
    return str(uuid.uuid4())


def error(status: int, code: str, message: str) -> Response:
    """The host's error shape; ``application/json`` matters: the SDK reads code and message only
    from a JSON error and reports ``Unknown`` otherwise."""
    return json_response(status, {"request_id": new_request_id(), "code": code, "message": message})


def refused(refusal: Refusal) -> Response:
    return error(refusal.status, refusal.code, refusal.message)


def timestamp(wall: float) -> str:
    """``2025-09-09 11:38:54.741``: the task times, in Beijing time (UTC+8) like the host's."""
    beijing = wall + 8 * 3600
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(beijing)) + f".{int(beijing * 1000) % 1000:03d}"
