"""Paths in the HTTP API stay inside the allowed folders (issue 7, item 8)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ternaus_backend.api.allowed_folders import AllowedFolders, job_download
from ternaus_backend.api.errors import ForbiddenPathError
from ternaus_backend.settings import Settings
from tests.api.live import wait_for_job


def test_defaults_are_home_temp_and_the_backends_own_folders(tmp_path):
    folders = AllowedFolders.from_settings(Settings(work_dir=tmp_path / "jobs"))
    assert folders.allows(Path.home() / "imagery" / "a.tif")
    assert folders.allows(Path(tempfile.gettempdir()) / "ternaus-qgis-exports" / "a.tif")
    assert folders.allows(tmp_path / "jobs" / "abc" / "buildings.gpkg")
    for system in ("/etc/passwd", "/usr/bin/env", "/proc/self/environ", "/sys/kernel"):
        assert not folders.allows(system), system
    assert not folders.allows(Path.home() / ".." / ".." / "etc" / "passwd")


def test_system_folders_stay_refused_under_an_allowed_root(tmp_path):
    folders = AllowedFolders([tmp_path / "jobs"], [Path("/")])
    assert folders.allows("/srv/data/a.tif") and folders.allows(tmp_path / "a.tif")
    assert not folders.allows("/etc/shadow") and not folders.allows("/proc/1/mem")
    with pytest.raises(ForbiddenPathError, match="--allow-dir FOLDER") as error:
        folders.check("/etc/shadow", "RGB raster")
    assert "/etc/shadow" in error.value.message and error.value.http_status == 403


def test_symlinks_are_resolved_before_the_check(tmp_path):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret.tif").write_bytes(b"x")
    (inside / "link.tif").symlink_to(outside / "secret.tif")
    (inside / "folder").symlink_to(outside)
    folders = AllowedFolders([tmp_path / "jobs"], [inside])
    assert folders.allows(inside / "missing.tif")
    assert not folders.allows(inside / "link.tif")
    assert not folders.allows(inside / "folder" / "secret.tif")
    assert not folders.allows(inside / ".." / "outside" / "secret.tif")


def test_downloads_are_regular_files_inside_the_job_folder(tmp_path):
    job = tmp_path / "jobs" / "abc"
    job.mkdir(parents=True)
    (job / "buildings.gpkg").write_bytes(b"gpkg")
    assert job_download(job / "buildings.gpkg", job, "abc") == job / "buildings.gpkg"
    assert job_download(job / "gone.gpkg", job, "abc") is None
    (tmp_path / "mine.gpkg").write_bytes(b"gpkg")
    (job / "link.gpkg").symlink_to(tmp_path / "mine.gpkg")
    for path in (tmp_path / "mine.gpkg", job / "link.gpkg", job / ".." / ".." / "mine.gpkg"):
        with pytest.raises(ForbiddenPathError, match="regular file inside the job's folder"):
            job_download(path, job, "abc")


def test_real_server_refuses_paths_outside_the_allowed_folders(
    start_backend, model_file, rgb_raster, tmp_path
):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    model = Path(shutil.copy(model_file, inside / "model.safetensors"))
    rgb = Path(shutil.copy(rgb_raster, inside / "rgb.tif"))
    shutil.copy(rgb_raster, outside / "rgb.tif")
    shutil.copy(model_file, outside / "model.safetensors")
    (inside / "linked.safetensors").symlink_to(outside / "model.safetensors")
    backend = start_backend("--allow-dir", str(inside))
    with backend.client() as http:

        def refused(path: str, body: dict, named: Path) -> None:
            response = http.post(path, json=body)
            assert response.status_code == 403, response.text
            message = response.json()["error"]["message"]
            assert str(named) in message and "--allow-dir" in message, message

        refused("/v1/jobs/predict", {"rgb": str(outside / "rgb.tif")}, outside / "rgb.tif")
        refused("/v1/jobs/predict", {"rgb": str(rgb), "out": "/etc/b.gpkg"}, Path("/etc/b.gpkg"))
        refused(
            "/v1/jobs/predict",
            {"rgb": str(rgb), "model": str(inside / ".." / "outside" / "model.safetensors")},
            outside / "model.safetensors",
        )
        refused("/v1/jobs/evaluate", {"pred": "/etc/passwd", "truth": str(rgb)}, Path("/etc"))
        refused(
            "/v1/jobs/train",
            {"sources": [{"rgb": str(rgb), "labels": str(outside / "l.geojson")}]},
            outside / "l.geojson",
        )
        # /v1/models/inspect is no existence oracle: the same answer for files there or not
        answers = [
            http.post("/v1/models/inspect", json={"path": path})
            for path in ("/etc/passwd", "/etc/no-such-file", str(outside / "model.safetensors"))
        ]
        assert [a.status_code for a in answers] == [403, 403, 403]
        assert {a.json()["error"]["message"].split(" is outside")[1] for a in answers[:2]} == {
            answers[0].json()["error"]["message"].split(" is outside")[1]
        }
        linked = http.post("/v1/models/inspect", json={"path": str(inside / "linked.safetensors")})
        assert linked.status_code == 403
        assert http.post("/v1/models/inspect", json={"path": str(model)}).status_code == 200
        assert http.get("/v1/jobs").json() == []

        # inside: accepted and run; a job file swapped for a symbolic link is not served
        response = http.post("/v1/jobs/predict", json={"rgb": str(rgb), "model": str(model)})
        assert response.status_code == 202, response.text
        job = wait_for_job(http, response.json()["id"])
        assert job["status"] == "succeeded", job["error"]
        assert http.get(job["result_url"]).status_code == 200
        result = Path(job["result"]["out"])
        result.unlink()
        os.symlink("/etc/passwd", result)
        swapped = http.get(job["result_url"])
        assert swapped.status_code == 403 and "regular file" in swapped.json()["error"]["message"]


def test_text_that_is_no_path_is_a_clear_400(client):
    """Found by schemathesis: ``~user`` of no user, NUL bytes, names too long were 500s."""
    for text in ("~no-such-user-here/a.tif", "a\x00b.tif", "x" * 5000 + ".tif"):
        for path, body in (
            ("/v1/jobs/predict", {"rgb": text}),
            ("/v1/models/inspect", {"path": text}),
        ):
            response = client.post(path, json=body)
            assert response.status_code in (400, 403), (text[:20], response.text)
            assert response.json()["error"]["message"]
