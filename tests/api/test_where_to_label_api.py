"""The where_to_label job over real HTTP (a real ``ternaus serve``): ranked cells and the
GeoPackage, and requests refused with what to do."""

from __future__ import annotations

import fiona
import numpy as np

from tests.api.live import wait_for_job
from tests.helpers import rectangles_image, write_raster


def test_where_to_label_job_over_http(start_backend, model_file, tmp_path):
    image = rectangles_image(160, 240, [(10, 10, 40, 40), (90, 130, 140, 200)])
    image[:, 80:160, :80] = np.random.default_rng(0).integers(60, 200, (3, 80, 80))
    raster = write_raster(tmp_path / "scene.tif", image)
    backend = start_backend()
    with backend.client() as http:
        body = {"rgb": str(raster), "model": str(model_file), "cell_m": 20, "top": 2}
        response = http.post("/v1/jobs/where_to_label", json=body)
        assert response.status_code == 202, response.text
        job = wait_for_job(http, response.json()["id"])
        assert job["status"] == "succeeded", job["error"]
        assert job["kind"] == "where_to_label"
        result = job["result"]
        assert result["cells"] == 24 and result["cell_px"] == 40  # 0.5 m pixels, 20 m cells
        assert result["layers"] == ["cells", "buildings"]
        assert [c["rank"] for c in result["top"]] == [1, 2]
        download = tmp_path / "cells.gpkg"
        download.write_bytes(http.get(job["result_url"]).content)
        with fiona.open(download, layer="cells") as layer:
            rows = [dict(f.properties) for f in layer]
        assert [r["rank"] for r in rows] == list(range(1, 25))
        assert [r["top"] for r in rows] == [True, True] + [False] * 22
        assert rows[0]["score"] == result["top"][0]["score"]
        listed = http.get("/v1/jobs", params={"kind": "where_to_label"}).json()
        assert [j["id"] for j in listed] == [job["id"]]
        # refused at once, saying what is wrong
        missing = http.post("/v1/jobs/where_to_label", json={"rgb": str(tmp_path / "no.tif")})
        assert missing.status_code == 400 and "RGB raster" in missing.json()["error"]["message"]
        zero = http.post("/v1/jobs/where_to_label", json={"rgb": str(raster), "cell_m": 0})
        assert zero.status_code == 422
        taken = http.post(
            "/v1/jobs/where_to_label",
            json={"rgb": str(raster), "model": str(model_file), "out": str(download)},
        )
        assert taken.status_code == 400 and "exists" in taken.json()["error"]["message"]
