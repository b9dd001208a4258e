"""Long jobs (predict, train, evaluate, compare, changes, where_to_label) run in a thread pool, one
folder per job.

A job function gets a :class:`JobContext` (its folder, a progress callback, a cancel token) and
returns a :class:`JobOutcome`. The manager records status, latest progress, result and error;
nothing a job raises reaches the server: ``TernausError`` -> failed with its message,
``CancelledError`` -> cancelled, anything else -> failed with a generic message and the traceback
as details.

Jobs survive the server: each job's row is written to a :class:`~.job_store.JobStore` in the
work folder when it is submitted, when it starts and when it ends, so after a restart finished
jobs are still listed and their results downloadable. Jobs that were queued or running when the
server stopped are ``interrupted`` (they must be submitted again). Finished jobs older than the
retention are removed with their folders, at startup and at each submission; job folders
without a row (left by a crash) are removed at startup. Other folders of the work folder
(``uploads/``) are left alone.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import sqlite3
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ternaus_backend.api.errors import (
    ConflictError,
    NotFoundError,
    TooManyJobsError,
    disk_full_error,
    is_disk_full,
)
from ternaus_backend.api.job_store import (
    DELETED_MARK,
    JOB_FILE,
    STORE_FILE,
    JobStore,
    JobTableError,
    row_from_json,
    row_to_json,
)
from ternaus_backend.api.work_lock import WorkFolderLock
from ternaus_backend.errors import CancelledError, InputError, TernausError
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent

log = logging.getLogger(__name__)

JobKind = Literal["predict", "train", "evaluate", "compare", "changes", "where_to_label"]

#: A job folder's name (``uuid4().hex[:12]``); only such folders are ever removed as jobs'.
JOB_ID = re.compile(r"^[0-9a-f]{12}$")


class JobStatus(str, Enum):
    """Life cycle: queued -> running -> succeeded | failed | cancelled; a job still queued or
    running when the server stops is ``interrupted``."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.queued, JobStatus.running)


def interrupted_error(was: str, when: datetime, restarted: bool) -> dict[str, str]:
    """The error of a job that was ``was`` (queued, running) when the server stopped."""
    how = "started again" if restarted else "was stopped"
    return {
        "message": f"The backend stopped while this job was {was}, so it did not finish; "
        "submit it again.",
        "details": f"marked interrupted when the backend {how}, {when.isoformat()}",
    }


@dataclass
class JobContext:
    """What a job function gets: its folder, a progress callback and a cancel token."""

    job_id: str
    work_dir: Path
    progress: ProgressCallback
    cancel: CancelToken


@dataclass
class JobOutcome:
    """What a job function returns: its result and optionally a file to download.

    ``result``: the job kind's model (:mod:`.results`), kept JSON-ready as its
    ``model_dump(mode="json")``, or a plain mapping. ``cancelled=True`` says the job stopped on
    request but kept a partial result (training keeps the best model so far).
    """

    result: dict[str, Any] | BaseModel
    file: Path | None = None
    cancelled: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.result, BaseModel):
            self.result = self.result.model_dump(mode="json")


JobFunction = Callable[[JobContext], JobOutcome]


