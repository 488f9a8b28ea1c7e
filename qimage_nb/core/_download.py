"""Downloading a completed task's images from the CDN: each streamed to disk, capped, checked,
retried, then kept in the journal with its provenance (built here, once: ``_provenance.describe``).

The CDN is another origin: these requests never carry the Authorization header (the shared httpx
client has none by default; only API requests add it through ``_BearerAuth``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from .._exceptions import ImageError, QImageError, TransportError
from ..journal._images import MAX_DOWNLOAD_BYTES, ImageFacts, inspect_image
from ..journal._provenance import describe, open_stored
from ._retry import RetryPolicy, TryAgain, is_retryable, parse_retry_after, retrying

if TYPE_CHECKING:
    from PIL import Image

    from .._contract import GenerationRequest, TaskStatus
    from ..journal._store import JobRecord, Store
    from ._http import Connection
    from ._journaling import Journal
    from ._results import _Progress

__all__ = ["Downloads", "fetch_image", "store_image"]


class Downloads:
    """A client's downloads: every image of a completed task fetched concurrently (through the
    connection's per-loop gate, shared by all of the client's generations), each journaled as soon
    as it lands."""

    def __init__(self, connection: Connection, journal: Journal, retry: RetryPolicy) -> None:
        self._http = connection
        self._journal = journal
        self._retry = retry

    async def fetch_all(
        self, job: JobRecord, status: TaskStatus, progress: _Progress
    ) -> tuple[list[Image.Image], list[Path]]:
        """The images of ``status`` (completed) for journal entry ``job``, from disk where it has
        them, in the API's order; the entry is then recorded as completed with these URLs."""
        urls = list(status.urls)
        progress.reset(len(urls))
        on_disk = list(job.image_paths) + [None] * max(0, len(urls) - len(job.image_paths))
        http, slots = self._http.pool()
        store = self._journal.store

        async def fetch(index: int, url: str) -> tuple[Image.Image, Path]:
            path = on_disk[index]
            if path is None or not Path(path).exists():
                async with slots:
                    path = await store_image(
                        http, store, key=job.key, request=job.request, status=status, index=index,
                        url=url, retry=self._retry, origin=self._http.base_url, provider=self._http.provider.name,
                        label=job.label,
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
        await self._journal(store.record_status, job.key, "completed", 100, urls=urls)
        pairs = [r for r in results if not isinstance(r, BaseException)]
        return [image for image, _ in pairs], [path for _, path in pairs]


async def store_image(
    http: httpx.AsyncClient,
    store: Store,
    *,
    key: str,
    request: GenerationRequest,
    status: TaskStatus,
    index: int,
    url: str,
    retry: RetryPolicy,
    origin: str,
    provider: str,
    label: str | None = None,
) -> Path:
    """Image ``index`` of a completed task into the journal: fetched and checked, described (its
    provenance, written into the file by the store), journaled under ``key``. Returns its path."""
    temp, facts = await fetch_image(http, url, temp_path=store.temp_path, retry=retry, task_id=status.task_id)
    info = describe(request, status, url, index, origin=origin, provider=provider, label=label)
    # Off the event loop: moving the file in, its provenance chunks, two fsyncs and a journal commit.
    return await asyncio.to_thread(
        store.save_image, key, index, url, temp, info, width=facts.width, height=facts.height
    )


async def fetch_image(
    http: httpx.AsyncClient,
    url: str,
    *,
    temp_path: Callable[[], Path],
    retry: RetryPolicy,
    task_id: str,
) -> tuple[Path, ImageFacts]:
    """Stream one image to a temp file under a byte cap and check it; retried like any GET (each
    retry shown to the faces, like an API call's).

    Returns the temp file (the caller moves it into the store) and what its header says.
    """

    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageError(
            f"refusing to fetch image URL with scheme {scheme or 'none'!r}: only http(s) images are downloaded",
            task_id=task_id,
            url=url,
        )

    async def attempt() -> tuple[Path, ImageFacts]:
        temp = temp_path()
        keep = False
        try:
            # No Authorization header here: the CDN is another origin and must never see the key.
            async with http.stream("GET", url, headers={"Accept": "image/*"}, follow_redirects=True) as response:
                if not response.is_success:
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    await response.aread()
                    message = f"image download failed (HTTP {response.status_code}) for task {task_id}"
                    if not is_retryable(response.status_code):
                        raise ImageError(
                            f"{message}: the URL is gone or expired; the task's images cannot be fetched from it",
                            task_id=task_id,
                            url=url,
                        )
                    raise TryAgain(ImageError(message, task_id=task_id, url=url), retry_after)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
                    raise ImageError(
                        f"refusing an image of {int(declared)} bytes (cap {MAX_DOWNLOAD_BYTES}) for task {task_id}",
                        task_id=task_id,
                        url=url,
                    )
                received = 0
                with open(temp, "wb") as sink:
                    async for chunk in response.aiter_bytes(1 << 16):
                        received += len(chunk)
                        if received > MAX_DOWNLOAD_BYTES:
                            raise ImageError(
                                f"refusing an image over {MAX_DOWNLOAD_BYTES} bytes for task {task_id}",
                                task_id=task_id,
                                url=url,
                            )
                        sink.write(chunk)
                if declared and declared.isdigit() and received != int(declared):
                    raise TryAgain(ImageError(
                        f"image download for task {task_id} was cut short ({received} of {declared} bytes)",
                        task_id=task_id,
                        url=url,
                    ))
                try:
                    facts = inspect_image(temp, url=url, task_id=task_id)
                except ImageError as exc:
                    if not getattr(exc, "truncated", False):
                        raise
                    raise TryAgain(exc) from None
                keep = True
                return temp, facts
        except httpx.TimeoutException as exc:
            raise TryAgain(TransportError(
                f"image download for task {task_id} timed out ({type(exc).__name__})", task_id=task_id
            )) from None
        except httpx.TransportError as exc:
            raise TryAgain(TransportError(
                f"image download for task {task_id} failed ({type(exc).__name__})", task_id=task_id
            )) from None
        finally:
            if not keep:
                temp.unlink(missing_ok=True)

    return await retrying(attempt, policy=retry, what=f"image download for task {task_id}")
