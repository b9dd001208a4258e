"""Evaluate and train jobs."""

from __future__ import annotations

import json
from pathlib import Path

import fiona
import pytest
from shapely.geometry import shape

from ternaus_backend.synthetic import make_scene
from tests.api.conftest import wait_for


def square(x: float, y: float, side: float) -> dict:
    ring = [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]
    return {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def geojson(path: Path, features: list[dict]) -> Path:
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32723"}}
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}))
    return path


def test_evaluate_job_counts_tp_fp_fn(client, tmp_path):
    x0, y0 = 500000.0, 7450000.0
    truth = geojson(
        tmp_path / "truth.geojson",
        [square(x0, y0, 10), square(x0 + 50, y0, 10), square(x0 + 100, y0, 10)],
    )
    pred = geojson(
        tmp_path / "pred.geojson",  # exact, shifted by 1 m (IoU 0.82), far off (IoU 0)
        [square(x0, y0, 10), square(x0 + 51, y0, 10), square(x0 + 300, y0, 10)],
    )
    response = client.post("/v1/jobs/evaluate", json={"pred": str(pred), "truth": str(truth)})
    assert response.status_code == 202
    job = wait_for(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    assert (result["tp"], result["fp"], result["fn"]) == (2, 1, 1)
    assert result["precision"] == pytest.approx(2 / 3) and result["f1"] == pytest.approx(2 / 3)
    # The error layers: each result with its match and IoU, and the missed reference building.
    assert job["result_url"] == f"/v1/jobs/{job['id']}/result"
    download = tmp_path / "errors.gpkg"
    download.write_bytes(client.get(job["result_url"]).content)
    assert sorted(fiona.listlayers(download)) == ["missed", "result"]
    with fiona.open(download, layer="result") as layer:
        rows = [dict(f.properties) for f in layer]
        assert layer.crs.to_epsg() == 32723
    assert [r["match"] for r in rows] == ["true positive", "true positive", "false positive"]
    assert rows[1]["iou"] == pytest.approx(90 / 110, abs=1e-3) and rows[2]["iou"] == 0
    with fiona.open(download, layer="missed") as layer:
        (missed,) = list(layer)
    assert shape(missed.geometry).centroid.x == pytest.approx(x0 + 105)


def test_evaluate_inside_an_area(client, tmp_path):
    x0, y0 = 500000.0, 7450000.0
    truth = geojson(tmp_path / "t.geojson", [square(x0, y0, 10), square(x0 + 500, y0, 10)])
    pred = geojson(tmp_path / "p.geojson", [square(x0, y0, 10), square(x0 + 800, y0, 10)])
    area = geojson(tmp_path / "a.geojson", [square(x0 - 20, y0 - 20, 60)])
    body = {"pred": str(pred), "truth": str(truth), "area": str(area)}
    job = wait_for(client, client.post("/v1/jobs/evaluate", json=body).json()["id"])
    result = job["result"]
    assert (result["tp"], result["fp"], result["fn"]) == (1, 0, 0)
    assert result["results_scored"] == 1 and result["references_scored"] == 1


def test_evaluate_refuses_missing_files_and_fails_on_unreadable_ones(client, tmp_path):
    truth = geojson(tmp_path / "truth.geojson", [square(0, 0, 1)])
    response = client.post(
        "/v1/jobs/evaluate", json={"pred": str(tmp_path / "nope.gpkg"), "truth": str(truth)}
    )
    assert response.status_code == 400 and "prediction file" in response.json()["error"]["message"]
    broken = tmp_path / "broken.geojson"
    broken.write_text("{ not geojson")
    job_id = client.post(
        "/v1/jobs/evaluate", json={"pred": str(broken), "truth": str(truth)}
    ).json()["id"]
    job = wait_for(client, job_id)
    assert job["status"] == "failed" and job["error"]["message"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("scene"), seed=3, size_px=96, with_ms=False)


def test_train_job_saves_a_model_to_download(client, scene, tmp_path):
    response = client.post(
        "/v1/jobs/train",
        json={
            "sources": [{"rgb": str(scene.rgb), "labels": str(scene.labels)}],
            "epochs": 1,
            "steps_per_epoch": 2,
            "batch_size": 2,
            "crop_px": 64,
            "device": "cpu",
            "name": "api-trained",
        },
    )
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["id"], timeout_s=180)
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    assert result["status"] == "completed" and result["epochs_completed"] == 1
    assert Path(result["model_path"]).parent == Path(job["work_dir"])
    model = client.get(job["result_url"])
    assert model.status_code == 200 and len(model.content) > 1000
    saved = tmp_path / "downloaded.safetensors"
    saved.write_bytes(model.content)
    info = client.post("/v1/models/inspect", json={"path": str(saved)}).json()
    assert info["metadata"]["name"] == "api-trained"


