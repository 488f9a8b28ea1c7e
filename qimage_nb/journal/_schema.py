"""The journal's SQLite schema, and opening a journal of any version (its migrations).

Every version opens: a journal written by an older qimage_nb keeps its rows and gains the new
columns (``SCHEMA_VERSION`` counts them); tables added later are created on first use.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ._records import JOB_STATUSES

__all__ = ["BUSY_TIMEOUT_MS", "ORIGINS_SCHEMA", "SCHEMA_VERSION", "UPLOADS_SCHEMA", "open_journal"]

SCHEMA_VERSION = 4  # 2: jobs.origin; 3: jobs.scope; 4: jobs.cost
BUSY_TIMEOUT_MS = 15_000

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
UPLOADS_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    sha256      TEXT NOT NULL,              -- of the bytes uploaded
    origin      TEXT NOT NULL,              -- the API base URL: an upload URL is that provider's
    url         TEXT NOT NULL,
    uploaded_at REAL NOT NULL,
    PRIMARY KEY (sha256, origin)
)
"""
# Origins seen to honour the Idempotency-Key (API.md 7.1): only there is a lost submit resent.
ORIGINS_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotent_origins (
    origin       TEXT PRIMARY KEY,
    confirmed_at REAL NOT NULL
)
"""


def open_journal(path: Path) -> sqlite3.Connection:
    """A connection to the journal at ``path``, created or brought up to ``SCHEMA_VERSION``."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _setup(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _setup(conn: sqlite3.Connection) -> None:
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
