"""The plugin's backend client and launcher against a real ``ternaus serve`` subprocess."""

from __future__ import annotations

import os
import signal

import pytest

from ternaus_qgis import settings
from ternaus_qgis.backend_process import BackendConnection, find_backend_command
from ternaus_qgis.client import BackendClient
from ternaus_qgis.exceptions import (
    BackendAuthError,
    BackendMissingError,
    BackendRequestError,
    BackendUnreachableError,
)


@pytest.fixture
def backend(qgis_app, backend_command):
    settings.set("backend/mode", "local")
    settings.set("backend/command", "")
    connection = BackendConnection()
    yield connection
    connection.stop()


def test_local_backend_starts_with_a_token_and_stops(backend):
    client, info = backend.client()
    assert info.local and info.url.startswith("http://127.0.0.1:")
    assert info.health["auth_required"] is True
    assert info.device_text in ("CPU",) or info.device_text.startswith("CUDA")
    models = client.models()
    assert models and models[0]["is_default"] is True
    assert models[0]["metadata"]["band_names"][:3] == ["red", "green", "blue"]
    # Without the session's token the backend refuses requests.
    with pytest.raises(BackendAuthError):
        BackendClient(info.url, token="wrong").models()
    process = backend.local.process
    backend.stop()
    assert process.poll() is not None
    with pytest.raises(BackendUnreachableError):
        client.health(timeout_s=2)


def test_backend_restarts_after_it_died(backend):
    client, info = backend.client()
    first = backend.local.process
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert backend.describe_death() is not None
    client2, info2 = backend.client()
    assert backend.local.process is not first and backend.local.is_running()
    assert client2.health()["status"] == "ok"


def test_backend_error_messages_reach_the_user(backend):
    client, _ = backend.client()
    with pytest.raises(BackendRequestError) as caught:
        client.inspect_model("/nonexistent/model.safetensors")
    assert "does not exist" in caught.value.message or "not found" in caught.value.message.lower()
    assert caught.value.status in (400, 404)


def test_missing_backend_says_what_to_do(qgis_app, monkeypatch, tmp_path):
    import ternaus_qgis.backend_process as bp

    settings.set("backend/command", str(tmp_path / "nope" / "ternaus"))
    monkeypatch.setenv("TERNAUS_BACKEND", str(tmp_path / "also-missing"))
    monkeypatch.setattr(bp, "PLUGIN_DIR", tmp_path / "plugin")
    monkeypatch.setattr(bp, "RECORDED_PATH_FILE", tmp_path / "plugin" / "backend_path.txt")
    try:
        with pytest.raises(BackendMissingError) as caught:
            find_backend_command()
        assert "make deploy" in caught.value.message
        assert "also-missing" in caught.value.details
    finally:
        settings.set("backend/command", "")


def test_backend_found_in_setting_order(qgis_app, backend_command, monkeypatch):
    monkeypatch.setenv("TERNAUS_BACKEND", str(backend_command))
    path, origin = find_backend_command()
    assert path == backend_command and origin == "TERNAUS_BACKEND"
    settings.set("backend/command", str(backend_command))
    try:
        assert find_backend_command()[1] == "the plugin setting"
    finally:
        settings.set("backend/command", "")


def test_remote_mode_uses_url_and_token(qgis_app, backend):
    _, info = backend.client()
    settings.set("backend/mode", "remote")
    settings.set("backend/url", info.url)
    settings.set("backend/token", backend.local._token)
    try:
        remote = BackendConnection()
        client, remote_info = remote.client()
        assert not remote_info.local and remote.local.process is None
        assert client.models()
    finally:
        settings.set("backend/mode", "local")
        settings.set("backend/token", "")