def test_train_request_errors(client, scene, tmp_path):
    source = {"rgb": str(scene.rgb), "labels": str(tmp_path / "labels.geojson")}
    response = client.post("/v1/jobs/train", json={"sources": [source]})
    assert response.status_code == 400 and "labels file" in response.json()["error"]["message"]
    source = {"rgb": str(scene.rgb), "labels": str(scene.labels)}
    response = client.post("/v1/jobs/train", json={"sources": [source], "crop_px": 100})
    assert response.status_code == 422 and "multiple of 32" in response.json()["error"]["message"]
    response = client.post("/v1/jobs/train", json={"sources": [source], "resume": True})
    assert response.status_code == 400 and "'resume'" in response.json()["error"]["message"]
    response = client.post("/v1/jobs/train", json={"sources": []})
    assert response.status_code == 422 and "sources" in response.json()["error"]["message"]


def test_cancelling_training_keeps_the_model_so_far(client, scene, tmp_path):
    out = tmp_path / "partial.safetensors"
    job_id = client.post(
        "/v1/jobs/train",
        json={
            "sources": [{"rgb": str(scene.rgb), "labels": str(scene.labels)}],
            "out": str(out),
            "epochs": 50,
            "steps_per_epoch": 50,
            "batch_size": 2,
            "crop_px": 64,
            "device": "cpu",
        },
    ).json()["id"]
    wait_for(
        client, job_id, timeout_s=120, until=lambda j: (j["progress"] or {}).get("stage") == "train"
    )
    client.post(f"/v1/jobs/{job_id}/cancel")
    job = wait_for(client, job_id, timeout_s=120)
    assert job["status"] == "cancelled" and job["error"] is None
    assert job["result"]["status"] == "cancelled" and job["result"]["model_path"] == str(out)
    assert out.exists() and job["result_url"] is None  # downloads: the job's folder only
    refused = client.get(f"/v1/jobs/{job_id}/result")
    assert refused.status_code == 403 and str(out) in refused.json()["error"]["message"]


def test_train_refuses_an_existing_model_unless_overwrite(client, scene, tmp_path):
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"my model")
    request = {
        "sources": [{"rgb": str(scene.rgb), "labels": str(scene.labels)}],
        "out": str(out),
    }
    response = client.post("/v1/jobs/train", json=request)
    assert response.status_code == 400
    assert "already exists" in response.json()["error"]["message"]
    assert out.read_bytes() == b"my model"
    wrong = {**request, "out": str(tmp_path / "x.gpkg"), "overwrite": True}
    response = client.post("/v1/jobs/train", json=wrong)
    assert response.status_code == 400 and ".safetensors" in response.json()["error"]["message"]
    schema = client.get("/v1/openapi.json").json()["components"]["schemas"]
    assert "overwrite" in schema["TrainRequest"]["properties"]
    assert "overwrite" in schema["PredictRequest"]["properties"]


def test_self_intersecting_polygons_are_repaired_and_counted(client, tmp_path):
    """A bow-tie on both sides used to score as nothing (tp = fp = fn = 0): issue 7, item 5."""
    x0, y0 = 500000.0, 7450000.0
    bow = [[x0, y0], [x0 + 10, y0 + 10], [x0 + 10, y0], [x0, y0 + 10], [x0, y0]]
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [bow]},
    }
    truth = geojson(tmp_path / "t.geojson", [feature, square(x0 + 50, y0, 10)])
    pred = geojson(tmp_path / "p.geojson", [feature, square(x0 + 50, y0, 10)])
    job = wait_for(
        client,
        client.post("/v1/jobs/evaluate", json={"pred": str(pred), "truth": str(truth)}).json()[
            "id"
        ],
    )
    result = job["result"]
    assert (result["tp"], result["fp"], result["fn"]) == (2, 0, 0)
    assert result["repaired_pred"] == 1 and result["repaired_truth"] == 1
