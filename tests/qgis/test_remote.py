"""A backend on "another machine": a real ``ternaus serve`` with its own work folder, reached by
URL and token. The plugin uploads its inputs in chunks (a failed chunk is sent again, not the
file) and downloads the results to where the user asked for them."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from qgis.core import QgsVectorLayer

from ternaus_qgis import backend_process, settings
from ternaus_qgis.client import BackendClient
from ternaus_qgis.core.evaluation import EvaluationRequest, run_evaluation
from ternaus_qgis.core.extraction import ExtractionRequest, run_extraction
from ternaus_qgis.core.jobs import Progress
from ternaus_qgis.core.raster_inputs import raster_input
from tests.api.live import start_backend  # noqa: F401  (a real `ternaus serve`)

from .conftest import add_raster

TOKEN = "remote-secret"


class FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards requests to the backend; the first PUT at ``fail_offset`` gets a 503."""

    def __init__(self, target: str, fail_offset: int) -> None:
        self.target, self.fail_offset = target, fail_offset
        self.puts: list[int] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: FlakyProxy

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "PUT":
            offset = int(self.path.rsplit("offset=", 1)[-1])
            self.server.puts.append(offset)
            if offset == self.server.fail_offset and self.server.puts.count(offset) == 1:
                self.send_response(503)
                self.end_headers()
                return
        request = urllib.request.Request(
            self.server.target + self.path, data=body or None, method=self.command
        )
        for key in ("Authorization", "Content-Type"):
            if self.headers.get(key):
                request.add_header(key, self.headers[key])
        try:
            with urllib.request.urlopen(request) as answer:
                status, payload = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _forward


@pytest.fixture
def remote(start_backend, tmp_path) -> Iterator:  # noqa: F811
    backend = start_backend(TERNAUS_TOKEN=TOKEN, TERNAUS_WORK_DIR=str(tmp_path / "remote-jobs"))
    settings.set("backend/mode", "remote")
    settings.set("backend/url", backend.base)
    settings.set("backend/token", TOKEN)
    yield backend
    settings.set("backend/mode", "local")
    settings.set("backend/token", "")


def quiet_progress() -> Progress:
    return Progress(report=lambda pct, text: None, cancelled=lambda: False)


def test_a_failed_chunk_is_sent_again_not_the_file(remote, synthetic_scene):
    chunk = 64 * 1024
    proxy = FlakyProxy(remote.base, fail_offset=2 * chunk)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        client = BackendClient(proxy.url, TOKEN)
        path = Path(client.upload(synthetic_scene, chunk_bytes=chunk))
    finally:
        proxy.shutdown()
    assert path.read_bytes() == synthetic_scene.read_bytes()
    assert proxy.puts.count(2 * chunk) == 2  # failed once, sent again
    assert all(proxy.puts.count(o) == 1 for o in set(proxy.puts) - {2 * chunk})


def test_extraction_and_evaluation_on_a_remote_backend(
    qgis_app, project, remote, synthetic_scene, tmp_path
):
    layer = add_raster(synthetic_scene)
    out = tmp_path / "local" / "buildings.gpkg"
    request = ExtractionRequest(
        rgb=raster_input(layer, "RGB", 3),
        extent=None,
        extent_crs=layer.crs(),
        out_path=out,
    )
    result = run_extraction(request, backend_process.connection(), quiet_progress())
    assert result.path == out and out.is_file()  # downloaded to where the user asked
    local = QgsVectorLayer(f"{out}|layername={result.layer_name}", "result", "ogr")
    assert local.isValid() and local.featureCount() == result.count > 0

    client = BackendClient(remote.base, TOKEN)
    (job,) = [j for j in client._call("GET", "/jobs") if j["kind"] == "predict"]
    sent = Path(job["request"]["rgb"])
    assert sent.is_relative_to(tmp_path / "remote-jobs" / "uploads")  # uploaded, not shared
    assert sent.read_bytes() == synthetic_scene.read_bytes()

    scores = run_evaluation(
        EvaluationRequest(
            result_path=out, reference_path=out, out_path=tmp_path / "local" / "errors.gpkg"
        ),
        backend_process.connection(),
        quiet_progress(),
    )
    assert scores.path.is_file() and scores.path.parent == tmp_path / "local"
    assert scores.scores["f1"] == pytest.approx(1.0)


def test_training_on_a_remote_backend_downloads_the_model(
    qgis_app, project, remote, synthetic_scene, tmp_path
):
    from ternaus_qgis.core.training import TrainingRequest, run_training

    layer = add_raster(synthetic_scene)
    out = tmp_path / "local" / "models" / "remote_model.safetensors"
    request = TrainingRequest(
        rgb=raster_input(layer, "RGB", 3),
        labels_path=synthetic_scene.parent / "scene_labels.geojson",
        out_path=out,
        name="remote_model",
        epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        crop_px=64,
    )
    result = run_training(request, backend_process.connection(), quiet_progress())
    assert result.model_path == out and out.stat().st_size > 100_000
    assert len(result.curve) == 1
    info = BackendClient(remote.base, TOKEN).inspect_model(str(result.summary["model_path"]))
    assert info["metadata"]["encoder"]  # the backend's copy is a valid model too


def test_settings_dialog_says_whether_a_remote_backend_reads_local_files(qgis_app):
    from ternaus_qgis.gui.settings_dialog import SettingsDialog

    settings.set("backend/mode", "local")
    dialog = SettingsDialog()
    assert not dialog.same_machine_check.isEnabled()
    dialog.remote_radio.setChecked(True)
    assert dialog.same_machine_check.isEnabled()
    dialog.url_edit.setText("http://10.0.0.5:8765")
    dialog.same_machine_check.setChecked(True)
    dialog.accept()
    try:
        assert settings.get("backend/mode") == "remote"
        assert settings.get("backend/same_machine") is True
    finally:
        settings.set("backend/mode", "local")
        settings.set("backend/same_machine", False)
