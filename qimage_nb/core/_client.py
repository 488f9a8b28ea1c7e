"""The async client: one implementation under the magic, the panel and the sync facade.

``AsyncClient`` is a facade: it checks its settings and wires small parts, each with one job (httpx's
``Client`` is the model):

- ``_http.Connection``: the connection pools, the key on API requests only, answers decoded and
  errors made one line that never carries the key;
- ``_submit.Submitter``: a journaled submit and its outcome rules (resent only where the host
  proves it honours keys; otherwise 'outcome unknown', reported, never resent);
- ``_waiting.Waiting``: how a task's statuses are learned (polling today; a stream or a held
  request later, behind the same interface);
- ``_download.Downloads``: a completed task's images, streamed, checked and journaled;
- ``_pipeline.Pipeline``: one generation's steps, journaled before and after each
  (``Store.begin`` before the POST, the task id as soon as it is known, each image as it lands);
- ``_resume.Resumer``: resume, resend, adopting a task submitted elsewhere;
- ``_account.Account``: balance, models, request checks, uploads; ``_batch.Batches``: many at once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from .._contract import Balance, GenerationRequest, TaskStatus, UploadedImage
from .._exceptions import ValidationError
from ..providers import Provider, choose_provider
from ._account import Account
from ._batch import Batches
from ._config import (
    _BearerAuth,
    _check_count,
    _check_key,
    _check_seconds,
    check_base_url,
    http_timeout,
)
from ._download import Downloads
from ._http import Connection
from ._journaling import Journal
from ._parts import run_split
from ._pipeline import Pipeline
from ._polling import PollPolicy
from ._requests import build_request
from ._results import Generation, Update, UpdateCallback, reporting_retries
from ._resume import Resumer
from ._retry import RetryPolicy
from ._submit import Submitter, new_idempotency_key
from ._tasks import Tasks
from ._waiting import SubmitTimes, raise_for_terminal, shared_timing, waiting_for

if TYPE_CHECKING:
    from PIL import Image

    from ..journal._store import JobRecord, Store
    from ._estimate import Estimate

__all__ = ["AsyncClient", "Generation", "Update"]


class AsyncClient:
    """Async client for Qwen Image on one host (a provider).

    Parameters
    ----------
    api_key:
        The key; defaults to the provider's key variable (``provider.key_env``, the one its own SDK
        reads). Never shown in any repr, message or log.
    base_url:
        API origin; defaults to ``provider.base_url_env``, then ``provider.default_base_url``.
        Plain http is refused for non-loopback hosts unless ``allow_insecure_http=True``.
    provider:
        A name (``qimage_nb.providers``) or object; defaults to ``$QIMAGE_PROVIDER``, else the one
        provider whose key is set, else the registry's default.
    timeout, wait_timeout:
        Seconds per request (or an ``httpx.Timeout``); default deadline of a whole generation.
    transport, store, retry, poll:
        An ``httpx.AsyncBaseTransport`` (tests, the in-process emulator); the journal and image
        files (``Store.default()``: ``$QIMAGE_HOME``); ``RetryPolicy``; ``PollPolicy``.
    download_concurrency:
        Images downloaded at once across all generations of this client.
    cache_scope:
        Only journal entries of the same scope serve this client's cached requests (one API's
        images are never another's). Defaults to ``base_url``; the in-kernel emulator passes one
        name for all its instances (a new port per kernel, the same pictures on disk).
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
        self.provider = env = choose_provider(provider)
        # Each host's variables are read as its own SDK reads them (a key in two variables, a base
        # URL given as a bare host name, a region and workspace): the provider says how.
        self._key = _check_key(api_key if api_key is not None else env.key_from_env(os.environ))
        raw_url = base_url if base_url is not None else env.base_url_from(os.environ)[0]
        self.base_url = check_base_url(raw_url, allow_insecure_http=allow_insecure_http, example=env.default_base_url)
        self.cache_scope = cache_scope or self.base_url
        self.wait_timeout = _check_seconds("wait_timeout", wait_timeout)
        self.retry = retry or RetryPolicy()
        self.poll = poll or PollPolicy(calibration=shared_timing(self.base_url, store),
                                       **({"sleeps": env.sdk_sleeps} if env.sdk_sleeps else {}))
        # The parts, wired once; none of them does I/O until asked.
        self._http = Connection(
            env, self.base_url, self._key, timeout=http_timeout(timeout), transport=transport, retry=self.retry,
            download_concurrency=_check_count("download_concurrency", download_concurrency),
        )
        self._journal = Journal(store)
        submit_times = SubmitTimes()
        self._submitter = Submitter(self._http, self._journal, self.retry, submit_times)
        self._waiting = waiting_for(self._http, self.get_task, self.poll, submit_times)
        self._downloads = Downloads(self._http, self._journal, self.retry)
        self._pipeline = Pipeline(
            connection=self._http, journal=self._journal, submitter=self._submitter, updates=self.iter_updates,
            downloads=self._downloads, cache_scope=self.cache_scope,
        )
        self._resumer = Resumer(self._http, self._journal, self._submitter, self._pipeline)
        self._account = Account(self._http, self._journal)
        self._tasks = Tasks(self._http, self._journal, self._downloads, self._resumer)
        self._batches = Batches(self._http, self._journal, self._account, self._pipeline, self._resumer)

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
        return self._journal.store

    def _auth(self) -> _BearerAuth:
        return self._http.auth()

    async def aclose(self) -> None:
        """Close this loop's connections (another loop's pool is dropped; it cannot be awaited here)."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- single operations --

    async def balance(self) -> Balance:
        """The key's remaining balance (API.md section 6)."""
        return await self._account.balance()

    async def models(self) -> list[str]:
        """The model ids the host lists (its model listing), fetched once per origin per process."""
        return await self._account.models()

    async def check(self, request: GenerationRequest) -> GenerationRequest:
        """Check a request against this client's provider (models, sizes, options); nothing is sent
        unless the model is one the provider does not document, which asks the host's model list."""
        return await self._account.check(request)

    async def upload(self, image: Any, *, reuse: bool = False) -> str:
        """Upload a local image (path, bytes or PIL image) and return its public URL for ``image_urls``.

        Remembered in the journal by content (SHA-256) and API origin: with ``reuse=True`` the same
        bytes, uploaded here while that upload has a day left at the host (its
        ``capabilities.upload_lifetime``), are not sent again, so a re-run cell sends the same URL
        and hits the cache instead of paying. One attempt, never resent (no idempotency key)."""
        return await self._account.upload(image, reuse=reuse)

    def find_upload(self, image: Any) -> UploadedImage | None:
        """The upload that ``upload(image, reuse=True)`` would return without sending anything (its
        URL and when it was uploaded), or None."""
        return self._account.find_upload(image)

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
            request = build_request(request, fields, self.provider.default_model, self.provider.capabilities.inline_refs)
        elif fields:
            raise ValidationError("request", "pass either a GenerationRequest or a prompt with fields, not both")
        self._auth()  # refuse before journaling when no key is set
        await self.check(request)
        key = idempotency_key or new_idempotency_key()
        return (await self._submitter.submit(request, key, label=label, scope=self.cache_scope)).task_id

    async def cancel(self, task_id: str) -> TaskStatus:
        """Ask the host to cancel a task, then return its status. Where the host can cancel at all
        (``provider.cancel``), it usually does so only while the task is still queued; a host with
        no cancel endpoint is refused in one line (API.md 7.8)."""
        return await self._tasks.cancel(task_id)

    async def get_task(self, task_id: str) -> TaskStatus:
        """One status poll of the task."""
        return await self._tasks.get(task_id)

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
        updates = self._waiting.updates(task_id, timeout=timeout_s, immediate=immediate, started=start)
        async with contextlib.aclosing(updates):
            async for status in updates:
                yield status

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskStatus:
        """Wait for a task to complete; raise ``TaskFailedError``/``TaskCancelledError``/``GenerationTimeout``."""
        last: TaskStatus | None = None
        async for status in self.iter_updates(task_id, timeout=timeout, immediate=True):
            last = status
        assert last is not None
        raise_for_terminal(last)
        return last

    async def download(self, task: TaskStatus | str) -> list[Image.Image]:
        """Download a completed task's images (from disk when this journal already has them)."""
        return await self._tasks.download(task)

    # -- whole generations --

    async def generate(
        self,
        prompt: str | GenerationRequest,
        *,
        on_update: UpdateCallback | None = None,
        timeout: float | None = None,
        cache: bool = True,
        new: bool = False,
        label: str | None = None,
        **options: Any,
    ) -> Generation:
        """Submit, wait and download one request; return its images.

        ``prompt``: the prompt text with the request's fields as keywords (``model``, ``size`` (a
        ratio or ``WIDTHxHEIGHT``), ``resolution``, ``n``, ``negative_prompt``, ``image_urls``, and
        where the provider takes them ``seed``, ``prompt_extend``, ``watermark``), or a ready
        :class:`GenerationRequest`. ``on_update`` (sync or async) gets an :class:`Update` at each
        status change and image; ``timeout``: the task's deadline, seconds (``wait_timeout``).

        ``cache`` (on by default): an identical completed request's images come from the journal
        (nothing sent, nothing billed), and an identical one submitted but never finished here is
        waited on (no second task), the magic's "re-run without paying"; ``cache=False`` or
        ``new=True`` (the magic's ``--new``) pays for fresh images.
        """
        request = build_request(prompt, options, self.provider.default_model, self.provider.capabilities.inline_refs)
        _check_seconds("timeout", timeout, allow_none=True)
        await self.check(request)
        with reporting_retries(request, on_update) as report:  # retries reach on_update as they happen
            return await run_split(self._pipeline.run, self.provider, request, on_update=report,
                                   timeout=timeout, cache=cache and not new, label=label)

    async def resend(
        self, key: str, *, on_update: UpdateCallback | None = None, timeout: float | None = None
    ) -> Generation:
        """Resend a submit whose outcome is unknown, by its journal key: the identical body with the
        same Idempotency-Key (never a new key for the same intent), then wait and download.

        Where the host honours keys it answers with the original task and nothing is billed twice;
        where it does not, this may create (and bill) a second task: that is your call to make.
        """
        return await self._resumer.resend(key, on_update=on_update, timeout=timeout)

    async def generate_many(
        self,
        requests: Iterable[GenerationRequest | Mapping[str, Any] | str],
        *,
        concurrency: int = 4,
        on_update: UpdateCallback | None = None,
        timeout: float | None = None,
        cache: bool = True,
        new: bool = False,
        max_cost: float | None = None,
        labels: Sequence[str | None] | None = None,
        progress: bool | None = None,
    ) -> list[Generation]:
        """Run many requests with at most ``concurrency`` in flight; results in input order.

        Every request is validated before anything is sent. A failed request does not stop the
        others: its :class:`Generation` has ``error`` set (and the task id, where one exists). As in
        ``generate``, an identical request already made comes from the journal.

        ``max_cost``: refuse the whole batch before any submit when its ``estimate`` is higher or
        unknown, and send no more once spent + in flight + the next would pass it (those not sent
        have a ``ValidationError`` naming the cap; one warning line says how many). ``labels``: one
        journal label per request (kept in its images' provenance too). ``progress``: one display
        for the batch (done/total, failed, spent, time left, one grid of thumbnails), updated in
        place; on by default in a Jupyter kernel.
        """
        return await self._batches.generate_many(
            requests, concurrency=concurrency, on_update=on_update, timeout=timeout, cache=cache and not new,
            max_cost=max_cost, labels=labels, progress=progress,
        )

    async def estimate(
        self, requests: Iterable[GenerationRequest | Mapping[str, Any] | str] | GenerationRequest | str,
        *, cache: bool = True,
    ) -> Estimate:
        """What ``requests`` should cost, sending nothing: per image, the journal's last price for
        this host, model and resolution, else the provider's price table (with its source); with
        ``cache`` an identical completed request counts as free (the journal serves it). An
        unknown price is said, never guessed. ``str(estimate)`` says it in one line."""
        return await self._batches.estimate(requests, cache=cache)

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
        return await self._batches.resume_many(
            task_ids, concurrency=concurrency, on_update=on_update, timeout=timeout, resend=resend
        )

    async def resume(
        self, task_id: str, *, on_update: UpdateCallback | None = None, timeout: float | None = None
    ) -> Generation:
        """Re-attach to a task without submitting it again (a task id or a journal key).

        Works whether the task is still running, finished while the kernel was dead, or was already
        downloaded (then served from disk, no request). A submit whose answer was lost is replayed
        with its original Idempotency-Key only where the host has proved it honours keys (it then
        returns the same task); elsewhere ``SubmitOutcomeUnknown`` says so, and ``resend`` is the
        user's explicit choice.
        """
        return await self._resumer.resume(task_id, on_update=on_update, timeout=timeout)

    def find_cached(self, request: GenerationRequest) -> JobRecord | None:
        """The journal entry that would serve ``request`` from the cache (no request sent), or None."""
        return self._pipeline.find_cached(request)

    def pending(self) -> list[JobRecord]:
        """This origin's journal entries submitted but never downloaded.

        Resume each with ``resume(entry.task_id or entry.key)``.
        """
        return self.store.pending(origin=self.base_url)

    def history(self, limit: int = 50) -> list[JobRecord]:
        """The newest journal entries, newest first."""
        return self.store.history(limit)
