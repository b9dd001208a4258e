"""The backend's HTTP client: the only module of the plugin that speaks HTTP.

Blocking calls (standard library ``urllib``) meant for worker threads: ``QgsTask.run()`` and
Processing algorithms, never the GUI thread. Errors become :mod:`.exceptions` with the backend's
own JSON message, so the user reads what the backend says to do.

The token goes only to the backend URL: redirects are never followed (the user is told where the
URL redirects to, so the setting can be corrected), and the ``Authorization`` header is not
carried over by urllib either (an "unredirected" header). Tokens are printable ASCII without
spaces, as HTTP headers carry them (:func:`token_problem`). ``GET /v1/health`` must name an API
of this plugin's major version (:data:`API_VERSION`). A body that is not JSON (a proxy's error
page, another web server at that URL) is reported with its status, type and first characters.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .exceptions import (
    BackendAnswerError,
    BackendAuthError,
    BackendRequestError,
    BackendUnreachableError,
    BackendVersionError,
    CancelledByUser,
    TokenError,
)

API = "/v1"
#: The API this plugin speaks (``api_version`` of ``GET /v1/health``); another major is refused.
API_VERSION = "v1"
#: Characters of a body that is not JSON shown in the error message.
NOT_JSON_PREVIEW_CHARS = 200
#: Attempts per upload chunk before the upload fails (a chunk, not the file, is sent again).
CHUNK_ATTEMPTS = 4


class BackendClient:
    """JSON calls to one backend (``base_url`` like ``http://127.0.0.1:8765``)."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith(API):
            self.base_url = self.base_url[: -len(API)]
        self.token = token or None
        problem = token_problem(self.token)
        if problem:
            raise TokenError(problem, details=f"backend {self.base_url}")
        self.timeout_s = timeout_s
        # Proxies never apply to our backend: a loopback backend behind a proxy would not answer.
        # Redirects are refused (the token must not follow them to another address).
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), _RefuseRedirects(self.base_url)
        )

    # ------------------------------------------------------------------------- endpoints
    def health(self, timeout_s: float | None = None) -> dict[str, Any]:
        """``GET /v1/health``: version, device, default model; ``BackendVersionError`` when the
        backend speaks another major API version than :data:`API_VERSION`."""
        health = self._call("GET", "/health", timeout_s=timeout_s)
        if not isinstance(health, dict):
            raise BackendAnswerError(
                f"The server at {self.base_url} is not a Ternaus backend (its /v1/health answer is "
                "not what the backend sends); check the backend URL in Settings.",
                details=repr(health)[:2000],
            )
        check_api_version(health, self.base_url)
        return health

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: the default model and the models in the backend's models folder."""
        return self._call("GET", "/models")

    def inspect_model(self, path: str) -> dict[str, Any]:
        """``POST /v1/models/inspect``: the metadata of a model file on the backend's machine."""
        return self._call("POST", "/models/inspect", {"path": path})

    def submit_predict(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs/predict``: a new extraction job (its JSON, with ``id``)."""
        return self._call("POST", "/jobs/predict", request)

    def submit_evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs/evaluate``: a new evaluation job (SpaceNet rules, error layers)."""
        return self._call("POST", "/jobs/evaluate", request)

    def submit_compare(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs/compare``: our result against a map's buildings (gaps, offset)."""
        return self._call("POST", "/jobs/compare", request)

    def submit_changes(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs/changes``: what changed between two dates' building layers."""
        return self._call("POST", "/jobs/changes", request)

    def submit_where_to_label(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs/where_to_label``: cells of an image ranked by the model's doubt."""
        return self._call("POST", "/jobs/where_to_label", request)

    def submit_train(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs/train``: a new training (or fine-tuning) job."""
        return self._call("POST", "/jobs/train", request)

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``: status, progress, result or error of a job."""
        return self._call("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """``POST /v1/jobs/{id}/cancel``."""
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def download(self, url_path: str, destination: Path) -> Path:
        """Save the file at ``url_path`` (e.g. a job's ``result_url``) to ``destination``."""
        request = self._request("GET", url_path if url_path.startswith("/") else "/" + url_path)
        partial = destination.with_name(destination.name + ".download")
        with self._open(request, None) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
        partial.replace(destination)
        return destination

    def upload(
        self,
        path: Path,
        progress: Callable[[float], None] = lambda pct: None,
        cancelled: Callable[[], bool] = lambda: False,
        chunk_bytes: int | None = None,
    ) -> str:
        """Send a file through ``/v1/uploads`` in chunks; returns its path on the backend.

        A chunk that fails (connection lost, 5xx) is sent again, up to ``CHUNK_ATTEMPTS`` times,
        with a growing pause; chunks already received are not sent again.
        """
        path = Path(path)
        size = path.stat().st_size
        created = self._call(
            "POST", "/uploads", {"name": path.name, "size": size, "sha256": _sha256(path)}
        )
        upload_id = created["id"]
        step = chunk_bytes or int(created.get("chunk_bytes") or 8 << 20)
        with open(path, "rb") as data:
            for offset in range(0, size, step):
                if cancelled():
                    self._call("DELETE", f"/uploads/{upload_id}")
                    raise CancelledByUser(f"Upload of {path.name} cancelled.")
                data.seek(offset)
                self._send_chunk(upload_id, offset, data.read(step))
                progress(100.0 * min(size, offset + step) / max(size, 1))
        done = self._call("POST", f"/uploads/{upload_id}/complete")
        progress(100.0)
        return str(done["path"])

    def _send_chunk(self, upload_id: str, offset: int, chunk: bytes) -> None:
        for attempt in range(1, CHUNK_ATTEMPTS + 1):
            request = self._request("PUT", f"/uploads/{upload_id}?offset={offset}")
            request.data = chunk
            request.add_header("Content-Type", "application/octet-stream")
            try:
                with self._open(request, None) as response:
                    response.read()
                return
            except (BackendUnreachableError, BackendRequestError) as error:
                status = getattr(error, "status", 0)
                if attempt == CHUNK_ATTEMPTS or 0 < status < 500:
                    raise
                time.sleep(0.5 * attempt)

    # ------------------------------------------------------------------------- plumbing
    def _request(self, method: str, path: str, body: Any = None) -> urllib.request.Request:
        full = path if path.startswith(API) else API + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base_url + full, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            # Unredirected: even a redirect handler that follows would not carry the token on.
            request.add_unredirected_header("Authorization", f"Bearer {self.token}")
        return request

    def _call(
        self, method: str, path: str, body: Any = None, timeout_s: float | None = None
    ) -> Any:
        request = self._request(method, path, body)
        with self._open(request, timeout_s) as response:
            raw = response.read()
            status = response.status
            content_type = response.headers.get("Content-Type", "")
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            raise BackendAnswerError(
                not_json_message(self.base_url, status, content_type, raw),
                details=f"{method} {request.full_url}: HTTP {status}, {content_type}\n"
                + raw[:2000].decode("utf-8", "replace"),
                status=status,
            ) from None

    def _open(self, request: urllib.request.Request, timeout_s: float | None):
        try:
            return self._opener.open(request, timeout=timeout_s or self.timeout_s)
        except urllib.error.HTTPError as error:
            raise _http_error(error, request.full_url, self.base_url) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise BackendUnreachableError(
                f"The Ternaus backend at {self.base_url} does not answer ({reason}). Check that "
                "it runs (Settings: start a local backend, or the URL of yours).",
                details=f"{request.get_method()} {request.full_url}: {error!r}",
            ) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect with a message naming where it pointed (the token stays here)."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        fp.close()
        raise BackendAnswerError(
            f"The backend at {self.base_url} answered with a redirect to {newurl}; check the "
            "backend URL in Settings (if the backend really is there, enter that URL). The "
            "plugin does not follow redirects, so the token is never sent on to another address.",
            details=f"{req.get_method()} {req.full_url}: HTTP {code} {msg} -> {newurl}",
            status=code,
        )


def not_json_message(base_url: str, status: int, content_type: str, body: bytes) -> str:
    """What to tell the user when the server at ``base_url`` answered with something not JSON."""
    text = re.sub(r"\s+", " ", body.decode("utf-8", "replace")).strip()
    preview = text[:NOT_JSON_PREVIEW_CHARS]
    return (
        f"The backend at {base_url} answered with something that is not JSON (HTTP {status}, "
        f"{content_type or 'no content type'}, starting with: {preview!r}); check the backend URL "
        "in Settings (a proxy or another web server may be answering there)."
    )


def api_major(version: str) -> int | None:
    """The major number of an API version: ``"v1"``, ``"v1.2"``, ``"1.0"`` -> 1; else None."""
    match = re.fullmatch(r"[vV]?(\d+)(?:\.\d+)*", version.strip())
    return int(match.group(1)) if match else None


def check_api_version(health: dict[str, Any], base_url: str) -> None:
    """``BackendVersionError`` unless ``health["api_version"]`` has :data:`API_VERSION`'s major."""
    given = health.get("api_version")
    ours = api_major(API_VERSION)
    theirs = api_major(str(given)) if given is not None else None
    if theirs == ours:
        return
    backend = f"ternaus {health.get('version', '?')}"
    if given is None:
        said = f"does not say which API version it speaks ({backend}, or not a Ternaus backend)"
    else:
        said = f"speaks API {given} ({backend})"
    if theirs is not None and ours is not None and theirs > ours:
        todo = "Update the plugin (Plugins > Manage and Install Plugins) to one for API " + str(
            given
        )
    else:
        todo = (
            f"Update the backend to one for API {API_VERSION} (Install backend… in the Ternaus "
            "dock, or upgrade ternaus on the backend's machine)"
        )
    raise BackendVersionError(
        f"The backend at {base_url} {said}; this plugin speaks API {API_VERSION}. {todo}, or "
        "update the plugin or the backend so that both speak the same major version.",
        details=json.dumps(health)[:2000],
    )


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.x.x.x``, ``::1``)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_warning(url: str, token: str | None) -> str | None:
    """A warning when ``token`` would travel unencrypted: plain ``http`` to a host that is not
    this machine (None otherwise)."""
    parts = urllib.parse.urlsplit(url.strip())
    if not token or parts.scheme.lower() != "http" or is_loopback_host(parts.hostname or ""):
        return None
    return (
        f"The backend URL {url} is plain http to another machine: the token (and your data) "
        "travel unencrypted and can be read on the network. Use an https URL, or an SSH tunnel "
        "(ssh -L 8765:127.0.0.1:8765 <that machine>, then the URL http://127.0.0.1:8765)."
    )


def token_problem(token: str | None) -> str | None:
    """Why ``token`` cannot be used (None when it can): HTTP headers carry ASCII, and the
    backend compares the header's bytes, so a token is printable ASCII without spaces."""
    if not token:
        return None
    bad = sorted({c for c in token if not "!" <= c <= "~"})
    if not bad:
        return None
    shown = ", ".join("space" if c == " " else repr(c) for c in bad[:5])
    return (
        f"The token contains characters an HTTP header cannot carry ({shown}). Use a token of "
        'ASCII letters, digits and punctuation without spaces (e.g. from: python3 -c "import '
        'secrets; print(secrets.token_urlsafe(32))"), and start the backend with the same token.'
    )


def _http_error(error: urllib.error.HTTPError, url: str, base_url: str) -> Exception:
    """The plugin error for an HTTP error answer, with the backend's JSON message."""
    try:
        raw = error.read()
    except OSError:
        raw = b""
    body = raw.decode("utf-8", "replace")
    message, details = _error_text(body)
    if error.code == 401:
        return BackendAuthError(
            "The Ternaus backend refused the token: set the right token in the plugin's "
            "settings (or let the plugin start its own backend).",
            details=message or body,
        )
    if not message and body.strip() and not _is_json(body):
        return BackendAnswerError(
            not_json_message(
                base_url, error.code, (error.headers or {}).get("Content-Type", ""), raw
            ),
            details=f"HTTP {error.code} from {url}: {body[:2000]}",
            status=error.code,
        )
    if not message:
        message = f"The backend answered HTTP {error.code} ({error.reason})."
    return BackendRequestError(
        message,
        details=details or f"HTTP {error.code} from {url}: {body[:2000]}",
        status=error.code,
    )


def _is_json(body: str) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _error_text(body: str) -> tuple[str, str | None]:
    """``(message, details)`` from the backend's ``{"error": {...}}`` or FastAPI's ``detail``."""
    try:
        data = json.loads(body)
    except ValueError:
        return "", None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message", "")), data["error"].get("details")
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"]), None
    return "", None
