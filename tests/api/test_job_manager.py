"""The job manager on its own: errors inside jobs never escape, queueing, cancelling."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ternaus_backend.api.errors import ConflictError, NotFoundError
from ternaus_backend.api.jobs import JobManager, JobOutcome, plain
from ternaus_backend.errors import InputError
from ternaus_backend.progress import ProgressEvent


def wait(manager: JobManager, job_id: str, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = manager.get(job_id)
        if job["status"] in ("succeeded", "failed", "cancelled", "interrupted"):
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture
def manager(tmp_path):
    jobs = JobManager(tmp_path / "jobs", max_workers=1)
    yield jobs
    jobs.shutdown()


def test_errors_in_jobs_become_failed_jobs(manager):
    def bad_input(ctx):
        raise InputError("The raster is empty; choose another extent.", details="0 x 0 px")

    def bug(ctx):
        return {}["missing"]

    failed = wait(manager, manager.submit("predict", {}, bad_input)["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "message": "The raster is empty; choose another extent.",
        "details": "0 x 0 px",
    }
    crashed = wait(manager, manager.submit("train", {}, bug)["id"])
    assert crashed["status"] == "failed" and "unexpectedly" in crashed["error"]["message"]
    assert "KeyError" in crashed["error"]["details"] and "Traceback" in crashed["error"]["details"]
    ok = wait(manager, manager.submit("evaluate", {}, lambda ctx: JobOutcome({"x": 1}))["id"])
    assert ok["status"] == "succeeded" and ok["result"] == {"x": 1}


def test_progress_is_json_safe_and_jobs_run_one_at_a_time(manager):
    gate = threading.Event()

    def slow(ctx):
        ctx.progress(
            ProgressEvent(
                "train", 1, 4, {"loss": np.float32(0.5), "nan": float("nan"), "path": ctx.work_dir}
            )
        )
        gate.wait(5)
        return JobOutcome({"value": np.int64(3)})

    first = manager.submit("train", {"a": 1}, slow)["id"]
    second = manager.submit("train", {}, lambda ctx: JobOutcome({}))["id"]
    deadline = time.monotonic() + 5
    while manager.get(first)["progress"] is None and time.monotonic() < deadline:
        time.sleep(0.01)
    job = manager.get(first)
    assert job["status"] == "running" and job["request"] == {"a": 1}
    assert job["progress"] == {
        "stage": "train",
        "done": 1,
        "total": 4,
        "fraction": 0.25,
        "info": {"loss": 0.5, "nan": None, "path": job["work_dir"]},
    }
    assert manager.get(second)["status"] == "queued"
    with pytest.raises(ConflictError):
        manager.delete(first)
    gate.set()
    assert wait(manager, first)["result"] == {"value": 3}
    assert wait(manager, second)["status"] == "succeeded"


def test_cancelled_job_with_partial_result_and_unknown_ids(manager):
    def stops(ctx):
        while not ctx.cancel.cancelled:
            time.sleep(0.01)
        return JobOutcome({"best": "kept"}, cancelled=True)

    job_id = manager.submit("train", {}, stops)["id"]
    while manager.get(job_id)["status"] == "queued":
        time.sleep(0.01)
    manager.cancel(job_id)
    job = wait(manager, job_id)
    assert job["status"] == "cancelled" and job["result"] == {"best": "kept"}
    with pytest.raises(NotFoundError):
        manager.get("nope")
    manager.delete(job_id)
    with pytest.raises(NotFoundError):
        manager.cancel(job_id)


def test_shutdown_interrupts_unfinished_jobs(tmp_path):
    manager = JobManager(tmp_path, max_workers=1)

    def until_cancelled(ctx):
        while True:
            ctx.cancel.raise_if_cancelled()
            time.sleep(0.01)

    running = manager.submit("predict", {}, until_cancelled)["id"]
    queued = manager.submit("predict", {}, until_cancelled)["id"]
    deadline = time.monotonic() + 10
    while manager.get(running)["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    manager.shutdown(wait=True)
    for job_id, was in ((running, "running"), (queued, "queued")):
        job = manager.get(job_id)
        assert job["status"] == "interrupted" and job["finished"] is not None
        assert f"stopped while this job was {was}" in job["error"]["message"]
        assert "submit it again" in job["error"]["message"]
    with pytest.raises(ConflictError):
        manager.submit("predict", {}, until_cancelled)


def test_plain_makes_json_safe_values(tmp_path):
    assert plain({"a": (1, np.float64(2.5)), "b": float("inf"), 3: tmp_path}) == {
        "a": [1, 2.5],
        "b": None,
        "3": str(tmp_path),
    }
