"""``Client``: the synchronous facade over ``AsyncClient``, and ``run_sync``.

There is one implementation (async); every blocking method here is generated from its async
counterpart by :func:`_blocking`, so the two can never drift apart.

``run_sync`` blocks on a coroutine from plain code, also inside a Jupyter kernel whose event loop is
already running. There it never re-enters the kernel's loop (nest_asyncio did): ipykernel 7 runs
every shell message in one shared ``contextvars.Context``, so a nested run of its loop that picks up
the next queued cell (Run All) or a widget message fails with "cannot enter context ... already
entered" and leaves the kernel hung. Instead the coroutine runs on this thread's private loop, with
the kernel's loop set aside meanwhile, the way any blocking call behaves: the kernel's messages wait
their turn, outputs still flow (IOPub has its own thread), and an interrupt lands here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from .._contract import Balance, TaskStatus
from ._client import AsyncClient, Generation

__all__ = ["Client", "run_sync"]

T = TypeVar("T")

_private = threading.local()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _private_loop() -> asyncio.AbstractEventLoop:
    # One long-lived loop per thread, so the client's connection pool survives between calls.
    loop = getattr(_private, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _private.loop = loop
    return loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, in a script or inside a kernel.

    On an interrupt (Ctrl-C, a kernel interrupt) the work is cancelled and the interrupt re-raised;
    whatever was journaled stays journaled.
    """
    outer = _running_loop()
    loop = _private_loop()
    if outer is loop:
        raise RuntimeError("run_sync() called from a coroutine on its own loop: await the coroutine instead")
    if outer is not None:
        asyncio.events._set_running_loop(None)  # set aside (not stopped); restored below
    try:
        task = loop.create_task(coro)
        try:
            return loop.run_until_complete(task)
        except BaseException:
            if not task.done():
                task.cancel()
                # Let the task run its cleanup; the original exception is the one to report.
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(task)
            raise
    finally:
        if outer is not None:
            asyncio.events._set_running_loop(outer)


def _blocking(method: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(self: Client, *args: Any, **kwargs: Any) -> T:
        return run_sync(method(self._async, *args, **kwargs))

    call.__doc__ = f"Blocking form of :meth:`AsyncClient.{method.__name__}`.\n\n{method.__doc__ or ''}"
    return call


class Client:
    """Synchronous client: the same arguments and behaviour as :class:`AsyncClient`, blocking.

    Works in a plain script and inside a running Jupyter kernel.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._async = AsyncClient(*args, **kwargs)

    @property
    def aio(self) -> AsyncClient:
        """The underlying async client (shares the journal and connection pool)."""
        return self._async

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncClient", "Client", 1)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        run_sync(self._async.aclose())

    @property
    def base_url(self) -> str:
        return self._async.base_url

    @property
    def provider(self) -> Any:
        return self._async.provider

    @property
    def store(self) -> Any:
        return self._async.store

    generate: Callable[..., Generation] = _blocking(AsyncClient.generate)
    generate_many: Callable[..., list[Generation]] = _blocking(AsyncClient.generate_many)
    estimate: Callable[..., Any] = _blocking(AsyncClient.estimate)
    resume: Callable[..., Generation] = _blocking(AsyncClient.resume)
    resume_many: Callable[..., list[Generation]] = _blocking(AsyncClient.resume_many)
    submit: Callable[..., str] = _blocking(AsyncClient.submit)
    get_task: Callable[..., TaskStatus] = _blocking(AsyncClient.get_task)
    cancel: Callable[..., TaskStatus] = _blocking(AsyncClient.cancel)
    wait: Callable[..., TaskStatus] = _blocking(AsyncClient.wait)
    download: Callable[..., list[Any]] = _blocking(AsyncClient.download)
    upload: Callable[..., str] = _blocking(AsyncClient.upload)
    balance: Callable[..., Balance] = _blocking(AsyncClient.balance)
    models: Callable[..., list[str]] = _blocking(AsyncClient.models)
    resend: Callable[..., Generation] = _blocking(AsyncClient.resend)

    def pending(self) -> list[Any]:
        return self._async.pending()

    def history(self, limit: int = 50) -> list[Any]:
        return self._async.history(limit)

    def iter_updates(self, task_id: str, **kwargs: Any) -> Iterator[TaskStatus]:
        """Blocking form of :meth:`AsyncClient.iter_updates`: yields each status change."""
        updates = self._async.iter_updates(task_id, **kwargs)

        async def step() -> TaskStatus:
            return await updates.__anext__()

        async def close() -> None:
            await updates.aclose()

        try:
            while True:
                try:
                    yield run_sync(step())
                except StopAsyncIteration:
                    return
        finally:
            run_sync(close())
