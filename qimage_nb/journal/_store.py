"""The journal (SQLite) and the image files, under one per-user data directory.

Users pay per image, so the journal's one job is that no task id and no downloaded image is ever
lost: a submit is written down *before* its POST (``begin``), the task id as soon as it is known,
every status change after that, and every image as soon as it is on disk. A kernel killed at any
moment leaves a journal that opens and says what to resume.

Layout under ``root`` (``$QIMAGE_HOME``, else the platform's user data dir)::

    journal.sqlite3               jobs, events, images (WAL mode)
    images/<sha[:2]>/<sha>.png    content-addressed by the bytes as received (before provenance)
    tmp/                          downloads in flight; same filesystem, so moves are atomic renames
    timing/<hash>.json            what the poll schedule learned of each provider (``_polling``)

Concurrency: one connection per Store, guarded by a lock (the panel and the magic call from
different threads); every write is one short ``BEGIN IMMEDIATE`` transaction, so two kernels
writing at once queue on SQLite's lock (``busy_timeout``) instead of failing with "database is
locked". The journal never sees the API key: no method takes one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._contract import (
    DEFAULT_MODEL,
    DEFAULT_RATIO,
    DEFAULT_RESOLUTION,
    STATUSES,
    TERMINAL_STATUSES,
    GenerationRequest,
)

__all__ = ["JOB_STATUSES", "JobRecord", "Store"]

# "submitting" is ours: the row exists, the POST may or may not have reached the server.
JOB_STATUSES = ("submitting", *STATUSES)
SCHEMA_VERSION = 4  # 2: jobs.origin; 3: jobs.scope; 4: jobs.cost
# The error text of an entry whose submit got no answer: the task may exist (and be billed).
OUTCOME_UNKNOWN = "outcome unknown"
# A submit with neither an answer nor that mark is still in flight (here or in another kernel)
# for at most this long: its attempts and their read timeouts (a synchronous call's 180 s
# included) are over by then, and an entry still unanswered is one whose process died mid-POST.
SUBMIT_IN_FLIGHT_SECONDS = 600
BUSY_TIMEOUT_MS = 15_000
STALE_TEMP_SECONDS = 24 * 3600

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    key          TEXT PRIMARY KEY,          -- the Idempotency-Key of the logical submit
    fingerprint  TEXT NOT NULL,
    request_json TEXT NOT NULL,
    task_id      TEXT UNIQUE,               -- NULL until the submit answers
    status       TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in JOB_STATUSES)})),
    progress     INTEGER NOT NULL DEFAULT 0,
    urls_json    TEXT NOT NULL DEFAULT '[]',
    error        TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    completed_at REAL,
    label        TEXT,
    origin       TEXT,                      -- the API base URL it was sent to: where the task lives
    scope        TEXT,                      -- which requests its images may serve: caches never cross scopes
    cost         REAL                       -- what the host said the task cost, when it said
);
CREATE INDEX IF NOT EXISTS jobs_by_fingerprint ON jobs (fingerprint, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY,
    key      TEXT NOT NULL REFERENCES jobs (key),
    status   TEXT NOT NULL,
    progress INTEGER NOT NULL,
    task_id  TEXT,                          -- every task id a key was ever given stays on record
    at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_key ON events (key, id);
CREATE TABLE IF NOT EXISTS images (
    key      TEXT NOT NULL REFERENCES jobs (key),
    idx      INTEGER NOT NULL,
    url      TEXT NOT NULL,
    path     TEXT NOT NULL,                 -- relative to root, so the directory can move
    sha256   TEXT NOT NULL,
    bytes    INTEGER NOT NULL,
    width    INTEGER,
    height   INTEGER,
    saved_at REAL NOT NULL,
    PRIMARY KEY (key, idx)
);
"""

