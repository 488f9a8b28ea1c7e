"""An image's provenance: built once, by the download step, and from then on read from the file.

The download step (``_download.store_image``) describes each image from the request and what the
host answered (:func:`describe`), and the journal writes that into the file itself (PNG text
chunks, or a JSON sidecar next to a JPEG/WebP). From then on the file is the record: every image
handed to a user, just downloaded or served from the journal later, carries what its file says
(:func:`open_stored`), so the two can never disagree.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

    from .._contract import GenerationRequest, TaskStatus

__all__ = ["describe", "item_label", "open_stored"]


# A batch item's journal label ends with its index: the one place that spelling is made and read.
_ITEM = re.compile(r" item (\d+)$")


def item_label(label: str, item: int) -> str:
    """The journal label of item ``item`` of a batch labelled ``label`` (its provenance's "item")."""
    return f"{label} item {int(item)}"


def describe(
    request: GenerationRequest, status: TaskStatus, url: str, index: int, *, origin: str, provider: str,
    label: str | None = None,
) -> dict[str, str]:
    """What image ``index`` of a completed task (``status``) is: the request, where it came from,
    and what the host says it did (its rewritten prompt, the seed it used), else what was asked."""
    # expires_at and origin let a face decide whether source_url can still serve as a reference
    # (an expired CDN URL, or one from another API, must be re-uploaded from the disk copy).
    info = {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt or "",
        "model": request.model,
        "size": request.size,
        "resolution": request.resolution,
        "n": str(request.n),
        "index": str(index),
        "task_id": status.task_id,
        "source_url": url,
        "expires_at": "" if status.expires_at is None else str(int(status.expires_at)),
        "origin": origin,
        "provider": provider,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    seed = status.seed if status.seed is not None else request.seed
    if seed is not None:
        info["seed"] = str(seed)
    if status.actual_prompt:
        info["actual_prompt"] = status.actual_prompt
    if label:
        info["label"] = label  # which cell (or call) made it: "%%qimage -o cats"
        found = _ITEM.search(label)
        if found:
            info["item"] = found.group(1)
    if status.cost is not None:
        info["cost"] = repr(float(status.cost))  # the whole task's price, as the host said it
    for option in ("prompt_extend", "watermark"):
        if getattr(request, option) is not None:
            info[option] = str(getattr(request, option)).lower()
    if status.output_size is not None:
        # What the host says it made (a 3.0 model asked for no size chose this one).
        info["output_size"] = f"{status.output_size[0]}x{status.output_size[1]}"
    if request.host_params:
        info["host_params"] = json.dumps(dict(request.host_params), ensure_ascii=False, sort_keys=True)
    return info


def open_stored(path: Path) -> Image.Image:
    """An image from the journal's files, lazily opened, carrying what its file says (and its path)."""
    from ._images import open_lazy
    from ._png_text import read_provenance

    return open_lazy(Path(path), read_provenance(path))

