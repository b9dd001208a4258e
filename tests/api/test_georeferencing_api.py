"""Georeferencing and bounding boxes over a real ``ternaus serve`` (issue 7, item 6)."""

from __future__ import annotations

import json

import rasterio

from tests.api.live import wait_for_job
from tests.helpers import rectangles_image
from tests.pipeline.test_georeferencing import write_plain


def test_server_refuses_rasters_without_crs_unless_assumed(start_backend, model_file, tmp_path):
    image = rectangles_image(64, 64, [(10, 10, 30, 30)])
    transform = rasterio.transform.from_origin(500000.0, 7450000.0, 0.5, 0.5)
    no_crs = write_plain(tmp_path / "nocrs.tif", image, transform)
    chip = write_plain(tmp_path / "chip.tif", image)
    backend = start_backend()
    with backend.client() as http:
        body = {"rgb": str(no_crs), "model": str(model_file)}
        refused = http.post("/v1/jobs/predict", json=body)
        assert refused.status_code == 400
        assert '"assume_crs"' in refused.json()["error"]["message"]
        unplaced = http.post("/v1/jobs/predict", json={**body, "rgb": str(chip)})
        assert unplaced.status_code == 400
        assert "no georeferencing" in unplaced.json()["error"]["message"]
        accepted = http.post("/v1/jobs/predict", json={**body, "assume_crs": "EPSG:32723"})
        assert accepted.status_code == 202, accepted.text
        job = wait_for_job(http, accepted.json()["id"])
        assert job["status"] == "succeeded", job["error"]

        world = {**body, "assume_crs": "EPSG:32723", "bbox": [-180, -90, 180, 90]}
        world["bbox_crs"] = "EPSG:4326"
        response = http.post("/v1/jobs/predict", json=world)
        assert response.status_code == 202, response.text
        assert response.json()["estimate"]["pixels"] == 64 * 64  # clipped to the raster
        job = wait_for_job(http, response.json()["id"])
        assert job["status"] == "succeeded" and job["result"]["width_px"] == 64, job["error"]

        for bbox in (
            "[NaN, 0, 1, 1]",
            "[-Infinity, -Infinity, Infinity, Infinity]",
            "[1, 1, 0, 0]",
        ):
            raw = json.dumps(body)[:-1] + f', "bbox": {bbox}}}'
            response = http.post(
                "/v1/jobs/predict", content=raw, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 422, (bbox, response.text)
            assert "XMIN,YMIN,XMAX,YMAX" in response.json()["error"]["message"]
