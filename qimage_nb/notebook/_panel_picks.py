"""What the panel does with one chosen image (preview, save, reuse as a reference, the reproducing
cell) and with the journal's earlier entries."""

from __future__ import annotations

import asyncio
import html
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._contract import REFS_MAX
from .._exceptions import QImageError, ValidationError
from ..view._words import id_html
from ._magic_args import reproduce_cell
from ._panel_parts import MUTED, PREVIEW_PX, journal_row, thumb_bytes

if TYPE_CHECKING:
    from PIL import Image

    from ._panel_run import Run

__all__ = ["PanelPicks"]


class PanelPicks:
    """The preview and the journal (a mixin of :class:`~qimage_nb.notebook._panel.Panel`)."""

    def select(self, run: Run, index: int) -> None:
        """Show image ``index`` of ``run`` in the preview with its actions (what a thumbnail click does)."""
        slot = run.slots[index]
        if slot.image is None:
            return
        self._selected = (run, index)
        image = slot.image
        info = dict(getattr(image, "info", {}) or {})
        w, h = image.size
        caption = (
            '<div style="line-height:1.4;overflow-wrap:anywhere">'
            f"<b>#{run.number} · image {index + 1} of {len(run.slots)}</b> · {w}×{h} · {html.escape(info.get('model', run.request.model))}"
            f"<br><span style='color:{MUTED}'>task {id_html(str(info.get('task_id') or run.task_id or ''))}</span></div>"
        )
        self.preview_caption.value = caption
        try:
            self.cell.value = reproduce_cell(run.request, provider=self._cell_provider(run))
            self.cell_label.value = (
                f'<span style="color:{MUTED}">The %%qimage cell that reproduces it (after you run it, '
                f"this image is <code>qimages[{index}]</code>; unchanged, it is served from the journal "
                "for free):</span>"
            )
        except ValueError as exc:
            self.cell.value = ""
            self.cell_label.value = f'<span style="color:{MUTED}">No %%qimage cell: {html.escape(str(exc))}.</span>'

        self.action_note.value = ""
        self.preview_pane.layout.display = None
        self.preview_empty.layout.display = "none"
        self.preview_actions.layout.display = None
        # Show the thumbnail at once, then swap in a sharper mid-size JPEG made in a worker thread.
        self.preview.value = slot.thumb or b""
        self.preview.layout.display = None
        source = info.get("path") or image
        self._start_background(self._sharpen_preview(run, index, source), "preview")

    def _cell_provider(self, run: Run) -> str | None:
        """``--provider`` for the reproducing cell: left out only where a bare cell goes to the same
        host anyway (the seed's API, in use), so a cell copied elsewhere keeps its host."""
        from ._session import get_session

        name = run.client.provider.name
        try:
            in_use = get_session().provider().name
        except QImageError:
            in_use = None
        return None if name == in_use == "apimart" else name

    async def _sharpen_preview(self, run: Run, index: int, source: Any) -> None:
        data = await asyncio.to_thread(thumb_bytes, Path(source) if isinstance(source, str) else source, PREVIEW_PX)
        if self._selected == (run, index):
            self.preview.value = data

    def _selected_image(self) -> tuple[Run, int, Image.Image]:
        if self._selected is None:
            raise ValidationError("image", "click a thumbnail first")
        run, index = self._selected
        image = run.slots[index].image
        assert image is not None
        return run, index, image

    def save_selected(self) -> Path:
        """Copy the selected image's full-resolution PNG (with its provenance chunks) into the folder."""
        run, index, image = self._selected_image()
        info = dict(getattr(image, "info", {}) or {})
        source = info.get("path")
        if not source and run.generation is not None and index < len(run.generation.paths):
            source = str(run.generation.paths[index])
        if not source or not Path(source).exists():
            raise QImageError("the full-resolution file is not on disk (it may have been cleaned up)")
        folder = Path(self.folder.value.strip() or "qimage_images").expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        task = str(info.get("task_id") or run.task_id or f"run{run.number}")
        target = folder / f"{task}-{index}.png"
        shutil.copy2(source, target)
        self._note(f"Saved {target} ({image.size[0]}×{image.size[1]}, prompt and task id inside the PNG)")
        return target

    def use_selected_as_reference(self) -> None:
        """Add the selected image's public source URL to the next run's references."""
        _run, _index, image = self._selected_image()
        url = str((getattr(image, "info", {}) or {}).get("source_url") or "")
        if not url:
            raise QImageError("this image has no public source URL to reuse (upload it instead)")
        slot_thumb = _run.slots[_index].thumb
        self.add_reference(url, thumb=slot_thumb, name=f"#{_run.number}/{_index + 1}")
        self._note(f"Added as reference {len(self.references)} of {REFS_MAX} for the next run "
                   "(the provider's URL is temporary: use it within a day or so)")

    def _on_journal_toggle(self, change: dict[str, Any]) -> None:
        if change.get("new") == 0 and not self._journal_loaded:
            self.refresh_journal()

    def refresh_journal(self, limit: int = 20) -> None:
        """List the journal's entries that are not this panel's own runs (newest first)."""
        client = self._client()
        own = {r.task_id for r in self.runs if r.task_id}
        own |= {r.generation.idempotency_key for r in self.runs if r.generation and r.generation.idempotency_key}
        entries = [e for e in client.history(limit) if getattr(e, "task_id", None) not in own
                   and getattr(e, "key", None) not in own]
        self._journal_loaded = True

        def resumer(target: str) -> Callable[..., Any]:
            return self._guard("resume", lambda _b: self.resume(target))

        def resender(key: str) -> Callable[..., Any]:
            return self._guard("resend", lambda _b: self.offer_resend(key))

        keys = client.provider.capabilities.idempotency_keys
        rows = [journal_row(entry, resumer, resender, keys_honoured=keys) for entry in entries]
        self.journal_list.children = tuple(rows)
        self.journal_note.value = (
            f'<span style="color:{MUTED};margin-left:8px">{len(rows)} earlier entr{"y" if len(rows) == 1 else "ies"}'
            f" in {html.escape(str(getattr(client.store, 'root', '') or 'the journal'))}</span>"
        )

    # -- resending a submit whose outcome is unknown --

    def offer_resend(self, key: str) -> Run | None:
        """What a journal row's Resend… does: resend at once where the host honours the key (no
        second bill), else ask first, saying that the resend may bill again."""
        client = self._client()
        if client.provider.capabilities.idempotency_keys:
            return self.resend(key)
        self._resend_key = key
        self.resend_question.value = (
            f'<div style="color:#8a5a00;line-height:1.35;overflow-wrap:anywhere">{html.escape(client.provider.label or client.provider.title)} '
            f"has no idempotency key: if the first submit of {id_html(key)} reached it, a resend makes a second "
            "task and may bill again. Resend anyway?</div>"
        )
        self.resend_confirm.layout.display = None
        return None

    def confirm_resend(self) -> Run | None:
        """The user's yes to the question :meth:`offer_resend` asked."""
        key, self._resend_key = self._resend_key, None
        self.resend_confirm.layout.display = "none"
        return self.resend(key) if key else None

    def keep_unsent(self) -> None:
        self._resend_key = None
        self.resend_confirm.layout.display = "none"

    def resend(self, key: str) -> Run:
        """Resend the journaled submit ``key`` (the identical request, the same key) as a run."""
        client = self._client()
        job = client.store.get(key)
        if job is None:
            raise ValidationError("key", f"no journal entry {key!r}: refresh the journal")
        return self._start_run(job.request, client, resume=key, resend=True)
