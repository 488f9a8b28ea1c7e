"""Every error qimage_nb raises, in one place.

    QImageError                      base of everything below
    ├── ValidationError (ValueError) a request or setting is invalid; nothing was sent or billed
    ├── APIError                     the API answered with an error (status, type, message)
    │   ├── BadRequestError          400: the server refused a parameter or task id
    │   ├── AuthenticationError      401: missing or wrong API key
    │   ├── InsufficientBalanceError 402: the key's balance cannot pay for this
    │   ├── PermissionDeniedError    403: the key may not use this model or task
    │   ├── NotFoundError            404: unknown or expired task
    │   ├── PayloadTooLargeError     413: an upload over the provider's size limit
    │   ├── RequestTimeoutError      408: the server timed out reading the request (transient)
    │   ├── RateLimitError           429: too many requests, even after waiting as told
    │   └── ServerError              5xx or an HTML error page from a proxy
    ├── TransportError               the network failed (reset, timeout) even after retries
    ├── SubmitOutcomeUnknown         a submit's answer was lost: the task may exist and be billed
    ├── ProtocolError                a response broke the contract (bad JSON, unknown status)
    ├── TaskError                    a task ended without images
    │   ├── TaskFailedError          the provider failed it (e.g. a moderation refusal)
    │   └── TaskCancelledError       the task was cancelled
    ├── GenerationTimeout            our wait deadline passed; the task may still finish
    └── ImageError                   a download is not a safe image (not an image, bomb, truncated)

Messages are one line a user can act on. Anything that concerns a submitted task carries its
``task_id`` so the images can always be fetched later (``Client.resume(task_id)``). Every error has
``code``, ``type`` and ``param``: what the host said (``code`` as given, an int or a word such as
``OutputImageSensitiveContentDetected``), None where it said nothing.
No message, ``repr`` or attribute ever holds the API key.
"""

from __future__ import annotations

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "GenerationTimeout",
    "ImageError",
    "InsufficientBalanceError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProtocolError",
    "QImageError",
    "QImageWarning",
    "RateLimitError",
    "RequestTimeoutError",
    "ServerError",
    "SubmitOutcomeUnknown",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TransportError",
    "ValidationError",
]


class QImageWarning(UserWarning):
    """A warning from qimage_nb (the test suite turns these into errors)."""


def task_name(task_id: object) -> str:
    """How a message names a task: ``task_01AB`` as it is (never "task task_01AB"), another id
    (a uuid, as some hosts give) as ``task 3f2a...``."""
    text = str(task_id)
    return text if text.lower().startswith("task") else f"task {text}"


class QImageError(Exception):
    """Base class of every qimage_nb error."""

    # What the host said, where it said it (API.md 7.3): its error code as given, type and param.
    code: int | str | None = None
    type: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.task_id = task_id

    @property
    def error_type(self) -> str | None:
        """The older spelling of ``type``."""
        return self.type

    def __str__(self) -> str:
        if self.task_id and self.task_id not in self.message:
            return f"{self.message} ({task_name(self.task_id)})"
        return self.message


class ValidationError(QImageError, ValueError):
    """A request or setting is invalid; it was refused before anything was sent."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.param = field


class APIError(QImageError):
    """The API answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_type: str | None = None,
        param: str | None = None,
        task_id: str | None = None,
        retry_after: float | None = None,
        code: int | str | None = None,
    ) -> None:
        super().__init__(message, task_id=task_id)
        self.status_code = status_code
        self.code = code if code is not None else status_code
        self.type = error_type
        self.param = param
        self.retry_after = retry_after
        self.detail = message  # the host's own words (the client sets them apart from its hint)
        # Set by the client: an earlier attempt of the same request got no definite answer, so
        # this refusal does not prove the server created nothing.
        self.after_ambiguous_attempt = False


class BadRequestError(APIError):
    """400: the server refused a parameter or a task id."""


class AuthenticationError(APIError):
    """401: the API key is missing or wrong."""


class InsufficientBalanceError(APIError):
    """402: the key's balance cannot pay for this request."""


class PermissionDeniedError(APIError):
    """403: the key may not use this model or task."""


class NotFoundError(APIError):
    """404: the task is unknown or has expired."""


class PayloadTooLargeError(APIError):
    """413: an upload exceeds the provider's size limit."""


class RequestTimeoutError(APIError):
    """408: the server gave up waiting for the request; transient, retried like a 5xx."""


class RateLimitError(APIError):
    """429: too many requests, still refused after honouring Retry-After."""


class ServerError(APIError):
    """5xx, or an HTML error page from a proxy in front of the API."""


class TransportError(QImageError):
    """The network failed (connection reset, timeout) even after retries."""


class SubmitOutcomeUnknown(QImageError):
    """A submit's answer never arrived: the task may exist and may be billed.

    Nothing was resent automatically, because this host has not shown that it honours the
    Idempotency-Key (API.md 7.1). ``idempotency_key`` names the journal entry; resending it with
    ``client.resend(key)`` (or ``%qimage resume --resend KEY``) sends the identical body with the
    same key, so a host that honours keys answers with the original task.
    """

    def __init__(self, message: str, *, idempotency_key: str) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key


class ProtocolError(QImageError):
    """A response broke the contract: malformed JSON, an unknown status, a missing field."""


class TaskError(QImageError):
    """A task ended without images."""

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = None,
        code: int | str | None = None,
        error_type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, task_id=task_id)
        self.code = code
        self.type = error_type
        self.param = param


class TaskFailedError(TaskError):
    """The provider failed the task, e.g. a content-moderation refusal. Failed tasks are not billed."""


class TaskCancelledError(TaskError):
    """The task was cancelled on the server."""


class GenerationTimeout(QImageError, TimeoutError):
    """The wait deadline passed while the task was still running; resume it later by ``task_id``."""

    def __init__(self, message: str, *, task_id: str, last_status: str | None = None) -> None:
        super().__init__(message, task_id=task_id)
        self.last_status = last_status


class ImageError(QImageError):
    """A downloaded body is not a safe image: not an image, too large, a decompression bomb, truncated."""

    def __init__(self, message: str, *, task_id: str | None = None, url: str | None = None) -> None:
        super().__init__(message, task_id=task_id)
        self.url = url
