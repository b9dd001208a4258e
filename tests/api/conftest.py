"""Fixtures of the HTTP API tests: settings in tmp_path, a TestClient, tiny model files, rasters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from ternaus_backend.api.main import create_app
from ternaus_backend.models.model_file import save_model
from ternaus_backend.models.registry import create_model, metadata_for
from ternaus_backend.settings import Settings
from tests.api.live import start_backend  # noqa: F401  (a real `ternaus serve`)
from tests.helpers import rectangles_image, write_raster

BASE_URL = "http://127.0.0.1:8765"
FINISHED = {"succeeded", "failed", "cancelled", "interrupted"}


def make_model_file(path: Path, in_channels: int = 3) -> Path:
    """A small untrained resnet_light model file with 64 px tiles."""
    torch.manual_seed(0)
    model = create_model("resnet_light", in_channels=in_channels, num_filters=8)
    meta = metadata_for(
        model, tile_size_px=64, overlap_px=16, resolution_m=0.5, name=f"api-test-{in_channels}"
    )
    return save_model(model, meta, path)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_file(tmp_path_factory.mktemp("models") / "rgb.safetensors")


@pytest.fixture(scope="session")
def ms_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_file(tmp_path_factory.mktemp("models") / "ms.safetensors", in_channels=11)


@pytest.fixture
def rgb_raster(tmp_path: Path) -> Path:
    """A 96 x 128 px RGB scene with three bright roofs."""
    img = rectangles_image(96, 128, [(10, 10, 40, 40), (50, 60, 80, 100), (20, 90, 35, 120)])
    return write_raster(tmp_path / "rgb.tif", img)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(work_dir=tmp_path / "jobs", token=None, default_model=None, max_workers=1)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=BASE_URL) as test_client:
        yield test_client


def wait_for(client, job_id: str, timeout_s: float = 60.0, until=None) -> dict:
    """Polls a job until ``until(job)`` (default: finished); fails the test on timeout."""
    until = until or (lambda job: job["status"] in FINISHED)
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if until(job):
            return job
        if job["status"] in FINISHED or time.monotonic() > deadline:
            pytest.fail(f"job did not reach the expected state: {job}")
        time.sleep(0.02)
