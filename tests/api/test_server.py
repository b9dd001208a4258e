"""A real uvicorn server on a free loopback port, spoken to over real HTTP with httpx."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from ternaus_backend.api.main import create_app
from ternaus_backend.settings import Settings
from tests.api.test_predict import assert_geopackage


@pytest.fixture
def live_server(tmp_path) -> Iterator[tuple[str, object]]:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(Settings(work_dir=tmp_path / "jobs"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
    assert not thread.is_alive(), "the server did not stop"


def test_real_server_health_and_predict(live_server, model_file, rgb_raster, tmp_path):
    base_url, app = live_server
    with httpx.Client(base_url=base_url, timeout=30) as http:
        health = http.get("/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        response = http.post(
            "/v1/jobs/predict", json={"rgb": str(rgb_raster), "model": str(model_file)}
        )
        assert response.status_code == 202, response.text
        job_url = response.headers["location"]
        deadline = time.monotonic() + 60
        while (job := http.get(job_url).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["status"] == "succeeded", job["error"]
        with http.stream("GET", job["result_url"]) as download:
            assert download.status_code == 200
            out = tmp_path / "over-http.gpkg"
            with out.open("wb") as handle:
                for chunk in download.iter_bytes():
                    handle.write(chunk)
        assert assert_geopackage(out) == job["result"]["buildings"]
        missing = http.get("/v1/jobs/nope")
        assert missing.status_code == 404 and missing.json()["error"]["message"]


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_serve_in_a_subprocess_answers_and_stops_on_ctrl_c(tmp_path):
    """``serve()`` as ``ternaus serve`` runs it: a free port, health over HTTP, Ctrl-C stops it."""
    env = {**os.environ, "TERNAUS_WORK_DIR": str(tmp_path / "jobs"), "TERNAUS_TOKEN": ""}
    code = "from ternaus_backend.api.server import serve; serve(port=0)"
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line or process.poll() is None, "serve() exited early"
            match = re.search(r"Ternaus backend on (http://\S+/v1)", line)
            url = match.group(1) if match else None
        assert url, "serve() did not report its address"
        while "startup complete" not in process.stderr.readline():
            assert time.monotonic() < deadline
        assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


@pytest.mark.parametrize("token", ["pässwort", "two words", "tab\there"])
def test_a_token_http_cannot_carry_is_refused_at_start_without_echoing_it(token):
    from ternaus_backend.api.server import make_settings
    from ternaus_backend.errors import InputError

    with pytest.raises(InputError, match="printable ASCII") as info:
        make_settings(token=token)
    assert token not in info.value.message
    assert make_settings(token="s3cret-Token_!").token_value() == "s3cret-Token_!"


def test_the_cluster_flag_is_a_setting_not_an_environment_variable(monkeypatch):
    from ternaus_backend.api.server import make_settings

    monkeypatch.delenv("TERNAUS_DASK_SCHEDULER", raising=False)
    assert make_settings().dask_scheduler is None
    assert make_settings(dask_scheduler="local:2").dask_scheduler == "local:2"
    assert "TERNAUS_DASK_SCHEDULER" not in os.environ
    monkeypatch.setenv("TERNAUS_DASK_SCHEDULER", "tcp://10.0.0.5:8786")
    assert make_settings().dask_scheduler == "tcp://10.0.0.5:8786"
    assert make_settings(dask_scheduler="local:1").dask_scheduler == "local:1"
