"""One host's HTTP: the connection pools, the key on API requests only, a provider's ``Call`` sent
and its answer decoded, every error turned into one line that never carries the key.

The CDN shares the pools (``_download``) but never the key: the shared httpx client has no default
auth header, and only API requests add it through ``_BearerAuth``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING, Any

import httpx

from .._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InsufficientBalanceError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProtocolError,
    QImageError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TransportError,
    ValidationError,
)
from .._version import __version__
from ._config import _BearerAuth, _Secret, is_loopback_host
from ._retry import RetryPolicy, TryAgain, is_retryable, parse_retry_after, retrying

if TYPE_CHECKING:
    from ..providers import Call, ErrorInfo, Provider

__all__ = ["Connection"]

_ERRORS_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientBalanceError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    413: PayloadTooLargeError,
    429: RateLimitError,
}

_HINTS: dict[type[APIError], str] = {
    AuthenticationError: "the API key was refused",
    InsufficientBalanceError: "insufficient balance: top up the account; nothing was generated",
    PermissionDeniedError: "permission denied for this key",
    NotFoundError: "unknown or expired task",
    PayloadTooLargeError: "the file is too large for the API",
    BadRequestError: "the API refused the request",
    RateLimitError: "rate limited by the API",
    RequestTimeoutError: "the API timed out reading the request",
    ServerError: "the API failed",
}


# Failures before a request has a connection to go out on: a refused or unreachable address, a
# connect that timed out, no pooled connection in time. Nothing of the request was sent, so even a
# submit may be tried again without any risk of a second task.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Connection:
    """The way to one host's API (``base_url``, through ``provider``) with one key."""

    def __init__(
        self,
        provider: Provider,
        base_url: str,
        key: _Secret | None,
        *,
        timeout: httpx.Timeout,
        transport: httpx.AsyncBaseTransport | None,
        retry: RetryPolicy,
        download_concurrency: int,
    ) -> None:
        self.provider = provider
        self.base_url = base_url
        self._key = key
        self.timeout = timeout
        self._transport = transport
        self.retry = retry
        self._download_concurrency = download_concurrency
        # One connection pool and one download gate per event loop: both belong to the loop that
        # first used them, and a kernel runs two (its own, for the panel; run_sync's private one,
        # for the magic and Client).
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, asyncio.Semaphore]]
        self._pools = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<Connection {self.base_url!r} key={'set' if self._key else 'unset'}>"

    # -- pools --

    def pool(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """This loop's httpx client and download gate."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            # No default auth header on the shared client: only API requests add it, so the CDN
            # (another origin) never sees the key, even through a redirect.
            http = httpx.AsyncClient(
                transport=self._transport,
                timeout=self.timeout,
                follow_redirects=False,
                headers={"User-Agent": f"qimage_nb/{__version__}"},
            )
            pool = self._pools[loop] = (http, asyncio.Semaphore(self._download_concurrency))
        return pool

    async def aclose(self) -> None:
        """Close this loop's connections (another loop's pool is dropped; it cannot be awaited here)."""
        pools, self._pools = self._pools, weakref.WeakKeyDictionary()
        pool = pools.get(asyncio.get_running_loop())
        if pool is not None:
            await pool[0].aclose()

    # -- the key --

    def auth(self) -> _BearerAuth:
        """The key as an httpx.Auth, or the one line that says how to set one."""
        if self._key is None:
            raise ValidationError(
                "api_key",
                f"no API key: %qimage emulator tries everything offline; or set {self.provider.key_env}, "
                "pass api_key=..., or run %qimage login",
            )
        return _BearerAuth(self._key, self.provider.auth_scheme)

    def redact(self, text: str) -> str:
        # Keys shorter than 8 characters are toys (tests, local mirrors): replacing such a short
        # string everywhere would corrupt ordinary text and data, so only real keys are redacted.
        if self._key is not None and len(self._key.reveal()) >= 8 and self._key.reveal() in text:
            return text.replace(self._key.reveal(), "***")
        return text

    def scrub(self, payload: Any) -> Any:
        """The decoded JSON with the key redacted from every string value: a server that
        echoes the key (in a 200 with an error code, a failed task's reason, an unknown field) must
        not plant it in our messages, logs or journal."""
        if isinstance(payload, str):
            return self.redact(payload)
        if isinstance(payload, list):
            return [self.scrub(item) for item in payload]
        if isinstance(payload, dict):
            return {k: self.scrub(v) for k, v in payload.items()}  # field names are ours to read
        return payload

    # -- answers --

    def api_error(
        self, status: int, info: ErrorInfo, what: str, task_id: str | None, retry_after: float | None = None
    ) -> APIError:
        cls = _ERRORS_BY_STATUS.get(status, ServerError if status >= 500 else BadRequestError)
        if status == 500 and info.code in self.provider.capabilities.parameter_refusal_codes:
            # A host that answers 500 for a bad parameter (API.md 7.3): say it as what it is.
            cls = BadRequestError
        detail = self.redact(info.message)
        hint = self.provider.auth_hint(self.base_url) if cls is AuthenticationError else _HINTS[cls]
        if cls is BadRequestError and status == 500:
            hint = "the API refused the request's parameters"
        if cls is RateLimitError and retry_after is not None:
            hint += f" (retry after {retry_after:.0f} s)"
        error = cls(
            f"{what}: {hint} (HTTP {status}): {detail}",
            status_code=status,
            error_type=info.type,
            param=info.param,
            task_id=task_id,
            retry_after=retry_after,
            code=info.code,
        )
        error.detail = detail  # the host's own words, for a line that says them once
        return error

    def error_of(self, response: httpx.Response, what: str, task_id: str | None) -> APIError:
        info = self.provider.read_error(
            response.status_code, response.headers.get("content-type", ""), response.content
        )
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return self.api_error(response.status_code, info, what, task_id, retry_after)

    def decoded(self, response: httpx.Response, what: str, task_id: str | None) -> Any:
        """A 2xx answer's JSON, the key redacted; an error carried inside it is raised as what it is."""
        try:
            payload = self.scrub(response.json())
        except ValueError:
            raise ProtocolError(
                f"{what}: HTTP {response.status_code} answer is not valid JSON", task_id=task_id
            ) from None
        inside = self.provider.error_in_success(payload)
        if inside is not None:
            status, info = inside
            raise self.api_error(status, info, what, task_id)
        return payload

    @property
    def host(self) -> str:
        return httpx.URL(self.base_url).host or self.base_url

    def network_failure(self, exc: httpx.TransportError) -> str:
        """One line for a network failure: which host, what happened (the faces add what to check)."""
        detail = self.redact(str(exc))[:120] or type(exc).__name__
        if isinstance(exc, NOT_SENT):
            return f"network error: could not connect to {self.host} ({detail})"
        return f"network error talking to {self.host} ({type(exc).__name__}: {detail})"

    # -- requests --

    async def send(self, call: Call, *, auth: _BearerAuth) -> httpx.Response:
        """One attempt of ``call``, with the key; no retry, no decoding (a submit's own rules decide)."""
        http = self.pool()[0]
        timeout = None
        if call.read_timeout is not None:
            timeout = httpx.Timeout(self.timeout.connect, read=call.read_timeout,
                                    write=self.timeout.write, pool=self.timeout.pool)
        return await http.request(
            call.method,
            self.base_url + call.path,
            json=call.json,
            files=call.files,
            headers={"Accept": "application/json", **call.headers},
            auth=auth,
            **({"timeout": timeout} if timeout is not None else {}),
        )

    async def call(self, call: Call, *, what: str, task_id: str | None = None, retry: bool = True) -> Any:
        """One idempotent API request (a GET; never a submit) with retries on transient failures;
        returns the decoded JSON body. ``retry=False``: one attempt (uploads have no key)."""
        auth = self.auth()

        async def attempt() -> Any:
            try:
                response = await self.send(call, auth=auth)
            except httpx.TimeoutException as exc:
                raise TryAgain(TransportError(
                    f"{what}: {self.host} did not answer in time ({type(exc).__name__})", task_id=task_id
                )) from None
            except httpx.TransportError as exc:
                failure = TransportError(f"{what}: {self.network_failure(exc)}", task_id=task_id)
                failure.unreachable = isinstance(exc, httpx.ConnectError)  # type: ignore[attr-defined]
                raise TryAgain(failure) from None
            if response.is_success:
                try:
                    return self.decoded(response, what, task_id)
                except ProtocolError as exc:
                    raise TryAgain(exc) from None
                except APIError as error:
                    if not is_retryable(error.status_code, error.type):
                        raise
                    raise TryAgain(error) from None
            error = self.error_of(response, what, task_id)
            if not is_retryable(response.status_code, error.type) or not self.retry.honours(error.retry_after):
                raise error
            raise TryAgain(error, error.retry_after)

        started = time.monotonic()
        try:
            return await retrying(attempt, policy=self.retry, what=what, attempts=None if retry else 1)
        except TransportError as exc:
            raise self.unreachable(exc, self.retry.max_attempts if retry else 1, started) from None

    def unreachable(self, failure: QImageError, attempts: int, started: float) -> QImageError:
        """A connection that never opened, after every attempt: one error naming the address, the
        attempts, the time spent and the fix (where this host's address is set)."""
        if not getattr(failure, "unreachable", False):
            return failure
        spent = time.monotonic() - started
        variable = self.provider.base_url_env
        if is_loopback_host(httpx.URL(self.base_url).host or ""):
            fix = ("start the emulator (%qimage emulator, or python -m qimage_nb.emulator), or check the network "
                   f"connection and {variable} (base_url=)")
        else:
            fix = f"check the network connection, or {variable} (base_url=) if the API is at another address"
        error = TransportError(
            f"{failure.message}; {attempts} attempt{'s' if attempts != 1 else ''} to {self.base_url} over "
            f"{spent:.1f} s, nothing was sent: {fix}",
            task_id=failure.task_id,
        )
        error.unreachable = True  # type: ignore[attr-defined]
        return error
