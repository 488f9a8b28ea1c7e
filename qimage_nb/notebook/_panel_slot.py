"""One tile of a panel run (a placeholder, then a thumbnail that opens the preview), and what a run
may ask of the panel that shows it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import ipywidgets as W

from ._panel_parts import MUTED, image_format, tile_size

if TYPE_CHECKING:
    from PIL import Image

    from .._contract import GenerationRequest
    from ._panel_run import Run

__all__ = ["RunHost", "RunSlot"]


class RunSlot:
    """One gallery cell of a run: a placeholder until its image lands, then a clickable thumbnail."""

    def __init__(self, run: Run, index: int) -> None:
        self.run = run
        self.index = index
        self.image: Image.Image | None = None
        self.thumb: bytes | None = None
        w, h = tile_size(run.request.size)
        self.size = (w, h)
        self.waiting = W.HTML(
            f'<div style="width:{w}px;height:{h}px;display:flex;align-items:center;justify-content:center;'
            f'background:#eef0f3;color:{MUTED};border-radius:6px;font-size:12px">image {index + 1}…</div>',
            layout=W.Layout(grid_area="tile", margin="0"),
        )
        self.box = W.GridBox(
            [self.waiting],
            layout=W.Layout(
                grid_template_columns=f"{w}px",
                grid_template_rows=f"{h}px",
                grid_template_areas='"tile"',
                width=f"{w}px",
                height=f"{h}px",
                overflow="hidden",
            ),
        )
        self.box.add_class("qimage-placeholder")

    def fill(self, image: Image.Image, thumb: bytes, mime: str, tooltip: str) -> None:
        if self.image is not None:
            return
        self.image, self.thumb = image, thumb
        w, h = self.size
        picture = W.Image(
            value=thumb,
            format=image_format(mime),
            layout=W.Layout(
                grid_area="tile", width=f"{w}px", height=f"{h}px", object_fit="cover", margin="0"
            ),
        )
        picture.add_class("qimage-thumb-img")
        # ipywidgets' Image has no click event: a transparent Button laid over it in the same grid
        # area takes the click (and gives hover/focus feedback), so the whole tile is the target.
        opener = W.Button(
            description="",
            tooltip=f"image {self.index + 1}: click for a larger preview\n{tooltip}",
            layout=W.Layout(
                grid_area="tile", width=f"{w}px", height=f"{h}px", margin="0", padding="0"
            ),
            style={"button_color": "transparent"},
        )
        opener.add_class("qimage-open")
        opener.on_click(
            self.run.panel.guard("preview", lambda _b: self.run.panel.select(self.run, self.index))
        )
        self.box.children = (picture, opener)
        self.box.remove_class("qimage-placeholder")
        self.box.add_class("qimage-thumb")


class RunHost(Protocol):
    """What a run may ask of the panel that shows it: these, and nothing else of the panel."""

    def loop(self) -> asyncio.AbstractEventLoop:
        """The kernel's event loop, where the run's task goes (the kernel stays free)."""

    def guard(self, action: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as a widget callback whose failure is one line in the panel, named ``action``."""

    def show_error(self, message: str) -> None:
        """One line in the panel's error line: what belongs to no run's own line."""

    def submit_settled(self, run: Run) -> None:
        """The run's submit is over (the next Generate may reuse its settings)."""

    def run_finished(self, run: Run) -> None:
        """The run ended: its images (if any) are the panel's latest."""

    def select(self, run: Run, index: int) -> None:
        """Show the run's image ``index`` in the preview."""

    def load_request(self, request: GenerationRequest) -> None:
        """Put a request's settings back into the controls."""
