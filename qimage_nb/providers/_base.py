"""What every provider module gives the client: the seam between host-neutral work and one host's wire.

A provider knows one host's protocol and nothing else: how to build a submit and read its answer
(a task to poll, or a result at once), how to poll and read a task, its error bodies, and, where
the host has them, uploads, balance and model listing. It also says what the host supports
(:class:`Capabilities`), which the client validates requests against before anything is sent.

Everything else is written once, in the client, above every provider: journaling, retries, the
adaptive poller, downloads, provenance, the cache and resume. A provider does no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._contract import Balance, GenerationRequest, TaskStatus, UploadedImage

__all__ = ["Call", "Capabilities", "ErrorInfo", "Provider", "Submitted"]


@dataclass(frozen=True)
class Call:
    """One HTTP request a provider wants sent, relative to the client's base URL."""

    method: str
    path: str
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    files: Any = None
    # A read timeout of its own: a synchronous generation answers only when its images exist.
    read_timeout: float | None = None


@dataclass(frozen=True)
class Submitted:
    """What a submit answer says.

    ``result`` is set when the host finished the generation inside the answer (no task to poll).
    ``confirms_idempotency`` is True when the answer proves that this origin honours the
    Idempotency-Key (API.md 7.1): only then may a submit whose answer was lost be resent.
    """

    task_id: str
    result: TaskStatus | None = None
    confirms_idempotency: bool = False
    replayed: bool = False


@dataclass(frozen=True)
class ErrorInfo:
    """An error answer reduced to what a user needs: one message, the host's code, type and param."""

    message: str
    code: int | str | None = None
    type: str | None = None
    param: str | None = None
    html: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What a host supports, as data the client validates against (never ``if provider == ...``).

    ``options``: the optional request fields this host takes, of ``seed``, ``prompt_extend``,
    ``watermark`` and ``pixel_size`` (a ``WIDTHxHEIGHT`` size instead of a ratio).
    """

    options: frozenset[str] = frozenset()
    upload: bool = False
    balance: bool = False
    list_models: bool = False
    idempotency_keys: bool = False


class Provider:
    """Base of every host module. Subclasses set the class attributes and override the methods."""

    name: str = ""
    title: str = ""  # how messages name the host
    label: str = ""  # its short name, where a chooser lists the hosts ("APIMart")
    key_env: str = ""  # the environment variable its users keep the key in
    base_url_env: str = ""
    default_base_url: str = ""
    capabilities: Capabilities = Capabilities()
    # The models this host documents, each validated exactly.
    models: tuple[str, ...] = ()
    default_model: str = ""

    def __repr__(self) -> str:
        return f"<provider {self.name}>"

    # -- requests --

    def check(self, request: GenerationRequest, listed: Collection[str] = ()) -> None:
        """Refuse, in one line naming this host, what it does not support (its models, sizes, counts).
        ``listed``: model ids the host's own model listing returned (a model there is accepted with
        the universal checks). Options it lacks are refused before this, by ``providers.check``."""

    def submit(self, request: GenerationRequest, key: str) -> Call:
        raise NotImplementedError

    def read_submit(self, payload: Any, headers: Mapping[str, str]) -> Submitted:
        raise NotImplementedError

    def confirms_idempotency(self, headers: Mapping[str, str]) -> bool:
        """Whether an answer's headers prove this origin honours the Idempotency-Key (read before
        its body, so that even an answer that cannot be parsed teaches it)."""
        return False

    def poll(self, task_id: str) -> Call:
        raise NotImplementedError

    def read_task(self, payload: Any, task_id: str) -> TaskStatus:
        raise NotImplementedError

    def read_error(self, status_code: int, content_type: str, body: bytes) -> ErrorInfo:
        raise NotImplementedError

    def error_in_success(self, payload: Any) -> tuple[int, ErrorInfo] | None:
        """An error carried inside a 2xx answer, as (the HTTP status it stands for, its info)."""
        return None

    def auth_hint(self, base_url: str = "") -> str:
        """What a 401 tells the user to check."""
        return f"the API key was refused: check {self.key_env} or run %qimage login"

    # -- optional endpoints (Capabilities says which exist) --

    def upload(self, filename: str, data: bytes, content_type: str) -> Call:
        raise NotImplementedError

    def read_upload(self, payload: Any) -> UploadedImage:
        raise NotImplementedError

    def balance(self) -> Call:
        raise NotImplementedError

    def read_balance(self, payload: Any) -> Balance:
        raise NotImplementedError

    def list_models(self) -> Call:
        raise NotImplementedError

    def read_models(self, payload: Any) -> list[str]:
        raise NotImplementedError

    def cancel(self, task_id: str) -> Call | None:
        return None


def decode_json(body: bytes) -> Any:
    """JSON or None: an error body is read for its message, never trusted to parse."""
    try:
        return json.loads(body.decode("utf-8", errors="replace")) if body.strip() else None
    except ValueError:
        return None


def html_title(content_type: str, text: str) -> str | None:
    """The <title> of an HTML page (a proxy's error page), '' when it has none; None if not HTML."""
    if "html" not in content_type.lower() and not text[:15].lower().startswith(("<!doctype", "<html")):
        return None
    lower = text.lower()
    start, end = lower.find("<title>"), lower.find("</title>")
    return " ".join(text[start + 7 : end].split()) if 0 <= start < end else ""
