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
    ├── ProtocolError                a response broke the contract (bad JSON, unknown status)
    ├── TaskError                    a task ended without images
    │   ├── TaskFailedError          the provider failed it (e.g. a moderation refusal)
    │   └── TaskCancelledError       the task was cancelled
    ├── GenerationTimeout            our wait deadline passed; the task may still finish
    └── ImageError                   a download is not a safe image (not an image, bomb, truncated)

Messages are one line a user can act on. Anything that concerns a submitted task carries its
``task_id`` so the images can always be fetched later (``Client.resume(task_id)``).
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
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TransportError",
    "ValidationError",
]


class QImageWarning(UserWarning):
    """A warning from qimage_nb (the test suite turns these into errors)."""


class QImageError(Exception):
    """Base class of every qimage_nb error."""

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.task_id = task_id

    def __str__(self) -> str:
        if self.task_id and self.task_id not in self.message:
            return f"{self.message} (task {self.task_id})"
        return self.message


class ValidationError(QImageError, ValueError):
    """A request or setting is invalid; it was refused before anything was sent."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


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
    ) -> None:
        super().__init__(message, task_id=task_id)
        self.status_code = status_code
        self.error_type = error_type
        self.param = param
        self.retry_after = retry_after
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


class ProtocolError(QImageError):
    """A response broke the contract: malformed JSON, an unknown status, a missing field."""


class TaskError(QImageError):
    """A task ended without images."""

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = None,
        code: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message, task_id=task_id)
        self.code = code
        self.error_type = error_type


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
