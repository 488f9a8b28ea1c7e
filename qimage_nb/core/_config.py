"""Client settings checked before anything is sent: the key, the base URL, numbers, task ids.

The key lives in a :class:`_Secret` from the moment it is read until :class:`_BearerAuth` puts it on
an API request, so no repr, log line, exception or traceback local shows it.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from .._exceptions import ValidationError

__all__ = ["check_base_url", "is_loopback_host"]


class _Secret:
    """Holds the API key so that no repr, log line or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


class _BearerAuth(httpx.Auth):
    """Adds the key at send time, so no dict of headers in our frames ever holds it."""

    def __init__(self, secret: _Secret, scheme: str = "Bearer") -> None:
        self._secret = secret
        self._scheme = scheme  # the host's word before the key (provider.auth_scheme)

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"{self._scheme} {self._secret.reveal()}"
        yield request

    def __repr__(self) -> str:
        return "<BearerAuth hidden>"


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1, ``localhost`` and ``*.localhost`` (RFC 6761)."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_base_url(value: Any, *, allow_insecure_http: bool = False, example: str | None = None) -> str:
    """Validate and normalise a base URL; plain http only to loopback unless explicitly allowed.

    ``example``: a good URL to show in the refusal (the provider's own production host): the core
    knows no host of its own."""
    example = f"use an https URL such as {example}" if example else "use an https URL"
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("base_url", f"base_url must be an http(s) URL; {example}")
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        # Echo only what looks like a URL: a key passed in the wrong place must not be printed.
        shown = f" {text[:80]!r}" if "://" in text else ""
        raise ValidationError("base_url", f"base_url{shown} is not an http(s) URL with a host; {example}")
    if parts.username or parts.password:
        # Never echo it: the part before "@" may be the key itself.
        raise ValidationError(
            "base_url", f"base_url must not carry credentials (user:password@); pass the key as api_key; {example}"
        )
    if parts.query or parts.fragment:
        raise ValidationError("base_url", f"base_url {text!r} must not carry a query or fragment; {example}")
    if parts.scheme.lower() == "http" and not is_loopback_host(parts.hostname) and not allow_insecure_http:
        raise ValidationError(
            "base_url",
            f"base_url {text!r} is plain http to a non-loopback host, which would send your API key "
            "unencrypted; use https, or pass allow_insecure_http=True if you must",
        )
    return text.rstrip("/")


def _check_key(value: Any) -> _Secret | None:
    if value is None:
        return None
    if isinstance(value, _Secret):
        return value
    if not isinstance(value, str):
        raise ValidationError("api_key", f"api_key must be a string, got {type(value).__name__}")
    key = value.strip()
    if not key:
        return None
    if any(c.isspace() or ord(c) < 32 for c in key):
        # A header value with a newline could smuggle another header; refuse without echoing it.
        raise ValidationError("api_key", "api_key contains spaces or control characters: paste the key alone")
    return _Secret(key)


def _check_seconds(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValidationError(name, f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def http_timeout(value: float | httpx.Timeout) -> httpx.Timeout:
    """A per-request timeout: an ``httpx.Timeout`` as given, or seconds (connecting gets at most 10)."""
    if isinstance(value, httpx.Timeout):
        return value
    seconds = _check_seconds("timeout", value)
    return httpx.Timeout(seconds, connect=min(seconds, 10.0))


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(name, f"{name} must be a whole number >= 1, got {value!r}")
    return value


def _check_task_id(value: Any, what: str) -> str:
    """A task id (or journal key) as the API and the journal write them: refused before any request
    or journal row when it cannot be one (a pasted sentence, a path, a URL, control characters)."""
    hint = "copy the task id (like task_01...) from the generation's output, or see %qimage history"
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("task_id", f"{what} needs a task id, got {type(value).__name__} {value!r:.40}; {hint}")
    text = value.strip()
    if (
        len(text) > 200
        or text in (".", "..")
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "/\\?#%" for c in text)
    ):
        raise ValidationError("task_id", f"{what}: {text[:40]!r} is not a task id; {hint}")
    return text
