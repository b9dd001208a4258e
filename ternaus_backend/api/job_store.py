"""The job table on disk: one SQLite file in the work folder, so jobs survive the server.

:class:`JobStore` keeps one row per job (kind, status, request, estimate, result, error, the path
of the downloadable file, timestamps); the :class:`~ternaus_backend.api.jobs.JobManager` writes
a row when a job is submitted, when it starts and when it ends (progress stays in memory). The
file is ``<work folder>/jobs.sqlite3`` in WAL mode; one connection serves every thread, behind a
lock. Rows are plain dicts whose keys are the job's fields; JSON columns come back decoded and
timestamps as timezone-aware datetimes.

The table is not the only record: each job folder holds ``job.json``, the job's row as JSON
(:func:`row_to_json`), so a lost table (damaged, unreadable, deleted) can be rebuilt from the
folders. A table deleted or replaced while the server runs is noticed at the next write:
the store opens a new one and re-inserts the rows its ``on_recreated`` callback returns.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ternaus_backend.errors import TernausError

log = logging.getLogger(__name__)

#: The table's file name inside the work folder.
STORE_FILE = "jobs.sqlite3"
SCHEMA_VERSION = 1
#: The per-job record in each job folder (the job's row as JSON), to rebuild a lost table.
JOB_FILE = "job.json"
#: Left in a job folder while it is being deleted: such a folder is garbage, even without a row.
DELETED_MARK = "job.deleted"

JSON_COLUMNS = ("request", "estimate", "progress", "result", "error")
TIME_COLUMNS = ("created", "started", "finished")
COLUMNS = (
    "id",
    "kind",
    "status",
    "request",
    "work_dir",
    "estimate",
    "progress",
    "result",
    "result_file",
    "error",
    "created",
    "started",
    "finished",
    "cancel_requested",
)


class JobTableError(TernausError):
    """The job table cannot be read or written (a full disk, a folder without write access)."""

    http_status = 500


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    work_dir TEXT NOT NULL,
    estimate TEXT,
    progress TEXT,
    result TEXT,
    result_file TEXT,
    error TEXT,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
)
"""


def _encode(column: str, value: Any) -> Any:
    if column == "cancel_requested":
        return int(bool(value))
    if value is None:
        return None
    if column in JSON_COLUMNS:
        return json.dumps(value, allow_nan=False)
    if column in TIME_COLUMNS:
        return value.isoformat()
    if column in ("work_dir", "result_file"):
        return str(value)
    return value


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in COLUMNS:
        value = row[column]
        if value is not None and column in JSON_COLUMNS:
            value = json.loads(value)
        elif value is not None and column in TIME_COLUMNS:
            value = datetime.fromisoformat(value)
        elif column == "cancel_requested":
            value = bool(value)
        out[column] = value
    return out


def row_to_json(row: Mapping[str, Any]) -> str:
    """A job's row as the JSON text of its ``job.json`` (times in ISO 8601, paths as text)."""
    out: dict[str, Any] = {}
    for column in COLUMNS:
        value = row.get(column)
        if value is not None and column in TIME_COLUMNS:
            value = value.isoformat()
        elif value is not None and column in ("work_dir", "result_file"):
            value = str(value)
        elif column == "cancel_requested":
            value = bool(value)
        out[column] = value
    return json.dumps(out, allow_nan=False, indent=1)


