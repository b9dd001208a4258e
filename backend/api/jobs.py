"""Long jobs (predict, train, evaluate) run in a thread pool, one folder per job.

A job function gets a :class:`JobContext` (its folder, a progress callback, a cancel token) and
returns a :class:`JobOutcome`. The manager records status, latest progress, result and error;
nothing a job raises reaches the server: ``TernausError`` -> failed with its message,
``CancelledError`` -> cancelled, anything else -> failed with a generic message and the traceback
as details.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from ternaus_backend.api.errors import ConflictError, NotFoundError, TooManyJobsError
from ternaus_backend.errors import CancelledError, InputError, TernausError
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent

log = logging.getLogger(__name__)

JobKind = Literal["predict", "train", "evaluate"]


class JobStatus(str, Enum):
    """Life cycle: queued -> running -> succeeded | failed | cancelled."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


@dataclass
class JobContext:
    """What a job function gets: its folder, a progress callback and a cancel token."""

    job_id: str
    work_dir: Path
    progress: ProgressCallback
    cancel: CancelToken


@dataclass
class JobOutcome:
    """What a job function returns: a JSON-ready result and optionally a file to download.

    ``cancelled=True`` says the job stopped on request but kept a partial result (training keeps
    the best model so far).
    """

    result: dict[str, Any]
    file: Path | None = None
    cancelled: bool = False


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
    ``max_queued`` of them (None: no limit)."""

    def __init__(self, work_dir: Path, max_workers: int = 1, max_queued: int | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.max_queued = max_queued
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(
                f"Cannot create the job folder {self.work_dir}; set TERNAUS_WORK_DIR to a "
                "writable folder.",
                details=str(error),
            ) from error
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="ternaus-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._closed = False

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
            job_dir.mkdir(parents=True, exist_ok=False)
            job = Job(
                id=job_id,
                kind=kind,
                request=plain(request),
                work_dir=job_dir,
                estimate=plain(estimate) if estimate is not None else None,
            )
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
            if job.status == JobStatus.queued:
                self._finish(job, JobStatus.cancelled)
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
        shutil.rmtree(job.work_dir, ignore_errors=True)

    def shutdown(self, wait: bool = True) -> None:
        """Cancels every unfinished job and stops the pool (waits for running jobs to stop)."""
        with self._lock:
            self._closed = True
            for job in self._jobs.values():
                if not job.status.finished:
                    job.cancel_token.cancel()
                    if job.status == JobStatus.queued:
                        self._finish(job, JobStatus.cancelled)
        self._executor.shutdown(wait=wait, cancel_futures=True)

    # ------------------------------------------------------------------ running

    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(
                f"There is no job {job_id!r}; list the jobs with GET /v1/jobs (jobs are "
                "forgotten when the backend restarts)."
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
        context = JobContext(job.id, job.work_dir, self._progress_callback(job), job.cancel_token)
        try:
            outcome = function(context)
        except CancelledError:
            self._end(job, JobStatus.cancelled)
        except TernausError as exc:
            self._end(job, JobStatus.failed, error={"message": exc.message, "details": exc.details})
        except Exception as exc:  # a bug or an unforeseen input: the server must survive it
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
            job.result, job.error, job.result_file = result, error, file
            self._finish(job, status)
        log.info("job %s (%s) %s", job.id, job.kind, status.value)
