"""Building a ``GenerationRequest`` from what a caller passed: a prompt with fields, a ready
request, or (in a batch) a dict. Plain functions, shared by every path that takes requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._contract import GenerationRequest
from .._exceptions import ValidationError

__all__ = ["build_request", "coerce_request"]


def build_request(
    prompt: Any, options: Mapping[str, Any], default_model: str, inline: Mapping[str, Any] | None = None
) -> GenerationRequest:
    """``prompt`` (text) with ``options`` as the request's fields, or a ready request alone.
    ``inline``: the host takes local references inside the request (data: URIs) within these limits."""
    if isinstance(prompt, GenerationRequest):
        if options:
            raise ValidationError(
                "request", f"pass either a GenerationRequest or a prompt with fields, not both ({', '.join(options)})"
            )
        return prompt
    options = dict(options)
    options.setdefault("model", default_model)
    if inline is not None and options.get("image_urls") is not None:
        # This host takes local references inside the request: each is checked against its limits.
        from ..journal._inline import inline_references

        options["image_urls"] = inline_references(options["image_urls"], inline)
    try:
        return GenerationRequest.create(prompt, **options)
    except TypeError as exc:
        raise ValidationError("request", f"generate() got an unknown field: {exc}") from None


def coerce_request(
    item: Any, index: int, default_model: str, inline: Mapping[str, Any] | None = None
) -> GenerationRequest:
    """Item ``index`` of a batch (a prompt, a dict with a prompt, or a request) as a request; a
    refusal names the item."""
    try:
        if isinstance(item, (str, GenerationRequest)):
            return build_request(item, {}, default_model, inline)
        if isinstance(item, Mapping):
            fields = dict(item)
            return build_request(fields.pop("prompt", None), fields, default_model, inline)
    except ValidationError as exc:
        raise ValidationError(exc.field, f"request {index}: {exc.message}") from None
    raise ValidationError(
        "requests",
        f"request {index} is a {type(item).__name__}; pass prompts, dicts or GenerationRequest objects",
    )
