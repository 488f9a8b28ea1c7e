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
from dataclasses import dataclass, field, replace
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
    # GET /v1/model-schema (API.md 7.7): a model's own parameter schema, validated against.
    model_schema: bool = False
    # Local references go inside the request as data: URIs, within these limits (max_bytes,
    # side_min, side_max, types sent as they are); None: the host wants public URLs.
    inline_refs: Mapping[str, Any] | None = None
    # Images one submit can make; a request for more is split into several submits
    # (:meth:`Provider.split`), each journaled and billed as its own task.
    images_per_submit: int = 6
    # Whether the host bills a request it refuses after accepting it (fal bills its 422s), so
    # that a failure line does not say "not billed" where it is.
    bills_refusals: bool = False
    # Whether stopping a wait (an interrupt, the panel's Cancel) also cancels the task at the host:
    # where a cancel stops a queued task before it is billed and says so (fal, Replicate).
    cancel_on_stop: bool = False
    # Whether the host streams a task's statuses (server-sent events: ``Provider.stream``), which
    # the client waits on instead of polling.
    status_stream: bool = False
    # How long the host keeps an upload (seconds; None: no uploads, or no known end). An earlier
    # upload of the same bytes is reused only while it has a day of that left.
    upload_lifetime: float | None = None
    # Error codes the host answers with a 5xx when it refuses a request's parameters: a definite
    # refusal, shown as one, never an 'outcome unknown' (API.md 7.3).
    parameter_refusal_codes: frozenset[str] = frozenset()
    # The host's error codes that speak of an Idempotency-Key, by what they mean to a submit:
    # "in_progress" (the first request with the key is still being processed), "unavailable"
    # (nothing was done yet), "indeterminate" (the host cannot tell whether it created the task),
    # "reused" (the key was sent before with another body). Only a host that honours keys answers them.
    idempotency_codes: Mapping[str, str] = field(default_factory=dict)


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
    # How the host's official SDK waits on a task: its sleeps between polls after a first poll at
    # once, the last repeated. A task that gives no hints is never seen later than that SDK would
    # see it, and what a learned poll plan may spend is measured against it. Empty: the poller's
    # default back-off.
    sdk_sleeps: tuple[float, ...] = ()
    default_model: str = ""
    models_checked: str = ""  # when that table was last checked against the host's documents
    # How the key is sent: ``Authorization: <auth_scheme> <key>``.
    auth_scheme: str = "Bearer"
    # Its published price per image as (model, resolution, price), and where and when that was
    # read: what an estimate uses until the journal has seen this host price that model itself.
    prices: tuple[tuple[str, str, float], ...] = ()
    prices_as_of: str = ""
    # Short names the host takes for a model ("pro" on fal): priced as the model they name.
    model_aliases: Mapping[str, str] = {}

    def __repr__(self) -> str:
        return f"<provider {self.name}>"

    def estimated_price(self, request: GenerationRequest) -> float | None:
        """USD per image of ``request`` by the published prices (``prices``), or None where they
        say nothing. A host whose price also follows the size or the references says so here."""
        model = self.model_aliases.get(request.model, request.model)
        for name, resolution, price in self.prices:
            if name == model and resolution == request.resolution:
                return price
        return None

    # -- requests --

    def check(self, request: GenerationRequest, listed: Collection[str] = (), schema: Mapping[str, Any] | None = None) -> None:
        """Refuse, in one line naming this host, what it does not support (its models, sizes, counts).
        ``listed``: model ids the host's own model listing returned (a model there is accepted with
        the universal checks). ``schema``: the model's input schema where the host serves one.
        Options it lacks are refused before this, by ``providers.check``."""

    def notes(self, request: GenerationRequest) -> list[str]:
        """One-line notes about a request that is sent anyway (a model not in this host's table)."""
        return []

    def base_url_from(self, environ: Mapping[str, str]) -> tuple[str, str]:
        """The base URL the environment chooses for this host, and why (for ``%qimage config``)."""
        url = self.base_url_from_env(environ)
        if url:
            return url, f"${self.base_url_env}"
        return self.default_base_url, f"default; ${self.base_url_env} changes it"

    def region_url(self, region: str, workspace: str = "") -> str:
        """The base URL of a region (and workspace) the user names, e.g. at ``%qimage login``."""
        from .._exceptions import ValidationError

        raise ValidationError("region", f"{self.title} has no regions to choose: set {self.base_url_env} instead")

    def model_schema(self, model: str) -> Call:
        raise NotImplementedError

    def read_model_schema(self, payload: Any) -> Mapping[str, Any] | None:
        raise NotImplementedError

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

    def read_cancel(self, status_code: int, payload: Any) -> str:
        """The host's answer to a cancel, in its own words (a cancel the host refuses is an error
        answer and never reaches here)."""
        return "cancel accepted"

    def cancel_refused(self, code: int | str | None) -> str | None:
        """The host's word when it refuses a cancel as an answer rather than an error (fal's
        ALREADY_COMPLETED); None: the refusal is an error to raise."""
        return None

    # -- hosts that differ from "poll until the answer lists the images" --

    def result(self, task_id: str) -> Call | None:
        """Where a completed task's outputs are, when its status answer does not list them (fal's
        ``response_url``); None when the status answer has them."""
        return None

    def read_result(self, payload: Any, status: TaskStatus) -> TaskStatus:
        """``status`` (completed, no URLs) completed with what the result answer says."""
        raise NotImplementedError

    def failed_result(self, status: TaskStatus, info: ErrorInfo) -> TaskStatus:
        """``status`` (completed, no URLs) when its result answer is a refusal: the task failed."""
        from .._contract import TaskFailure, TaskStatus

        raw = {**status.raw, "billed": self.capabilities.bills_refusals}
        return TaskStatus(task_id=status.task_id, status="failed", raw_status=status.raw_status, raw=raw,
                          error=TaskFailure(message=info.message, code=info.code, type=info.type, param=info.param))

    def stream(self, task_id: str) -> Call | None:
        """A status stream (server-sent events) to wait on instead of polling, or None."""
        return None

    def read_event(self, data: str, task_id: str) -> TaskStatus | None:
        """One ``data:`` payload of the status stream as a status (None: not a status event)."""
        return None

    def split(self, request: GenerationRequest) -> list[GenerationRequest]:
        """The submits one request becomes: itself, or parts of at most
        ``capabilities.images_per_submit`` images each, as even as can be."""
        per = self.capabilities.images_per_submit
        if request.n <= per:
            return [request]
        parts = -(-request.n // per)
        sizes = [request.n // parts + (1 if k < request.n % parts else 0) for k in range(parts)]
        return [replace(request, n=size, part=f"{k + 1}/{parts}") for k, size in enumerate(sizes)]

    # -- the environment, as the host's own SDK reads it --

    def key_from_env(self, environ: Mapping[str, str]) -> str | None:
        """The key the environment holds for this host, or None."""
        return (environ.get(self.key_env) or "").strip() or None

    def base_url_from_env(self, environ: Mapping[str, str]) -> str | None:
        """The base URL the environment names for this host, or None."""
        return (environ.get(self.base_url_env) or "").strip() or None


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
