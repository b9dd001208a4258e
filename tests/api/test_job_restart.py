"""Jobs survive the server (issue 7, item 10), over real HTTP: a real ``ternaus serve`` is
stopped and a new one started on the same work folder."""

from __future__ import annotations

import signal
import time

import pytest

from tests.api.live import LiveBackend, wait_for_job
from tests.api.test_limits import labels


def wait_until_training(backend: LiveBackend, job_id: str, timeout_s: float = 120.0) -> dict:
    """Polls until the job runs and has reported progress (its first steps are under way)."""
    deadline = time.monotonic() + timeout_s
    with backend.client() as http:
        while True:
            job = http.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == "running" and job["progress"] is not None:
                return job
            if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
                pytest.fail(f"the training did not get under way: {job}")
            time.sleep(0.1)


def test_finished_jobs_are_listed_and_downloadable_after_a_restart(
    start_backend, rgb_raster, model_file, tmp_path
):
    first = start_backend()
    with first.client() as http:
        response = http.post(
            "/v1/jobs/predict", json={"rgb": str(rgb_raster), "model": str(model_file)}
        )
        assert response.status_code == 202, response.text
        job = wait_for_job(http, response.json()["id"])
        assert job["status"] == "succeeded", job
        download = http.get(job["result_url"])
        assert download.status_code == 200 and download.content
    first.stop()

    second = start_backend()
    with second.client() as http:
        listed = http.get("/v1/jobs").json()
        assert [j["id"] for j in listed] == [job["id"]]
        assert listed[0] == job  # status, result, estimate, timestamps: all as before
        assert http.get(f"/v1/jobs/{job['id']}").json() == job
        again = http.get(f"/v1/jobs/{job['id']}/result")
        assert again.status_code == 200 and again.content == download.content
        assert again.headers["content-type"] == "application/geopackage+sqlite3"
        assert http.get("/v1/jobs", params={"status": "succeeded"}).json() == [job]
        # deleting still works on a job of an earlier run, and lasts
        assert http.delete(f"/v1/jobs/{job['id']}").status_code == 204
    second.stop()
    third = start_backend()
    with third.client() as http:
        assert http.get("/v1/jobs").json() == []
        assert http.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert (tmp_path / "jobs").is_dir() and not (tmp_path / "jobs" / job["id"]).exists()


@pytest.mark.parametrize("stop", ["kill", "terminate"])
def test_jobs_running_or_queued_when_the_server_stops_say_interrupted(
    start_backend, rgb_raster, model_file, stop
):
    """Killed (SIGKILL: no chance to write anything) or stopped (SIGTERM: the server shuts
    down), the new server lists the training that was running and the predict job that waited
    as interrupted; new jobs run as usual."""
    train = {
        "sources": [{"rgb": str(rgb_raster), "labels": str(labels(rgb_raster))}],
        "epochs": 200,
        "steps_per_epoch": 50,
        "batch_size": 1,
        "crop_px": 64,
        "device": "cpu",
    }
    predict = {"rgb": str(rgb_raster), "model": str(model_file)}
    first = start_backend()
    with first.client() as http:
        running = http.post("/v1/jobs/train", json=train)
        assert running.status_code == 202, running.text
        running = running.json()["id"]
        queued = http.post("/v1/jobs/predict", json=predict).json()["id"]
        wait_until_training(first, running)
        assert http.get(f"/v1/jobs/{queued}").json()["status"] == "queued"
    if stop == "kill":
        first.process.kill()
    else:
        first.process.send_signal(signal.SIGTERM)
    first.process.wait(timeout=60)
    first.stop()

    second = start_backend()
    with second.client() as http:
        jobs = {j["id"]: j for j in http.get("/v1/jobs").json()}
        assert set(jobs) == {running, queued}
        for job_id, was in ((running, "running"), (queued, "queued")):
            job = jobs[job_id]
            assert job["status"] == "interrupted", job
            assert job["finished"] is not None
            assert f"while this job was {was}" in job["error"]["message"]
            assert "submit it again" in job["error"]["message"]
        assert jobs[running]["started"] is not None
        filtered = http.get("/v1/jobs", params={"status": "interrupted"}).json()
        assert {j["id"] for j in filtered} == {running, queued}
        refused = http.get(f"/v1/jobs/{queued}/result")
        assert refused.status_code == 409 and "interrupted" in refused.json()["error"]["message"]
        fresh = http.post("/v1/jobs/predict", json=predict).json()["id"]
        assert wait_for_job(http, fresh)["status"] == "succeeded"
