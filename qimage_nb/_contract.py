"""The request and result models every provider shares, and the seed API's table (``shared/API.md``).

This module owns the constants (models, ratios, tiers, the pixel table, limits), the
provider-neutral :class:`GenerationRequest` with its universal checks, and the normalised answers
(:class:`TaskStatus`, :class:`Balance`, ...). How one host spells them on the wire lives in
``providers/``. It does no I/O, so the client, the faces and the emulators can all import it
cheaply. The emulators import only the constants: they validate requests with their own code, as
an independent server would.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from ._exceptions import ValidationError
from ._extras import InlineImage, check_host_params, reference_text

# The normalised answers live in _status; re-exported here, where every host reads them from.
from ._status import (
    PHASE_WORDS,  # noqa: F401
    STATUSES,  # noqa: F401
    TERMINAL_STATUSES,  # noqa: F401
    Balance,  # noqa: F401
    TaskFailure,  # noqa: F401
    TaskStatus,  # noqa: F401
    UploadedImage,  # noqa: F401
    number,  # noqa: F401
)

# --- constants -------------------------------------------------------------------------------

MODELS = ("qwen-image-2.0", "qwen-image-2.0-pro")
# Qwen Image 3.0 (July 2026; PROVIDERS.md 5): its own rules, not 2.0's. Long prompts (about
# 4,500 tokens), no 500-character negative prompt, and a size it may choose itself.
QWEN3_MODELS = ("qwen-image-3.0", "qwen-image-3.0-pro")
# Every Qwen Image model some provider documents, each validated exactly by that provider (sizes
# are checked as ratios for these); any other id is a host's own listing (API.md 7.7).
QWEN_IMAGE_MODELS = (
    *MODELS, "qwen-image-2.0-2026-03-03", "qwen-image-2.0-pro-2026-03-03", "qwen-image-max",
    "qwen-image-plus", "qwen-image", *QWEN3_MODELS, "qwen-image-2.1-pro",
)
# Models whose prompt and negative prompt keep 2.0's character limits; any other model's host
# judges its own text (3.0 reads about 4,500 tokens; an unlisted model says what it takes).
SHORT_PROMPT_MODELS = frozenset(QWEN_IMAGE_MODELS) - frozenset(QWEN3_MODELS)
# A sanity bound for the others (4,500 tokens of CJK is about 4,500 characters; English fewer):
# a pasted book is refused here rather than by the host after a 10 MB upload.
LONG_PROMPT_MAX = 20_000
# The size word for "no size at all": the model picks one (3.0 chooses it from the prompt) and
# the result records what it chose.
AUTO_SIZE = "auto"
DEFAULT_MODEL = MODELS[0]
RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3")
DEFAULT_RATIO = "1:1"
RESOLUTIONS = ("1K", "2K")
DEFAULT_RESOLUTION = "1K"

# Output pixel size (width, height) fixed by ratio x tier.
PIXEL_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("1:1", "1K"): (1024, 1024), ("1:1", "2K"): (2048, 2048),
    ("4:3", "1K"): (1152, 864), ("4:3", "2K"): (2048, 1536),
    ("3:4", "1K"): (864, 1152), ("3:4", "2K"): (1536, 2048),
    ("16:9", "1K"): (1280, 720), ("16:9", "2K"): (2048, 1152),
    ("9:16", "1K"): (720, 1280), ("9:16", "2K"): (1152, 2048),
    ("3:2", "1K"): (1248, 832), ("3:2", "2K"): (2048, 1360),
    ("2:3", "1K"): (832, 1248), ("2:3", "2K"): (1360, 2048),
}  # fmt: skip

PROMPT_MAX = 800
NEGATIVE_PROMPT_MAX = 500
N_MIN, N_MAX = 1, 6
REFS_MIN, REFS_MAX = 1, 3

# The journal's and TaskStatus.status's words for a task's phase; each host's own words (API.md
# 7.2: submitted, queued, in_progress, canceled, ...) are mapped onto these by its provider.

SEED_MAX = 2**31 - 1
# The sizes a WIDTHxHEIGHT request may take on hosts with free pixel sizes.
PIXEL_SIDE_MIN, PIXEL_SIDE_MAX = 512, 2048

UPLOAD_MAX_BYTES = 20 * 1024 * 1024
UPLOAD_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}

# HTTP statuses worth retrying for idempotent requests (and for a submit with the same key).
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


# --- requests --------------------------------------------------------------------------------


def _choices(values: Iterable[str]) -> str:
    return ", ".join(values)


def _suggest(value: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _nearest_ratio(value: str) -> str:
    """The supported ratio closest in shape to ``W:H`` (5:4 -> 4:3, never the other orientation);
    for anything else, the closest spelling."""

    parts = value.split(":")
    try:
        wanted = math.log(float(parts[0]) / float(parts[1])) if len(parts) == 2 else None
    except (ValueError, ZeroDivisionError):
        wanted = None
    if wanted is None or not math.isfinite(wanted):
        return _suggest(value, RATIOS)
    shapes = {r: math.log(int(r.split(":")[0]) / int(r.split(":")[1])) for r in RATIOS}
    best = min(shapes, key=lambda r: abs(shapes[r] - wanted))
    return f" (the closest is {best!r})"


def _short(text: Any, limit: int = 40) -> str:
    """``text`` on one line of at most ``limit`` characters: whitespace runs collapsed, a cut marked "…".

    The one shortener of the package: messages here, and captions and status lines in both faces.
    """
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _brief(value: Any, limit: int = 40) -> str:
    """A value as it was given (its repr), shortened for a message."""
    return _short(repr(value), limit)


def _check_text(field_name: str, value: Any, *, limit: int, required: bool, hint: str) -> str | None:
    if value is None:
        if required:
            raise ValidationError(field_name, f"{field_name} is required: {hint}")
        return None
    if not isinstance(value, str):
        raise ValidationError(
            field_name, f"{field_name} must be text, got {type(value).__name__}: {hint}"
        )
    if required and not value.strip():
        raise ValidationError(field_name, f"{field_name} is empty: {hint}")
    if len(value) > limit:
        raise ValidationError(
            field_name,
            f"{field_name} is {len(value)} characters; the API allows at most {limit}: shorten it "
            f"by {len(value) - limit}",
        )
    return value


def _check_choice(field_name: str, value: Any, allowed: tuple[str, ...], *, fold: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(
            field_name,
            f"{field_name} must be one of {_choices(allowed)}, got {type(value).__name__} {_brief(value)}",
        )
    normal = value.strip().upper() if fold == "upper" else value.strip().lower()
    if normal not in allowed:
        raise ValidationError(
            field_name,
            f"{field_name} {value!r} is not supported{_suggest(normal, allowed)}; use one of "
            f"{_choices(allowed)}",
        )
    return normal


def _check_n(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            "n", f"n must be a whole number from {N_MIN} to {N_MAX}, got {type(value).__name__} {_brief(value)}"
        )
    if not N_MIN <= value <= N_MAX:
        raise ValidationError("n", f"n is {value}; the API makes {N_MIN} to {N_MAX} images per request")
    return value


def check_reference_url(value: Any, index: int = 0) -> str | InlineImage:
    """Validate one reference image URL: the API takes only public http(s) URLs (an
    :class:`InlineImage` the client made is a local reference for hosts that take ``data:`` URIs)."""
    name = f"image_urls[{index}]"
    if isinstance(value, InlineImage):
        return value
    inline = InlineImage.from_token(value) if isinstance(value, str) else None
    if inline is not None:
        return inline  # a journaled inline reference (its bytes are found by the journal)
    upload_hint = (
        "the API needs a public http(s) URL: upload local images first with client.upload(...) "
        "(or pass the file path or image to %%qimage --ref, which uploads it)"
    )
    if not isinstance(value, str):
        raise ValidationError(name, f"{name} is a {type(value).__name__}; {upload_hint}")
    url = value.strip()
    if not url:
        raise ValidationError(name, f"{name} is empty; {upload_hint}")
    if url[:5].lower() == "data:":
        raise ValidationError(name, f"{name} is a data: URI, which the API does not accept; {upload_hint}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValidationError(name, f"{name} {_brief(url)} has no host; {upload_hint}")
        return url
    if scheme == "" or (len(scheme) == 1 and url[1:3] in (":\\", ":/")) or scheme == "file":
        raise ValidationError(name, f"{name} {_brief(url)} is a local path; {upload_hint}")
    raise ValidationError(
        name, f"{name} uses the {scheme}: scheme; {upload_hint}"
    )


# ``size`` not given to create(): the model's default (a sentinel, so that None stays a mistake).
_MODEL_DEFAULT: Any = type("_ModelDefault", (), {"__repr__": lambda self: "the model's default"})()

_PIXEL_SIZE = re.compile(r"^\s*(\d{2,5})\s*[x*×]\s*(\d{2,5})\s*$", re.IGNORECASE)


def parse_pixel_size(value: str) -> tuple[int, int] | None:
    """``(width, height)`` from ``"1024x768"`` (or ``1024*768``, the DashScope spelling), else None."""
    match = _PIXEL_SIZE.match(value)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _check_size(value: Any, model: str) -> str:
    """A ratio of the seed's table, or ``WIDTHxHEIGHT``; a model no provider documents takes any size
    word as given (its host lists it; API.md 7.7 says it has its own parameters). Not given: the
    model's own default (3.0 picks a size itself; the others keep the seed's 1:1); ``auto`` asks
    the host's default explicitly."""
    if value is _MODEL_DEFAULT:
        # 2.0's family defaults to the seed's 1:1; 3.0 picks its own size, and a model outside
        # every table gets no size it did not ask for (its host's default).
        return DEFAULT_RATIO if model in SHORT_PROMPT_MODELS else AUTO_SIZE
    if isinstance(value, str) and value.strip().lower() == AUTO_SIZE:
        return AUTO_SIZE
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(
            "size", f"size must be a ratio ({_choices(RATIOS)}) or WIDTHxHEIGHT, got {_brief(value)}"
        )
    pixels = parse_pixel_size(value)
    if pixels is not None:
        return f"{pixels[0]}x{pixels[1]}"
    if model not in SHORT_PROMPT_MODELS:
        return value.strip()  # 3.0 and listed models: each host's own size words, checked by it
    normal = value.strip().upper()
    if normal not in RATIOS:
        raise ValidationError(
            "size",
            f"size {value!r} is not supported{_nearest_ratio(normal)}; use a ratio ({_choices(RATIOS)}) "
            "or WIDTHxHEIGHT where the provider takes pixel sizes",
        )
    return normal


