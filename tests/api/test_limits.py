"""Limits of the HTTP API (issue 7, item 9): request size (413), waiting jobs (429), and the
pre-flight estimate of predict jobs in their JSON, on a real ``ternaus serve``."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from ternaus_backend.api.errors import TooManyJobsError
from ternaus_backend.api.jobs import JobManager, JobOutcome
from tests.api.live import wait_for_job


def test_the_queue_of_waiting_jobs_is_bounded(tmp_path):
    manager = JobManager(tmp_path / "jobs", max_workers=1, max_queued=2)
    release = threading.Event()
    started = threading.Event()

    def blocking(context):
        started.set()
        release.wait(30)
        return JobOutcome({})

    try:
        running = manager.submit("predict", {}, blocking)["id"]
        assert started.wait(10)
        waiting = [manager.submit("predict", {}, lambda c: JobOutcome({}))["id"] for _ in "ab"]
        with pytest.raises(TooManyJobsError, match="2 jobs are already waiting"):
            manager.submit("predict", {}, lambda c: JobOutcome({}))
        folders = [p for p in (tmp_path / "jobs").iterdir() if p.is_dir()]
        assert len(manager.list_jobs()) == 3 and len(folders) == 3
        manager.cancel(waiting[0])  # a cancelled job no longer waits
        manager.submit("evaluate", {}, lambda c: JobOutcome({}))
    finally:
        release.set()
        manager.shutdown()
    assert manager.get(running)["status"] == "succeeded"


def test_real_server_limits_and_estimate(start_backend, model_file, rgb_raster):
    backend = start_backend(TERNAUS_MAX_REQUEST_BYTES="4096", TERNAUS_MAX_QUEUED_JOBS="1")
    with backend.client() as http:
        big = {"rgb": str(rgb_raster), "model": "x" * 5000}
        response = http.post("/v1/jobs/predict", json=big)
        assert response.status_code == 413
        assert "TERNAUS_MAX_REQUEST_BYTES" in response.json()["error"]["message"]

        def chunks():
            yield b'{"rgb": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        chunked = http.post(
            "/v1/jobs/predict", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 413 and chunked.json()["error"]["message"]
        small_chunked = http.post(
            "/v1/models/inspect",
            content=iter([b'{"path": ', f'"{model_file}"'.encode(), b"}"]),
            headers={"Content-Type": "application/json"},
        )
        assert small_chunked.status_code == 200, small_chunked.text

        # The estimate of a predict job: the 96 x 128 px raster at the model's 0.5 m
        response = http.post(
            "/v1/jobs/predict", json={"rgb": str(rgb_raster), "model": str(model_file)}
        )
        assert response.status_code == 202, response.text
        estimate = response.json()["estimate"]
        assert estimate["pixels"] == 96 * 128 and estimate["temp_bytes"] == 96 * 128 * 2
        assert estimate["km2"] == pytest.approx(96 * 128 * 0.25 / 1e6, rel=0.01)
        assert estimate["eta_s"] > 0 and estimate["free_bytes"] > 0
        job = wait_for_job(http, response.json()["id"])
        assert job["status"] == "succeeded" and job["estimate"] == estimate

        # One job may wait: a training run holds the worker, a predict waits, the next is refused
        train = {
            "sources": [{"rgb": str(rgb_raster), "labels": str(labels(rgb_raster))}],
            "epochs": 50,
            "steps_per_epoch": 50,
            "batch_size": 1,
            "crop_px": 64,
            "device": "cpu",
        }
        running = http.post("/v1/jobs/train", json=train).json()["id"]
        deadline = time.monotonic() + 60
        while http.get(f"/v1/jobs/{running}").json()["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = {"rgb": str(rgb_raster), "model": str(model_file)}
        waiting = http.post("/v1/jobs/predict", json=body)
        assert waiting.status_code == 202, waiting.text
        refused = http.post("/v1/jobs/predict", json=body)
        assert refused.status_code == 429
        assert "TERNAUS_MAX_QUEUED_JOBS" in refused.json()["error"]["message"]
        for job_id in (running, waiting.json()["id"]):
            http.post(f"/v1/jobs/{job_id}/cancel")
        assert wait_for_job(http, running)["status"] == "cancelled"


def labels(rgb_raster):
    from shapely.geometry import box

    from ternaus_backend.vector_io import write_polygons

    path = rgb_raster.with_name("labels.geojson")
    write_polygons(path, [box(500005, 7449985, 500015, 7449995)], "EPSG:32723")
    return path


def test_an_unauthenticated_large_body_gets_401_not_413(start_backend):
    """The token is checked first: a stranger cannot probe the limit."""
    backend = start_backend(TERNAUS_MAX_REQUEST_BYTES="4096", TERNAUS_TOKEN="secret")
    response = httpx.post(f"{backend.url}/jobs/predict", content=b"x" * 5000, timeout=30)
    assert response.status_code == 401
