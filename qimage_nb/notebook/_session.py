"""The kernel's current connection, shared by the magic and the panel.

One object per process remembers what the user chose in this kernel: the provider, a key typed
with ``%qimage login`` (kept in memory only, never written anywhere; one per provider), a base URL,
or a bundled emulator started in the kernel (one per provider). Both faces ask it for the client,
so switching to the emulator in one cell switches the panel too. It is created on first use, never
at import.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from ..core._client import AsyncClient
from ..core._config import _check_key, _Secret, check_base_url
from ..core._polling import PollPolicy
from ..providers import Provider, choose_provider, get_provider

if TYPE_CHECKING:
    from ..core._sync import Client
    from ..emulator import Emulator

__all__ = ["Session", "current_client", "emulator_banner", "get_session"]

EMULATOR_BANNER = (
    "EMULATOR: images come from qimage_nb's bundled offline emulator, not from Qwen Image. "
    "%qimage login switches to the real API at once."
)


def emulator_banner(provider: Provider) -> str:
    """EMULATOR_BANNER for ``provider``'s emulator: the login that leaves it names that host."""
    if provider.name == "apimart":
        return EMULATOR_BANNER
    return EMULATOR_BANNER.replace(
        "%qimage login switches to the real API", f"%qimage login --provider {provider.name} switches to the real {provider.title}"
    )


# The bundled emulator of each host (a table, not a branch per host in the faces).