def _check_model(value: Any) -> str:
    known = QWEN_IMAGE_MODELS
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("model", f"model must be a model id such as {_choices(known[:2])}, got {_brief(value)}")
    model = value.strip().lower()
    if any(c.isspace() or ord(c) < 32 for c in model) or len(model) > 100:
        raise ValidationError("model", f"model {_brief(value)} is not a model id; known: {_choices(known)}")
    return model


def _check_optional_bool(name: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValidationError(name, f"{name} must be True, False or None, got {_brief(value)}")


def _check_seed(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise ValidationError("seed", f"seed must be a whole number from 0 to {SEED_MAX}, got {_brief(value)}")
    return value


@dataclass(frozen=True)
class GenerationRequest:
    """A validated, provider-neutral generation request. Build it with :meth:`create`.

    ``create`` makes the universal checks; the client then checks it against the chosen provider
    (models, sizes, options) before anything is sent.
    """

    prompt: str
    model: str = DEFAULT_MODEL
    size: str = DEFAULT_RATIO  # a ratio, or WIDTHxHEIGHT
    resolution: str = DEFAULT_RESOLUTION
    n: int = 1
    negative_prompt: str | None = None
    image_urls: tuple[str | InlineImage, ...] = ()
    seed: int | None = None
    prompt_extend: bool | None = None  # None: the host's default
    watermark: bool | None = None
    # Host parameters qimage_nb does not know, sent as written in the host's own parameters
    # object (DashScope ``parameters``; the seed API's body) and recorded in provenance.
    host_params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # "k/N" where a host makes this request as N submits (Provider.split): never sent, but part of the
    # journal's identity, so equal parts are separate jobs (a re-run serves each from its own).
    part: str | None = None

    @classmethod
    def create(
        cls,
        prompt: Any,
        *,
        model: Any = DEFAULT_MODEL,
        size: Any = _MODEL_DEFAULT,
        resolution: Any = DEFAULT_RESOLUTION,
        n: Any = 1,
        negative_prompt: Any = None,
        image_urls: Any = None,
        seed: Any = None,
        prompt_extend: Any = None,
        watermark: Any = None,
        host_params: Any = None,
    ) -> GenerationRequest:
        """Validate every field; raise :class:`ValidationError` naming the first bad one.

        ``size`` not given: the model's default (1:1 for 2.0; 3.0 and models outside every table:
        none is sent, the host's default or the model's choice; ``"auto"`` asks that). ``host_params``: a dict
        of host parameters sent as written (names and JSON values)."""
        checked_model = _check_model(model)
        short = checked_model in SHORT_PROMPT_MODELS
        prompt_max = PROMPT_MAX if short else LONG_PROMPT_MAX
        negative_max = NEGATIVE_PROMPT_MAX if short else LONG_PROMPT_MAX
        checked_prompt = _check_text(
            "prompt", prompt, limit=prompt_max, required=True,
            hint=f"describe the image in 1 to {prompt_max} characters",
        )
        negative = _check_text(
            "negative_prompt", negative_prompt, limit=negative_max, required=False,
            hint=f"pass text of at most {negative_max} characters, or None",
        )
        if negative is not None and not negative.strip():
            negative = None
        urls: tuple[str, ...] = ()
        if image_urls is not None:
            if isinstance(image_urls, (str, bytes)) or not isinstance(image_urls, Iterable):
                raise ValidationError(
                    "image_urls",
                    "image_urls must be a list of 1 to 3 public http(s) URLs, e.g. image_urls=[url]",
                )
            listed = list(image_urls)
            if len(listed) > REFS_MAX:
                raise ValidationError(
                    "image_urls",
                    f"image_urls has {len(listed)} references; the API takes {REFS_MIN} to {REFS_MAX}",
                )
            urls = tuple(check_reference_url(url, i) for i, url in enumerate(listed))
        assert checked_prompt is not None
        return cls(
            prompt=checked_prompt,
            model=checked_model,
            size=_check_size(size, checked_model),
            resolution=_check_choice("resolution", resolution, RESOLUTIONS, fold="upper"),
            n=_check_n(n),
            negative_prompt=negative,
            image_urls=urls,
            seed=_check_seed(seed),
            prompt_extend=_check_optional_bool("prompt_extend", prompt_extend),
            watermark=_check_optional_bool("watermark", watermark),
            host_params=check_host_params(host_params),
        )

    @property
    def pixel_size(self) -> tuple[int, int] | None:
        """The (width, height) asked for: the seed's table for a ratio and tier, or WIDTHxHEIGHT.
        None for a size word of a model no provider documents (its host decides)."""
        return parse_pixel_size(self.size) or PIXEL_SIZES.get((self.size, self.resolution))

    @property
    def options(self) -> dict[str, Any]:
        """The optional fields that are set (seed, prompt_extend, watermark)."""
        return {
            name: getattr(self, name)
            for name in ("seed", "prompt_extend", "watermark")
            if getattr(self, name) is not None
        }

    def to_json(self) -> dict[str, Any]:
        """The request as the journal keeps it (the seed API's field names; options when set)."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt,
            "size": self.size,
            "resolution": self.resolution,
            "n": self.n,
        }
        if self.negative_prompt is not None:
            body["negative_prompt"] = self.negative_prompt
        if self.image_urls:
            body["image_urls"] = [reference_text(ref) for ref in self.image_urls]
        body.update(self.options)
        if self.host_params:
            body["host_params"] = dict(self.host_params)
        if self.part:
            body["part"] = self.part
        return body

    def fingerprint(self) -> str:
        """A stable hash of the normalised request: equal requests may share cached images."""
        canonical = json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> GenerationRequest:
        """Rebuild a request from :meth:`to_json` output (e.g. from the journal)."""
        return cls.create(
            body.get("prompt"),
            model=body.get("model", DEFAULT_MODEL),
            size=body.get("size", DEFAULT_RATIO),
            resolution=body.get("resolution", DEFAULT_RESOLUTION),
            n=body.get("n", 1),
            negative_prompt=body.get("negative_prompt"),
            image_urls=body.get("image_urls") or None,
            seed=body.get("seed"),
            prompt_extend=body.get("prompt_extend"),
            watermark=body.get("watermark"),
            host_params=body.get("host_params"),
        ).with_part(body.get("part"))

    def with_part(self, part: str | None) -> GenerationRequest:
        return replace(self, part=str(part)) if part else self
