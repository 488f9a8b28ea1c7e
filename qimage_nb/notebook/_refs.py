"""Reference images: what ``--ref`` names, and local pictures uploaded once.

The API takes references as public URLs. A URL passes through (checked); an image this package
generated is sent by its source URL (the API already has it, nothing to upload); anything local (a
file, a PIL image, bytes from the panel's upload button) is checked before a single request is
sent, then uploaded through the client (``upload(..., reuse=True)``), which remembers uploads by
content hash in the journal, per API origin, so re-running a cell sends the same URL and hits the
cache instead of paying again; a URL is reused while it has a day left to live at the host.

A host that takes references inside the request (DashScope: ``data:`` URIs) needs no upload: the
local picture is checked against that host's limits and sent inline; a generated image whose URL
from the same host is still alive is sent by URL.

Every refusal is a one-line ``ValidationError`` (nothing was sent); the magic shows it as a
``UsageError``, the panel in its error line.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import ValidationError

if TYPE_CHECKING:
    from .._contract import InlineImage
    from ..core._client import AsyncClient

__all__ = ["Ref", "local_ref", "ref_urls", "resolve_refs", "upload"]

# A URI scheme of two letters or more (one letter is a Windows drive, C:\\...).
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_FIELD = "image_urls"
# A CDN URL this close to its expiry is not worth sending: the provider may fetch it later.
_URL_MARGIN = 600.0


@dataclass
class Ref:
    """One reference: a URL ready to send, or local material to upload first."""

    shown: str = ""  # how the user named it, for messages
    url: str | InlineImage | None = None  # InlineImage: a local picture sent inside the request
    local: Any = None  # a path, a PIL image or encoded bytes
    digest: str | None = None  # sha256 of the bytes that would be uploaded
    thumb: bytes | None = None  # the panel's chip thumbnail, when it has one
    # For a generated image: the API its URL came from and when that URL expires. Another API
    # cannot read it and an expired one is dead, so the disk copy is uploaded instead.
    origin: str | None = None
    expires_at: float | None = None

    def url_still_good(self, base_url: str) -> bool:
        if self.url is None:
            return False
        if self.local is None:
            return True  # a URL the user gave: theirs to vouch for
        if self.origin and self.origin != base_url:
            return False
        return self.expires_at is None or self.expires_at > time.time() + _URL_MARGIN


def _refuse(message: str) -> ValidationError:
    return ValidationError(_FIELD, message)


# --- what --ref names ------------------------------------------------------------------------


def resolve_refs(tokens: list[str], namespace: Mapping[str, Any]) -> list[Ref]:
    """The references ``--ref`` tokens name, checked; local material is read but not yet uploaded."""
    from .._contract import REFS_MAX

    refs: list[Ref] = []
    for token in tokens:
        refs.extend(_resolve(token, namespace))
    if len(refs) > REFS_MAX:
        raise _refuse(f"--ref names {len(refs)} reference images; the API takes 1 to {REFS_MAX}")
    return refs


def _resolve(token: str, namespace: Mapping[str, Any]) -> list[Ref]:
    if token.lower().startswith(("http://", "https://")):
        return [url_ref(token, token)]
    found, value = evaluate(token, namespace)
    if found:
        refs = _refs_from_value(value, token)
        if refs is not None:
            return refs
        if not _exists(token):
            raise _refuse(
                f"--ref {token} is a {type(value).__name__}; pass an image, a list of images, "
                "a file path or an http(s) URL"
            )
    if _URI.match(token) and not _exists(token):
        # data:, file:, ftp:, javascript: ... are URLs the API refuses: say so, not "no such file".
        return [url_ref(token, token)]
    return [_path_ref(token, token)]


def _exists(path: str) -> bool:
    return Path(os.path.expanduser(path)).exists()


def evaluate(token: str, namespace: Mapping[str, Any]) -> tuple[bool, Any]:
    """Look up ``imgs``, ``imgs[0]``, ``imgs[-2:]``, ``gen.images`` in the user's namespace.

    Only names, subscripts with int/str constants or slices of ints, and public attributes are
    followed; nothing is ``eval``-ed. A token that does not parse as such an expression, or names
    nothing, is ``(False, None)`` (it may be a path); any other expression that is not a file
    either is refused naming the token.
    """
    try:
        tree = ast.parse(token.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False, None
    node = tree.body
    problem = _unsupported(node)
    if problem is not None:
        if _exists(token):
            return False, None
        raise _refuse(
            f"--ref {token}: {problem}; --ref takes an image variable (imgs, imgs[0], imgs[1:], gen.images), "
            "a file path or an http(s) URL, and evaluates nothing else"
        )
    try:
        return True, _lookup(node, namespace)
    except Exception:
        return False, None


def _unsupported(node: ast.AST) -> str | None:
    """Why ``node`` is not a plain reference to a value (None when it is one)."""
    if isinstance(node, ast.Name):
        return None
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            return f"the private attribute .{node.attr} is not followed"
        return _unsupported(node.value)
    if isinstance(node, ast.Subscript):
        index = node.slice
        if isinstance(index, ast.Slice):
            bad = [
                p
                for p in (index.lower, index.upper, index.step)
                if p is not None and _int(p) is None
            ]
            if bad:
                return "a slice takes whole numbers only"
        elif _int(index) is None and not (
            isinstance(index, ast.Constant) and isinstance(index.value, str)
        ):
            return "an index must be a whole number or a quoted key"
        return _unsupported(node.value)
    if isinstance(node, ast.Constant):
        return f"the {type(node.value).__name__} {node.value!r} is not an image"
    return f"a {type(node).__name__} expression is not a variable reference"


def _int(node: ast.AST) -> int | None:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int(node.operand)
        return None if inner is None else -inner
    return None


def _lookup(node: ast.AST, namespace: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return namespace[node.id]
    if isinstance(node, ast.Attribute):
        return getattr(_lookup(node.value, namespace), node.attr)
    assert isinstance(node, ast.Subscript)
    value = _lookup(node.value, namespace)
    index = node.slice
    if isinstance(index, ast.Slice):
        parts = [None if p is None else _int(p) for p in (index.lower, index.upper, index.step)]
        return value[slice(*parts)]
    key = _int(index)
    return value[key if key is not None else index.value]  # type: ignore[attr-defined]


def url_ref(url: str, shown: str) -> Ref:
    from .._contract import check_reference_url

    try:
        return Ref(shown=shown, url=check_reference_url(url))
    except ValidationError as exc:
        raise _refuse(f"--ref {shown}: {exc.message}") from None


def _refs_from_value(value: Any, shown: str) -> list[Ref] | None:
    if isinstance(value, (list, tuple)):
        refs: list[Ref] = []
        for i, item in enumerate(value):
            sub = _refs_from_value(item, f"{shown}[{i}]")
            if sub is None:
                raise _refuse(
                    f"--ref {shown}[{i}] is a {type(item).__name__}, not an image, path or URL"
                )
            refs.extend(sub)
        return refs
    if hasattr(value, "images") and isinstance(getattr(value, "images", None), list):
        return _refs_from_value(value.images, f"{shown}.images")
    if isinstance(value, str):
        if value.lower().startswith(("http://", "https://")):
            return [url_ref(value, shown)]
        return [_path_ref(value, shown)]
    if isinstance(value, os.PathLike):
        return [_path_ref(os.fspath(value), shown)]
    if "PIL" in sys.modules and isinstance(value, sys.modules["PIL"].Image.Image):
        info = getattr(value, "info", None) or {}
        source = str(info.get("source_url") or "")
        if source.lower().startswith(("http://", "https://")):
            # An image this package generated: the API already has it at its source URL (while
            # that URL lives; the image itself is kept as the fallback to upload).
            expires = str(info.get("expires_at") or "")
            return [
                Ref(
                    shown=shown,
                    url=source,
                    local=value,
                    origin=str(info.get("origin") or "") or None,
                    expires_at=float(expires) if expires.isdigit() else None,
                )
            ]
        return [
            local_ref(value, f"{shown} (a {value.size[0]}x{value.size[1]} image)", option="--ref")
        ]
    return None


def _path_ref(path: str, shown: str) -> Ref:
    p = Path(os.path.expanduser(path))
    if not p.exists():
        raise _refuse(
            f"--ref {shown}: no such file (and no variable of that name); nothing was sent"
        )
    if not p.is_file():
        raise _refuse(f"--ref {shown} is a folder, not an image file; nothing was sent")
    return local_ref(p, p.name, option="--ref")


# --- local material --------------------------------------------------------------------------


def local_ref(material: Any, shown: str, *, option: str = "") -> Ref:
    """A path, PIL image or encoded bytes, checked the way the upload will check it, not yet sent."""
    from .._exceptions import QImageError
    from ..journal._uploads import prepare_upload

    try:
        prepared = prepare_upload(material)
    except (QImageError, OSError, ValueError) as exc:
        lead = f"{option} {shown}" if option else shown
        raise _refuse(f"{lead} is not an image the API accepts: {exc}; nothing was sent") from None
    return Ref(shown=shown, local=material, digest=hashlib.sha256(prepared.data).hexdigest())


async def upload(client: AsyncClient, ref: Ref, say: Callable[[str], Any] | None = None) -> str | InlineImage:
    """The URL of a local reference: the client's earlier upload of the same bytes to the same API
    when it is recent enough, else a new upload (the client remembers it for next time). A host
    that takes ``data:`` URIs gets the picture inline instead, checked against its limits."""
    from ..view._words import when

    limits = client.provider.capabilities.inline_refs
    if limits is not None:
        from ..journal._inline import inline_image

        if say is not None:
            say(f"sending {ref.shown} inside the request (no upload)")
        return await asyncio.to_thread(inline_image, ref.local, limits, shown=ref.shown or "the reference")

    earlier = client.find_upload(ref.local) if say is not None else None
    if earlier is not None:
        say(f"reusing the upload of {ref.shown} from {when(earlier.created_at)}")
    url = await client.upload(ref.local, reuse=True)
    if earlier is None and say is not None:
        # Said once it is done: the output shows notes after the uploads, and an "uploading..."
        # left there would say it never finished.
        say(f"uploaded {ref.shown} as a reference")
    return url


async def ref_urls(
    client: AsyncClient, refs: list[Ref], say: Callable[[str], Any] | None = None
) -> list[str | InlineImage]:
    """The URLs to send for ``refs``, in order, uploading local ones first."""
    urls: list[str | InlineImage] = []
    for ref in refs:
        if ref.url_still_good(client.base_url):
            urls.append(ref.url)
            continue
        if ref.url is not None and say is not None:
            say(f"{ref.shown}: its URL is expired or from another API; sending the copy on disk")
        local = ref if ref.digest is not None else local_ref(ref.local, ref.shown, option="--ref")
        urls.append(await upload(client, local, say))
    return urls


async def cancel_on_host(client: AsyncClient, task_id: str | None) -> str | None:
    """Ask the host to cancel a task the user stopped waiting for, where it has a cancel endpoint
    (DashScope's asynchronous models, while the task is still queued). The line to show, or None
    where the host has no cancel (the faces then say the task may still finish)."""
    from .._exceptions import APIError, QImageError

    if not task_id or client.provider.cancel(task_id) is None:
        return None
    try:
        status = await asyncio.wait_for(client.cancel(task_id), timeout=15)
    except APIError as exc:
        if exc.status_code == 400:
            return (
                f"stopped waiting; {client.provider.title} could not cancel task {task_id}: it was already "
                f"running (a task is cancelled only while queued), so it will finish and be billed; "
                f"%qimage resume {task_id} fetches its images"
            )
        return f"stopped waiting; cancelling task {task_id} failed ({exc.message}); %qimage resume {task_id} fetches it"
    except (QImageError, asyncio.TimeoutError) as exc:
        return f"stopped waiting; cancelling task {task_id} got no answer ({exc}); %qimage resume {task_id} fetches it"
    if status.status == "cancelled":
        return f"cancelled: task {task_id} was still queued and the host cancelled it; nothing is billed"
    return (
        f"stopped waiting; task {task_id} is {status.phase} on the host and was not cancelled; "
        f"%qimage resume {task_id} fetches its images"
    )
