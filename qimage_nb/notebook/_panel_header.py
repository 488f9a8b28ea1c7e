"""The panel's connection: which host it talks to, and the header that says so.

The provider dropdown, the server address, where the key comes from, the emulator tag and the
balance. ``Panel`` mixes this in; it reads the kernel's session (``_session``) at each use, so what
``%qimage login`` or ``%qimage emulator`` changed in another cell is what the header shows.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from .._exceptions import QImageError
from ._panel_parts import MUTED, RED, banner_html, describe
from ._widgets import set_tooltip

if TYPE_CHECKING:
    from ..core._client import AsyncClient
    from ..providers import Provider

__all__ = ["PanelHeader"]


class PanelHeader:
    """The header's behaviour (a mixin of :class:`~qimage_nb.notebook._panel.Panel`)."""

    def _choose_initial_provider(self) -> QImageError | None:
        """The dropdown starts at the client's provider, else the session's (a bad
        $QIMAGE_PROVIDER is said in the error line, and the default is shown)."""
        if self._client_override is not None:
            self.provider.value = self._client_override.provider.name
            self.provider.disabled = True  # a client of your own talks to one host
            return None
        from ._session import get_session

        session = get_session()
        session.subscribe(self._session_changed)
        try:
            self.provider.value = self._session_provider = session.provider().name
        except QImageError as exc:
            return exc
        return None

    def _provider_changed(self) -> None:
        """Models, sizes, options and the header follow the provider chosen in the dropdown."""
        provider = self._provider()
        models = list(provider.models)
        current = self.model.value
        self.model.options = models
        self.model.value = current if current in models else provider.default_model
        options = provider.capabilities.options
        for widget, option, enabled, disabled in (
            (self.seed, "seed", "the same seed and request give the same picture; empty: random",
             "takes no seed"),
            (self.extend, "prompt_extend", "whether the host may rewrite the prompt", "does not rewrite prompts"),
            (self.watermark, "watermark", "ask the host to stamp its watermark", "has no watermark option"),
            (self.free_size, "pixel_size", "a free pixel size (each side 512 to 2048) instead of the ratio",
             "takes a ratio and a resolution, no free pixel sizes"),
        ):
            widget.disabled = option not in options
            set_tooltip(widget, f"{provider.title} {disabled}" if widget.disabled else enabled)
        # A row with nothing the provider takes is left out: every line the controls save keeps the
        # newest run in view after Generate.
        self.options_row.layout.display = None if options & {"seed", "prompt_extend", "watermark"} else "none"
        self.free_size.layout.display = None if "pixel_size" in options else "none"
        local_refs = provider.capabilities.upload or provider.capabilities.inline_refs is not None
        self.uploader.disabled = not local_refs
        set_tooltip(self.uploader, "" if local_refs else (
            f"{provider.title} has no upload endpoint: add public https URLs"
        ))
        self._refresh_controls()
        self.refresh_header()

    def refresh_header(self) -> None:
        """The header as the session stands now: the emulator tag, the server's address, where the
        key comes from, the balance. Called on every change of the session (``%qimage emulator``,
        ``--stop``, ``%qimage login``/``logout``, a provider switch), so it is never stale."""
        from ._session import emulator_banner

        provider = self._provider()
        self.banner.value = banner_html(emulator_banner(provider))
        self.banner.layout.display = None if self._using_emulator() else "none"
        self.server.value = self._server_html()
        self.provider_note.value = self._provider_note()
        self.balance.value = ""
        try:
            self._client()
        except QImageError as exc:  # e.g. a bad base URL variable: one line where every error goes
            self._show_error(f"Settings: {describe(exc)}")
        else:
            if not self._error_is_validation:
                self.clear_error()
            self._start_background(self._refresh_balance(), "balance")

    def _session_changed(self) -> None:
        """The session's listener (held weakly: a panel that is gone is not kept alive by it). It
        may be called from any thread; the work runs on the panel's loop, through its guard."""
        self._guard("header", lambda: self._follow_session())()

    def _follow_session(self) -> None:
        """A switch of the session's provider (``--provider`` of ``%qimage emulator`` or ``login``)
        moves the dropdown too; any change redraws the header."""
        from ._session import get_session

        try:
            in_use = get_session().provider().name
        except QImageError:
            in_use = None
        if in_use is not None and in_use != self._session_provider:
            self._session_provider = in_use
            if self.provider.value != in_use:
                self.provider.value = in_use  # its observer redraws everything that follows it
                return
        self.refresh_header()

    def _provider(self) -> Provider:
        if self._client_override is not None:
            return self._client_override.provider
        from ..providers import get_provider

        return get_provider(self.provider.value)

    def _client(self) -> AsyncClient:
        if self._client_override is not None:
            return self._client_override
        from ._session import get_session

        return get_session().client(self.provider.value)

    def _using_emulator(self) -> bool:
        from ._session import get_session

        session = get_session()
        emulator = session.emulator_for(self._provider().name)
        if emulator is None:
            return False
        if self._client_override is None:
            return True
        return getattr(self._client_override, "base_url", None) == emulator.base_url

    def _server_html(self) -> str:
        from urllib.parse import urlsplit

        try:
            base = self._client().base_url
        except QImageError as exc:
            return f'<span style="color:{RED}">{html.escape(describe(exc))}</span>'
        if base == self._provider().default_base_url:
            return ""
        host = urlsplit(base).netloc
        return f'<span style="color:{MUTED};margin-right:12px">server {html.escape(host)}</span>'

    def _provider_note(self) -> str:
        """Where the chosen provider's key comes from (never the key), resolved like the session."""
        if self._client_override is not None:
            return f'<span style="color:{MUTED}">this panel\'s own client</span>'
        from ._session import get_session

        provider = self._provider()
        source = get_session().key_source_for(provider.name)
        if source == "the bundled emulator":
            return ""  # the banner above says it, once
        short = {"%qimage login (memory only)": "%qimage login"}
        text = f"key: {short.get(source, source)}" if source else f"no key (${provider.key_env})"
        tip = (
            f"the key for {provider.title} comes from {source} (never shown)" if source else
            f"set ${provider.key_env}, run %qimage login --provider {provider.name}, or "
            f"%qimage emulator --provider {provider.name}"
        )
        return f'<span style="color:{MUTED};white-space:nowrap" title="{html.escape(tip)}">{html.escape(text)}</span>'

    async def _refresh_balance(self) -> None:
        client = self._client()
        if not client.has_key:
            self.balance.value = f'<span style="color:{MUTED}">no API key set</span>'
            return
        if not client.provider.capabilities.balance:
            self.balance.value = ""  # the host has no balance endpoint: nothing to show
            return
        balance = await client.balance()
        if balance.unlimited_quota:
            text = "balance: unlimited"
        elif balance.remain_balance is not None:
            text = f"balance: {balance.remain_balance:,.2f}"
            if balance.remain_credits is not None:
                text += f" · {balance.remain_credits:,.0f} credits"
        else:
            text = "balance: unknown"
        self.balance.value = f'<span style="color:{MUTED}">{html.escape(text)}</span>'
