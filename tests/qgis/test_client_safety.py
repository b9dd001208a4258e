"""What the plugin's client does with answers that are not the backend's, over real HTTP servers on
this machine: a redirect elsewhere (the token must stay home), a token over plain http to another
machine, tokens an HTTP header cannot carry, a backend of another API version, bodies that are
not JSON (a proxy's error page)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from qgis.core import QgsApplication

from ternaus_qgis import backend_process, settings
from ternaus_qgis.backend_process import BackendConnection
from ternaus_qgis.client import BackendClient
from ternaus_qgis.exceptions import (
    BackendAnswerError,
    BackendVersionError,
    TokenError,
)
from tests.api.live import start_backend  # noqa: F401  (a real `ternaus serve`)

from .conftest import wait_until

TOKEN = "s3cret-token"
HEALTH = {
    "status": "ok",
    "version": "9.9.9",
    "api_version": "v1",
    "device": "cpu",
    "torch_version": "x",
    "inplace_abn": False,
    "max_workers": 1,
    "auth_required": True,
}
#: (status, content type, body) for one request: what a scripted server answers.
Answer = tuple[int, str, bytes]


class ScriptedServer(http.server.ThreadingHTTPServer):
    """A real HTTP server on ``host``: ``answer(method, path)`` gives status, headers and body;
    every request's method, path and headers are recorded in ``seen``."""

    def __init__(self, answer: Callable[[str, str], tuple], host: str = "127.0.0.1") -> None:
        self.answer = answer
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        super().__init__((host, 0), _ScriptedHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        status, headers, body = self.server.answer(self.command, self.path)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer


def json_answer(data, status: int = 200) -> tuple:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


def fake_backend(health: dict) -> Callable[[str, str], tuple]:
    """Answers like a backend: ``health`` at /v1/health, an empty model list at /v1/models."""

    def answer(method: str, path: str) -> tuple:
        if path == "/v1/health":
            return json_answer(health)
        if path == "/v1/models":
            return json_answer([])
        return json_answer({"error": {"message": "not here"}}, 404)

    return answer


@pytest.fixture
def servers() -> Iterator[Callable[..., ScriptedServer]]:
    started: list[ScriptedServer] = []

    def start(answer, host: str = "127.0.0.1") -> ScriptedServer:
        server = ScriptedServer(answer, host)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def remote_settings(qgis_app) -> Iterator[None]:
    """Remote mode for the test; local mode (the default) and no token afterwards."""
    yield
    settings.set("backend/mode", "local")
    settings.set("backend/url", settings.DEFAULTS["backend/url"])
    settings.set("backend/token", "")


def lan_address() -> str:
    """This machine's address on its network (not loopback): a "remote" backend's address."""
    for target in ("10.255.255.255", "192.0.2.1", "198.51.100.1"):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect((target, 9))  # no packet is sent: only the route is looked up
            address = probe.getsockname()[0]
        except OSError:
            continue
        finally:
            probe.close()
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    pytest.skip("this machine has no network address besides loopback")


# ------------------------------------------------------------------------------------ redirects
def test_a_redirect_to_another_port_never_gets_the_token(qgis_app, servers):
    target = servers(fake_backend(HEALTH))
    redirector = servers(lambda method, path: (302, {"Location": target.url() + path}, b"moved"))
    client = BackendClient(redirector.url(), token=TOKEN)
    for call in (client.health, client.models, lambda: client.submit_train({"epochs": 1})):
        with pytest.raises(BackendAnswerError) as caught:
            call()
        message = caught.value.message
        assert f"redirect to {target.url()}/v1/" in message
        assert "check the backend URL in Settings" in message
        assert caught.value.status == 302
    assert len(redirector.seen) == 3
    assert redirector.seen[1][2]["Authorization"] == f"Bearer {TOKEN}"  # sent where asked
    assert target.seen == []  # the second server never saw the token (nor anything else)


# ------------------------------------------------------------------------------ plain http
def test_a_token_over_plain_http_to_another_machine_is_warned_once_per_url(
    iface, project, servers, remote_settings
):
    from ternaus_qgis.plugin import TernausPlugin

    address = lan_address()
    backend = servers(fake_backend(HEALTH), host="0.0.0.0")
    url = backend.url(address)
    settings.set("backend/mode", "remote")
    settings.set("backend/url", url)
    settings.set("backend/token", TOKEN)
    logged: list[str] = []
    log = QgsApplication.messageLog()

    def record(message, tag, level) -> None:
        logged.append(message)

    log.messageReceived.connect(record)
    plugin = TernausPlugin(iface)
    plugin.initGui()
    try:
        wait_until(lambda: plugin.controller.backend_status.task is None, 30, "the backend")
        assert backend.seen and backend.seen[0][1] == "/v1/health"
        texts = [item.text() for item in iface.bar.items()]
        warnings = [text for text in texts if "unencrypted" in text]
        assert len(warnings) == 1, texts
        assert url in warnings[0] and "https" in warnings[0] and "SSH tunnel" in warnings[0]
        assert any(url in text and "unencrypted" in text for text in logged)
        plugin.controller.refresh_backend()  # again: the same URL is not warned twice
        wait_until(lambda: plugin.controller.backend_status.task is None, 30, "the backend again")
        texts = [item.text() for item in iface.bar.items()]
        assert len([text for text in texts if "unencrypted" in text]) == 1, texts
    finally:
        log.messageReceived.disconnect(record)
        plugin.unload()


def test_loopback_and_https_urls_are_not_warned(qgis_app, servers, remote_settings):
    backend = servers(fake_backend(HEALTH))
    settings.set("backend/mode", "remote")
    settings.set("backend/url", backend.url())
    settings.set("backend/token", TOKEN)
    _, info = BackendConnection().client()
    assert info.warnings == []
    assert backend_process.plain_http_warning("https://gpu.example.org", TOKEN) is None
    assert backend_process.plain_http_warning("http://gpu.example.org", None) is None


def test_settings_dialog_warns_before_saving_a_plain_http_url(qgis_app, remote_settings):
    from ternaus_qgis.gui.settings_dialog import SettingsDialog

    settings.set("backend/url", "http://127.0.0.1:8765")
    dialog = SettingsDialog()
    asked: list[str] = []
    dialog.confirm_plain_http = lambda parent, warning: asked.append(warning) or False
    dialog.remote_radio.setChecked(True)
    dialog.url_edit.setText("http://gpu.example.org:8765")
    dialog.token_edit.setText(TOKEN)
    assert not dialog.security_label.isHidden()
    assert "unencrypted" in dialog.security_label.text()
    dialog.accept()  # the user answers Cancel: nothing saved, the dialog stays open
    assert len(asked) == 1 and "gpu.example.org" in asked[0] and "SSH tunnel" in asked[0]
    assert settings.get("backend/url") == "http://127.0.0.1:8765"
    dialog.confirm_plain_http = lambda parent, warning: True  # Save anyway
    dialog.accept()
    assert settings.get("backend/url") == "http://gpu.example.org:8765"
    assert settings.get("backend/token") == TOKEN
    dialog.url_edit.setText("https://gpu.example.org")
    assert dialog.security_label.isHidden()


# ------------------------------------------------------------------------------ tokens
def test_a_non_ascii_token_is_refused_where_it_is_entered(qgis_app, remote_settings):
    from ternaus_qgis.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog()
    dialog.remote_radio.setChecked(True)
    dialog.url_edit.setText("https://gpu.example.org")
    dialog.token_edit.setText("pässwört€")
    text = dialog.security_label.text()
    assert "cannot carry" in text and "'ä'" in text and "'€'" in text and "ASCII" in text
    dialog.accept()
    assert settings.get("backend/token") == ""  # refused: not saved
    assert settings.get("backend/mode") == "local"


def test_a_non_ascii_token_in_settings_gives_a_clear_error_not_an_encoding_crash(
    qgis_app, servers, remote_settings
):
    backend = servers(fake_backend(HEALTH))
    settings.set("backend/mode", "remote")
    settings.set("backend/url", backend.url())
    settings.set("backend/token", "tökén")  # e.g. written by an older plugin
    with pytest.raises(TokenError) as caught:
        BackendConnection().client()
    assert "cannot carry" in caught.value.message and "'ö'" in caught.value.message
    assert backend.seen == []


def test_an_ascii_punctuation_token_works_with_the_real_backend(
    qgis_app,
    start_backend,  # noqa: F811
):
    token = "A-z_0.9~+/=!#$%&*^|"
    live = start_backend(TERNAUS_TOKEN=token)
    client = BackendClient(live.base, token=token)
    assert client.health()["api_version"] == "v1"
    assert isinstance(client.models(), list)


# ------------------------------------------------------------------------------ API version
@pytest.mark.parametrize(
    ("api_version", "advice"),
    [("v2", "Update the plugin"), ("v0", "Update the backend"), (None, "Update the backend")],
)
def test_a_backend_of_another_api_major_version_is_refused(qgis_app, servers, api_version, advice):
    health = dict(HEALTH, api_version=api_version)
    if api_version is None:
        del health["api_version"]
    backend = servers(fake_backend(health))
    with pytest.raises(BackendVersionError) as caught:
        BackendClient(backend.url(), token=TOKEN).health()
    message = caught.value.message
    assert "this plugin speaks API v1" in message and advice in message
    assert backend.url() in message and "9.9.9" in message
    if api_version:
        assert f"speaks API {api_version}" in message


def test_a_backend_of_the_same_major_version_is_used(qgis_app, servers):
    backend = servers(fake_backend(dict(HEALTH, api_version="v1.3")))
    assert BackendClient(backend.url()).health()["version"] == "9.9.9"


# ------------------------------------------------------------------------------ not JSON
PROXY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@pytest.mark.parametrize("status", [200, 502])
def test_a_reply_that_is_not_json_says_what_came_back(qgis_app, servers, status):
    page = servers(lambda method, path: (status, {"Content-Type": "text/html"}, PROXY_PAGE))
    with pytest.raises(BackendAnswerError) as caught:
        BackendClient(page.url(), token=TOKEN).models()
    message = caught.value.message
    assert f"The backend at {page.url()} answered with something that is not JSON" in message
    assert f"HTTP {status}" in message and "text/html" in message
    assert "<title>502 Bad Gateway</title>" in message and "check the backend URL" in message
    assert "Expecting value" not in message
    assert caught.value.status == status


def test_the_dock_shows_the_not_json_message(iface, project, servers, remote_settings):
    from ternaus_qgis.plugin import TernausPlugin

    long_page = PROXY_PAGE + b"x" * 1000
    page = servers(lambda method, path: (200, {"Content-Type": "text/html"}, long_page))
    settings.set("backend/mode", "remote")
    settings.set("backend/url", page.url())
    plugin = TernausPlugin(iface)
    plugin.initGui()
    try:
        wait_until(lambda: plugin.controller.backend_status.task is None, 30, "the backend")
        error = plugin.controller.backend_status.last_error
        assert isinstance(error, BackendAnswerError), error
        assert "not JSON" in error.message and "x" * 201 not in error.message
        texts = [item.text() for item in iface.bar.items()]
        assert any("not JSON" in text and page.url() in text for text in texts), texts
    finally:
        plugin.unload()
