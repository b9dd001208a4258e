"""``/v1/uploads`` on a real ``ternaus serve``: a file sent in chunks (in any order, a chunk sent
twice) arrives whole and checked, and its path feeds a job like any path on the backend."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from tests.api.conftest import wait_for
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


# ---------------------------------------------------------------------- issue 18, items 2-4, 8, 9


def _upload(client, data: bytes, name: str = "scene.tif") -> dict:
    """A finished upload of ``data`` through the real app."""
    upload = _create(client, data, name)
    assert _put(client, upload["id"], 0, data).status_code == 200
    done = client.post(f"/v1/uploads/{upload['id']}/complete")
    assert done.status_code == 200, done.text
    return done.json()


def test_uploads_named_like_the_backends_own_files_keep_their_bytes(client):
    """Item 2: the record (upload.json), its temporary and the incoming bytes live apart from
    the user's file, whatever its name."""
    for name in ("upload.json", "upload.tmp", "incoming.part", "data", "upload.json.tmp"):
        data = f"the bytes of {name} ".encode() * 50
        done = _upload(client, data, name)
        path = Path(done["path"])
        assert path.name == name and path.read_bytes() == data, name
        assert client.get(f"/v1/uploads/{done['id']}").json()["complete"]


def _slow_put(base_url: str, upload_id: str, offset: int, first: bytes, rest: bytes, go):
    """A PUT whose body arrives in two parts: ``first``, then ``rest`` once ``go`` is set;
    returns (status, body text)."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=60)
    head = (
        f"PUT /v1/uploads/{upload_id}?offset={offset} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {len(first) + len(rest)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + first)
    go.wait(30)
    sock.sendall(rest)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1].decode(errors="replace")


def test_complete_waits_for_a_chunk_being_written_and_refuses_later_ones(start_backend):
    """Item 3: a chunk sent again (garbage) is still arriving when the client completes: the
    completion waits for it, so the SHA-256 check sees it (400, not a corrupted 200 file); a
    chunk after the completion gets 409 and leaves the finished file as it was."""
    import threading

    backend = start_backend()
    data = bytes(range(256)) * 400
    with backend.client() as http:
        upload = _create(http, data)
        assert _put(http, upload["id"], 0, data).status_code == 200
        go = threading.Event()
        put_answer: list = []
        writer = threading.Thread(
            target=lambda: put_answer.append(
                _slow_put(backend.base, upload["id"], 0, b"\xff" * 4096, b"\xee" * 4096, go)
            )
        )
        writer.start()
        time.sleep(1.0)  # the PUT is inside the server, half its body read
        completed: list = []
        completer = threading.Thread(
            target=lambda: completed.append(http.post(f"/v1/uploads/{upload['id']}/complete"))
        )
        completer.start()
        completer.join(1.5)
        assert not completed, "complete answered while a chunk was still being written"
        go.set()
        writer.join(30)
        completer.join(30)
        assert put_answer[0][0] == 200, put_answer
        refused = completed[0]
        assert refused.status_code == 400 and "corrupted" in refused.json()["error"]["message"]

        # sent again whole: complete; then a late chunk is refused and changes nothing
        assert _put(http, upload["id"], 0, data).status_code == 200
        done = http.post(f"/v1/uploads/{upload['id']}/complete").json()
        late = _put(http, upload["id"], 0, b"\x00" * 1000)
        assert late.status_code == 409 and "complete" in late.json()["error"]["message"]
        assert Path(done["path"]).read_bytes() == data


def test_uploads_reserve_their_size_and_their_number_is_limited(settings, monkeypatch):
    """Item 4: on a disk with 40 MB free, a 30 MiB upload is accepted and a second one is
    refused (413, how much is free and needed) until the first has arrived; at most
    TERNAUS_MAX_OPEN_UPLOADS uploads are unfinished (429)."""
    import shutil

    from fastapi.testclient import TestClient

    from ternaus_backend.api.main import create_app

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=40_000_000))
    size = 30 * 2**20
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        first = client.post("/v1/uploads", json={"name": "a.tif", "size": size})
        assert first.status_code == 201
        for _ in range(3):
            refused = client.post("/v1/uploads", json={"name": "b.tif", "size": size})
            assert refused.status_code == 413, refused.text
            message = refused.json()["error"]["message"]
            assert message.startswith("disk full: 8.5 MB free, the upload needs 31 MB"), message
            assert "reserved for 1 unfinished upload" in message
        assert client.delete(f"/v1/uploads/{first.json()['id']}").status_code == 204
        assert client.post("/v1/uploads", json={"name": "b.tif", "size": size}).status_code == 201

    few = settings.model_copy(update={"max_open_uploads": 2, "work_dir": settings.work_dir / "x"})
    with TestClient(create_app(few), base_url="http://127.0.0.1") as client:
        made = [client.post("/v1/uploads", json={"name": "a.tif", "size": 10}) for _ in range(3)]
        assert [r.status_code for r in made] == [201, 201, 429]
        assert "TERNAUS_MAX_OPEN_UPLOADS" in made[2].json()["error"]["message"]
        upload_id = made[0].json()["id"]
        assert _put(client, upload_id, 0, b"0123456789").status_code == 200
        assert client.post(f"/v1/uploads/{upload_id}/complete").status_code == 200
        assert client.post("/v1/uploads", json={"name": "c.tif", "size": 10}).status_code == 201


def test_a_full_disk_in_a_request_is_a_clear_507(
    client, settings, rgb_raster, model_file, monkeypatch
):
    """Item 4: ENOSPC while the job's folder is made is a 507 that says the disk is full, not
    a 500 'unexpected error'."""
    import errno
    from pathlib import Path as RealPath

    real_mkdir = RealPath.mkdir

    def full_disk(self, *args, **kwargs):
        if self.parent == settings.work_dir:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(RealPath, "mkdir", full_disk)
    response = client.post(
        "/v1/jobs/predict", json={"rgb": str(rgb_raster), "model": str(model_file)}
    )
    assert response.status_code == 507, response.text
    message = response.json()["error"]["message"]
    assert message.startswith("The disk holding ") and "is full; free space there" in message
    monkeypatch.undo()
    assert client.get("/v1/jobs").json() == []  # nothing half-made is listed


def test_jobs_read_only_finished_uploads(client, rgb_raster, model_file):
    """Item 8: the bytes of an unfinished upload and an upload's record are refused (403)."""
    data = rgb_raster.read_bytes()
    unfinished = _create(client, data)
    assert _put(client, unfinished["id"], 0, data).status_code == 200  # all there, not completed
    folder = Path(client.app.state.uploads.root) / unfinished["id"]
    refused = client.post(
        "/v1/jobs/predict",
        json={"rgb": str(folder / "incoming.part"), "model": str(model_file)},
    )
    assert refused.status_code == 403, refused.text
    assert "which is not complete" in refused.json()["error"]["message"]
    done = client.post(f"/v1/uploads/{unfinished['id']}/complete").json()
    record = client.post(
        "/v1/jobs/predict", json={"rgb": str(folder / "upload.json"), "model": str(model_file)}
    )
    assert record.status_code == 403 and "not an uploaded file" in record.text
    accepted = client.post("/v1/jobs/predict", json={"rgb": done["path"], "model": str(model_file)})
    assert accepted.status_code == 202, accepted.text
    wait_for(client, accepted.json()["id"])


def test_an_upload_a_waiting_job_reads_is_not_deleted(client, rgb_raster, model_file):
    """Item 9: DELETE of an upload a queued or running job names is 409, naming the job."""
    import threading

    from ternaus_backend.api.jobs import JobOutcome

    done = _upload(client, rgb_raster.read_bytes())
    gate = threading.Event()
    jobs = client.app.state.jobs
    blocker = jobs.submit("train", {}, lambda ctx: gate.wait(30) and JobOutcome({}))
    try:
        job = client.post("/v1/jobs/predict", json={"rgb": done["path"], "model": str(model_file)})
        assert job.status_code == 202 and job.json()["status"] == "queued"
        refused = client.delete(f"/v1/uploads/{done['id']}")
        assert refused.status_code == 409
        assert f"job {job.json()['id']} (queued)" in refused.json()["error"]["message"]
    finally:
        gate.set()
    assert wait_for(client, blocker["id"])["status"] == "succeeded"
    assert wait_for(client, job.json()["id"])["status"] == "succeeded"
    assert client.delete(f"/v1/uploads/{done['id']}").status_code == 204