def row_from_json(text: str) -> dict[str, Any]:
    """The row a ``job.json`` holds; ValueError (or KeyError, TypeError) when it is not one."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    row: dict[str, Any] = {}
    for column in COLUMNS:
        value = data.get(column)
        if column in ("id", "kind", "status", "work_dir", "created") and not value:
            raise ValueError(f"no {column}")
        if value is not None and column in TIME_COLUMNS:
            value = datetime.fromisoformat(value)
        row[column] = value
    if row["request"] is None:
        row["request"] = {}
    return row


class JobStore:
    """The jobs table in ``path`` (created when missing); thread-safe.

    A file that is not a readable job table (damaged, read-only, or from a newer backend) is
    moved aside to ``<name>.unreadable-<n>`` and a new one started; ``recovered`` then says so
    (the caller rebuilds the rows from the job folders). A table deleted or replaced while the
    store is open is noticed before the next access: a new one is opened and filled with the
    rows ``on_recreated()`` returns (the caller's jobs in memory); it is called with whatever
    lock the caller holds around that access, and must not take it again.
    """

    def __init__(
        self,
        path: Path,
        on_recreated: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.on_recreated = on_recreated
        self._lock = threading.Lock()
        self.recovered = False
        self.recreated = 0  # how many times the table vanished under the store
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        """Opens the table, moving an unreadable one aside; remembers which file it is."""
        try:
            db = self._open()
        except sqlite3.DatabaseError as error:
            if not self.path.exists():
                raise self._error(error) from error
            try:
                aside = self._move_aside()
            except OSError as move_error:
                raise self._error(move_error) from error
            log.warning(
                "the job table %s was unreadable (%s); moved it to %s and started a new one "
                "(its rows are rebuilt from the job folders)",
                self.path,
                error,
                aside,
            )
            self.recovered = True
            try:
                db = self._open()
            except sqlite3.Error as again:
                raise self._error(again) from again
        self._identity = self._file_identity()
        return db

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_dev, info.st_ino)

    def _check_file(self) -> None:
        """Under the lock: a table deleted or replaced since it was opened is opened anew and
        refilled with the rows ``on_recreated`` returns."""
        identity = self._file_identity()
        if identity is not None and identity == self._identity:
            return
        log.warning(
            "the job table %s was %s while the backend ran; starting a new one with the jobs "
            "the backend holds",
            self.path,
            "deleted" if identity is None else "replaced",
        )
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._db = self._connect()
        self.recreated += 1
        rows = list(self.on_recreated()) if self.on_recreated is not None else []
        marks = ", ".join("?" for _ in COLUMNS)
        self._db.executemany(
            f"INSERT OR IGNORE INTO jobs ({', '.join(COLUMNS)}) VALUES ({marks})",
            [[_encode(c, r.get(c)) for c in COLUMNS] for r in rows],
        )

    def _error(self, error: Exception) -> JobTableError:
        return JobTableError(
            f"Cannot open the job table {self.path}; set TERNAUS_WORK_DIR to a writable folder.",
            details=str(error),
        )

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"job table version {version}, this backend reads {SCHEMA_VERSION}"
                )
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM jobs").fetchone()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _move_aside(self) -> Path:
        n = 1
        while (aside := self.path.with_name(f"{self.path.name}.unreadable-{n}")).exists():
            n += 1
        self.path.rename(aside)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.rename(aside.with_name(aside.name + suffix))
        return aside

    # ------------------------------------------------------------------ writing

    def insert(self, row: Mapping[str, Any]) -> None:
        """Adds a job (``row`` has every column; ``id`` must be new)."""
        values = [_encode(c, row.get(c)) for c in COLUMNS]
        marks = ", ".join("?" for _ in COLUMNS)
        with self._lock:
            self._check_file()
            self._db.execute(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({marks})", values)

    def update(self, job_id: str, **fields: Any) -> None:
        """Sets some columns of a job's row (an unknown id changes nothing)."""
        unknown = set(fields) - set(COLUMNS[1:])
        if unknown:
            raise ValueError(f"not columns of the job table: {sorted(unknown)}")
        sets = ", ".join(f"{c} = ?" for c in fields)
        values = [_encode(c, v) for c, v in fields.items()]
        with self._lock:
            self._check_file()
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*values, job_id])

    def delete(self, job_ids: Iterable[str]) -> None:
        """Removes the rows of ``job_ids``."""
        with self._lock:
            self._check_file()
            self._db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in job_ids])

    def interrupt_unfinished(
        self, error_for: Callable[[str], Mapping[str, Any]], when: datetime
    ) -> list[str]:
        """Every queued or running job becomes ``interrupted``, finished at ``when``, with the
        error ``error_for(its old status)``; returns their ids."""
        with self._lock:
            self._check_file()
            rows = self._db.execute(
                "SELECT id, status FROM jobs WHERE status IN ('queued', 'running') ORDER BY seq"
            ).fetchall()
            self._db.executemany(
                "UPDATE jobs SET status = 'interrupted', error = ?, finished = ? WHERE id = ?",
                [
                    (_encode("error", dict(error_for(r["status"]))), when.isoformat(), r["id"])
                    for r in rows
                ],
            )
        return [r["id"] for r in rows]

    # ------------------------------------------------------------------ reading

    def all(self) -> list[dict[str, Any]]:
        """Every job, in submission order."""
        with self._lock:
            self._check_file()
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs ORDER BY seq")
            return [_decode(r) for r in rows.fetchall()]

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One job's row, or None."""
        with self._lock:
            self._check_file()
            row = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return _decode(row) if row is not None else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
