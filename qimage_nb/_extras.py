"""What a request carries beyond the seed API's own fields: host parameters sent as written
(``host_params``), and local references sent inside the request (:class:`InlineImage`, a
``data:`` URI for hosts that take one). Plain data and checks, no I/O: ``_contract`` builds
requests with them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import ValidationError

__all__ = ["InlineImage", "check_host_params", "reference_text"]


def _brief(value: Any, limit: int = 40) -> str:
    line = " ".join(repr(value).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True)
class InlineImage:
    """A local reference sent inside the request as a ``data:`` URI (DashScope takes those).

    Only the client makes one, after checking the host's limits (``core`` asks the provider's
    ``inline_refs``). Equal by content: ``digest`` is the SHA-256 of the bytes. The journal keeps
    ``data:<type>;sha256,<digest>`` (see :meth:`token`), never the base64, and the bytes once in its
    own folder; one rebuilt from the journal has no ``data`` but a ``load`` that reads them there
    (this module does no I/O itself).
    """

    content_type: str
    digest: str
    data: bytes | None = field(default=None, compare=False, repr=False)
    load: Callable[[], bytes] | None = field(default=None, compare=False, repr=False)
    width: int | None = field(default=None, compare=False)
    height: int | None = field(default=None, compare=False)

    @property
    def token(self) -> str:
        """How the journal and the fingerprint name it: a digest, not the bytes."""
        return f"data:{self.content_type};sha256,{self.digest}"

    @classmethod
    def from_token(cls, token: str) -> InlineImage | None:
        match = _INLINE_TOKEN.match(token) if isinstance(token, str) else None
        return cls(match.group(1), match.group(2)) if match else None

    def raw(self) -> bytes:
        """The bytes (from the journal's copy when this was rebuilt from a journal row)."""
        if self.data is not None:
            return self.data
        if self.load is None:
            raise ValidationError("image_urls", f"the local reference {self.digest[:12]} is not on this machine any more")
        return self.load()

    @property
    def uri(self) -> str:
        """The ``data:<type>;base64,...`` URI sent to the host."""
        import base64

        return f"data:{self.content_type};base64,{base64.b64encode(self.raw()).decode('ascii')}"

    def __str__(self) -> str:
        return self.token


_INLINE_TOKEN = re.compile(r"^data:(image/[a-z0-9.+-]+);sha256,([0-9a-f]{64})$")


def reference_text(ref: str | InlineImage) -> str:
    """A reference as the journal writes it: its URL, or an inline image's digest token."""
    return ref.token if isinstance(ref, InlineImage) else ref


_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def check_host_params(value: Any) -> dict[str, Any]:
    """Host parameters sent as written: names that could be a host's field names, values JSON can
    carry. Their meaning is the host's to judge (its refusal is one clear line)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(
            "host_params", f"host_params must be a dict of parameter names to values, got {type(value).__name__}"
        )
    checked: dict[str, Any] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            raise ValidationError(
                "host_params", f"host parameter name {_brief(name)} is not a field name (letters, digits, _ . -)"
            )
        try:
            json.dumps(item, allow_nan=False)
        except (TypeError, ValueError):
            raise ValidationError(
                "host_params", f"host parameter {name} is a {type(item).__name__}, which JSON cannot carry"
            ) from None
        checked[name] = item
    return checked
