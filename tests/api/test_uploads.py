"""``/v1/uploads`` on a real ``ternaus serve``: a file sent in chunks (in any order, a chunk sent
twice) arrives whole and checked, and its path feeds a job like any path on the backend."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.api.live import wait_for_job


def _create(http, data: bytes, name: str = "scene.tif", sha: str | None = None) -> dict:
    sha = sha or hashlib.sha256(data).hexdigest()
    response = http.post("/v1/uploads", json={"name": name, "size": len(data), "sha256": sha})
    assert response.status_code == 201, response.text
    return response.json()


def _put(http, upload_id: str, offset: int, chunk: bytes):
    return http.put(
        f"/v1/uploads/{upload_id}",
        params={"offset": offset},
        content=chunk,
        headers={"Content-Type": "application/octet-stream"},
    )


def test_chunks_in_any_order_arrive_whole_and_feed_a_job(start_backend, rgb_raster, tmp_path):
    backend = start_backend()
    data = rgb_raster.read_bytes()
    step = max(1, len(data) // 5)
    with backend.client() as http:
        upload = _create(http, data, "../../etc/my scene.tif")
        assert upload["name"] == "my_scene.tif" and upload["received"] == 0
        offsets = list(range(0, len(data), step))
        for offset in reversed(offsets):  # out of order
            assert _put(http, upload["id"], offset, data[offset : offset + step]).status_code == 200
        again = _put(http, upload["id"], offsets[1], data[offsets[1] : offsets[1] + step])
        assert again.json()["received"] == len(data)  # a chunk sent twice is counted once
        done = http.post(f"/v1/uploads/{upload['id']}/complete").json()
        assert done["complete"]
        path = Path(done["path"])
        assert path.read_bytes() == data
        assert path.is_relative_to(tmp_path / "jobs" / "uploads")

        job = http.post("/v1/jobs/predict", json={"rgb": str(path)}).json()
        job = wait_for_job(http, job["id"])
        assert job["status"] == "succeeded", job
        assert http.get(f"/v1/jobs/{job['id']}/result").status_code == 200


def test_incomplete_corrupt_and_oversized_uploads_are_refused(start_backend):
    backend = start_backend()
    data = bytes(range(256)) * 40
    with backend.client() as http:
        upload = _create(http, data)
        assert _put(http, upload["id"], 0, data[:1000]).status_code == 200
        missing = http.post(f"/v1/uploads/{upload['id']}/complete")
        assert missing.status_code == 409 and "misses" in missing.json()["error"]["message"]
        too_long = _put(http, upload["id"], len(data) - 10, data[:100])
        assert too_long.status_code == 400
        assert "past" in too_long.json()["error"]["message"]

        corrupt = _create(http, data, sha="0" * 64)
        assert _put(http, corrupt["id"], 0, data).status_code == 200
        refused = http.post(f"/v1/uploads/{corrupt['id']}/complete")
        assert refused.status_code == 400 and "send it again" in refused.json()["error"]["message"]
        assert http.get(f"/v1/uploads/{corrupt['id']}").json()["received"] == 0

        unknown = http.get("/v1/uploads/" + "a" * 32)
        assert unknown.status_code == 404 and unknown.json()["error"]["message"]
        assert http.get("/v1/uploads/..%2F..").status_code == 404
