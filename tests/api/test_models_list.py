"""GET /v1/models (what the plugin offers), threshold overrides, and serve's --parent-pid."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from ternaus_backend.api.main import create_app
from ternaus_backend.models.metadata import Thresholds
from ternaus_backend.pipeline.extract import ExtractOptions
from ternaus_backend.settings import Settings
from tests.api.conftest import BASE_URL


def test_models_lists_the_default_then_the_models_folder(tmp_path: Path, model_file: Path):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(model_file, folder / "b_mine.safetensors")
    (folder / "a_broken.safetensors").write_bytes(b"not a model")
    (folder / "notes.txt").write_text("not a model either")
    settings = Settings(work_dir=tmp_path / "jobs", models_dir=folder)
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        response = client.get("/v1/models")
    assert response.status_code == 200, response.text
    models = response.json()
    assert [m["is_default"] for m in models] == [True, False]
    assert models[0]["path"].endswith("default.safetensors")
    assert models[1]["path"] == str((folder / "b_mine.safetensors").resolve())
    assert models[1]["metadata"]["tile_size_px"] == 64
    assert models[1]["uses_multispectral"] is False


def test_models_without_a_folder_lists_the_default(tmp_path: Path):
    settings = Settings(work_dir=tmp_path / "jobs", models_dir=tmp_path / "absent")
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        models = client.get("/v1/models").json()
    assert len(models) == 1 and models[0]["is_default"]


def test_threshold_options_override_the_models():
    model = Thresholds(body=0.4, border=0.3, min_area_px=120)
    assert ExtractOptions().thresholds(model) == model
    mine = ExtractOptions(body_threshold=0.7, min_area_px=10).thresholds(model)
    assert (mine.body, mine.border, mine.min_area_px) == (0.7, 0.3, 10)


def test_predict_options_reject_a_bad_threshold(client, rgb_raster):
    response = client.post(
        "/v1/jobs/predict", json={"rgb": str(rgb_raster), "options": {"body_threshold": 1.5}}
    )
    assert response.status_code == 422


def test_serve_stops_when_its_parent_ends(tmp_path: Path):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ternaus_backend.cli",
            "serve",
            "--port",
            "0",
            "--parent-pid",
            str(parent.pid),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={"TERNAUS_WORK_DIR": str(tmp_path / "jobs"), "PATH": "/usr/bin:/bin"},
    )
    try:
        line = server.stdout.readline()
        assert re.match(r"TERNAUS_BACKEND_READY http://127\.0\.0\.1:\d+/v1", line), line
        assert server.poll() is None
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 30
        while server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.poll() is not None, "the backend outlived its parent"
    finally:
        parent.kill()
        server.kill()
        server.wait(10)
