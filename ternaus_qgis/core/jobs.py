"""Following a backend job from a worker thread: progress with stage and time left, cancel, and
the errors a user can act on (job failed, backend died mid-job)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..backend_process import BackendConnection
from ..client import BackendClient
from ..exceptions import BackendUnreachableError, CancelledByUser, JobFailedError

#: Seconds between two polls of a running job.
POLL_INTERVAL_S = 0.4
#: Seconds to wait, when the local backend stops answering, for its process to be seen ending
#: (its connections drop a moment before it is reaped; without the wait its death can be missed).
DEATH_WAIT_S = 3.0


@dataclass
class Progress:
    """Progress callbacks of the caller (a task or Processing feedback)."""

    report: Callable[[float, str], None]  # percent 0-100, stage text
    cancelled: Callable[[], bool]
    log: Callable[[str], None] = lambda _text: None


def follow_job(
    client: BackendClient,
    backend: BackendConnection,
    job: dict,
    progress: Progress,
    stage_text: dict[str, str],
    stage_span: dict[str, tuple[float, float]],
    on_update: Callable[[dict], None] | None = None,
) -> dict:
    """Poll a job until it ends and return it; cancel it when the user cancels.

    ``stage_span`` places each backend stage on the progress bar (percent from, to);
    ``on_update`` sees every polled job (e.g. training curves).
    """
    job_id = job["id"]
    stage_started: dict[str, float] = {}  # when each backend stage was first seen
    while True:
        if progress.cancelled():
            cancel_job(client, job_id)
            raise CancelledByUser("Cancelled; the backend stopped the job.")
        try:
            job = client.job(job_id)
        except BackendUnreachableError as error:
            death = backend.describe_death(wait_s=DEATH_WAIT_S)
            if death:
                raise BackendUnreachableError(
                    f"{death} The job was lost: start it again.",
                    details=backend.local.log_tail(),
                ) from None
            raise error
        if on_update is not None:
            on_update(job)
        status = job["status"]
        if status == "succeeded":
            progress.report(100.0, "Done")
            return job
        if status in ("failed", "interrupted"):  # interrupted: the backend stopped meanwhile
            error = job.get("error") or {}
            raise JobFailedError(
                error.get("message") or "The job failed in the backend.",
                details=error.get("details"),
            )
        if status == "cancelled":
            raise CancelledByUser("The job was cancelled in the backend.")
        stage = (job.get("progress") or {}).get("stage") or status
        stage_started.setdefault(stage, time.monotonic())
        report_job(job, stage_started[stage], progress, stage_text, stage_span)
        time.sleep(POLL_INTERVAL_S)


def report_job(
    job: dict,
    stage_started: float,
    progress: Progress,
    stage_text: dict[str, str],
    stage_span: dict[str, tuple[float, float]],
) -> None:
    """One progress report: the bar from the stage's span, the stage's words, the time left.

    The time left comes from the pace of the current stage (``stage_started``: when it was
    first seen), so a slow start (reading training data, loading the model) does not skew it.
    """
    state = job.get("progress") or {}
    stage = state.get("stage") or job["status"]
    fraction = float(state.get("fraction") or 0.0)
    low, high = stage_span.get(stage, (5.0, 5.0))
    percent = low + (high - low) * fraction
    text = stage_text.get(stage, stage.capitalize())
    done = (high - low) * fraction  # percent of the bar covered in this stage
    in_stage = time.monotonic() - stage_started
    info = state.get("info") or {}
    if info.get("phase") == "plan":  # the backend's plan, before the first step
        text = f"{info.get('plan', 'Planned')}: about {format_seconds(info['eta_s'])}"
    elif done > 2.0 and in_stage > 2.0:
        remaining = in_stage / done * (100.0 - percent)
        text += f" (about {format_seconds(remaining)} left)"
    elif info.get("eta_s") is not None:  # the backend's estimate until the pace is known
        text += f" (about {format_seconds(float(info['eta_s']))} left)"
    if info.get("plan") and info.get("phase") != "plan":
        text += f": {info['plan']}"
    progress.report(percent, text)


def format_seconds(seconds: float) -> str:
    """``"45 s"``, ``"3 min"``, ``"1 h 05 min"``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def cancel_job(client: BackendClient, job_id: str, wait_s: float = 15.0) -> None:
    """Ask the backend to cancel, and wait (briefly) until it has stopped."""
    try:
        client.cancel(job_id)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if client.job(job_id)["status"] not in ("queued", "running"):
                return
            time.sleep(0.2)
    except Exception:  # noqa: BLE001 - a cancel that cannot reach the backend is still a cancel
        return
