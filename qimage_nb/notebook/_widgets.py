"""ipywidgets 7.7 and 8 in one place: every use of the faces that differs between the two.

Colab (and classic Notebook 6 with widgetsnbextension 3.6) renders ipywidgets 7 only, and a widget
library that pulls in 8 leaves it blank; JupyterLab 4, Notebook 7 and Binder run 8; VS Code renders
both. So the panel is written to what 7.7 and 8.1 share, and each function here covers one thing
they do differently (read from both releases' sources, ipywidgets 7.7.1 and 8.1):

- tooltips: 8 gives every DOM widget ``tooltip``; 7 has it on ``Button`` and ``ToggleButton`` only,
  and the label's ``description_tooltip`` on described widgets (drawn on the label, so a widget with
  no description, like the panel's provider dropdown, shows none on 7). On 7, ``dropdown.tooltip =
  ...`` sets a plain Python attribute that never reaches the browser, and ``Dropdown(tooltip=...)``
  drops it with a DeprecationWarning. (8 still takes ``description_tooltip``, deprecated.)
- ``FileUpload.value``: 8: a tuple of dicts (``name``, ``type``, ``size``, ``last_modified``,
  ``content`` as a memoryview), which the kernel may set to ``()``; 7: a read-only dict keyed by
  file name of ``{"metadata": {...}, "content": bytes}``, rebuilt from the synced ``metadata`` and
  ``data`` lists whenever the front end bumps ``_counter``.
- layout and style keys that 8 added: ``Layout.border_top`` (and ``_right``, ``_bottom``, ``_left``;
  7 has ``border`` only), ``ButtonStyle.text_color`` and the other font keys (7: ``button_color`` and
  ``font_weight``). 7 drops an unknown key with a DeprecationWarning; here it is left out, quietly.
- the display bundle: 8's widgets answer ``_repr_mimebundle_``; 7's only ``_ipython_display_``.

What both share needs nothing here: ``Accordion.set_title`` (8 adds a ``titles`` tuple, 7 has only
``set_title``), ``Button.tooltip``, ``ToggleButtons.tooltips``, ``button_color``, ``description_width``,
``button_width``, ``Image(format="url")``, ``Checkbox(indent=...)``, ``GridBox`` and the grid keys. The
faces use no ``Output`` widget (a callback's failure is written into the panel's own error line), so
the difference in capturing output from other threads does not arise, and no
``description_allow_html`` (8 only: descriptions stay plain text; HTML sits in ``HTML`` widgets).
"""

from __future__ import annotations

import functools
from typing import Any

import ipywidgets as W

__all__ = [
    "clear_upload",
    "ipywidgets_major",
    "layout",
    "mimebundle",
    "set_tooltip",
    "style",
    "tooltip_of",
    "uploaded_files",
]


@functools.cache
def ipywidgets_major() -> int:
    """The installed ipywidgets' major version (7 or 8)."""
    return int(W.__version__.split(".", 1)[0])


@functools.cache
def _traits(cls: type) -> frozenset[str]:
    return frozenset(cls.class_trait_names())


def set_tooltip(widget: W.Widget, text: str | None) -> None:
    """The widget's hover text, on whichever trait this ipywidgets syncs to the browser.

    On 7 a widget with neither trait (an ``HTML``, say) keeps no tooltip: put a ``title`` in its markup.
    """
    names = _traits(type(widget))
    if "tooltip" in names:
        widget.tooltip = text
    elif "description_tooltip" in names:
        widget.description_tooltip = text


def tooltip_of(widget: W.Widget) -> str | None:
    """The hover text :func:`set_tooltip` gave the widget (None where it can keep none)."""
    names = _traits(type(widget))
    for name in ("tooltip", "description_tooltip"):
        if name in names:
            return getattr(widget, name)
    return None


def layout(**keys: Any) -> W.Layout:
    """A ``Layout`` of the keys this ipywidgets knows; the others (8's ``border_top``, ... on 7) are
    left out rather than warned about: each is a nicety (a separator line), never a size the panel
    needs to fit."""
    known = _traits(W.Layout)
    return W.Layout(**{k: v for k, v in keys.items() if k in known})


def style(widget_cls: type, **keys: Any) -> dict[str, Any]:
    """The ``style=`` keys ``widget_cls``'s style class knows here (7's ``ButtonStyle`` has no
    ``text_color``, say); pass the result as the widget's ``style``."""
    style_cls = widget_cls.class_traits()["style"].klass
    known = _traits(style_cls)
    return {k: v for k, v in keys.items() if k in known}


def uploaded_files(value: Any) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of each file in a ``FileUpload.value`` of either version, in upload order."""
    if not value:
        return []
    if isinstance(value, dict):  # 7: {name: {"metadata": {...}, "content": bytes}}
        return [(str(name), bytes(item["content"])) for name, item in value.items()]
    return [(str(item["name"]), bytes(item["content"])) for item in value]  # 8: ({name, content}, ...)


def clear_upload(uploader: W.FileUpload) -> None:
    """Forget the uploaded files: their bytes would otherwise stay in the widget's state, which a
    saved notebook keeps. The value becomes empty (its observers see an empty value once)."""
    if ipywidgets_major() >= 8:
        uploader.value = ()
        return
    # 7: value is read-only and rebuilt from metadata/data on the next upload; the bytes live in data.
    uploader.metadata = []
    uploader.data = []
    uploader.set_trait("value", {})


def mimebundle(widget: W.Widget, **kwargs: Any) -> dict[str, Any] | None:
    """The widget's display bundle (a view of its model, and a plain-text fallback)."""
    if hasattr(widget, "_repr_mimebundle_"):  # 8
        return widget._repr_mimebundle_(**kwargs)
    plaintext = repr(widget)
    bundle: dict[str, Any] = {"text/plain": plaintext[:110] + "…" if len(plaintext) > 110 else plaintext}
    if widget._view_name is not None:
        bundle["application/vnd.jupyter.widget-view+json"] = {
            "version_major": 2,
            "version_minor": 0,
            "model_id": widget.model_id,
        }
    return bundle