# Created on first use by remember_upload (not part of _SCHEMA), so journals of any version get it.
_UPLOADS_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    sha256      TEXT NOT NULL,              -- of the bytes uploaded
    origin      TEXT NOT NULL,              -- the API base URL: an upload URL is that provider's
    url         TEXT NOT NULL,
    uploaded_at REAL NOT NULL,
    PRIMARY KEY (sha256, origin)
)
"""
# Origins seen to honour the Idempotency-Key (API.md 7.1): only there is a lost submit resent.
_ORIGINS_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotent_origins (
    origin       TEXT PRIMARY KEY,
    confirmed_at REAL NOT NULL
)
"""
UPLOADS_KEPT_SECONDS = 7 * 24 * 3600  # provider upload URLs live 72 h; older rows are only clutter


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


def _request_from_json(text: str) -> GenerationRequest:
    # Rebuilt field by field, not re-validated: the row holds what was journaled, including the
    # client's placeholder (empty prompt) for a task adopted by id, which validation would refuse.
    body = json.loads(text)
    negative = body.get("negative_prompt")
    seed = body.get("seed")
    return GenerationRequest(
        prompt=str(body.get("prompt", "")),
        model=str(body.get("model", DEFAULT_MODEL)),
        size=str(body.get("size", DEFAULT_RATIO)),
        resolution=str(body.get("resolution", DEFAULT_RESOLUTION)),
        n=int(body.get("n", 1)),
        negative_prompt=str(negative) if negative is not None else None,
        image_urls=tuple(str(u) for u in body.get("image_urls") or ()),
        seed=int(seed) if isinstance(seed, int) else None,
        prompt_extend=body.get("prompt_extend") if isinstance(body.get("prompt_extend"), bool) else None,
        watermark=body.get("watermark") if isinstance(body.get("watermark"), bool) else None,
    )


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
        conn = sqlite3.connect(
            self._db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        self._sweep_temp()
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        # Two kernels may create the journal at the same instant; switching to WAL takes a lock that
        # the busy handler does not always wait for, so retry briefly.
        for attempt in range(50):
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05)
        # FULL: a committed begin() must survive power loss too; it precedes a billed POST.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
                if "origin" not in columns:  # a version-1 journal: keep its rows, add the column
                    conn.execute("ALTER TABLE jobs ADD COLUMN origin TEXT")
                if "scope" not in columns:  # version 1 or 2: an entry's scope was its origin
                    conn.execute("ALTER TABLE jobs ADD COLUMN scope TEXT")
                    conn.execute("UPDATE jobs SET scope = origin")
                if "cost" not in columns:
                    conn.execute("ALTER TABLE jobs ADD COLUMN cost REAL")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _sweep_temp(self) -> None:
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
        if not rows:
            return []
        keys = [row["key"] for row in rows]
        found: dict[str, dict[int, Path | None]] = {key: {} for key in keys}
        for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
            batch = keys[start : start + 500]
            marks = ",".join("?" * len(batch))
            for image in conn.execute(f"SELECT key, idx, path FROM images WHERE key IN ({marks})", batch):
                path = self.root / image["path"]
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
                    request=_request_from_json(row["request_json"]),
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
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{uuid.uuid4().hex}{suffix}"

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
        from ._png_text import add_png_text, sidecar_path

        temp = Path(temp)
        if self.get(key) is None:
            raise KeyError(f"no journal entry for key {key!r}")
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
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO images (key, idx, url, path, sha256, bytes, width, height, saved_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, int(index), url, final.relative_to(self.root).as_posix(), digest, len(data),
                 int(width), int(height), time.time()),
            )  # fmt: skip
        return final

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

    def mark_outcome_unknown(self, key: str, reason: str) -> None:
        """The submit under ``key`` got no answer: keep it as 'submitting' (it may exist, it may be
        billed), with the reason, so that nothing resends it behind the user's back."""
        self.record_status(key, "submitting", 0, error=f"{OUTCOME_UNKNOWN}: {reason}")

    # -- origins that honour idempotency keys --

    def confirm_idempotency(self, origin: str) -> None:
        """Remember that ``origin`` answered in the versioned contract (keys are honoured there)."""
        with self._write() as conn:
            conn.execute(_ORIGINS_SCHEMA)
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
            conn.execute(_UPLOADS_SCHEMA)
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
