"""The client's journal as its coroutines use it: the store, opened on first use, and every call
run in a worker thread.

A journal write commits with SQLite's ``synchronous=FULL`` and an image is fsynced; the loop the
client runs on (a kernel's: the panel, widgets, other cells' tasks) must keep moving meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..journal._store import Store

__all__ = ["Journal"]

T = TypeVar("T")


class Journal:
    """One client's way to its journal; construction opens nothing."""

    def __init__(self, store: Store | None) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"<Journal {self._store!r}>" if self._store is not None else "<Journal (default, not opened)>"

    @property
    def store(self) -> Store:
        if self._store is None:
            from ..journal._store import Store

            self._store = Store.default()
        return self._store

    async def __call__(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)`` in a worker thread, awaited where it stands, so the journal's
        order relative to the network is unchanged. A coroutine cancelled meanwhile leaves the call
        to finish in its thread: a write begun is never cut in half."""
        return await asyncio.to_thread(call, *args, **kwargs)
