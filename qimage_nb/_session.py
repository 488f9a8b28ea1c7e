"""The kernel's current connection, shared by the magic and the panel.

One object per process remembers what the user chose in this kernel: a key typed with
``%qimage login`` (kept in memory only, never written anywhere), a base URL, or the bundled
emulator started in the kernel. Both faces ask it for the client, so switching to the emulator in
one cell switches the panel too. It is created on first use, never at import.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import TYPE_CHECKING, Any

from ._client import AsyncClient
from ._config import _check_key, _Secret, check_base_url
from ._contract import PRODUCTION_BASE_URL
from ._polling import PollPolicy

if TYPE_CHECKING:
    from ._sync import Client
    from .emulator import Emulator

__all__ = ["Session", "current_client", "get_session"]

EMULATOR_BANNER = (
    "EMULATOR: images come from qimage_nb's bundled offline emulator, not from Qwen Image. "
    "%qimage login switches to the real API at once."
)


class Session:
    """Effective settings of this kernel and the client built from them."""

    def __init__(self) -> None:
        self._login_key: _Secret | None = None
        self._base_url: str | None = None
        self._emulator: Emulator | None = None
        self._client: AsyncClient | None = None
        self._client_settings: tuple[str | None, str] | None = None
        # The in-kernel emulator's poll policy: one per emulator, so every client of it shares
        # what its calibration learns.
        self._emulator_poll: PollPolicy | None = None

    # -- settings --

    def login(self, key: str) -> None:
        """Keep a key for this kernel only (memory, never disk); it overrides $QIMAGE_API_KEY."""
        secret = _check_key(key)
        if secret is None:
            from ._exceptions import ValidationError

            raise ValidationError("api_key", "the key is empty: paste the key from the provider's API key page")
        self._login_key = secret
        self._reset_client()

    def logout(self) -> None:
        self._login_key = None
        self._reset_client()

    def set_base_url(self, url: str | None) -> None:
        self._base_url = None if url is None else check_base_url(url)
        self._reset_client()

    @property
    def using_emulator(self) -> bool:
        return self._emulator is not None

    @property
    def emulator(self) -> Emulator | None:
        return self._emulator

    @property
    def key_source(self) -> str | None:
        """Where the effective key comes from (never the key itself)."""
        if self._emulator is not None:
            return "the bundled emulator"
        if self._login_key is not None:
            return "%qimage login (memory only)"
        if os.environ.get("QIMAGE_API_KEY", "").strip():
            return "$QIMAGE_API_KEY"
        return None

    @property
    def base_url(self) -> str:
        """The effective API origin, validated: a bad $QIMAGE_BASE_URL raises a one-line ValidationError
        (and one carrying credentials is refused without echoing them into a cell's output)."""
        if self._emulator is not None:
            return self._emulator.base_url
        if self._base_url is not None:
            return self._base_url
        return check_base_url(os.environ.get("QIMAGE_BASE_URL") or PRODUCTION_BASE_URL)

    def _key(self) -> _Secret | None:
        if self._emulator is not None:
            return _Secret(self._emulator.api_key)
        if self._login_key is not None:
            return self._login_key
        return _check_key(os.environ.get("QIMAGE_API_KEY"))

    @property
    def has_key(self) -> bool:
        return self._key() is not None

    def describe(self) -> dict[str, str]:
        """The effective settings, for ``%qimage config``: never the key, only where it comes from."""
        return {
            "base_url": self.base_url,
            "key": f"set (from {self.key_source})" if self.has_key else "not set",
            "emulator": "running in this kernel" if self._emulator is not None else "off",
        }

    # -- the emulator --

    def start_emulator(self, **options: Any) -> Emulator:
        """Start the bundled emulator in this kernel (background thread) and point the session at it."""
        if self._emulator is None:
            from .emulator import Emulator

            options.setdefault("latency", 2.0)
            options.setdefault("jitter", 1.0)
            self._emulator = Emulator(**options).start()
            self._emulator_poll = PollPolicy.for_latency(options["latency"])
            self._reset_client()
        return self._emulator

    def stop_emulator(self) -> None:
        if self._emulator is not None:
            self._emulator.stop()
            self._emulator = None
            self._emulator_poll = None
            self._reset_client()

    # -- the client --

    def client(self) -> AsyncClient:
        """The client for the current settings, rebuilt whenever they change.

        The settings include the environment, read afresh each time: a key exported in a later cell
        (or a new $QIMAGE_BASE_URL) takes effect at once instead of leaving a stale client behind.
        """
        key, base_url = self._key(), self.base_url
        # A digest, not the key: the session's attributes must never hold a readable key.
        settings = (hashlib.sha256(key.reveal().encode()).hexdigest() if key else None, base_url)
        if self._client is None or settings != self._client_settings:
            self._client = self.new_client()
            self._client_settings = settings
        return self._client

    def new_client(self) -> AsyncClient:
        """A fresh client for the current settings (for another thread or event loop)."""
        return AsyncClient(
            api_key=self._key(),  # type: ignore[arg-type]  # _check_key passes a _Secret through
            base_url=self.base_url,
            **self._client_options(),
        )

    def _client_options(self) -> dict[str, Any]:
        """What a client of the in-kernel emulator needs beyond its address: polls paced for its
        latency, and the emulator's stable cache scope. Its port is new in every kernel, but the
        pictures it made are on disk in the journal, so a re-run after a restart is served from
        there; the scope is not an http URL, so its entries never serve a real API's requests."""
        if self._emulator is None:
            return {}
        return {"poll": self._emulator_poll, "cache_scope": self._emulator.cache_scope}

    def _reset_client(self) -> None:
        # The old client may still be finishing a background run; it keeps its own connection pool
        # and is garbage-collected when that run ends, so nothing in flight is cut off.
        self._client = None


_session: Session | None = None
_lock = threading.Lock()


def get_session() -> Session:
    """The process-wide session, created on first use."""
    global _session
    with _lock:
        if _session is None:
            _session = Session()
        return _session


def current_client() -> Client:
    """A blocking :class:`Client` for this kernel's current settings.

    It follows ``%qimage login``, ``%qimage emulator`` and the environment, so code in a notebook
    talks to the same API (or the same in-kernel emulator) as the magic and the panel.
    """
    from ._sync import Client

    session = get_session()
    return Client(session._key(), session.base_url, **session._client_options())


def reset_session() -> None:
    """Forget the session (tests; ``%qimage logout`` keeps the emulator and base URL)."""
    global _session
    with _lock:
        if _session is not None:
            _session.stop_emulator()
        _session = None
