"""The journal (SQLite) and the image files, under one per-user data directory.

Users pay per image, so the journal's one job is that no task id and no downloaded image is ever
lost: a submit is written down *before* its POST (``begin``), the task id as soon as it is known,
every status change after that, and every image as soon as it is on disk. A kernel killed at any
moment leaves a journal that opens and says what to resume.

Layout under ``root`` (``$QIMAGE_HOME``, else the platform's user data dir)::

    journal.sqlite3               jobs, events, images (WAL mode)
    images/<sha[:2]>/<sha>.png    content-addressed by the bytes as received (before provenance)
    refs/<sha[:2]>/<sha>          local references sent inline (``data:`` URIs), once per content;
                                  the request in the journal names them by digest only
    tmp/                          downloads in flight; same filesystem, so moves are atomic renames
    timing/<hash>.json            what the poll schedule learned of each provider (``_polling``)

Concurrency: one connection per Store, guarded by a lock (the panel and the magic call from
different threads); every write is one short ``BEGIN IMMEDIATE`` transaction, so two kernels
writing at once queue on SQLite's lock (``busy_timeout``) instead of failing with "database is
locked". The journal never sees the API key: no method takes one.

The parts: ``_records`` (what an entry says), ``_schema`` (the tables, and opening a journal of
any version), ``_files`` (the image files); ``Store`` puts them together.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._contract import InlineImage
from ._files import ImageFiles
from ._records import JOB_STATUSES, OUTCOME_UNKNOWN, JobRecord, records_from_rows, ref_path
from ._schema import ORIGINS_SCHEMA, UPLOADS_SCHEMA, open_journal

if TYPE_CHECKING:
    from .._contract import GenerationRequest

__all__ = ["JOB_STATUSES", "JobRecord", "Store"]

UPLOADS_KEPT_SECONDS = 7 * 24 * 3600  # hosts keep uploads for days at most; older rows are clutter


def _default_root() -> Path:
    home = os.environ.get("QIMAGE_HOME", "").strip()
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("qimage_nb", appauthor=False))


class Store:
    """The journal and image files under ``root``. Construction does no I/O.

    Parameters
    ----------
    root:
        The data directory; ``None`` means ``$QIMAGE_HOME``, else the platform's user data dir.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else _default_root()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._files = ImageFiles(self.root)

    @classmethod
    def default(cls) -> Store:
        """The store under ``$QIMAGE_HOME`` or the platform's user data dir."""
        return cls(None)

    def __repr__(self) -> str:
        return f"Store(root={str(self.root)!r})"

    # -- plumbing --

    @property
    def _db_path(self) -> Path:
        return self.root / "journal.sqlite3"

    def _connection(self) -> sqlite3.Connection:
        """The open connection, created with the directories on first use (caller holds the lock)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # After a fork the parent's connection must not be used (or closed) by the child.
        self._conn = None
        for sub in ("images", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        conn = open_journal(self._db_path)
        self._conn, self._pid = conn, os.getpid()
        self._files.sweep_temp()
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction. IMMEDIATE takes the write lock up front, so SQLite's busy
        handler queues us behind another process instead of failing mid-transaction."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across the few queries that build records."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def _records(self, conn: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[JobRecord]:
        return records_from_rows(conn, rows, self.root)

    def _get(self, conn: sqlite3.Connection, ident: str) -> JobRecord | None:
        row = conn.execute(
            "SELECT * FROM jobs WHERE key = ? OR task_id = ? ORDER BY key = ? DESC LIMIT 1",
            (ident, ident, ident),
        ).fetchone()
        return self._records(conn, [row])[0] if row is not None else None

    # -- the journal --

    def begin(
        self,
        request: GenerationRequest,
        key: str,
        *,
        label: str | None = None,
        origin: str | None = None,
        scope: str | None = None,
    ) -> JobRecord:
        """Journal a submit before its POST. Calling it again with the same key and request returns
        the existing record; the same key with a different request is refused (the server would
        answer it with the first request's task). ``scope`` defaults to ``origin``."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"a journal key must be a non-empty string, got {key!r}")
        fingerprint = request.fingerprint()
        body = json.dumps(request.to_json(), ensure_ascii=False, sort_keys=True)
        for ref in request.image_urls:  # inline references: their bytes once, before the row
            if isinstance(ref, InlineImage) and ref.data is not None:
                self._files.keep_reference(ref_path(self.root, ref.digest), ref.data)
        now = time.time()
        with self._write() as conn:
            existing = conn.execute("SELECT fingerprint FROM jobs WHERE key = ?", (key,)).fetchone()
            if existing is None:
                conn.execute(
                    "INSERT INTO jobs (key, fingerprint, request_json, status, progress, created_at,"
                    " updated_at, label, origin, scope) VALUES (?, ?, ?, 'submitting', 0, ?, ?, ?, ?, ?)",
                    (key, fingerprint, body, now, now, label, origin, scope if scope is not None else origin),
                )
                conn.execute(
                    "INSERT INTO events (key, status, progress, at) VALUES (?, 'submitting', 0, ?)",
                    (key, now),
                )
            elif existing["fingerprint"] != fingerprint:
                raise ValueError(
                    f"journal key {key!r} already belongs to a different request: use a fresh key per submit"
                )
            record = self._get(conn, key)
        assert record is not None
        return record

    def set_task_id(self, key: str, task_id: str) -> None:
        """Record the task id the submit answered with.

        A task id is unique across the journal. If another entry holds it (a task adopted by id in
        another kernel while this submit was in flight), this key wins: its Idempotency-Key is what
        the server tied the task to. The other entry is closed as failed with a note naming this key.
        """
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValueError(f"task_id must be a non-empty string, got {task_id!r}")
        task_id = task_id.strip()
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT status, progress, task_id FROM jobs WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(f"no journal entry for key {key!r}")
            if row["task_id"] == task_id:
                return
            conn.execute(
                "UPDATE jobs SET task_id = NULL, status = 'failed', updated_at = ?,"
                " error = 'superseded: the same task is journaled under key ' || ?"
                " WHERE task_id = ? AND key != ?",
                (now, key, task_id, key),
            )
            conn.execute("UPDATE jobs SET task_id = ?, updated_at = ? WHERE key = ?", (task_id, now, key))
            conn.execute(
                "INSERT INTO events (key, status, progress, task_id, at) VALUES (?, ?, ?, ?, ?)",
                (key, row["status"], row["progress"], task_id, now),
            )

    def record_status(
        self,
        key: str,
        status: str,
        progress: int = 0,
        *,
        urls: Sequence[str] = (),
        error: str | None = None,
        cost: float | None = None,
    ) -> None:
        """Record a status; an event is appended only when status or progress changed.

        Empty ``urls`` keep the URLs already known. ``completed_at`` is set the first time the job
        is recorded as completed.
        """
        if status not in JOB_STATUSES:
            raise ValueError(f"unknown job status {status!r}; expected one of {', '.join(JOB_STATUSES)}")
        progress = max(0, min(100, int(progress)))
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "SELECT status, progress, task_id, urls_json, error, completed_at FROM jobs WHERE key = ?",
                (key,),
            ).fetchone()
            if row is None:
                raise KeyError(f"no journal entry for key {key!r}")
            urls_json = json.dumps(list(urls), ensure_ascii=False) if urls else row["urls_json"]
            if error is None and status == row["status"]:
                error = row["error"]
            completed_at = row["completed_at"]
            if status == "completed" and completed_at is None:
                completed_at = now
            conn.execute(
                "UPDATE jobs SET status = ?, progress = ?, urls_json = ?, error = ?, updated_at = ?,"
                " completed_at = ?, cost = COALESCE(?, cost) WHERE key = ?",
                (status, progress, urls_json, error, now, completed_at, cost, key),
            )
            if (status, progress) != (row["status"], row["progress"]):
                conn.execute(
                    "INSERT INTO events (key, status, progress, task_id, at) VALUES (?, ?, ?, ?, ?)",
                    (key, status, progress, row["task_id"], now),
                )

    # -- files --

    def temp_path(self, suffix: str = ".part") -> Path:
        """A fresh path under ``root/tmp`` (same filesystem as the images, for atomic moves).

        Takes no lock and opens no database: a download asks for one on the event loop, which must
        not wait while another thread commits a journal write."""
        return self._files.temp_path(suffix)

    def save_image(
        self,
        key: str,
        index: int,
        url: str,
        temp: Path,
        provenance: Mapping[str, str],
        *,
        width: int,
        height: int,
    ) -> Path:
        """Move a checked download into the image store, add provenance, journal it; return its path.

        The file is named by the SHA-256 of the bytes as received plus a short digest of the
        provenance (less its timestamp): the same image of the same task is stored once, while two
        tasks that happen to return identical bytes each keep a file whose PNG chunks name *their*
        task and prompt. Idempotent per ``(key, index)``.
        """
        if self.get(key) is None:
            raise KeyError(f"no journal entry for key {key!r}")
        final, digest, size = self._files.keep(Path(temp), provenance)
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO images (key, idx, url, path, sha256, bytes, width, height, saved_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, int(index), url, final.relative_to(self.root).as_posix(), digest, size,
                 int(width), int(height), time.time()),
            )  # fmt: skip
        return final

    # -- queries --

    def get(self, task_id_or_key: str) -> JobRecord | None:
        """The entry with this journal key or task id, or None."""
        with self._read() as conn:
            return self._get(conn, task_id_or_key)

    def pending(self, origin: str | None = None, *, scope: str | None = None) -> list[JobRecord]:
        """Submitted but not downloaded, newest first: running tasks, completed ones whose images are
        not all on disk, and submits whose answer was lost (no task id yet). Failed and cancelled
        entries are left out. With ``origin``, only entries sent to that API base URL (a task id
        means nothing to another server); with ``scope``, only entries of that cache scope."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE status NOT IN ('failed', 'cancelled')"
                " AND (? IS NULL OR origin = ?) AND (? IS NULL OR scope = ?)"
                " ORDER BY created_at DESC, rowid DESC",
                (origin, origin, scope, scope),
            ).fetchall()
            records = self._records(conn, rows)
        return [record for record in records if not record.downloaded]

    def _same_request(
        self, fingerprint: str, origin: str | None, scope: str | None, *, downloaded: bool
    ) -> JobRecord | None:
        """The newest live entry for this request (and origin, and scope) whose images are, or are
        not, all on disk. Failed and cancelled entries never count."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE fingerprint = ? AND status NOT IN ('failed', 'cancelled')"
                " AND (? IS NULL OR origin = ?) AND (? IS NULL OR scope = ?)"
                " ORDER BY created_at DESC, rowid DESC",
                (fingerprint, origin, origin, scope, scope),
            ).fetchall()
            for record in self._records(conn, rows):
                if record.downloaded == downloaded:
                    return record
        return None

    def find_unfinished(self, fingerprint: str, origin: str | None = None) -> JobRecord | None:
        """The newest entry for this request that was submitted (or is being submitted) but whose
        images are not all on disk: re-running the same request should re-attach to it, not pay for
        a second task."""
        return self._same_request(fingerprint, origin, None, downloaded=False)

    def find_cached(
        self, fingerprint: str, origin: str | None = None, *, scope: str | None = None
    ) -> JobRecord | None:
        """The newest completed entry for this request fingerprint whose images are all on disk.
        With ``origin``, only entries from that API base URL; with ``scope``, only entries of that
        cache scope: emulator pictures must never be served as a real API's images."""
        return self._same_request(fingerprint, origin, scope, downloaded=True)

    def history(self, limit: int = 50) -> list[JobRecord]:
        """The newest ``limit`` entries, newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a whole number >= 0, got {limit!r}")
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,)
            ).fetchall()
            return self._records(conn, rows)

    def events(self, key: str) -> list[dict[str, Any]]:
        """The status timeline of one entry, oldest first (status, progress, task_id, at)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT status, progress, task_id, at FROM events WHERE key = ? ORDER BY id", (key,)
            ).fetchall()
        return [dict(row) for row in rows]

    def forget(self, key: str) -> None:
        """Remove an entry that stands for nothing paid: a task adopted by id that its host does
        not know (the journal is as if it had never been asked)."""
        with self._write() as conn:
            for table in ("events", "images", "jobs"):
                conn.execute(f"DELETE FROM {table} WHERE key = ?", (key,))

    def mark_outcome_unknown(self, key: str, reason: str) -> None:
        """The submit under ``key`` got no answer: keep it as 'submitting' (it may exist, it may be
        billed), with the reason, so that nothing resends it behind the user's back."""
        self.record_status(key, "submitting", 0, error=f"{OUTCOME_UNKNOWN}: {reason}")

    # -- origins that honour idempotency keys --

    def confirm_idempotency(self, origin: str) -> None:
        """Remember that ``origin`` answered in the versioned contract (keys are honoured there)."""
        with self._write() as conn:
            conn.execute(ORIGINS_SCHEMA)
            conn.execute(
                "INSERT OR REPLACE INTO idempotent_origins (origin, confirmed_at) VALUES (?, ?)",
                (origin, time.time()),
            )

    def idempotency_confirmed(self, origin: str) -> bool:
        with self._read() as conn:
            try:
                row = conn.execute(
                    "SELECT 1 FROM idempotent_origins WHERE origin = ?", (origin,)
                ).fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return False
                raise
        return row is not None

    # -- uploaded references --

    def remember_upload(self, sha256: str, origin: str, url: str) -> None:
        """Record that the bytes with this hash were uploaded to ``origin`` and live at ``url``.

        One short transaction, so two kernels uploading at once both land (the later URL wins).
        """
        now = time.time()
        with self._write() as conn:
            conn.execute(UPLOADS_SCHEMA)
            conn.execute(
                "INSERT OR REPLACE INTO uploads (sha256, origin, url, uploaded_at) VALUES (?, ?, ?, ?)",
                (sha256, origin, url, now),
            )
            conn.execute("DELETE FROM uploads WHERE uploaded_at < ?", (now - UPLOADS_KEPT_SECONDS,))

    def find_upload(self, sha256: str, origin: str, max_age: float) -> tuple[str, float] | None:
        """``(url, uploaded_at)`` of an upload of these bytes to ``origin`` at most ``max_age``
        seconds old, or None."""
        with self._read() as conn:
            try:
                row = conn.execute(
                    "SELECT url, uploaded_at FROM uploads WHERE sha256 = ? AND origin = ? AND uploaded_at >= ?",
                    (sha256, origin, time.time() - max_age),
                ).fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # nothing was ever uploaded from this journal
                    return None
                raise
        return (str(row["url"]), float(row["uploaded_at"])) if row is not None else None

    def close(self) -> None:
        """Close the database connection; the store reopens it if used again."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()
