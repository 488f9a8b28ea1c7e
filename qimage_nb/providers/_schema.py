"""A host's own parameter schema for a model (API.md 7.7: ``GET /v1/model-schema``), checked before
anything is sent: the small part of JSON Schema such answers use (type, enum, minimum, maximum,
maxLength, maxItems, required, additionalProperties)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._contract import _brief, number
from .._exceptions import ValidationError

__all__ = ["check_schema"]

_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}


def check_schema(model: str, body: Mapping[str, Any], schema: Mapping[str, Any], title: str) -> None:
    """Check a submit body against the host's own schema for the model (API.md 7.7): each field's
    type, enum, range, length and count; required fields; unknown fields where it forbids them.
    A one-line ValidationError names the field and the host's rule."""
    properties = schema.get("properties") or {}
    where = f"{model} on {title} (its schema)"
    for name in schema.get("required") or ():
        if name not in body:
            raise ValidationError(str(name), f"{where} requires {name}")
    for name, value in body.items():
        rule = properties.get(name)
        if rule is None:
            if schema.get("additionalProperties") is False:
                raise ValidationError(name, f"{where} takes no {name}; it takes {', '.join(properties)}")
            continue
        if not isinstance(rule, Mapping):
            continue
        expected = _JSON_TYPES.get(str(rule.get("type")))
        if expected is not None and (not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool)):
            raise ValidationError(name, f"{where}: {name} must be a {rule.get('type')}, got {_brief(value)}")
        if "enum" in rule and value not in rule["enum"]:
            raise ValidationError(name, f"{where}: {name} {_brief(value)} is not one of {', '.join(map(str, rule['enum']))}")
        low, high = number(rule.get("minimum")), number(rule.get("maximum"))
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and ((low is not None and value < low) or (high is not None and value > high)):
            span = f"{low:g} to {high:g}" if low is not None and high is not None else f"at least {low:g}" if low is not None else f"at most {high:g}"
            raise ValidationError(name, f"{where}: {name} is {value}; it takes {span}")
        longest = number(rule.get("maxLength"))
        if isinstance(value, str) and longest is not None and len(value) > longest:
            raise ValidationError(name, f"{where}: {name} is {len(value)} characters; it takes at most {longest:g}")
        most = number(rule.get("maxItems"))
        if isinstance(value, list) and most is not None and len(value) > most:
            raise ValidationError(name, f"{where}: {name} has {len(value)} items; it takes at most {most:g}")
