"""The backend's HTTP client: the only module of the plugin that speaks HTTP.

Blocking calls (standard library ``urllib``) meant for worker threads: ``QgsTask.run()`` and
Processing algorithms, never the GUI thread. Errors become :mod:`.exceptions` with the backend's
own JSON message, so the user reads what the backend says to do.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .exceptions import (
    BackendAuthError,
    BackendRequestError,
    BackendUnreachableError,
    CancelledByUser,
)

API = "/v1"
#: Attempts per upload chunk before the upload fails (a chunk, not the file, is sent again).
CHUNK_ATTEMPTS = 4


class BackendClient:
    """JSON calls to one backend (``base_url`` like ``http://127.0.0.1:8765``)."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith(API):
            self.base_url = self.base_url[: -len(API)]
        self.token = token or None
        self.timeout_s = timeout_s
        # Proxies never apply to our backend: a loopback backend behind a proxy would not answer.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ------------------------------------------------------------------------- endpoints
    def health(self, timeout_s: float | None = None) -> dict[str, Any]:
        """``GET /v1/health``: version, device, default model."""
        return self._call("GET", "/health", timeout_s=timeout_s)

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
            request.add_header("Authorization", f"Bearer {self.token}")
        return request

    def _call(
        self, method: str, path: str, body: Any = None, timeout_s: float | None = None
    ) -> Any:
        request = self._request(method, path, body)
        with self._open(request, timeout_s) as response:
            raw = response.read()
        return json.loads(raw.decode("utf-8")) if raw else None

    def _open(self, request: urllib.request.Request, timeout_s: float | None):
        try:
            return self._opener.open(request, timeout=timeout_s or self.timeout_s)
        except urllib.error.HTTPError as error:
            raise _http_error(error, request.full_url) from None
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


def _http_error(error: urllib.error.HTTPError, url: str) -> Exception:
    """The plugin error for an HTTP error answer, with the backend's JSON message."""
    try:
        body = error.read().decode("utf-8", "replace")
    except OSError:
        body = ""
    message, details = _error_text(body)
    if error.code == 401:
        return BackendAuthError(
            "The Ternaus backend refused the token: set the right token in the plugin's "
            "settings (or let the plugin start its own backend).",
            details=message or body,
        )
    if not message:
        message = f"The backend answered HTTP {error.code} ({error.reason})."
    return BackendRequestError(
        message,
        details=details or f"HTTP {error.code} from {url}: {body[:2000]}",
        status=error.code,
    )


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