def plain(value: Any) -> Any:
    """``value`` as JSON-safe data: numpy scalars unwrapped, paths as text, NaN/inf as None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return plain(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Job:
    """One job's state; changed only by its :class:`JobManager` under the manager's lock."""

    id: str
    kind: JobKind
    request: dict[str, Any]
    work_dir: Path
    status: JobStatus = JobStatus.queued
    progress: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    result_file: Path | None = None
    error: dict[str, Any] | None = None
    created: datetime = field(default_factory=_now)
    started: datetime | None = None
    finished: datetime | None = None
    cancel_token: CancelToken = field(default_factory=CancelToken)
    future: Future | None = None
    interrupted: bool = False  # the server is stopping: the job ends interrupted, not cancelled
    cancelled_by_user: bool = False

    def row(self) -> dict[str, Any]:
        """The job's row for the :class:`JobStore`."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status.value,
            "request": self.request,
            "work_dir": self.work_dir,
            "estimate": self.estimate,
            "progress": self.progress,
            "result": self.result,
            "result_file": self.result_file,
            "error": self.error,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "cancel_requested": self.cancel_requested,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any], root: Path) -> Job:
        """A finished job read back from the :class:`JobStore`; its folder is ``root/<id>``
        (the work folder may have moved since), and so is a result file that was in it."""
        folder = root / row["id"]
        file = Path(row["result_file"]) if row["result_file"] else None
        if file is not None and file.is_relative_to(row["work_dir"]):
            file = folder / file.relative_to(row["work_dir"])
        job = cls(
            id=row["id"],
            kind=row["kind"],
            request=row["request"] or {},
            work_dir=folder,
            status=JobStatus(row["status"]),
            progress=row["progress"],
            estimate=row["estimate"],
            result=row["result"],
            result_file=file,
            error=row["error"],
            created=row["created"],
            started=row["started"],
            finished=row["finished"],
        )
        if row["cancel_requested"]:
            job.cancel_token.cancel()
        return job

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_token.cancelled

    def snapshot(self) -> dict[str, Any]:
        """The public fields, copied (safe to use outside the lock)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status.value,
            "cancel_requested": self.cancel_requested,
            "progress": dict(self.progress) if self.progress else None,
            "estimate": dict(self.estimate) if self.estimate else None,
            "result": dict(self.result) if self.result is not None else None,
            "has_file": self.result_file is not None
            and Path(self.result_file).is_relative_to(self.work_dir),  # downloads: job folder only
            "error": dict(self.error) if self.error else None,
            "request": dict(self.request),
            "work_dir": str(self.work_dir),
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


class JobManager:
    """Runs jobs ``max_workers`` at a time; the rest wait queued in submission order, at most
    ``max_queued`` of them (None: no limit).

    The jobs of earlier runs on the same ``work_dir`` are read back from its job table; finished
    jobs are kept ``retention_days`` after they finished (0: for ever). The manager holds the
    work folder's lock until ``shutdown``: a second manager (another backend) on the same folder
    gets :class:`~.work_lock.WorkFolderBusyError`.
    """

    def __init__(
        self,
        work_dir: Path,
        max_workers: int = 1,
        max_queued: int | None = None,
        retention_days: float = 14.0,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.max_queued = max_queued
        self.retention = timedelta(days=retention_days) if retention_days > 0 else None
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(
                f"Cannot create the job folder {self.work_dir}; set TERNAUS_WORK_DIR to a "
                "writable folder.",
                details=str(error),
            ) from error
        self._folder_lock = WorkFolderLock(self.work_dir)
        self._folder_lock.acquire()  # one backend per work folder, for the manager's life
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._store = JobStore(self.work_dir / STORE_FILE, on_recreated=self._rows_in_memory)
            self._recover()
        except BaseException:
            self._folder_lock.release()
            raise
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="ternaus-job")

    # ------------------------------------------------------------------ submitting and reading

    def submit(
        self,
        kind: JobKind,
        request: Mapping[str, Any],
        function: JobFunction,
        estimate: Mapping[str, Any] | None = None,
    ) -> dict:
        """Queues ``function`` as a new job (``estimate``: what it will take, shown with it);
        returns the job's snapshot. TooManyJobsError when ``max_queued`` jobs already wait."""
        job_id = uuid.uuid4().hex[:12]
        job_dir = self.work_dir / job_id
        self.clean()
        with self._lock:
            if self._closed:
                raise ConflictError("The backend is shutting down; start it again and resubmit.")
            waiting = sum(job.status == JobStatus.queued for job in self._jobs.values())
            if self.max_queued is not None and waiting >= self.max_queued:
                raise TooManyJobsError(
                    f"{waiting} jobs are already waiting to run; wait until some have started "
                    "(GET /v1/jobs?status=queued), cancel some (POST /v1/jobs/{id}/cancel), or "
                    "start the backend with a larger TERNAUS_MAX_QUEUED_JOBS."
                )
            job = Job(
                id=job_id,
                kind=kind,
                request=plain(request),
                work_dir=job_dir,
                estimate=plain(estimate) if estimate is not None else None,
            )
            try:  # the row first, then the folder with its job.json
                self._store.insert(job.row())
            except sqlite3.Error as error:
                if is_disk_full(error):
                    raise disk_full_error(error, str(self._store.path)) from error
                raise JobTableError(
                    f"Cannot record the job in {self._store.path}: free space in the work folder "
                    "or set TERNAUS_WORK_DIR to a writable folder, then submit again.",
                    details=str(error),
                ) from error
            try:
                job_dir.mkdir(parents=True, exist_ok=False)
                self._write_record(job, job.row(), strict=True)
            except OSError:
                self._store.delete([job_id])
                shutil.rmtree(job_dir, ignore_errors=True)
                raise
            self._jobs[job_id] = job
            job.future = self._executor.submit(self._run, job, function)
            return job.snapshot()

    def get(self, job_id: str) -> dict:
        """The snapshot of one job (NotFoundError for an unknown id)."""
        with self._lock:
            return self._job(job_id).snapshot()

    def list_jobs(self, kind: str | None = None, status: str | None = None) -> list[dict]:
        """Snapshots of all jobs, oldest first, optionally of one kind and/or status."""
        with self._lock:
            return [
                job.snapshot()
                for job in self._jobs.values()
                if (kind is None or job.kind == kind) and (status is None or job.status == status)
            ]

    def unfinished_requests(self) -> str:
        """The requests of the queued and running jobs, as JSON text (to keep their inputs)."""
        with self._lock:
            return json.dumps([j.request for j in self._jobs.values() if not j.status.finished])

    def unfinished_jobs_naming(self, text: str) -> list[str]:
        """The queued and running jobs whose request mentions ``text`` (an upload's id), as
        ``job <id> (<status>)``."""
        with self._lock:
            return [
                f"job {job.id} ({job.status.value})"
                for job in self._jobs.values()
                if not job.status.finished and text in json.dumps(job.request)
            ]

    def result_file(self, job_id: str) -> tuple[dict, Path | None]:
        """The job's snapshot and its downloadable file (None when it has none)."""
        with self._lock:
            job = self._job(job_id)
            return job.snapshot(), job.result_file

    # ------------------------------------------------------------------ cancelling and deleting

    def cancel(self, job_id: str) -> dict:
        """Asks a job to stop: a queued job is cancelled at once, a running one at its next
        check; a finished job is left as it is. Returns the snapshot."""
        with self._lock:
            job = self._job(job_id)
            if job.status.finished:
                return job.snapshot()
            job.cancel_token.cancel()
            job.cancelled_by_user = True
            if job.status == JobStatus.queued:
                self._finish(job, JobStatus.cancelled)
                self._save(job)
                if job.future is not None:
                    job.future.cancel()
            return job.snapshot()

    def delete(self, job_id: str) -> None:
        """Forgets a finished job and removes its folder (with outputs written there)."""
        with self._lock:
            job = self._job(job_id)
            if not job.status.finished:
                raise ConflictError(
                    f"Job {job_id} is {job.status.value}; cancel it first "
                    f"(POST /v1/jobs/{job_id}/cancel) and delete it once it has stopped."
                )
            del self._jobs[job_id]
            self._mark_deleted(job.work_dir)
            self._forget([job_id])
        self._remove_folder(job.work_dir)

    def shutdown(self, wait: bool = True) -> None:
        """Stops every unfinished job and the pool (waits for running jobs to stop): they end
        ``interrupted`` (a job whose cancelling was asked for before ends ``cancelled``)."""
        with self._lock:
            self._closed = True
            now = _now()
            for job in self._jobs.values():
                if job.status.finished:
                    continue
                job.cancel_token.cancel()
                if job.cancelled_by_user:
                    continue
                job.interrupted = True
                error = interrupted_error(job.status.value, now, restarted=False)
                if job.status == JobStatus.queued:
                    job.error = error
                    self._finish(job, JobStatus.interrupted)
                    self._save(job)
                else:  # on disk at once, in case the process dies before the job stops
                    self._save(job, status=JobStatus.interrupted.value, error=error, finished=now)
        self._executor.shutdown(wait=wait, cancel_futures=True)
        if wait:
            self._store.close()
            self._release_work_folder()

    def _release_work_folder(self) -> None:
        """Lets another backend use the work folder (at the end of ``shutdown``)."""
        self._folder_lock.release()

    # ------------------------------------------------------------------ keeping the work folder

    def clean(self, now: datetime | None = None) -> list[str]:
        """Removes the jobs that finished more than the retention ago, rows and folders;
        returns their ids (none when the retention is 0, i.e. for ever)."""
        if self.retention is None:
            return []
        cutoff = (now or _now()) - self.retention
        with self._lock:
            old = [
                job
                for job in self._jobs.values()
                if job.status.finished and (job.finished or job.created) < cutoff
            ]
            for job in old:
                del self._jobs[job.id]
                self._mark_deleted(job.work_dir)
            self._forget([job.id for job in old])
        for job in old:
            self._remove_folder(job.work_dir)
        if old:
            log.info("removed %d job(s) older than %s", len(old), self.retention)
        return [job.id for job in old]

    def _recover(self) -> None:
        """At startup: the jobs of earlier runs read back (unfinished ones interrupted), rows
        missing from the table rebuilt from the folders' ``job.json``, old jobs removed, folders
        of deleted jobs removed, other job-named folders kept."""
        now = _now()
        self._rebuild_rows()
        interrupted = self._store.interrupt_unfinished(
            lambda was: interrupted_error(was, now, restarted=True), now
        )
        if interrupted:
            log.warning("jobs interrupted by the last stop: %s", ", ".join(interrupted))
        for row in self._store.all():
            try:
                job = Job.from_row(row, self.work_dir)
            except (KeyError, ValueError, TypeError) as error:
                log.warning("skipping the unreadable job row %s: %s", row.get("id"), error)
                continue
            self._jobs[job.id] = job
            if job.work_dir.is_dir() and not (job.work_dir / JOB_FILE).is_file():
                self._write_record(job, job.row())  # folders of older backends get one too
        self.clean(now)

    def _job_folders(self) -> list[Path]:
        try:
            entries = sorted(self.work_dir.iterdir())
        except OSError:
            return []
        return [
            folder
            for folder in entries
            if JOB_ID.match(folder.name) and folder.is_dir() and not folder.is_symlink()
        ]

    def _rebuild_rows(self) -> None:
        """Every job folder without a row: a deleted job's folder is removed, one with a
        readable ``job.json`` gets its row back, any other is kept (and logged)."""
        known = {row["id"] for row in self._store.all()}
        rebuilt: list[dict[str, Any]] = []
        for folder in self._job_folders():
            if folder.name in known:
                continue
            if (folder / DELETED_MARK).exists():
                log.info("removing the folder %s of a deleted job", folder)
                self._remove_folder(folder)
                continue
            try:
                row = row_from_json((folder / JOB_FILE).read_text(encoding="utf-8"))
                if row["id"] != folder.name:
                    raise ValueError(f"job.json names job {row['id']}")
                JobStatus(row["status"])
            except FileNotFoundError:
                log.warning(
                    "keeping the folder %s: no job of the table owns it and it has no %s; "
                    "remove it by hand if nothing in it is needed",
                    folder,
                    JOB_FILE,
                )
                continue
            except (OSError, KeyError, ValueError, TypeError) as error:
                log.warning(
                    "keeping the folder %s: its %s cannot be read (%s); remove it by hand if "
                    "nothing in it is needed",
                    folder,
                    JOB_FILE,
                    error,
                )
                continue
            rebuilt.append(row)
        rebuilt.sort(key=lambda r: r["created"])
        for row in rebuilt:
            try:
                self._store.insert(row)
            except sqlite3.Error as error:
                log.warning("cannot restore job %s to the job table: %s", row["id"], error)
        if rebuilt:
            log.warning(
                "restored %d job(s) from their folders' %s: %s",
                len(rebuilt),
                JOB_FILE,
                ", ".join(r["id"] for r in rebuilt),
            )

    def _rows_in_memory(self) -> list[dict[str, Any]]:
        """The rows of the jobs held in memory (to refill a table deleted under the server);
        called by the store with the manager's lock held, or during startup."""
        return [job.row() for job in list(self._jobs.values())]

    def _write_record(self, job: Job, row: Mapping[str, Any], strict: bool = False) -> None:
        """Writes the job's ``job.json`` (its row); a failure is logged (raised when
        ``strict``)."""
        record = job.work_dir / JOB_FILE
        temporary = record.with_name(JOB_FILE + ".tmp")
        try:
            temporary.write_text(row_to_json(row), encoding="utf-8")
            temporary.replace(record)
        except OSError:
            try:
                temporary.unlink(missing_ok=True)
            except OSError:
                pass
            if strict:
                raise
            log.exception("cannot write %s of job %s", record, job.id)

    def _mark_deleted(self, folder: Path) -> None:
        """Marks a job folder as garbage before its row goes (a crash in between must not
        bring the job back from its ``job.json``)."""
        try:
            (folder / DELETED_MARK).touch()
        except OSError:
            pass

    def _remove_folder(self, folder: Path) -> None:
        """Removes a job's folder; only ever a job-id-named folder right in the work folder."""
        if folder.parent != self.work_dir or not JOB_ID.match(folder.name) or folder.is_symlink():
            log.warning("not removing %s: not a job folder of %s", folder, self.work_dir)
            return
        shutil.rmtree(folder, ignore_errors=True)

    def _save(self, job: Job, **fields: Any) -> None:
        """Writes the job's row (``fields`` override its values); a failure is logged, the job
        goes on in memory."""
        row = {**job.row(), **fields}
        self._write_record(job, row)
        del row["id"]
        try:
            self._store.update(job.id, **row)
        except (sqlite3.Error, JobTableError):
            log.exception("cannot write job %s to the job table %s", job.id, self._store.path)

    def _forget(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        try:
            self._store.delete(job_ids)
        except (sqlite3.Error, JobTableError):
            log.exception("cannot remove jobs %s from the job table", job_ids)

    # ------------------------------------------------------------------ running

    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(
                f"There is no job {job_id!r}; list the jobs with GET /v1/jobs (finished jobs "
                "are removed after TERNAUS_JOB_RETENTION_DAYS days, or when deleted)."
            )
        return job

    def _finish(self, job: Job, status: JobStatus) -> None:
        job.status = status
        job.finished = _now()

    def _progress_callback(self, job: Job) -> ProgressCallback:
        def report(event: ProgressEvent) -> None:
            snapshot = {
                "stage": event.stage,
                "done": int(event.done),
                "total": int(event.total),
                "fraction": float(event.fraction),
                "info": plain(event.info or {}),
            }
            with self._lock:
                job.progress = snapshot

        return report

    def _run(self, job: Job, function: JobFunction) -> None:
        with self._lock:
            if job.status != JobStatus.queued:  # cancelled while queued
                return
            job.status = JobStatus.running
            job.started = _now()
            self._save(job)
        context = JobContext(job.id, job.work_dir, self._progress_callback(job), job.cancel_token)
        try:
            outcome = function(context)
        except CancelledError:
            self._end(job, JobStatus.cancelled)
        except TernausError as exc:
            self._end(job, JobStatus.failed, error={"message": exc.message, "details": exc.details})
        except Exception as exc:  # a bug or an unforeseen input: the server must survive it
            if is_disk_full(exc):
                full = disk_full_error(exc)
                log.warning("job %s (%s): %s", job.id, job.kind, full.details)
                self._end(
                    job,
                    JobStatus.failed,
                    error={"message": full.message, "details": traceback.format_exc()},
                )
                return
            log.exception("job %s (%s) failed unexpectedly", job.id, job.kind)
            self._end(
                job,
                JobStatus.failed,
                error={
                    "message": f"The {job.kind} job failed unexpectedly "
                    f"({type(exc).__name__}: {exc}). Check the inputs; if they are fine, report "
                    "this with the details.",
                    "details": traceback.format_exc(),
                },
            )
        else:
            status = JobStatus.cancelled if outcome.cancelled else JobStatus.succeeded
            self._end(job, status, result=plain(outcome.result), file=outcome.file)

    def _end(
        self,
        job: Job,
        status: JobStatus,
        result: dict | None = None,
        error: dict | None = None,
        file: Path | None = None,
    ) -> None:
        with self._lock:
            if status == JobStatus.cancelled and job.interrupted:  # stopped by the shutdown
                status = JobStatus.interrupted
                error = interrupted_error("running", _now(), restarted=False)
                if result is not None:
                    error["message"] += " What it had done is kept in its result."
            job.result, job.error, job.result_file = result, error, file
            self._finish(job, status)
            self._save(job)
        log.info("job %s (%s) %s", job.id, job.kind, status.value)
