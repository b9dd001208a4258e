"""The token, loopback-only host names, and serve() refusing to listen openly without a token."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ternaus_backend.api.main import create_app
from ternaus_backend.api.security import host_name, is_loopback
from ternaus_backend.api.server import check_exposure, make_settings, serve
from ternaus_backend.errors import TernausError
from ternaus_backend.settings import Settings

TOKEN = "correct-horse-battery"


@pytest.fixture
def guarded(tmp_path):
    app = create_app(Settings(work_dir=tmp_path, token=TOKEN, host="0.0.0.0"))
    with TestClient(app, base_url="http://192.168.1.20:8765") as client:
        yield client


def test_token_is_required_everywhere_but_health(guarded) -> None:
    health = guarded.get("/v1/health")
    assert health.status_code == 200 and health.json()["auth_required"] is True
    for method, path in (
        ("GET", "/v1/jobs"),
        ("GET", "/v1/openapi.json"),
        ("POST", "/v1/models/inspect"),
        ("GET", "/v1/jobs/abc"),
    ):
        response = guarded.request(method, path)
        assert response.status_code == 401, path
        assert "Authorization: Bearer" in response.json()["error"]["message"]
        assert response.headers["www-authenticate"] == "Bearer"
    wrong = guarded.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["details"] == "the token does not match"
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/v1/jobs", headers=ok).json() == []
    assert guarded.get("/v1/openapi.json", headers=ok).status_code == 200


def test_without_token_only_loopback_host_names_are_answered(tmp_path) -> None:
    app = create_app(Settings(work_dir=tmp_path))
    with TestClient(app, base_url="http://evil.example:8765") as client:
        response = client.get("/v1/health")
        assert response.status_code == 403
        assert "--token" in response.json()["error"]["message"]
    for base in ("http://localhost:8765", "http://127.0.0.1", "http://[::1]:8765"):
        with TestClient(app, base_url=base) as client:
            assert client.get("/v1/health").status_code == 200, base


def test_loopback_and_host_parsing() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.2", "example.com", "::"]))
    assert host_name("[::1]:8765") == "::1" and host_name("a.b:80") == "a.b"
    assert host_name("localhost") == "localhost"


def test_serve_refuses_to_listen_openly_without_a_token(monkeypatch) -> None:
    monkeypatch.delenv("TERNAUS_TOKEN", raising=False)
    with pytest.raises(TernausError, match="--token") as info:
        serve(host="0.0.0.0", port=0)
    assert "TERNAUS_TOKEN" in info.value.message
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", "secret")


def test_serve_settings_come_from_arguments_then_environment(monkeypatch) -> None:
    monkeypatch.setenv("TERNAUS_TOKEN", "from-env")
    monkeypatch.setenv("TERNAUS_PORT", "9999")
    settings = make_settings(host=None, port=None, token=None)
    assert settings.token_value() == "from-env" and settings.port == 9999
    assert settings.host == "127.0.0.1"
    settings = make_settings(host="::1", port=1234, token="arg")
    assert (settings.host, settings.port, settings.token_value()) == ("::1", 1234, "arg")
    monkeypatch.setenv("TERNAUS_TOKEN", "")
    assert make_settings().token is None
