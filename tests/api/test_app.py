"""Health, OpenAPI, model inspection and the JSON error bodies."""

from __future__ import annotations

import torch

from ternaus_backend.api.main import create_app
from ternaus_backend.settings import Settings


def test_health_reports_version_device_and_torch(client) -> None:
    response = client.get("/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["api_version"] == "v1"
    assert body["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert body["torch_version"] == torch.__version__
    assert isinstance(body["inplace_abn"], bool)
    assert body["auth_required"] is False and body["max_workers"] == 1


def test_openapi_and_docs_are_served(client) -> None:
    spec = client.get("/v1/openapi.json").json()
    assert spec["info"]["title"] == "Ternaus backend"
    for path in (
        "/v1/health",
        "/v1/jobs/predict",
        "/v1/jobs/evaluate",
        "/v1/jobs/compare",
        "/v1/jobs/changes",
        "/v1/jobs/train",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/result",
        "/v1/models/inspect",
        "/v1/models/default",
    ):
        assert path in spec["paths"], path
    assert "PredictRequest" in spec["components"]["schemas"]
    assert client.get("/v1/docs").status_code == 200


def test_inspect_model_gives_its_metadata(client, model_file, ms_model_file) -> None:
    body = client.post("/v1/models/inspect", json={"path": str(model_file)}).json()
    assert body["metadata"]["encoder"] == "resnet_light"
    assert body["metadata"]["tile_size_px"] == 64
    assert body["metadata"]["band_names"] == ["red", "green", "blue"]
    assert body["uses_multispectral"] is False and body["num_parameters"] > 0
    ms = client.post("/v1/models/inspect", json={"path": str(ms_model_file)}).json()
    assert ms["uses_multispectral"] is True and ms["metadata"]["in_channels"] == 11


def test_inspect_missing_or_broken_model_is_a_clear_error(client, tmp_path) -> None:
    response = client.post("/v1/models/inspect", json={"path": str(tmp_path / "nope.pt")})
    assert response.status_code == 400
    assert "does not exist" in response.json()["error"]["message"]
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a model at all")
    response = client.post("/v1/models/inspect", json={"path": str(junk)})
    assert response.status_code == 422
    assert "not a model file" in response.json()["error"]["message"]


def test_default_model_from_settings_or_a_clear_error(tmp_path, model_file) -> None:
    from fastapi.testclient import TestClient

    from ternaus_backend.pipeline.extract import DEFAULT_MODEL

    with TestClient(
        create_app(Settings(work_dir=tmp_path, default_model=model_file)),
        base_url="http://127.0.0.1",
    ) as client:
        body = client.get("/v1/models/default").json()
        assert body["path"] == str(model_file) and body["metadata"]["tile_size_px"] == 64
        assert client.get("/v1/health").json()["default_model"] == str(model_file)
    missing = tmp_path / "gone.safetensors"
    with TestClient(
        create_app(Settings(work_dir=tmp_path, default_model=missing)), base_url="http://127.0.0.1"
    ) as client:
        response = client.get("/v1/models/default")
        assert response.status_code == 422
        assert "TERNAUS_DEFAULT_MODEL" in response.json()["error"]["message"]
    if not DEFAULT_MODEL.exists():
        with TestClient(
            create_app(Settings(work_dir=tmp_path)), base_url="http://127.0.0.1"
        ) as client:
            message = client.get("/v1/models/default").json()["error"]["message"]
            assert "no default model is installed" in message


def test_unknown_job_and_endpoint_are_json_404(client) -> None:
    for path in ("/v1/jobs/doesnotexist", "/v1/jobs/doesnotexist/result", "/v2/anything"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["message"]
    assert "no job" in client.get("/v1/jobs/x").json()["error"]["message"]
    response = client.post("/v1/jobs/x/cancel")
    assert response.status_code == 404


def test_invalid_bodies_are_422_naming_the_field(client, rgb_raster) -> None:
    response = client.post("/v1/jobs/predict", json={"ms": "x.tif"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert "rgb" in error["message"] and "Field required" in error["message"]
    response = client.post(
        "/v1/jobs/predict", json={"rgb": str(rgb_raster), "options": {"tile": 50}}
    )
    assert response.status_code == 422
    assert "multiple of 32" in response.json()["error"]["message"]
    response = client.post("/v1/jobs/predict", json={"rgb": str(rgb_raster), "bbx": [0, 0, 1, 1]})
    assert response.status_code == 422 and "bbx" in response.json()["error"]["message"]
    response = client.post(
        "/v1/jobs/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert client.get("/v1/jobs").json() == []  # nothing was queued
