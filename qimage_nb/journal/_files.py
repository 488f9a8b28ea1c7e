"""The journal's image files: content-addressed under ``root/images``, downloads in flight under
``root/tmp`` (the same filesystem, so every move is an atomic rename), each made durable before
the journal points at it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["ImageFiles"]

STALE_TEMP_SECONDS = 24 * 3600


class ImageFiles:
    """The image files under ``root``. Construction does no I/O."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"ImageFiles(root={str(self.root)!r})"

    def temp_path(self, suffix: str = ".part") -> Path:
        """A fresh path under ``root/tmp`` (same filesystem as the images, for atomic moves)."""
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{uuid.uuid4().hex}{suffix}"

    def keep_reference(self, path: Path, data: bytes) -> None:
        """The bytes of an inline reference at ``path`` (``refs/``), written once per content and
        made durable before the journal row that names them by digest."""
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.temp_path(".ref")
        with open(temp, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(temp, path)

    def keep(self, temp: Path, provenance: Mapping[str, str]) -> tuple[Path, str, int]:
        """Move a checked download into the image store with its provenance written into it;
        return its final path, the SHA-256 of the bytes as received, and their length.

        The file is named by that SHA-256 plus a short digest of the provenance (less its
        timestamp): the same image of the same task is stored once, while two tasks that happen to
        return identical bytes each keep a file whose PNG chunks name *their* task and prompt.
        """
        from ._png_text import add_png_text, sidecar_path

        temp = Path(temp)
        data = temp.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        identity = json.dumps(
            {k: v for k, v in sorted(provenance.items()) if k != "created"}, ensure_ascii=False
        )
        tag = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:12]
        final = self.root / "images" / digest[:2] / f"{digest}-{tag}{_suffix(data)}"
        if final.exists():
            temp.unlink(missing_ok=True)
        else:
            staged = self._stage(temp)
            meta = {**provenance}
            meta.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
            add_png_text(staged, meta)  # PNG chunks in place, or a sidecar next to it
            final.parent.mkdir(parents=True, exist_ok=True)
            side = sidecar_path(staged)
            if side.exists():
                os.replace(side, sidecar_path(final))  # before the image, so it is never without one
            with open(staged, "rb") as fp:
                os.fsync(fp.fileno())
            os.replace(staged, final)
            _fsync_dir(final.parent)
        return final, digest, len(data)

    def _stage(self, temp: Path) -> Path:
        """``temp`` if it is already under ``root/tmp``; else a copy there (rename needs one filesystem)."""
        tmp_dir = self.root / "tmp"
        if temp.parent.resolve() == tmp_dir.resolve():
            return temp
        staged = self.temp_path()
        try:
            os.replace(temp, staged)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.copyfile(temp, staged)
            temp.unlink(missing_ok=True)
        return staged

    def sweep_temp(self) -> None:
        """Drop downloads abandoned by killed kernels (a day old: nothing in flight is that old)."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        try:
            for entry in os.scandir(self.root / "tmp"):
                try:
                    if entry.is_file() and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                except OSError:
                    continue
        except OSError:
            pass


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _suffix(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return ".webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return ".gif"
    return ".img"
