"""The async client: one implementation under the magic, the panel and the sync facade.

A generation is submit -> poll -> download. Each step is journaled (``_store.Store``) before and
after it happens, so that a kernel that dies at any moment loses nothing it paid for: the
Idempotency-Key is written before the POST (a lost answer is replayed with the same key), the task
id as soon as it is known, and every image as soon as its bytes are on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from .._contract import Balance, GenerationRequest, TaskStatus, UploadedImage
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
    SubmitOutcomeUnknown,
    TaskCancelledError,
    TaskFailedError,
    TransportError,
    ValidationError,
)
from .._version import __version__
from ..journal._provenance import open_stored
from ..providers import Call, ErrorInfo, Provider, Submitted, choose_provider
from ..providers import check as check_request
from ._config import (
    _BearerAuth,
    _check_count,
    _check_key,
    _check_seconds,
    _check_task_id,
    check_base_url,
    is_loopback_host,
)
from ._download import store_image
from ._polling import Calibration, PollPolicy, poll_updates
from ._results import Generation, Update, UpdateCallback, _Progress
from ._retry import RetryPolicy, TryAgain, is_retryable, note_retry, parse_retry_after, retrying

if TYPE_CHECKING:
    from PIL import Image

    from ..journal._store import JobRecord, Store

__all__ = ["AsyncClient", "Generation", "Update"]

logger = logging.getLogger("qimage_nb")
T = TypeVar("T")

_ANSWERED_KEPT = 4096  # submit answer times kept for the schedules of tasks not yet waited on
# Provider upload URLs live 72 h; reuse ours for less than that so a re-run sends the same URL
# (and so hits the cache) without ever handing the API a URL about to expire.
UPLOAD_REUSE_SECONDS = 48 * 3600


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

# One process-wide list of model ids per (provider, origin): the model list changes rarely, and a
# request for a model the seed's table does not know must be checked against it before any submit.
_LISTED_MODELS: dict[tuple[str, str], list[str]] = {}

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


# --- the client ------------------------------------------------------------------------------


def _shared_timing(base_url: str, store: Store | None) -> Calibration:
    """What this process (and earlier ones, via the data directory) learned of this provider's
    timing: every default-policy client of one provider shares it.

    Only a provider's HTTPS origin is remembered across processes: plain-http origins are the
    emulator and local test servers, set up per run (often on a random port), whose files would
    only pile up and whose timing the next run need not share.
    """
    url = httpx.URL(base_url)
    if url.scheme != "https" or is_loopback_host(url.host):
        return Calibration.shared(base_url)
    from ..journal._store import _default_root

    root = store.root if store is not None else _default_root()
    name = hashlib.sha256(base_url.encode()).hexdigest()[:16]
    return Calibration.shared(base_url, root / "timing" / f"{name}.json")


class AsyncClient:
    """Async client for Qwen Image on one host (a provider).

    Parameters
    ----------
    api_key:
        The key; defaults to the provider's variable (``$QIMAGE_API_KEY`` for the seed's API,
        ``$DASHSCOPE_API_KEY`` for Alibaba Model Studio). Never shown in any repr, message or log.
    base_url:
        API origin; defaults to the provider's variable (``$QIMAGE_BASE_URL``,
        ``$DASHSCOPE_HTTP_BASE_URL``), then its production host. Plain http is refused for
        non-loopback hosts unless ``allow_insecure_http=True``.
    provider:
        ``"apimart"`` (the seed's API) or ``"dashscope"``; defaults to ``$QIMAGE_PROVIDER``, else
        the one provider whose key is set, else ``"apimart"``.
    timeout:
        Per-request timeout in seconds (or an ``httpx.Timeout``).
    wait_timeout:
        Default deadline for a whole generation to finish on the server, in seconds.
    transport:
        An ``httpx.AsyncBaseTransport`` (tests, the in-process emulator).
    store:
        The journal and image files; defaults to ``Store.default()`` (``$QIMAGE_HOME``).
    retry, poll:
        Retry and polling policies (``RetryPolicy``, ``PollPolicy``).
    download_concurrency:
        Images downloaded at once across all generations of this client.
    cache_scope:
        Which journal entries may serve this client's cached requests: only those journaled under
        the same scope, so one API's images are never served as another's. Defaults to
        ``base_url``; the in-kernel emulator passes one name for all its instances, because each
        kernel's emulator listens on a new port but its pictures on disk stay good.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = 30.0,
        wait_timeout: float = 900.0,
        transport: httpx.AsyncBaseTransport | None = None,
        store: Store | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        download_concurrency: int = 6,
        allow_insecure_http: bool = False,
        provider: str | Provider | None = None,
        cache_scope: str | None = None,
    ) -> None:
        self.provider = choose_provider(provider)
        env = self.provider
        self._key = _check_key(api_key if api_key is not None else os.environ.get(env.key_env))
        raw_url = base_url if base_url is not None else (os.environ.get(env.base_url_env) or env.default_base_url)
        self.base_url = check_base_url(raw_url, allow_insecure_http=allow_insecure_http)
        self.cache_scope = cache_scope or self.base_url
        if isinstance(timeout, httpx.Timeout):
            self._timeout = timeout
        else:
            seconds = _check_seconds("timeout", timeout)
            self._timeout = httpx.Timeout(seconds, connect=min(seconds, 10.0))
        self.wait_timeout = _check_seconds("wait_timeout", wait_timeout)
        self._transport = transport
        self._store = store
        self.retry = retry or RetryPolicy()
        self.poll = poll or PollPolicy(calibration=_shared_timing(self.base_url, store))
        self._download_concurrency = _check_count("download_concurrency", download_concurrency)
        # One connection pool and one download gate per event loop: both belong to the loop that
        # first used them, and a kernel runs two (its own, for the panel; run_sync's private one,
        # for the magic and Client).
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, asyncio.Semaphore]]
        self._pools = weakref.WeakKeyDictionary()
        # Each recent fresh submit's exchange (sent, answered): the server created the task in
        # between, and the poll schedule counts from then, not from when the caller starts waiting.
        self._answered: OrderedDict[str, tuple[float, float]] = OrderedDict()

    # -- plumbing --

    def __repr__(self) -> str:
        return (
            f"<AsyncClient provider={self.provider.name} base_url={self.base_url!r} "
            f"key={'set' if self._key else 'unset'}>"
        )

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def store(self) -> Store:
        if self._store is None:
            from ..journal._store import Store

            self._store = Store.default()
        return self._store

    async def _journal(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A journal call run in a worker thread: a write commits with SQLite's synchronous=FULL and
        an image is fsynced, and the loop this runs on (a kernel's: the panel, widgets, other
        cells' tasks) must keep moving meanwhile. Awaited where it stands, so the journal's order
        relative to the network is unchanged. A coroutine cancelled meanwhile leaves the call to
        finish in its thread: a write begun is never cut in half."""
        return await asyncio.to_thread(call, *args, **kwargs)

    def _pool(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            # No default auth header on the shared client: only API requests add it, so the CDN
            # (another origin) never sees the key, even through a redirect.
            http = httpx.AsyncClient(
                transport=self._transport,
                timeout=self._timeout,
                follow_redirects=False,
                headers={"User-Agent": f"qimage_nb/{__version__}"},
            )
            pool = self._pools[loop] = (http, asyncio.Semaphore(self._download_concurrency))
        return pool

    def _client(self) -> httpx.AsyncClient:
        return self._pool()[0]

    async def aclose(self) -> None:
        """Close this loop's connections (another loop's pool is dropped; it cannot be awaited here)."""
        pools, self._pools = self._pools, weakref.WeakKeyDictionary()
        pool = pools.get(asyncio.get_running_loop())
        if pool is not None:
            await pool[0].aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _auth(self) -> _BearerAuth:
        if self._key is None:
            raise ValidationError(
                "api_key",
                f"no API key: %qimage emulator tries everything offline; or set {self.provider.key_env}, "
                "pass api_key=..., or run %qimage login",
            )
        return _BearerAuth(self._key)

    def _redact(self, text: str) -> str:
        # Keys shorter than 8 characters are toys (tests, local mirrors): replacing such a short
        # string everywhere would corrupt ordinary text and data, so only real keys are redacted.
        if self._key is not None and len(self._key.reveal()) >= 8 and self._key.reveal() in text:
            return text.replace(self._key.reveal(), "***")
        return text

    def _scrub(self, payload: Any) -> Any:
        """The decoded JSON with the key redacted from every string value: a server that
        echoes the key (in a 200 with an error code, a failed task's reason, an unknown field) must
        not plant it in our messages, logs or journal."""
        if isinstance(payload, str):
            return self._redact(payload)
        if isinstance(payload, list):
            return [self._scrub(item) for item in payload]
        if isinstance(payload, dict):
            return {k: self._scrub(v) for k, v in payload.items()}  # field names are ours to read
        return payload

    def _api_error(
        self, status: int, info: ErrorInfo, what: str, task_id: str | None, retry_after: float | None = None
    ) -> APIError:
        cls = _ERRORS_BY_STATUS.get(status, ServerError if status >= 500 else BadRequestError)
        if status == 500 and info.code == "build_request_failed":
            # API.md 7.3: the provider answers 500 for a bad parameter; say it as what it is.
            cls = BadRequestError
        detail = self._redact(info.message)
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

    def _error_of(self, response: httpx.Response, what: str, task_id: str | None) -> APIError:
        info = self.provider.read_error(
            response.status_code, response.headers.get("content-type", ""), response.content
        )
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return self._api_error(response.status_code, info, what, task_id, retry_after)

    def _decoded(self, response: httpx.Response, what: str, task_id: str | None) -> Any:
        """A 2xx answer's JSON, the key redacted; an error carried inside it is raised as what it is."""
        try:
            payload = self._scrub(response.json())
        except ValueError:
            raise ProtocolError(
                f"{what}: HTTP {response.status_code} answer is not valid JSON", task_id=task_id
            ) from None
        inside = self.provider.error_in_success(payload)
        if inside is not None:
            status, info = inside
            raise self._api_error(status, info, what, task_id)
        return payload

    async def _send(self, call: Call, *, auth: _BearerAuth) -> httpx.Response:
        http = self._client()
        timeout = None
        if call.read_timeout is not None:
            timeout = httpx.Timeout(self._timeout.connect, read=call.read_timeout,
                                    write=self._timeout.write, pool=self._timeout.pool)
        return await http.request(
            call.method,
            self.base_url + call.path,
            json=call.json,
            files=call.files,
            headers={"Accept": "application/json", **call.headers},
            auth=auth,
            **({"timeout": timeout} if timeout is not None else {}),
        )

    async def _call(self, call: Call, *, what: str, task_id: str | None = None, retry: bool = True) -> Any:
        """One idempotent API request (a GET; never a submit) with retries on transient failures;
        returns the decoded JSON body. ``retry=False``: one attempt (uploads have no key)."""
        auth = self._auth()

        async def attempt() -> Any:
            try:
                response = await self._send(call, auth=auth)
            except httpx.TimeoutException as exc:
                raise TryAgain(TransportError(
                    f"{what}: {self._host()} did not answer in time ({type(exc).__name__})", task_id=task_id
                )) from None
            except httpx.TransportError as exc:
                raise TryAgain(TransportError(f"{what}: {self._network_failure(exc)}", task_id=task_id)) from None
            if response.is_success:
                try:
                    return self._decoded(response, what, task_id)
                except ProtocolError as exc:
                    raise TryAgain(exc) from None
                except APIError as error:
                    if not is_retryable(error.status_code, error.type):
                        raise
                    raise TryAgain(error) from None
            error = self._error_of(response, what, task_id)
            if not is_retryable(response.status_code, error.type) or not self.retry.honours(error.retry_after):
                raise error
            raise TryAgain(error, error.retry_after)

        return await retrying(attempt, policy=self.retry, what=what, attempts=None if retry else 1)

    def _host(self) -> str:
        return httpx.URL(self.base_url).host or self.base_url

    def _network_failure(self, exc: httpx.TransportError) -> str:
        """One line for a network failure: which host, what happened (the faces add what to check)."""
        detail = self._redact(str(exc))[:120] or type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            return f"network error: could not connect to {self._host()} ({detail})"
        return f"network error talking to {self._host()} ({type(exc).__name__}: {detail})"

    # -- single operations --

    def _needs(self, capability: str, what: str) -> None:
        if not getattr(self.provider.capabilities, capability):
            raise ValidationError(capability, f"{self.provider.title} has no {what}")

    async def balance(self) -> Balance:
        """The key's remaining balance (API.md section 6)."""
        self._needs("balance", "balance endpoint")
        return self.provider.read_balance(await self._call(self.provider.balance(), what="balance"))

    async def models(self) -> list[str]:
        """The model ids the host lists (``GET /v1/models``), fetched once per origin per process."""
        self._needs("list_models", "model listing")
        cache_key = (self.provider.name, self.base_url)
        if cache_key not in _LISTED_MODELS:
            payload = await self._call(self.provider.list_models(), what="model list")
            _LISTED_MODELS[cache_key] = self.provider.read_models(payload)
        return list(_LISTED_MODELS[cache_key])

    async def check(self, request: GenerationRequest) -> GenerationRequest:
        """Check a request against this client's provider (models, sizes, options); nothing is sent
        unless the model is one the provider does not document, which asks the host's model list."""
        listed: list[str] = []
        unreadable = None
        if request.model not in self.provider.models and self.provider.capabilities.list_models:
            self._auth()
            try:
                listed = await self.models()
            except AuthenticationError:
                raise
            except (APIError, TransportError, ProtocolError) as exc:
                # Without the list the model cannot be shown to exist here: refuse it, and say why.
                unreadable = exc
        try:
            check_request(self.provider, request, listed)
        except ValidationError as exc:
            if unreadable is None or exc.field != "model":
                raise
            raise ValidationError("model", f"{exc.message} (the host's model list could not be read: {unreadable})") from None
        return request

    async def upload(self, image: Any, *, reuse: bool = False) -> str:
        """Upload a local image (path, bytes or PIL image) and return its public URL for ``image_urls``.

        Each upload is remembered in the journal by its content (SHA-256) and this API's origin.
        ``reuse=True``: the same bytes uploaded to this API within ``UPLOAD_REUSE_SECONDS`` (48 h; the
        host keeps uploads 72 h) are not sent again: that URL is returned. A re-run cell then sends
        the same URL, and so hits the cache, instead of paying for a new task.

        Uploads carry no idempotency key: one attempt, never resent behind your back."""
        from ..journal._images import prepare_upload

        self._needs("upload", "upload endpoint: pass public https URLs as references")
        upload = prepare_upload(image)
        digest = hashlib.sha256(upload.data).hexdigest()
        if reuse:
            earlier = await self._journal(self.store.find_upload, digest, self.base_url, UPLOAD_REUSE_SECONDS)
            if earlier is not None:
                return earlier[0]
        call = self.provider.upload(upload.filename, upload.data, upload.content_type)
        payload = await self._call(call, what=f"upload of {upload.filename}", retry=False)
        url = self.provider.read_upload(payload).url
        await self._journal(self.store.remember_upload, digest, self.base_url, url)
        return url

    def find_upload(self, image: Any) -> UploadedImage | None:
        """The upload that ``upload(image, reuse=True)`` would return without sending anything (its
        URL and when it was uploaded), or None."""
        from ..journal._images import prepare_upload

        digest = hashlib.sha256(prepare_upload(image).data).hexdigest()
        earlier = self.store.find_upload(digest, self.base_url, UPLOAD_REUSE_SECONDS)
        return None if earlier is None else UploadedImage(url=earlier[0], created_at=earlier[1])

    async def submit(
        self,
        request: GenerationRequest | str,
        *,
        idempotency_key: str | None = None,
        label: str | None = None,
        **fields: Any,
    ) -> str:
        """Validate, journal and submit one request; return the task id. Billed once per call."""
        if isinstance(request, str):
            request = GenerationRequest.create(request, **fields)
        elif fields:
            raise ValidationError("request", "pass either a GenerationRequest or a prompt with fields, not both")
        self._auth()  # refuse before journaling when no key is set
        await self.check(request)
        key = idempotency_key or new_idempotency_key()
        fresh = await self._journal(self.store.get, key) is None
        if fresh:
            await self._journal(self.store.begin, request, key, label=label, origin=self.base_url, scope=self.cache_scope)
        return (await self._submit_journaled(request, key, fresh=fresh)).task_id

    async def _keys_honoured(self) -> bool:
        """Whether this origin has shown that it honours the Idempotency-Key (API.md 7.1), in this
        process or an earlier one: the journal remembers it per origin."""
        return self.provider.capabilities.idempotency_keys and await self._journal(
            self.store.idempotency_confirmed, self.base_url
        )

    async def _confirm_keys(self) -> None:
        await self._journal(self.store.confirm_idempotency, self.base_url)

    async def _unknown(self, key: str, reason: str) -> SubmitOutcomeUnknown:
        """Journal a submit with no answer as 'outcome unknown' and say so, once, with the way out."""
        await self._journal(self.store.mark_outcome_unknown, key, reason)
        if not self.provider.capabilities.idempotency_keys:
            why = "nothing was resent, because this host has no idempotency key"
        elif await self._keys_honoured():
            why = "nothing more was resent"
        else:
            why = "nothing was resent, because this host has not shown that it honours Idempotency-Key"
        # The offer says what a resend risks on this host (no second bill only where keys are honoured).
        from ..view._words import resend_offer

        offer = resend_offer(key, keys_honoured=self.provider.capabilities.idempotency_keys)
        return SubmitOutcomeUnknown(
            f"submit to {self._host()}: {reason}; the task may exist and may be billed ({why}). "
            f"{offer[0].upper()}{offer[1:]} (Python: client.resend({key!r}))",
            idempotency_key=key,
        )

    async def _submit_journaled(
        self, request: GenerationRequest, key: str, *, fresh: bool, force: bool = False
    ) -> Submitted:
        """POST a journaled request and journal the answer.

        A submit is resent automatically only where that provably cannot bill twice: the request
        never left (a refused connection), the server refused it outright (429, 408), or this
        origin honours the Idempotency-Key (API.md 7.1) and gets the same key and body. Anywhere
        else a lost answer is journaled as 'outcome unknown' and reported, never resent: the
        user decides (``resend``). ``force``: the user asked for that resend.

        ``fresh``: the key was never sent before, so the task is created during this exchange (a
        replayed key returns a task of unknown age).
        """
        auth = self._auth()
        call = self.provider.submit(request, key)
        what = "submit"
        may_exist = False  # some attempt may have created the task without our knowing
        failure: QImageError | None = None
        for attempt in range(self.retry.max_attempts):
            # The user's resend is one send: a further one, after its answer too is lost, is made
            # only where the origin honours keys, as for any submit.
            safe = await self._keys_honoured()
            if force and attempt == 0:
                safe = True
            retry_after: float | None = None
            sent = time.monotonic()
            try:
                response = await self._send(call, auth=auth)
            except httpx.ConnectError as exc:
                failure = TransportError(f"{what}: {self._network_failure(exc)}")
            except httpx.TransportError as exc:
                may_exist = True
                reason = (
                    f"no answer from {self._host()} in time ({type(exc).__name__})"
                    if isinstance(exc, httpx.TimeoutException)
                    else f"the connection to {self._host()} broke before the answer ({type(exc).__name__})"
                )
                if not safe:
                    raise await self._unknown(key, reason) from None
                failure = TransportError(f"{what}: {reason}")
            else:
                answered = time.monotonic()
                if self.provider.confirms_idempotency(response.headers):
                    await self._confirm_keys()
                try:
                    if not response.is_success:
                        raise self._error_of(response, what, None)
                    payload = self._decoded(response, what, None)
                    submitted = self.provider.read_submit(payload, response.headers)
                except ProtocolError as exc:
                    may_exist = True  # an answer we cannot read may still stand for a task
                    if not safe:
                        raise await self._unknown(key, f"its answer could not be read ({exc})") from None
                    failure = exc
                except APIError as error:
                    code = error.code
                    if code in ("idempotency_in_progress", "idempotency_unavailable",
                                "idempotency_result_indeterminate", "idempotency_key_reused"):
                        await self._confirm_keys()  # only a host that honours keys answers these
                    if code == "idempotency_key_reused":
                        await self._journal(self.store.record_status, key, "failed", 0, error=str(error))
                        raise
                    if code == "idempotency_result_indeterminate":
                        raise await self._unknown(key, f"{self._host()} cannot tell whether it created the task") from None
                    if code in ("idempotency_in_progress", "idempotency_unavailable"):
                        # in progress: the first request with this key is being processed, so the
                        # task may well exist; unavailable: nothing was done yet.
                        may_exist = may_exist or code == "idempotency_in_progress"
                        failure, retry_after = error, error.retry_after if error.retry_after is not None else 1.0
                    elif error.status_code in (408, 429) and is_retryable(error.status_code, error.type):
                        if not self.retry.honours(error.retry_after):
                            await self._settle_refused(key, error, may_exist)
                            raise
                        failure, retry_after = error, error.retry_after  # refused outright: nothing exists
                    elif error.status_code in (502, 503, 504) and is_retryable(error.status_code, error.type):
                        may_exist = True
                        if not safe:
                            raise await self._unknown(key, f"{self._host()} answered HTTP {error.status_code}: {error.detail}") from None
                        failure, retry_after = error, error.retry_after
                    elif error.status_code >= 500 and not _bad_parameter(error):
                        # API.md 7.1/7.3: a 5xx after the body was sent leaves the outcome unknown;
                        # a 500 is never resent on its own (the provider also uses it for bad
                        # parameters). The server's message is in the one line the user gets.
                        raise await self._unknown(
                            key, f"{self._host()} answered HTTP {error.status_code}: {error.detail}"
                        ) from None
                    else:
                        # A definite answer (a 500 build_request_failed is a bad parameter):
                        # shown at once, never resent.
                        await self._settle_refused(key, error, may_exist)
                        raise
                else:
                    await self._journal_submitted(key, submitted, fresh=fresh, sent=sent, answered=answered)
                    return submitted
            if may_exist and not await self._keys_honoured():
                # The user's one resend got no definite answer either: report, never send again.
                raise await self._unknown(key, f"the resend got no definite answer ({failure})") from None
            if attempt + 1 < self.retry.max_attempts:
                delay = self.retry.backoff(attempt, retry_after)
                logger.info("qimage_nb: %s failed (%s); retry %d of %d with the same key in %.1f s",
                            what, failure, attempt + 1, self.retry.max_attempts - 1, delay)
                note_retry(what, failure, attempt + 1, self.retry.max_attempts - 1, delay)
                await asyncio.sleep(delay)
        assert failure is not None
        if may_exist:
            raise await self._unknown(key, f"no definite answer after {self.retry.max_attempts} attempts ({failure})") from None
        await self._journal(self.store.record_status, key, "failed", 0, error=str(failure))
        raise failure

    def _abandoned(self, key: str) -> None:
        """An interrupt or a cancelled wait before the submit's answer: nobody waits for it now,
        so it is not "in flight" any more; its outcome is unknown until the user resends it.
        (Synchronous on purpose: this runs while the task is being cancelled.)"""
        job = self.store.get(key)
        if job is not None and job.task_id is None and job.status == "submitting" and not job.outcome_unknown:
            self.store.mark_outcome_unknown(key, "the wait was interrupted before the submit's answer")

    async def _settle_refused(self, key: str, error: APIError, may_exist: bool) -> None:
        """A definite refusal. After an attempt that may have created the task, the refusal does
        not prove nothing exists: the entry stays open ('outcome unknown') for the user to decide."""
        if may_exist:
            await self._journal(self.store.mark_outcome_unknown, key, f"a later attempt was refused ({error.message})")
        else:
            await self._journal(self.store.record_status, key, "failed", 0, error=str(error))

    async def _journal_submitted(
        self, key: str, submitted: Submitted, *, fresh: bool, sent: float, answered: float
    ) -> None:
        if fresh and not submitted.replayed:
            self._answered[submitted.task_id] = (sent, answered)
            while len(self._answered) > _ANSWERED_KEPT:
                self._answered.popitem(last=False)
        await self._journal(self.store.set_task_id, key, submitted.task_id)
        await self._journal(self.store.record_status, key, "pending", 0)

    async def cancel(self, task_id: str) -> TaskStatus:
        """Ask the host to cancel a task, then return its status. DashScope cancels a task only
        while it is still queued (PENDING); the seed's API has no cancel endpoint (API.md 7.8)."""
        task_id = _check_task_id(task_id, "cancel")
        call = self.provider.cancel(task_id)
        if call is None:
            raise ValidationError(
                "task_id", f"{self.provider.title} has no way to cancel a task: it runs to its end "
                "(a failed task is not billed); stop waiting instead, and resume it later"
            )
        await self._call(call, what=f"cancel of {task_id}", task_id=task_id)
        status = await self.get_task(task_id)
        job = await self._journal(self.store.get, task_id)
        if job is not None and status.terminal:
            await self._journal(self.store.record_status, job.key, status.status, status.progress)
        return status

    async def get_task(self, task_id: str) -> TaskStatus:
        """One status poll of the task."""
        task_id = _check_task_id(task_id, "get_task")
        payload = await self._call(self.provider.poll(task_id), what=f"status of {task_id}", task_id=task_id)
        try:
            return self.provider.read_task(payload, task_id)
        except ProtocolError as exc:
            exc.task_id = exc.task_id or task_id
            raise

    async def iter_updates(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        immediate: bool = False,
        started: float | None = None,
    ) -> AsyncIterator[TaskStatus]:
        """Poll on the adaptive schedule; yield each status change until a terminal status.

        Transient failures (network, 5xx, 429, a garbled answer) do not end the wait: the task is
        already billed, so only the deadline (``GenerationTimeout``) or a definite answer does.
        """
        timeout_s = _check_seconds("timeout", timeout, allow_none=True) or self.wait_timeout
        start = time.monotonic() if started is None else started
        # The schedule's clock starts when the server created the task, which estimated_time and
        # progress count from: some time during this client's submit exchange, so its middle,
        # give or take half of it. Any other task (a resume, a second wait) is of unknown age: it
        # is polled at once ('immediate') and its schedule neither learns nor uses what was learned.
        exchange = self._answered.pop(task_id, None)
        if exchange is None:
            origin, slack = time.monotonic(), 0.0
        else:
            origin, slack = (exchange[0] + exchange[1]) / 2, (exchange[1] - exchange[0]) / 2
            immediate = False  # its age is known: the schedule places even the first poll
        updates = poll_updates(
            functools.partial(self.get_task, task_id), task_id, policy=self.poll, started=start,
            timeout=timeout_s, origin=origin, slack=slack, immediate=immediate,
        )
        async with contextlib.aclosing(updates):
            async for status in updates:
                yield status

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskStatus:
        """Wait for a task to complete; raise ``TaskFailedError``/``TaskCancelledError``/``GenerationTimeout``."""
        last: TaskStatus | None = None
        async for status in self.iter_updates(task_id, timeout=timeout, immediate=True):
            last = status
        assert last is not None
        _raise_for_terminal(last)
        return last

    async def download(self, task: TaskStatus | str) -> list[Image.Image]:
        """Download a completed task's images (from disk when this journal already has them)."""
        status = task if isinstance(task, TaskStatus) else await self.get_task(task)
        _raise_for_terminal(status)
        job = await self._journal(self.store.get, status.task_id)
        if job is None:
            job = await self._adopt(status.task_id)
        progress = _Progress(job.request, None, job.label, None, time.monotonic())
        images, _ = await self._download_all(job, status, progress)
        return images

    # -- whole generations --

    async def generate(
        self,
        prompt: str | GenerationRequest,
        *,
        on_update: UpdateCallback | None = None,
        timeout: float | None = None,
        cache: bool = False,
        label: str | None = None,
        **options: Any,
    ) -> Generation:
        """Submit, wait and download one request; return its images.

        ``prompt`` is the prompt text with the request's fields as keywords (``model``, ``size``
        (a ratio or ``WIDTHxHEIGHT``), ``resolution``, ``n``, ``negative_prompt``, ``image_urls``,
        and where the provider supports them ``seed``, ``prompt_extend``, ``watermark``), or a
        ready :class:`GenerationRequest`.

        Parameters
        ----------
        on_update:
            Called (sync or async) with an :class:`Update` at each status change and each image.
        timeout:
            Deadline for the task on the server, seconds (default ``wait_timeout``).
        cache:
            Reuse the images of an identical completed request from the journal (no request is
            sent, nothing is billed), or wait for an identical request that was submitted but never
            finished here (no second task). The faces' "re-run without paying".
        """
        request = self._request(prompt, options)
        _check_seconds("timeout", timeout, allow_none=True)
        await self.check(request)
        return await self._run(request, on_update=on_update, timeout=timeout, cache=cache, label=label)

    def _request(self, prompt: Any, options: Mapping[str, Any]) -> GenerationRequest:
        if isinstance(prompt, GenerationRequest):
            if options:
                raise ValidationError(
                    "request", f"pass either a GenerationRequest or a prompt with fields, not both ({', '.join(options)})"
                )
            return prompt
        options = dict(options)
        options.setdefault("model", self.provider.default_model)
        try:
            return GenerationRequest.create(prompt, **options)
        except TypeError as exc:
            raise ValidationError("request", f"generate() got an unknown field: {exc}") from None

    async def resend(
        self, key: str, *, on_update: UpdateCallback | None = None, timeout: float | None = None
    ) -> Generation:
        """Resend a submit whose outcome is unknown, by its journal key: the identical body with the
        same Idempotency-Key (never a new key for the same intent), then wait and download.

        Where the host honours keys it answers with the original task and nothing is billed twice;
        where it does not, this may create (and bill) a second task: that is your call to make.
        """
        key = _check_task_id(key, "resend")
        job = await self._journal(self.store.get, key)
        if job is None:
            raise ValidationError("key", f"no journal entry {key!r}: see %qimage pending for what can be resent")
        if job.task_id is not None:
            return await self.resume(job.task_id, on_update=on_update, timeout=timeout)
        if job.in_flight and not await self._keys_honoured():
            raise ValidationError(
                "key", f"{key} is still being submitted (since {time.strftime('%H:%M:%S', time.localtime(job.created_at))}): "
                "wait for its answer; only an entry whose outcome is unknown is resent",
            )
        self._same_origin(job)
        progress = _Progress(job.request, on_update, job.label, None, time.monotonic())
        return await self._track(job, progress, timeout=timeout, immediate=False, force=True)

    async def generate_many(
        self,
        requests: Iterable[GenerationRequest | Mapping[str, Any] | str],
        *,
        concurrency: int = 4,
        on_update: UpdateCallback | None = None,
        timeout: float | None = None,
        cache: bool = False,
    ) -> list[Generation]:
        """Run many requests with at most ``concurrency`` in flight; results in input order.

        Every request is validated before anything is sent. A request that fails does not stop the
        others: its :class:`Generation` has ``error`` set (with the task id when one exists).
        """
        limit = _check_count("concurrency", concurrency)
        _check_seconds("timeout", timeout, allow_none=True)
        if isinstance(requests, (str, bytes, Mapping, GenerationRequest)) or not isinstance(requests, Iterable):
            # A bare prompt is iterable too: one image per character would be billed.
            raise ValidationError(
                "requests",
                f"generate_many takes a list of requests, got a {type(requests).__name__}; "
                "wrap one prompt in a list, or call generate()",
            )
        batch = [self._coerce_request(item, i) for i, item in enumerate(requests)]
        self._auth()
        for index, request in enumerate(batch):
            try:
                await self.check(request)
            except ValidationError as exc:
                raise ValidationError(exc.field, f"request {index}: {exc.message}") from None
        gate = asyncio.Semaphore(limit)

        async def one(index: int, request: GenerationRequest) -> Generation:
            # A slot is a task on the server: it is handed on as soon as the task is over there, so
            # the next submit overlaps this one's downloads (bounded on their own, per client).
            await gate.acquire()
            held = True

            def settled() -> None:
                nonlocal held
                if held:
                    held = False
                    gate.release()

            key = new_idempotency_key()
            try:
                return await self._run(
                    request, on_update=on_update, timeout=timeout, cache=cache, batch_index=index, key=key,
                    settled=settled,
                )
            except QImageError as exc:
                job = await self._journal(self.store.get, key)
                return Generation(
                    task_id=exc.task_id or (job.task_id if job else None),
                    request=request,
                    status="failed",
                    idempotency_key=key,
                    error=exc,
                )
            finally:
                settled()

        return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(batch))))

    async def resume_many(
        self,
        task_ids: Iterable[str],
        *,
        concurrency: int = 4,
        on_update: Callable[[int, Update], Awaitable[None] | None] | None = None,
        timeout: float | None = None,
        resend: bool = False,
    ) -> list[Generation]:
        """Resume several tasks (task ids or journal keys) with at most ``concurrency`` waited on at
        once; results in input order. A task that cannot be resumed has its ``Generation.error`` set
        and does not stop the others. ``on_update(index, update)`` reports each one's steps.
        ``resend=True`` resends outcome-unknown entries instead (``resend``: your explicit choice).
        """
        limit = _check_count("concurrency", concurrency)
        _check_seconds("timeout", timeout, allow_none=True)
        if isinstance(task_ids, str) or not isinstance(task_ids, Iterable):
            raise ValidationError("task_ids", "resume_many takes a list of task ids; call resume() for one")
        ids = [_check_task_id(task_id, "resume_many") for task_id in task_ids]
        gate = asyncio.Semaphore(limit)

        async def one(index: int, task_id: str) -> Generation:
            def report(update: Update) -> Awaitable[None] | None:
                return on_update(index, update) if on_update is not None else None

            async with gate:
                try:
                    step = self.resend if resend else self.resume
                    return await step(task_id, on_update=report, timeout=timeout)
                except QImageError as exc:
                    return Generation(
                        task_id=exc.task_id or task_id, request=GenerationRequest(prompt=""),
                        status="failed", error=exc,
                    )

        return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(ids))))

    async def resume(
        self, task_id: str, *, on_update: UpdateCallback | None = None, timeout: float | None = None
    ) -> Generation:
        """Re-attach to a task without submitting it again (a task id or a journal key).

        Works whether the task is still running, finished while the kernel was dead, or was already
        downloaded (then it is served from disk with no request at all). A submit whose answer was
        lost is replayed with its original Idempotency-Key only where the host has proved that it
        honours keys (the server then returns the same task); elsewhere ``SubmitOutcomeUnknown``
        says so and ``resend`` is the user's explicit choice.
        """
        task_id = _check_task_id(task_id, "resume")
        known = await self._journal(self.store.get, task_id)
        job = known or await self._adopt(task_id)
        progress = _Progress(job.request, on_update, job.label, None, time.monotonic())
        if job.downloaded:
            return await self._from_disk(job, progress, cached=False)
        if job.status in ("failed", "cancelled"):
            raise (TaskCancelledError if job.status == "cancelled" else TaskFailedError)(
                f"task {job.task_id or job.key} {job.status}: {job.error or 'no reason given'}",
                task_id=job.task_id,
            )
        self._same_origin(job)
        try:
            return await self._track(job, progress, timeout=timeout, immediate=True)
        except (NotFoundError, BadRequestError) as exc:
            if known is None:
                # A task id the server does not know: close the row adopted for it, or pending()
                # and `%qimage resume --all` would keep asking about it forever.
                await self._journal(self.store.record_status, job.key, "failed", 0, error=str(exc))
            raise

    def find_cached(self, request: GenerationRequest) -> JobRecord | None:
        """The journal entry that would serve ``request`` from the cache (no request sent), or None."""
        return self.store.find_cached(request.fingerprint(), scope=self.cache_scope)

    def pending(self) -> list[JobRecord]:
        """This origin's journal entries submitted but never downloaded.

        Resume each with ``resume(entry.task_id or entry.key)``.
        """
        return self.store.pending(origin=self.base_url)

    def history(self, limit: int = 50) -> list[JobRecord]:
        """The newest journal entries, newest first."""
        return self.store.history(limit)

    # -- internals --

    async def _run(
        self,
        request: GenerationRequest,
        *,
        on_update: UpdateCallback | None,
        timeout: float | None,
        cache: bool,
        label: str | None = None,
        batch_index: int | None = None,
        key: str | None = None,
        settled: Callable[[], None] | None = None,
    ) -> Generation:
        progress = _Progress(request, on_update, label, batch_index, time.monotonic())
        if cache:
            hit = await self._journal(self.find_cached, request)
            if hit is not None:
                return await self._from_disk(hit, progress, cached=True)
            unfinished = await self._journal(self.store.find_unfinished, request.fingerprint(), origin=self.base_url)
            if unfinished is not None:
                # The same request was already paid for (an interrupt, a timeout, a dead kernel):
                # a re-run waits for that task instead of buying another.
                self._auth()
                progress.reattached = True
                try:
                    return await self._track(unfinished, progress, timeout=timeout, immediate=True, settled=settled)
                except (NotFoundError, BadRequestError) as exc:
                    if not _task_is_gone(exc):
                        raise  # the paid task is not shown to be gone: never abandon it for another
                    await self._journal(self.store.record_status, unfinished.key, "failed", 0, error=str(exc))
                    logger.warning("qimage_nb: %s; submitting afresh", exc)
                    progress = _Progress(request, on_update, label, batch_index, time.monotonic())
        self._auth()
        key = key or new_idempotency_key()
        fresh = await self._journal(self.store.get, key) is None
        job = await self._journal(
            self.store.begin, request, key, label=label, origin=self.base_url, scope=self.cache_scope
        )
        try:
            await progress.emit("submitting")
            submitted = await self._submit_journaled(request, key, fresh=fresh)
        except QImageError as exc:
            await progress.emit("error", error=exc)
            raise
        except BaseException:
            self._abandoned(key)
            raise
        # Tell the display the task id now, not at the first poll: a user who stops waiting in
        # between must be told which task to resume.
        await progress.emit("queued", task_id=submitted.task_id)
        job = await self._journal(self.store.get, key)
        assert job is not None
        return await self._track(
            job, progress, timeout=timeout, immediate=False, settled=settled, result=submitted.result
        )

    async def _track(
        self,
        job: JobRecord,
        progress: _Progress,
        *,
        timeout: float | None,
        immediate: bool,
        settled: Callable[[], None] | None = None,
        result: TaskStatus | None = None,
        force: bool = False,
    ) -> Generation:
        """From a journaled job to its images: poll (unless the submit answered with the result),
        download. A job whose submit never got an answer is resent only where that is safe (the
        host honours keys) or asked for (``force``); otherwise it is reported, never resent."""
        try:
            task_id = job.task_id
            if task_id is None:
                if not force and job.in_flight and not await self._keys_honoured():
                    # Another wait (this kernel's or another's) is still sending it: neither
                    # resend nor mark it, or its own answer would be taken for a lost one.
                    raise SubmitOutcomeUnknown(
                        f"an identical request ({job.key}) is still being submitted; its answer is not "
                        "in yet: wait for it (%qimage pending shows it), or use --new for a separate one",
                        idempotency_key=job.key,
                    )
                if not (force or await self._keys_honoured()):
                    raise await self._unknown(job.key, "its submit never got an answer")
                try:
                    submitted = await self._submit_journaled(job.request, job.key, fresh=False, force=force)
                except QImageError:
                    raise
                except BaseException:
                    self._abandoned(job.key)
                    raise
                task_id, result = submitted.task_id, submitted.result
                await progress.emit("queued", task_id=task_id)
            if result is None and job.status == "completed" and job.urls:
                # The host already said it is done, with these URLs (a result answered at once has
                # no task to poll; a finished task need not be asked again): fetch them.
                result = TaskStatus(task_id=task_id, status="completed", progress=100, urls=tuple(job.urls),
                                    cost=job.cost, raw_status="completed")
            last: TaskStatus | None = result
            updates = (
                _one_status(result)
                if result is not None
                else self.iter_updates(task_id, timeout=timeout, immediate=immediate, started=progress.started)
            )
            async for last in updates:
                await self._journal(
                    self.store.record_status, job.key, last.status, last.progress, urls=last.urls,
                    error=last.error.message if last.error else None, cost=last.cost,
                )
                await progress.emit(last.phase, task_id=task_id, status=last)
            assert last is not None
            if settled is not None:
                settled()  # the task is over on the server: its batch slot can take the next one
            _raise_for_terminal(last)
            images, paths = await self._download_all(job, last, progress)
        except QImageError as exc:
            stage = {TaskFailedError: "failed", TaskCancelledError: "cancelled"}.get(type(exc), "error")
            await progress.emit(stage, task_id=exc.task_id or job.task_id, error=exc)
            raise
        generation = Generation(
            task_id=task_id,
            request=job.request,
            urls=list(last.urls),
            images=images,
            paths=paths,
            created_at=job.created_at,
            completed_at=time.time(),
            idempotency_key=job.key,
            label=job.label,
            cost=last.cost,
            actual_prompt=last.actual_prompt,
            seed=last.seed,
        )
        await progress.emit("done", task_id=task_id, status=last)
        return generation

    def _coerce_request(self, item: Any, index: int) -> GenerationRequest:
        try:
            if isinstance(item, (str, GenerationRequest)):
                return self._request(item, {})
            if isinstance(item, Mapping):
                fields = dict(item)
                return self._request(fields.pop("prompt", None), fields)
        except ValidationError as exc:
            raise ValidationError(exc.field, f"request {index}: {exc.message}") from None
        raise ValidationError(
            "requests",
            f"request {index} is a {type(item).__name__}; pass prompts, dicts or GenerationRequest objects",
        )

    def _same_origin(self, job: JobRecord) -> None:
        if job.origin is not None and job.origin != self.base_url:
            # Another server does not know this task; with no task id yet, resuming here would even
            # submit the request again and bill it twice.
            if job.scope is not None and job.scope != job.origin:
                # A server whose scope outlives its address (the in-kernel emulator): that address
                # held an emulator of a kernel since restarted, or of another kernel.
                raise ValidationError(
                    "task_id",
                    f"{job.task_id or job.key} belonged to the emulator at {job.origin}, which is gone "
                    "(its kernel was restarted or stopped, or it runs in another kernel): an emulator's "
                    "tasks end with it; run the cell again for new images",
                )
            raise ValidationError(
                "base_url",
                f"{job.task_id or job.key} was sent to {job.origin}, not {self.base_url}: resume it with "
                f"a client for that API (base_url={job.origin!r})",
            )

    async def _adopt(self, task_id: str) -> JobRecord:
        """Journal a task this store never saw (submitted elsewhere) so it can be polled and kept."""
        # The prompt is unknown: an unvalidated request with an empty prompt keeps provenance honest
        # and can never match a real request's fingerprint in the cache.
        placeholder = GenerationRequest(prompt="")
        key = f"adopted:{task_id}"
        await self._journal(
            self.store.begin, placeholder, key, label="resumed by task id", origin=self.base_url, scope=self.cache_scope
        )
        await self._journal(self.store.set_task_id, key, task_id)
        job = await self._journal(self.store.get, key)
        assert job is not None
        return job

    async def _from_disk(self, job: JobRecord, progress: _Progress, *, cached: bool) -> Generation:
        # What each file records: when it was made, when its URL expires, where from.
        images = await self._journal(lambda: [open_stored(path) for path in job.image_paths if path is not None])
        progress.reset(len(images))
        for index, image in enumerate(images):
            progress.images[index] = image
        await progress.emit("done", task_id=job.task_id, cached=cached, cached_at=job.completed_at)
        return Generation(
            task_id=job.task_id,
            request=job.request,
            urls=list(job.urls),
            images=images,
            paths=[p for p in job.image_paths if p is not None],
            cached=cached,
            created_at=job.created_at,
            completed_at=job.completed_at,
            idempotency_key=job.key,
            label=job.label,
        )

    async def _download_all(
        self, job: JobRecord, status: TaskStatus, progress: _Progress
    ) -> tuple[list[Image.Image], list[Path]]:
        """Fetch every image of a completed task concurrently, each journaled as soon as it lands."""
        urls = list(status.urls)
        progress.reset(len(urls))
        on_disk = list(job.image_paths) + [None] * max(0, len(urls) - len(job.image_paths))
        http, slots = self._pool()

        async def fetch(index: int, url: str) -> tuple[Image.Image, Path]:
            path = on_disk[index]
            if path is None or not Path(path).exists():
                async with slots:
                    path = await store_image(
                        http, self.store, key=job.key, request=job.request, status=status, index=index,
                        url=url, retry=self.retry, origin=self.base_url, provider=self.provider.name,
                    )
            image = await self._journal(open_stored, Path(path))
            progress.images[index] = image
            await progress.emit("downloading", task_id=status.task_id, status=status, new_image=index)
            return image, Path(path)

        results = await asyncio.gather(*(fetch(i, u) for i, u in enumerate(urls)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for failure in failures:
                if not isinstance(failure, Exception):
                    raise failure  # cancellation / interrupt: the journal keeps what landed
            first = failures[0]
            if isinstance(first, QImageError):
                first.task_id = first.task_id or status.task_id
                raise first
            raise first
        await self._journal(self.store.record_status, job.key, "completed", 100, urls=urls)
        pairs = [r for r in results if not isinstance(r, BaseException)]
        return [image for image, _ in pairs], [path for _, path in pairs]


# --- helpers ---------------------------------------------------------------------------------


def new_idempotency_key() -> str:
    """One key per logical submit; every retry of that submit reuses it."""
    return str(uuid.uuid4())


def _task_is_gone(error: APIError) -> bool:
    """The host says it no longer has this task (API.md 7.3: 404, or a 400 "task does not exist or
    has expired" on some deployments), as opposed to any other refusal."""
    if isinstance(error, NotFoundError):
        return True
    words = error.message.lower()
    return any(phrase in words for phrase in ("not exist", "expired", "invalid task", "not found"))


def _bad_parameter(error: APIError) -> bool:
    """A 5xx that is the provider's way of refusing a parameter (API.md 7.3), not a fault."""
    return error.code == "build_request_failed" or error.type == "invalid_request_error" or bool(error.param)


async def _one_status(status: TaskStatus) -> AsyncIterator[TaskStatus]:
    """A result the submit answered with, in the shape of a poll loop that saw it at once."""
    yield status


def _raise_for_terminal(status: TaskStatus) -> None:
    if status.status == "failed":
        failure = status.error
        reason = failure.message if failure else "no reason given"
        raise TaskFailedError(
            f"task {status.task_id} failed: {reason} (failed tasks are not billed)",
            task_id=status.task_id,
            code=failure.code if failure else None,
            error_type=failure.type if failure else None,
            param=failure.param if failure else None,
        )
    if status.status == "cancelled":
        raise TaskCancelledError(f"task {status.task_id} was cancelled", task_id=status.task_id)
    if status.status != "completed":
        raise ProtocolError(f"task {status.task_id} is {status.status}, not completed", task_id=status.task_id)
