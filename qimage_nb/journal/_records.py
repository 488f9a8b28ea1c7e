"""What the journal says of one logical submit (``JobRecord``), the words it uses for it, and how a
record is read back from its rows."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .._contract import (
    DEFAULT_MODEL,
    DEFAULT_RATIO,
    DEFAULT_RESOLUTION,
    STATUSES,
    TERMINAL_STATUSES,
    GenerationRequest,
    InlineImage,
)
from .._exceptions import ValidationError

__all__ = ["JOB_STATUSES", "OUTCOME_UNKNOWN", "JobRecord", "records_from_rows", "request_from_json"]

# "submitting" is ours: the row exists, the POST may or may not have reached the server.
JOB_STATUSES = ("submitting", *STATUSES)
# The error text of an entry whose submit got no answer: the task may exist (and be billed).
OUTCOME_UNKNOWN = "outcome unknown"
# A submit with neither an answer nor that mark is still in flight (here or in another kernel)
# for at most this long: its attempts and their read timeouts (a synchronous call's 180 s
# included) are over by then, and an entry still unanswered is one whose process died mid-POST.
SUBMIT_IN_FLIGHT_SECONDS = 600


@dataclass(frozen=True)
class JobRecord:
    """One logical submit as the journal knows it."""

    key: str
    task_id: str | None
    request: GenerationRequest
    fingerprint: str
    status: str
    progress: int
    urls: tuple[str, ...]
    image_paths: tuple[Path | None, ...]  # by index; None if not (or no longer) on disk
    error: str | None
    created_at: float
    updated_at: float
    completed_at: float | None
    label: str | None
    origin: str | None = None
    # Which requests its images may serve from the cache: its origin, or one name shared by every
    # server that outlives no kernel (the in-kernel emulator, on a new port after each restart).
    scope: str | None = None
    cost: float | None = None

    @property
    def in_flight(self) -> bool:
        """Its submit is still being sent (no answer, no 'outcome unknown' yet, and recent)."""
        return (
            self.task_id is None and self.status == "submitting" and not self.outcome_unknown
            and time.time() - self.updated_at < SUBMIT_IN_FLIGHT_SECONDS
        )

    @property
    def resendable(self) -> bool:
        """No answer will come for its submit: marked 'outcome unknown', or left unanswered by a
        process that died mid-POST. Only the user resends it (``client.resend(key)``)."""
        return self.task_id is None and self.status == "submitting" and not self.in_flight

    @property
    def outcome_unknown(self) -> bool:
        """Its submit got no answer and nothing says whether the task exists: it may be billed.
        Resend it (same key, same body) with ``client.resend(key)`` where you choose to."""
        return self.task_id is None and self.status == "submitting" and bool(
            self.error and self.error.startswith(OUTCOME_UNKNOWN)
        )

    @property
    def downloaded(self) -> bool:
        """Completed, and every URL's image is on disk right now."""
        if self.status != "completed" or not self.urls or len(self.image_paths) < len(self.urls):
            return False
        return all(path is not None and path.exists() for path in self.image_paths[: len(self.urls)])

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def _read_ref(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        raise ValidationError(
            "image_urls", f"the local reference {path.name[:12]} is missing from the journal folder; send the picture again"
        ) from None


def ref_path(root: Path, digest: str) -> Path:
    """Where the bytes of an inline reference (a ``data:`` URI sent to the host) are kept, once."""
    return root / "refs" / digest[:2] / digest


def request_from_json(text: str, root: Path | None = None) -> GenerationRequest:
    # Rebuilt field by field, not re-validated: the row holds what was journaled, including the
    # client's placeholder (empty prompt) for a task adopted by id, which validation would refuse.
    body = json.loads(text)

    def reference(text: str) -> str | InlineImage:
        # An inline reference is journaled by digest; its bytes stay in refs/, read only if sent.
        inline = InlineImage.from_token(text)
        if inline is None:
            return text
        if root is None:
            return inline
        return InlineImage(inline.content_type, inline.digest, load=partial(_read_ref, ref_path(root, inline.digest)))

    negative = body.get("negative_prompt")
    seed = body.get("seed")
    return GenerationRequest(
        prompt=str(body.get("prompt", "")),
        model=str(body.get("model", DEFAULT_MODEL)),
        size=str(body.get("size", DEFAULT_RATIO)),
        resolution=str(body.get("resolution", DEFAULT_RESOLUTION)),
        n=int(body.get("n", 1)),
        negative_prompt=str(negative) if negative is not None else None,
        image_urls=tuple(reference(str(u)) for u in body.get("image_urls") or ()),
        seed=int(seed) if isinstance(seed, int) else None,
        prompt_extend=body.get("prompt_extend") if isinstance(body.get("prompt_extend"), bool) else None,
        watermark=body.get("watermark") if isinstance(body.get("watermark"), bool) else None,
        host_params=body.get("host_params") if isinstance(body.get("host_params"), dict) else {},
    )


def records_from_rows(conn: sqlite3.Connection, rows: Sequence[sqlite3.Row], root: Path) -> list[JobRecord]:
    """The records of ``jobs`` rows, each with its image files under ``root`` (None where a file is
    gone), read in the caller's snapshot."""
    if not rows:
        return []
    keys = [row["key"] for row in rows]
    found: dict[str, dict[int, Path | None]] = {key: {} for key in keys}
    for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
        batch = keys[start : start + 500]
        marks = ",".join("?" * len(batch))
        for image in conn.execute(f"SELECT key, idx, path FROM images WHERE key IN ({marks})", batch):
            path = root / image["path"]
            found[image["key"]][image["idx"]] = path if path.exists() else None
    records = []
    for row in rows:
        urls = tuple(json.loads(row["urls_json"]))
        images = found[row["key"]]
        count = max(len(urls), max(images, default=-1) + 1)
        records.append(
            JobRecord(
                key=row["key"],
                task_id=row["task_id"],
                request=request_from_json(row["request_json"], root),
                fingerprint=row["fingerprint"],
                status=row["status"],
                progress=row["progress"],
                urls=urls,
                image_paths=tuple(images.get(i) for i in range(count)),
                error=row["error"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                completed_at=row["completed_at"],
                label=row["label"],
                origin=row["origin"],
                scope=row["scope"],
                cost=row["cost"],
            )
        )
    return records