class Session:
    """Effective settings of this kernel and the clients built from them, per provider.

    The provider in use is the one chosen in this kernel (``%config QImageMagics.provider``,
    ``%qimage login --provider``, ``%qimage emulator --provider``), else what the environment says
    (``$QIMAGE_PROVIDER``, or the one provider whose key is set), else the seed's API. Every method
    that takes ``provider`` defaults to that one; a cell's ``--provider`` passes its own.
    """

    def __init__(self) -> None:
        self._chosen: str | None = None
        self._login_keys: dict[str, _Secret] = {}
        self._base_urls: dict[str, str] = {}
        self._base_url_notes: dict[str, str] = {}  # why a base URL set in this kernel was set
        self._emulators: dict[str, Emulator] = {}
        # One poll policy per emulator, so every client of it shares what its calibration learns.
        self._emulator_polls: dict[str, PollPolicy] = {}
        self._clients: dict[str, tuple[tuple[str | None, str], AsyncClient]] = {}
        # What this kernel has spent is the client's ledger (every face's generations, Python's
        # too), counted from the process's start; a session made by reset_session counts afresh.
        self._billed_before = _billed_before
        # Who redraws when the session changes (each panel's header), held weakly: a panel that is
        # gone must not be kept alive, nor called, by the session.
        self._listeners: list[weakref.WeakMethod[Any]] = []

    def __repr__(self) -> str:
        return f"<Session provider={self._chosen or 'from the environment'} emulators={sorted(self._emulators)}>"

    # -- who follows it --

    def subscribe(self, callback: Any) -> None:
        """Call the bound method ``callback`` after every change of the session (held weakly)."""
        self._listeners.append(weakref.WeakMethod(callback))

    def unsubscribe(self, callback: Any) -> None:
        self._listeners = [ref for ref in self._listeners if ref() not in (None, callback)]

    def _changed(self) -> None:
        self._listeners = [ref for ref in self._listeners if ref() is not None]
        for ref in list(self._listeners):
            callback = ref()
            if callback is not None:
                callback()

    # -- which provider --

    def provider(self, name: str | Provider | None = None) -> Provider:
        """``name``'s provider, else the one in use (a ValidationError names the choices)."""
        if name:
            return get_provider(name)
        if self._chosen:
            return get_provider(self._chosen)
        return choose_provider()

    def choose(self, name: str | None) -> Provider:
        """Use ``name``'s provider in this kernel from now on (None: back to the environment's)."""
        self._chosen = self.provider(name).name if name else None
        self._changed()
        return self.provider()

    def prefer(self, name: str | None) -> None:
        """Like :meth:`choose`, checked when first used (``%config`` cannot show a one-line error)."""
        self._chosen = name or None
        self._changed()

    @property
    def chosen(self) -> str | None:
        return self._chosen

    # -- settings --

    def login(self, key: str, provider: str | None = None) -> None:
        """Keep a key for this kernel only (memory, never disk); it overrides the provider's variable."""
        secret = _check_key(key)
        if secret is None:
            from .._exceptions import ValidationError

            raise ValidationError("api_key", "the key is empty: paste the key from the provider's API key page")
        self._login_keys[self.provider(provider).name] = secret
        self._changed()

    def logout(self, provider: str | None = None) -> None:
        self._login_keys.pop(self.provider(provider).name, None)
        self._changed()

    def set_base_url(self, url: str | None, provider: str | None = None, *, why: str | None = None) -> None:
        name = self.provider(provider).name
        self._base_url_notes.pop(name, None)
        if url is None:
            self._base_urls.pop(name, None)
        else:
            self._base_urls[name] = check_base_url(url, example=self.provider(provider).default_base_url)
            if why:
                self._base_url_notes[name] = why
        self._changed()

    def emulator_for(self, provider: str | None = None) -> Emulator | None:
        return self._emulators.get(self.provider(provider).name)

    @property
    def using_emulator(self) -> bool:
        return self.emulator_for() is not None

    @property
    def emulator(self) -> Emulator | None:
        return self.emulator_for()

    def key_source_for(self, provider: str | None = None) -> str | None:
        """Where the provider's effective key comes from (never the key itself)."""
        p = self.provider(provider)
        if p.name in self._emulators:
            return "the bundled emulator"
        if p.name in self._login_keys:
            return "%qimage login (memory only)"
        if p.key_from_env(os.environ):
            return f"${p.key_env}" if os.environ.get(p.key_env, "").strip() else "the environment"
        return None

    @property
    def key_source(self) -> str | None:
        return self.key_source_for()

    def base_url_for(self, provider: str | None = None) -> str:
        """The provider's effective API base, validated: a bad variable raises a one-line
        ValidationError (and one carrying credentials is refused without echoing them)."""
        p = self.provider(provider)
        emulator = self._emulators.get(p.name)
        if emulator is not None:
            return emulator.base_url
        if p.name in self._base_urls:
            return self._base_urls[p.name]
        return check_base_url(p.base_url_from(os.environ)[0], example=p.default_base_url)

    @property
    def base_url(self) -> str:
        return self.base_url_for()

    def base_url_source(self, provider: str | None = None) -> str:
        p = self.provider(provider)
        if p.name in self._emulators:
            return "the emulator in this kernel"
        if p.name in self._base_urls:
            return self._base_url_notes.get(p.name, "set in this kernel")
        return p.base_url_from(os.environ)[1]  # which variable chose it (DashScope: which region)

    def key_for(self, provider: str | None = None) -> _Secret | None:
        p = self.provider(provider)
        emulator = self._emulators.get(p.name)
        if emulator is not None:
            return _Secret(emulator.api_key)
        if p.name in self._login_keys:
            return self._login_keys[p.name]
        return _check_key(p.key_from_env(os.environ))

    def has_key_for(self, provider: str | None = None) -> bool:
        return self.key_for(provider) is not None

    @property
    def has_key(self) -> bool:
        return self.has_key_for()

    def describe(self, provider: str | None = None) -> dict[str, str]:
        """The effective settings, for ``%qimage config``: never the key, only where it comes from."""
        p = self.provider(provider)
        source = self.key_source_for(p.name)
        return {
            "provider": f"{p.title} ({p.name})",
            "base_url": self.base_url_for(p.name),
            "base_url_source": self.base_url_source(p.name),
            "key": f"set (from {source})" if source else f"not set (${p.key_env} or %qimage login)",
            "emulator": "running in this kernel" if p.name in self._emulators else "off",
        }

    # -- the emulators --

    def start_emulator(self, provider: str | None = None, **options: Any) -> Emulator:
        """Start the provider's bundled emulator in this kernel (background thread) and point the
        session's clients of that provider at it."""
        p = self.provider(provider)
        if p.name not in self._emulators:
            from ..emulator import emulator_class

            options.setdefault("latency", 2.0)
            options.setdefault("jitter", 1.0)
            self._emulators[p.name] = emulator_class(p.name)(**options).start()
            self._emulator_polls[p.name] = PollPolicy.for_latency(options["latency"])
            self._changed()
        return self._emulators[p.name]

    def stop_emulator(self, provider: str | None = None) -> None:
        name = self.provider(provider).name
        emulator = self._emulators.pop(name, None)
        self._emulator_polls.pop(name, None)
        if emulator is not None:
            emulator.stop()
            self._changed()

    def _stop_all_emulators(self) -> None:
        for name in list(self._emulators):
            self.stop_emulator(name)

    # -- what was spent --

    @property
    def spent(self) -> tuple[float, int]:
        """(the sum of the costs the hosts gave, how many generations it covers), for every billed
        generation of this kernel, whichever face made it (a resumed task counts once; one served
        from the journal costs nothing)."""
        from ..core._observe import spent

        return spent(self._billed_before)

    # -- the clients --

    def client(self, provider: str | None = None) -> AsyncClient:
        """The provider's client for the current settings, rebuilt whenever they change.

        The settings include the environment, read afresh each time: a key exported in a later cell
        (or a new base URL variable) takes effect at once instead of leaving a stale client behind.
        """
        p = self.provider(provider)
        key, base_url = self.key_for(p.name), self.base_url_for(p.name)
        # A digest, not the key: the session's attributes must never hold a readable key.
        settings = (hashlib.sha256(key.reveal().encode()).hexdigest() if key else None, base_url)
        held = self._clients.get(p.name)
        if held is None or held[0] != settings:
            # The old client may still be finishing a background run; it keeps its own connection
            # pool and is garbage-collected when that run ends, so nothing in flight is cut off.
            held = (settings, self.new_client(p.name))
            self._clients[p.name] = held
        return held[1]

    @property
    def _client(self) -> AsyncClient | None:
        """The provider in use's client when one was built (tests close it)."""
        try:
            held = self._clients.get(self.provider().name)
        except Exception:
            return None
        return held[1] if held else None

    def clients(self) -> list[AsyncClient]:
        return [held[1] for held in self._clients.values()]

    def new_client(self, provider: str | None = None) -> AsyncClient:
        """A fresh client for the current settings (for another thread or event loop)."""
        p = self.provider(provider)
        return AsyncClient(
            api_key=self.key_for(p.name),  # type: ignore[arg-type]  # _check_key passes a _Secret through
            base_url=self.base_url_for(p.name),
            provider=p,
            **self.client_options(p.name),
        )

    def client_options(self, provider: str | None = None) -> dict[str, Any]:
        """What a client of an in-kernel emulator needs beyond its address: polls paced for its
        latency, and the emulator's stable cache scope. Its port is new in every kernel, but the
        pictures it made are on disk in the journal, so a re-run after a restart is served from
        there; the scope is not an http URL, so its entries never serve a real API's requests (and
        each host's emulator has its own)."""
        name = self.provider(provider).name
        emulator = self._emulators.get(name)
        if emulator is None:
            return {}
        return {"poll": self._emulator_polls[name], "cache_scope": emulator.cache_scope}


_session: Session | None = None
_lock = threading.Lock()


_billed_before = 0  # generations billed before the current session (reset_session moves it)


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
    from ..core._sync import Client
    from ._batch import register_in_kernel

    register_in_kernel()  # its generate_many shows one progress display per batch
    session = get_session()
    p = session.provider()
    return Client(session.key_for(p.name), session.base_url_for(p.name), provider=p, **session.client_options(p.name))


def reset_session() -> None:
    """Forget the session (tests; ``%qimage logout`` keeps the emulator and base URL)."""
    global _session, _billed_before
    from ..core._observe import billed_count

    _billed_before = billed_count()  # the next session's cost starts from here
    with _lock:
        old, _session = _session, None
    if old is not None:
        # Outside the lock, and with no one following it: a listener asks get_session().
        old._listeners.clear()
        old._stop_all_emulators()
