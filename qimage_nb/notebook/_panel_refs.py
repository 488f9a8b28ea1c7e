"""The panel's references: public URLs added by hand, local pictures uploaded once, their chips."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .._contract import REFS_MAX, InlineImage, check_reference_url
from .._exceptions import ValidationError
from ._panel_parts import REF_PX, ref_chips, thumb_bytes
from ._refs import Ref, local_ref, upload
from ._widgets import clear_upload, uploaded_files

__all__ = ["PanelRefs"]


class PanelRefs:
    """References for the next run (a mixin of :class:`~qimage_nb.notebook._panel.Panel`)."""

    def add_reference(self, url: str | InlineImage, *, thumb: bytes | None = None, name: str = "") -> None:
        """Add a public image URL (or a local picture sent inline) to the next run's references (at most 3)."""
        if isinstance(url, InlineImage):
            checked: str | InlineImage = url
        else:
            url = (url or "").strip()
            if not url:
                raise ValidationError("image_urls", "type or paste a public http(s) image URL first")
            checked = check_reference_url(url, len(self.references))
        if any(r.url == checked for r in self.references):
            self._note("That reference is already in the list.", ok=False)
            return
        if len(self.references) + len(self._uploading) >= REFS_MAX:
            raise ValidationError("image_urls", f"the API takes at most {REFS_MAX} references: remove one first")
        self.references.append(Ref(shown=name, url=checked, thumb=thumb))
        if isinstance(url, str) and self.ref_url.value.strip() == url:
            self.ref_url.value = ""
        self._render_refs()
        self._refresh_controls()

    def remove_reference(self, index: int) -> None:
        if 0 <= index < len(self.references):
            del self.references[index]
        self._render_refs()
        self._refresh_controls()

    def _render_refs(self) -> None:
        def remover(index: int) -> Callable[..., Any]:
            return self._guard("remove reference", lambda _b: self.remove_reference(index))

        self.refs_box.children = ref_chips(self.references, self._uploading, remover)

    def _on_upload(self, change: dict[str, Any]) -> None:
        items = uploaded_files(change.get("new"))
        if not items:
            return
        # The bytes sit in widget state (which notebooks save): take them and clear it at once.
        clear_upload(self.uploader)
        for name, data in items:
            if len(self.references) + len(self._uploading) >= REFS_MAX:
                self._show_error(f"Upload: {name} skipped: the API takes at most {REFS_MAX} references")
                continue
            self._uploading.append(name)
            self._start_background(self._upload(name, data), f"upload of {name}")
        self._render_refs()
        self._refresh_controls()

    async def _upload(self, name: str, data: bytes) -> None:
        try:
            # Checked like the magic's --ref (nothing sent for a non-image), and uploaded once per
            # content and API: the journal remembers the URL.
            ref = await asyncio.to_thread(local_ref, data, name)
            url = await upload(self._client(), ref)
            try:
                thumb: bytes | None = await asyncio.to_thread(thumb_bytes, data, REF_PX * 2)
            except Exception:  # a thumbnail is a nicety; the URL is what matters
                thumb = None
        finally:
            self._uploading.remove(name)
            self._render_refs()
            self._refresh_controls()
        self.add_reference(url, thumb=thumb, name=name)
