"""``Client``: the synchronous facade over ``AsyncClient``, and ``run_sync``.

There is one implementation (async); every blocking method here is generated from its async
counterpart by :func:`_blocking`, so the two can never drift apart.

``run_sync`` is also the one place that applies ``nest_asyncio``, lazily and only to a loop that is
already running (a Jupyter kernel's), because blocking on a coroutine from inside a running loop is
otherwise impossible. nest_asyncio is archived upstream; keeping it here keeps it swappable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from ._client import AsyncClient, Generation
from ._contract import Balance, TaskStatus

__all__ = ["Client", "run_sync"]

T = TypeVar("T")

_patched: set[int] = set()
_private = threading.local()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _allow_nesting(loop: asyncio.AbstractEventLoop) -> None:
    if id(loop) not in _patched:
        import nest_asyncio

        nest_asyncio.apply(loop)
        _patched.add(id(loop))


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
    loop = _running_loop()
    if loop is not None:
        _allow_nesting(loop)
    else:
        loop = _private_loop()
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
    def store(self) -> Any:
        return self._async.store

    generate: Callable[..., Generation] = _blocking(AsyncClient.generate)
    generate_many: Callable[..., list[Generation]] = _blocking(AsyncClient.generate_many)
    resume: Callable[..., Generation] = _blocking(AsyncClient.resume)
    submit: Callable[..., str] = _blocking(AsyncClient.submit)
    get_task: Callable[..., TaskStatus] = _blocking(AsyncClient.get_task)
    wait: Callable[..., TaskStatus] = _blocking(AsyncClient.wait)
    download: Callable[..., list[Any]] = _blocking(AsyncClient.download)
    upload: Callable[..., str] = _blocking(AsyncClient.upload)
    balance: Callable[..., Balance] = _blocking(AsyncClient.balance)

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
