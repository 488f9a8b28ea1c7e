"""The panel's look: every widget, its layout and CSS class (no callbacks: ``Panel`` wires them).

Every part carries a stable CSS class (``qimage-…``) for outside checks and user styling. Widget
state is saved into notebooks, so images enter it only as thumbnails or a mid-size preview JPEG.
The constants, widget factories and redrawn rows are in ``_panel_parts``.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from .._contract import MODELS, N_MAX, N_MIN, RATIOS, RESOLUTIONS
from ._panel_parts import DESC, LABEL_W, MUTED, banner_html, counted_text, inline, toggles
from ._widgets import set_tooltip

__all__ = ["PanelView"]


class PanelView:
    """The panel's widgets (attributes named after what they are: ``prompt``, ``generate_button``, ...)."""

    def _build(self, folder: str) -> None:
        """Every widget, laid out; no callbacks yet (the panel wires them)."""
        from ._session import EMULATOR_BANNER

        # A tag in the header, not a block above it: the session's %qimage emulator output said the
        # whole sentence already, and every line here pushes the newest run further down.
        self.banner = W.HTML(banner_html(EMULATOR_BANNER), layout=W.Layout(flex="0 1 auto"))
        self.banner.add_class("qimage-banner")
        self.banner.layout.display = "none"

        self.title = W.HTML(
            '<div style="font-size:15px;font-weight:600;white-space:nowrap">Qwen Image</div>',
            layout=W.Layout(flex="0 0 auto"),
        )
        self.server = W.HTML()
        self.server.add_class("qimage-server")
        self.balance = W.HTML("")
        self.balance.add_class("qimage-balance")
        # The hosts, each by name; the panel picks the session's and lists models, sizes and options
        # from what the chosen one supports (provider.capabilities), never from its name.
        from ..providers import all_providers

        # In the header, after the title: the host is what the whole panel talks to (and a row of
        # its own would push the newest run further down).
        # By their short names ("APIMart", "DashScope"): a long title was cut in the dropdown.
        self.provider = W.Dropdown(
            options=[(p.label or p.title, p.name) for p in all_providers()],
            layout=W.Layout(width="auto", min_width="130px", flex="0 0 auto", margin="0 10px 0 8px"),
        )
        set_tooltip(self.provider, "the host the panel sends to: " + "; ".join(
            f"{p.label or p.title}: {p.title}" for p in all_providers()))
        self.provider.add_class("qimage-provider")
        # Where the chosen provider's key comes from (never the key), beside its server.
        self.provider_note = W.HTML(layout=W.Layout(margin="0 12px 0 0"))
        self.provider_note.add_class("qimage-provider-note")
        about = W.HBox(
            [self.server, self.provider_note, self.balance],
            layout=W.Layout(align_items="center", width="100%", flex_flow="row wrap", margin="-2px 0 2px 0"),
        )
        header = W.VBox(
            [
                W.HBox(
                    [self.title, self.provider, self.banner],
                    layout=W.Layout(align_items="center", width="100%", flex_flow="row wrap"),
                ),
                about,
            ],
            layout=W.Layout(width="100%"),
        )
        header.add_class("qimage-header")

        # prompt and negative prompt, each with a live count against its limit
        self.prompt, self.prompt_count = counted_text(
            "Prompt", "Describe the image: subject, style, light, text to render…", "64px", "qimage-prompt"
        )
        self.negative, self.negative_count = counted_text(
            "Negative", "Optional: what to avoid (blurry, watermark, extra fingers…)", "34px", "qimage-negative"
        )

        # A dropdown: a host may serve many models (DashScope lists seven).
        self.model = W.Dropdown(
            options=list(MODELS), value=MODELS[0], description="Model", style=DESC,
            # Basis 260 px: beside it, the pixel size keeps to the same line in a 480 px column.
            layout=W.Layout(width="auto", min_width="260px", max_width="420px", flex="1 1 260px"),
        )
        self.model.add_class("qimage-model")
        self.ratio = toggles(list(RATIOS), "Ratio", "50px", "qimage-size")
        self.free_size = W.Text(
            placeholder="or W x H, or auto",
            layout=W.Layout(width="190px", flex="0 0 auto", margin="2px 0 2px 10px"),
        )
        set_tooltip(self.free_size, "A free pixel size (e.g. 1024x768; each side 512 to 2048) instead of the ratio "
                    "and resolution, or auto: no size sent, the model picks one (Qwen Image 3.0)")
        self.free_size.add_class("qimage-free-size")
        self.resolution = toggles(list(RESOLUTIONS), "Resolution", "42px", "qimage-resolution")
        self.pixels = W.HTML(layout=W.Layout(flex="0 0 auto"))
        self.pixels.add_class("qimage-pixels")
        self.count = toggles(list(range(N_MIN, N_MAX + 1)), "Images", "32px", "qimage-count")
        self.count.style.description_width = "52px"

        # Options only some hosts take; enabled where the provider supports them.
        self.seed = W.Text(
            placeholder="random", description="Seed", style=DESC, layout=W.Layout(width="220px", flex="0 0 auto")
        )
        self.seed.add_class("qimage-seed")
        self.extend = W.ToggleButtons(
            options=[("default", "default"), ("rewrite", "on"), ("as written", "off")],
            value="default",
            description="Prompt",
            style={"button_width": "96px", "description_width": "56px"},
            tooltips=[
                "let the host decide whether to rewrite the prompt",
                "the host may rewrite the prompt to add detail",
                "send the prompt exactly as written",
            ],
            layout=W.Layout(margin="2px 0 2px 10px", flex="0 0 auto"),
        )
        inline(self.extend)
        self.extend.add_class("qimage-extend")
        self.watermark = W.Checkbox(value=False, description="Watermark", indent=False,
                                    layout=W.Layout(width="auto", flex="0 0 auto", margin="2px 0 2px 10px"))
        self.watermark.add_class("qimage-watermark")
        # Shown only for a provider that takes at least one of them (the panel decides).
        self.options_row = W.HBox(
            [self.seed, self.extend, self.watermark],
            layout=W.Layout(align_items="center", width="100%", flex_flow="row wrap"),
        )
        self.options_row.add_class("qimage-options")

        # references: URL + Add, or local files through the provider's upload endpoint
        self.ref_url = W.Text(
            placeholder="https://… public image URL",
            description="References",
            style=DESC,
            layout=W.Layout(width="auto", min_width="220px", flex="1 1 220px"),
        )
        self.ref_url.add_class("qimage-ref-url")
        # Sized by its words (an icon, padding and "Add" do not fit in 70 px: it read "+ A...").
        self.ref_add_button = W.Button(
            description="Add", icon="plus", layout=W.Layout(width="auto", min_width="80px", flex="0 0 auto")
        )
        self.ref_add_button.add_class("qimage-ref-add")
        self.uploader = W.FileUpload(
            accept="image/png,image/jpeg,image/webp,image/gif",
            multiple=True,
            description="Upload",
            layout=W.Layout(width="auto", min_width="110px", flex="0 0 auto"),
        )
        self.uploader.add_class("qimage-upload")
        self.refs_box = W.HBox(
            [], layout=W.Layout(margin=f"2px 0 0 {LABEL_W}", flex_flow="row wrap")
        )
        self.refs_box.add_class("qimage-refs")

        self.generate_button = W.Button(
            description="Generate",
            button_style="primary",
            icon="play",
            layout=W.Layout(width="130px"),
        )
        self.generate_button.add_class("qimage-generate")
        self.cancel_button = W.Button(
            description="Cancel",
            icon="stop",
            disabled=True,
            layout=W.Layout(width="auto", min_width="110px", flex="0 0 auto"),  # "Cancel 3" fits too
            tooltip="Stop waiting on the runs in flight (their task ids stay in the journal)",
        )
        self.cancel_button.add_class("qimage-cancel")
        # Beside the buttons even in the column beside the preview (its words wrap there): a line
        # of its own pushed the newest run below the fold.
        self.hint = W.HTML(layout=W.Layout(flex="1 1 120px", min_width="120px", margin="0 0 0 8px"))
        self.hint.add_class("qimage-hint")

        self.error = W.HTML(layout=W.Layout(width="100%", margin="2px 0", display="none"))
        self.error.add_class("qimage-error")

        def row(*children: W.Widget, **layout: Any) -> W.HBox:
            # A control that does not fit beside the one before it goes to the next line whole:
            # in the column beside the preview (about 480 px in a 950 px notebook) a shrunk
            # control cut its words ("Waterma") and a ratio row wrapped its buttons.
            return W.HBox(
                list(children), layout=W.Layout(align_items="center", width="100%", flex_flow="row wrap", **layout)
            )

        def right(widget: W.Widget) -> W.HBox:
            return W.HBox(
                [widget],
                layout=W.Layout(justify_content="flex-end", width="100%", margin="-4px 0 0 0"),
            )

        self.controls = W.VBox(
            [
                self.prompt,
                right(self.prompt_count),
                self.negative,
                right(self.negative_count),
                # Two controls a row where they fit: each line the controls save keeps the newest
                # run (drawn below them) in view after Generate, at 1024 px too.
                row(self.model, self.pixels),
                row(self.ratio, self.free_size),
                row(self.resolution, self.count),
                self.options_row,
                row(self.ref_url, self.ref_add_button, self.uploader),
                self.refs_box,
                # The hint shares the buttons' row: every line the controls save brings the newest
                # run (drawn below them) closer to where the user just clicked.
                row(
                    W.HBox(
                        [W.HTML(layout=W.Layout(width=LABEL_W, min_width=LABEL_W)), self.generate_button,
                         self.cancel_button],
                        layout=W.Layout(flex="0 0 auto", align_items="center"),
                    ),
                    self.hint,
                    margin="6px 0 0 0",
                ),
            ],
            layout=W.Layout(width="100%"),
        )
        self.controls.add_class("qimage-controls")

        # preview of the selected image, with its actions
        self.preview_empty = W.HTML(
            f'<div style="color:{MUTED};border:1px dashed #c7ccd3;border-radius:6px;padding:28px 12px;'
            'text-align:center">Click a thumbnail to preview it here, save it, reuse it as a reference, '
            "or copy the %%qimage cell that reproduces it.</div>"
        )
        self.preview = W.Image(
            format="jpeg",
            layout=W.Layout(
                display="none",
                max_width="100%",
                max_height="520px",
                object_fit="contain",
                margin="0",
            ),
        )
        self.preview.add_class("qimage-preview")
        self.preview_caption = W.HTML()
        self.preview_caption.add_class("qimage-caption")
        self.folder = W.Text(
            value=folder,
            description="Folder",
            style={"description_width": "initial"},  # as wide as the word: 48 px read "older"
            layout=W.Layout(width="auto", min_width="150px", flex="1 1 150px"),
        )
        self.folder.add_class("qimage-folder")
        self.save_button = W.Button(
            description="Save PNG",
            icon="download",
            layout=W.Layout(width="auto", min_width="110px", flex="0 0 auto"),
            tooltip="Copy the full-resolution PNG (with its provenance) into the folder",
        )
        self.save_button.add_class("qimage-save")
        self.use_ref_button = W.Button(
            description="Use as reference",
            icon="share",
            layout=W.Layout(width="auto", min_width="150px", flex="0 0 auto"),
            tooltip="Add this image's public URL to the references of the next run",
        )
        self.use_ref_button.add_class("qimage-use-ref")
        self.action_note = W.HTML()
        self.action_note.add_class("qimage-note")
        self.cell_label = W.HTML(
            f'<span style="color:{MUTED}">The %%qimage cell that reproduces it:</span>'
        )
        self.cell_label.add_class("qimage-cell-label")
        self.cell = W.Textarea(layout=W.Layout(width="100%", height="96px", margin="2px 0"))
        self.cell.add_class("qimage-cell")
        self.preview_actions = W.VBox(
            [
                self.preview_caption,
                W.HBox(
                    [self.folder, self.save_button],
                    layout=W.Layout(width="100%", align_items="center", flex_flow="row wrap"),
                ),
                W.HBox([self.use_ref_button], layout=W.Layout(width="100%")),
                self.action_note,
                self.cell_label,
                self.cell,
            ],
            layout=W.Layout(display="none", width="100%"),
        )
        # Hidden until a thumbnail is clicked: at a narrow cell it wraps below the controls, and an
        # empty box there pushed the newest run out of view (the Runs title says how to fill it).
        self.preview_pane = W.VBox(
            [self.preview_empty, self.preview, self.preview_actions],
            layout=W.Layout(flex="1 1 340px", min_width="300px", margin="0 0 0 16px", display="none"),
        )
        self.preview_pane.add_class("qimage-preview-pane")

        # this session's runs, newest first, then the journal's earlier entries
        self.history_title = W.HTML(
            f'<div style="font-weight:600;margin-top:6px">Runs <span style="color:{MUTED};'
            'font-weight:400">newest first · click a thumbnail to preview, save or reuse it</span></div>'
        )
        self.history = W.VBox([], layout=W.Layout(width="100%"))
        self.history.add_class("qimage-history")
        self.journal_list = W.VBox([], layout=W.Layout(width="100%"))
        self.journal_refresh = W.Button(
            description="Refresh", icon="refresh", layout=W.Layout(width="auto", min_width="100px", flex="0 0 auto")
        )
        self.journal_refresh.add_class("qimage-journal-refresh")
        self.journal_note = W.HTML()
        # The question a resend asks first where the host has no idempotency key (hidden until then).
        self.resend_question = W.HTML(layout=W.Layout(flex="1 1 0", min_width="0"))
        self.resend_yes = W.Button(
            description="Resend anyway", button_style="warning",
            layout=W.Layout(width="auto", min_width="130px", flex="0 0 auto"),
        )
        self.resend_yes.add_class("qimage-resend-yes")
        self.resend_no = W.Button(description="Keep it", layout=W.Layout(width="auto", min_width="90px", flex="0 0 auto"))
        self.resend_no.add_class("qimage-resend-no")
        self.resend_confirm = W.HBox(
            [self.resend_question, self.resend_yes, self.resend_no],
            layout=W.Layout(align_items="center", width="100%", display="none"),
        )
        self.resend_confirm.add_class("qimage-resend-confirm")
        self.journal = W.Accordion(
            [
                W.VBox(
                    [
                        W.HBox(
                            [self.journal_refresh, self.journal_note],
                            layout=W.Layout(align_items="center"),
                        ),
                        self.resend_confirm,
                        self.journal_list,
                    ]
                )
            ],
            selected_index=None,
        )
        self.journal.set_title(
            0, "Journal: earlier generations (kept on disk; resume without paying again)"
        )
        self.journal.add_class("qimage-journal")

        # The runs sit right under the controls, in the same column, and the preview beside them:
        # the newest run lands just below the Generate button that started it, and where a cell is
        # too narrow for two columns the preview wraps below the runs rather than between.
        self.main = W.VBox(
            [self.controls, self.error, self.history_title, self.history, self.journal],
            layout=W.Layout(flex="1 1 480px", min_width="440px"),
        )
        self.main.add_class("qimage-main")
        self.root = W.VBox(
            [
                header,
                W.Box(
                    [self.main, self.preview_pane],
                    layout=W.Layout(flex_flow="row wrap", width="100%", align_items="flex-start"),
                ),
            ],
            layout=W.Layout(width="100%", max_width="1240px", padding="4px"),
        )
        self.root.add_class("qimage-panel")

    # -- drawing --
