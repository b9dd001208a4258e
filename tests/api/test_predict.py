"""Predict jobs end to end through the TestClient: submit, poll, download, cancel, delete."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import fiona

from tests.api.conftest import wait_for
from tests.helpers import rectangles_image, write_raster


def download(client, job: dict, path: Path) -> Path:
    response = client.get(job["result_url"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/geopackage+sqlite3"
    path.write_bytes(response.content)
    return path


def assert_geopackage(path: Path) -> int:
    """A valid GeoPackage with the ``buildings`` layer; returns its feature count."""
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # "GPKG"
        assert ("buildings",) in db.execute("SELECT table_name FROM gpkg_contents").fetchall()
    assert fiona.listlayers(path) == ["buildings"]
    with fiona.open(path, layer="buildings") as layer:
        assert {"confidence", "area_m2"} <= set(layer.schema["properties"])
        return len(layer)


def test_predict_job_writes_a_geopackage_to_download(client, model_file, rgb_raster, tmp_path):
    response = client.post(
        "/v1/jobs/predict",
        json={
            "rgb": str(rgb_raster),
            "model": str(model_file),
            "options": {"tile_size_px": 64, "overlap_px": 16, "batch_size": 2},
        },
    )
    assert response.status_code == 202, response.text
    submitted = response.json()
    assert submitted["kind"] == "predict" and submitted["status"] in ("queued", "running")
    assert response.headers["location"] == f"/v1/jobs/{submitted['id']}"

    job = wait_for(client, submitted["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["stage"] == "done" and job["started"] and job["finished"]
    result = job["result"]
    assert result["width_px"] == 128 and result["height_px"] == 96
    assert Path(result["out"]).parent == Path(job["work_dir"])
    count = assert_geopackage(download(client, job, tmp_path / "downloaded.gpkg"))
    assert count == result["buildings"]
    listed = client.get("/v1/jobs", params={"kind": "predict"}).json()
    assert [j["id"] for j in listed] == [job["id"]]
    assert client.get("/v1/jobs", params={"kind": "train"}).json() == []


def test_predict_to_a_chosen_file_then_delete_the_job(client, model_file, rgb_raster, tmp_path):
    out = tmp_path / "mine.gpkg"
    job_id = client.post(
        "/v1/jobs/predict",
        json={
            "rgb": str(rgb_raster),
            "model": str(model_file),
            "out": str(out),
            "bbox": [500005.0, 7449960.0, 500050.0, 7449995.0],
        },
    ).json()["id"]
    job = wait_for(client, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["out"] == str(out) and job["result"]["width_px"] == 90
    assert_geopackage(out)
    work_dir = Path(job["work_dir"])
    assert work_dir.exists()
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert not work_dir.exists() and out.exists()  # the user's own file stays
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404


def test_missing_paths_are_refused_at_submission(client, model_file, rgb_raster, tmp_path):
    cases = [
        ({"rgb": str(tmp_path / "missing.tif"), "model": str(model_file)}, "missing.tif"),
        (
            {"rgb": str(rgb_raster), "ms": str(tmp_path / "ms.tif"), "model": str(model_file)},
            "multispectral raster",
        ),
        ({"rgb": str(rgb_raster), "model": str(tmp_path / "m.safetensors")}, "model file"),
        (
            {
                "rgb": str(rgb_raster),
                "model": str(model_file),
                "out": str(tmp_path / "x" / "o.gpkg"),
            },
            "does not exist; create it first",
        ),
        (
            {"rgb": str(rgb_raster), "model": str(model_file), "out": str(tmp_path / "o.shp")},
            "must end in .gpkg",
        ),
    ]
    for body, expected in cases:
        response = client.post("/v1/jobs/predict", json=body)
        assert response.status_code == 400, body
        assert expected in response.json()["error"]["message"], response.json()
    assert client.get("/v1/jobs").json() == []


def test_an_11_band_model_without_ms_fails_the_job_with_a_clear_message(
    client, ms_model_file, rgb_raster
):
    job_id = client.post(
        "/v1/jobs/predict", json={"rgb": str(rgb_raster), "model": str(ms_model_file)}
    ).json()["id"]
    job = wait_for(client, job_id)
    assert job["status"] == "failed" and job["result"] is None
    assert "11 bands" in job["error"]["message"] and "multispectral" in job["error"]["message"]
    response = client.get(f"/v1/jobs/{job_id}/result")
    assert response.status_code == 409 and "failed" in response.json()["error"]["message"]
    assert client.get("/v1/health").status_code == 200  # the server lives on


def test_cancel_a_queued_and_a_running_job(client, model_file, tmp_path):
    big = write_raster(tmp_path / "big.tif", rectangles_image(960, 960, [(100, 100, 200, 220)]))
    body = {
        "rgb": str(big),
        "model": str(model_file),
        "out": str(tmp_path / "big.gpkg"),
        "options": {"tile_size_px": 64, "overlap_px": 16, "batch_size": 1},
    }
    running = client.post("/v1/jobs/predict", json=body).json()["id"]
    queued = client.post("/v1/jobs/predict", json=body).json()["id"]  # one worker: it waits

    cancelled = client.post(f"/v1/jobs/{queued}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished"]

    job = wait_for(
        client,
        running,
        until=lambda j: (
            j["progress"] is not None
            and j["progress"]["stage"] == "infer"
            and j["progress"]["done"] >= 1
        ),
    )
    assert job["status"] == "running" and 0 < job["progress"]["fraction"] < 1
    assert client.get(f"/v1/jobs/{running}/result").status_code == 409
    assert client.delete(f"/v1/jobs/{running}").status_code == 409
    started = time.monotonic()
    assert client.delete(f"/v1/jobs/{running}/cancel").status_code == 405
    response = client.post(f"/v1/jobs/{running}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    job = wait_for(client, running)
    assert job["status"] == "cancelled" and job["error"] is None
    assert time.monotonic() - started < 10
    assert not (tmp_path / "big.gpkg").exists()  # nothing half-written
    # cancelling a finished job changes nothing
    assert client.post(f"/v1/jobs/{running}/cancel").json()["status"] == "cancelled"
    statuses = {j["id"]: j["status"] for j in client.get("/v1/jobs").json()}
    assert statuses == {running: "cancelled", queued: "cancelled"}


def test_predict_options_resolution_and_tta(client, model_file, tmp_path):
    img = rectangles_image(96, 128, [(10, 10, 40, 40)]).repeat(2, axis=1).repeat(2, axis=2)
    rgb = write_raster(tmp_path / "fine.tif", img, origin=(683000.0, 7450000.0), pixel=0.25)
    results = {}
    for name, extra in {"default": {}, "native": {"native_resolution": True, "tta": True}}.items():
        options = {"tile_size_px": 64, "overlap_px": 16, **extra}
        response = client.post(
            "/v1/jobs/predict", json={"rgb": str(rgb), "model": str(model_file), "options": options}
        )
        assert response.status_code == 202, response.text
        job = wait_for(client, response.json()["id"])
        assert job["status"] == "succeeded", job["error"]
        results[name] = job["result"]
    assert results["default"]["resampled"] and results["default"]["width_px"] == 128
    assert not results["native"]["resampled"] and results["native"]["width_px"] == 256
    bad = client.post("/v1/jobs/predict", json={"rgb": str(rgb), "options": {"tta": "sometimes"}})
    assert bad.status_code == 422


def test_an_existing_output_is_refused_unless_overwrite(client, model_file, rgb_raster, tmp_path):
    out = tmp_path / "mine.gpkg"
    out.write_bytes(b"precious")
    request = {"rgb": str(rgb_raster), "model": str(model_file), "out": str(out)}
    response = client.post("/v1/jobs/predict", json=request)
    assert response.status_code == 400
    assert "already exists" in response.json()["error"]["message"]
    assert out.read_bytes() == b"precious"
    response = client.post("/v1/jobs/predict", json={**request, "overwrite": True})
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert_geopackage(out)


def test_a_predict_job_warns_of_a_raster_upsampled_more_than_4x(client, model_file, tmp_path):
    """Issue 18, item 13: the job's estimate (at submission) and its result carry the warning."""
    from tests.api.conftest import wait_for
    from tests.helpers import rectangles_image, write_raster

    coarse = write_raster(
        tmp_path / "coarse.tif", rectangles_image(40, 40, [(10, 10, 20, 20)]), pixel=2.5
    )
    response = client.post("/v1/jobs/predict", json={"rgb": str(coarse), "model": str(model_file)})
    assert response.status_code == 202, response.text
    warnings = response.json()["estimate"]["warnings"]
    assert len(warnings) == 1 and "upsampled 5.0x per side (25x the pixels)" in warnings[0]
    job = wait_for(client, response.json()["id"])
    assert job["status"] == "succeeded" and job["result"]["warnings"] == warnings
