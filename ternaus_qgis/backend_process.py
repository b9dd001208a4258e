"""The backend the plugin talks to: a local ``ternaus serve`` it starts and stops, or a remote URL.

Local mode: the ``ternaus`` executable is found from, in order, the plugin setting
``backend/command``, the environment variable ``TERNAUS_BACKEND``, the path ``make deploy``
recorded beside the plugin (``backend_path.txt``), a checkout's ``.venv/bin/ternaus`` when the
plugin runs from the checkout, and last the environment the plugin's "Install backend…" made
(:mod:`~ternaus_qgis.core.installer`; setting ``backend/venv``, default
``<QGIS profile>/ternaus/backend-venv``): explicit choices first, so installing never shadows a
backend the user pointed to or deployed. It is started as
``ternaus serve --port 0 --parent-pid <QGIS>`` on
127.0.0.1 with a random token for this QGIS session (passed in the environment, not on the command
line where other users could read it). The plugin reads the URL it prints, waits for
``/v1/health``, restarts it when it died, and stops it when the plugin unloads or QGIS quits; the
backend also stops by itself when QGIS ends (``--parent-pid``), so it never outlives QGIS.

Everything here may block (process start, health polling) and runs in worker threads (tasks,
Processing), never on the GUI thread.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import settings
from .client import BackendClient, plain_http_warning
from .core import installer
from .exceptions import (
    BackendMissingError,
    BackendStartError,
    BackendUnreachableError,
    BackendVersionError,
    CancelledByUser,
)

PLUGIN_DIR = Path(__file__).resolve().parent
#: Written by ``make deploy``: the path of the checkout's ``ternaus`` executable.
RECORDED_PATH_FILE = PLUGIN_DIR / "backend_path.txt"
#: Where the finder says an installed backend came from.
INSTALLED_ORIGIN = "the backend installed by the plugin"
READY_LINE = re.compile(r"TERNAUS_BACKEND_READY (\S+)")
#: Seconds a starting backend may take to answer /v1/health (torch import on a busy CPU).
START_TIMEOUT_S = 120.0


def installed_venv_dir() -> Path:
    """Where "Install backend…" puts the backend's environment (setting ``backend/venv``, default
    ``<QGIS profile>/ternaus/backend-venv``)."""
    chosen = settings.get("backend/venv")
    if chosen:
        return Path(chosen).expanduser()
    from qgis.core import QgsApplication

    return installer.default_venv_dir(QgsApplication.qgisSettingsDirPath())


def find_backend_command() -> tuple[Path, str]:
    """``(path, origin)`` of the ``ternaus`` executable; ``BackendMissingError`` if none.

    Order: the plugin setting, ``TERNAUS_BACKEND``, the path ``make deploy`` recorded, a checkout's
    ``.venv`` when the plugin runs from the checkout, the backend "Install backend…" installed.
    """
    candidates: list[tuple[str, str]] = [
        (settings.get("backend/command"), "the plugin setting"),
        (os.environ.get("TERNAUS_BACKEND", ""), "TERNAUS_BACKEND"),
    ]
    if RECORDED_PATH_FILE.is_file():
        candidates.append((RECORDED_PATH_FILE.read_text().strip(), "the path make deploy recorded"))
    checkout_venv = PLUGIN_DIR.parent / ".venv"  # when the plugin runs from a checkout
    candidates.append((str(installer.backend_executable(checkout_venv)), "the checkout's .venv"))
    tried = []
    for value, origin in candidates:
        if not value:
            continue
        path = Path(value).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path, origin
        tried.append(f"{origin}: {path}")
    venv = installed_venv_dir()
    installed = installer.installed_backend(venv)
    if installed is not None:
        return installed, INSTALLED_ORIGIN
    tried.append(f"{INSTALLED_ORIGIN}: {venv} (none, or not complete)")
    raise BackendMissingError(
        "The Ternaus backend is not installed or not found. Press 'Install backend…' in the "
        "Ternaus dock to install it (a few minutes, about 1-3 GB on disk), or set the path of "
        "an existing 'ternaus' executable in the plugin settings (or TERNAUS_BACKEND; in a "
        "Ternaus checkout, make deploy records it).",
        details="Looked at:\n" + "\n".join(tried),
    )


@dataclass
class BackendInfo:
    """What the backend said about itself (``GET /v1/health``), and how it was reached."""

    url: str
    local: bool
    health: dict[str, Any] = field(default_factory=dict)
    #: Warnings not shown yet for this URL (e.g. a token over plain http): the dock shows them.
    warnings: list[str] = field(default_factory=list)

    @property
    def device_text(self) -> str:
        """``"CUDA: <GPU name>"`` or ``"CPU"``."""
        if self.health.get("device") == "cuda":
            return f"CUDA: {self.health.get('gpu_name') or 'GPU'}"
        return "CPU"


class LocalBackend:
    """One ``ternaus serve`` child process, started on demand and stopped with the plugin."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._process: subprocess.Popen | None = None
        self._token = secrets.token_urlsafe(24)
        self._url: str | None = None
        self._log_path: Path | None = None
        self._log_file: Any = None
        self.restarts = 0

    @property
    def process(self) -> subprocess.Popen | None:
        return self._process

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_code(self, wait_s: float = 0.0) -> int | None:
        """The process's exit code, ``None`` while it runs (waiting up to ``wait_s`` for it to
        end: a killed process is reaped a moment after its connections drop)."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=wait_s) if wait_s > 0 else self._process.poll()
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the backend printed (for error details)."""
        if self._log_path is None or not self._log_path.is_file():
            return ""
        text = self._log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def client(
        self,
        report: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> tuple[BackendClient, BackendInfo]:
        """A client of a running backend: starts it (again) when it is not running."""
        with self._lock:
            if self.is_running() and self._url:
                client = BackendClient(self._url, self._token)
                try:
                    return client, BackendInfo(self._url, True, client.health(timeout_s=5))
                except BackendUnreachableError:
                    self.stop()
            elif self._process is not None:  # it ran and died
                self.restarts += 1
            return self._start(report or (lambda _text: None), cancelled or (lambda: False))

    def _start(
        self, report: Callable[[str], None], cancelled: Callable[[], bool]
    ) -> tuple[BackendClient, BackendInfo]:
        command, origin = find_backend_command()
        self.stop()  # a dead process: forget its URL, close its log
        report(f"Starting the backend ({command})")
        log_dir = Path(tempfile.gettempdir()) / f"ternaus-qgis-{os.getpid()}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = log_dir / f"backend-{self.restarts}.log"
        self._log_file = open(self._log_path, "w", encoding="utf-8")  # noqa: SIM115 (kept open)
        env = dict(
            installer.clean_env() if origin == INSTALLED_ORIGIN else os.environ,
            TERNAUS_TOKEN=self._token,
            TERNAUS_HOST="127.0.0.1",
            TERNAUS_MODELS_DIR=str(settings.models_folder()),
        )
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Only this QGIS talks to this backend (loopback, a token of its own): it may read the
        # layers the user opens wherever they are; system folders stay refused by the backend.
        env.setdefault("TERNAUS_ALLOWED_DIRS", str(Path(os.path.abspath(os.sep))))
        args = [str(command), "serve", "--host", "127.0.0.1", "--port", "0"]
        args += ["--parent-pid", str(os.getpid())]
        try:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=sys.platform != "win32",
            )
        except OSError as error:
            raise BackendStartError(
                f"The backend at {command} (from {origin}) could not be started: {error}. "
                "Check the path in the plugin settings.",
                details=repr(error),
            ) from None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if cancelled():
                self.stop()
                raise CancelledByUser("Cancelled while the backend was starting.")
            if self._process.poll() is not None:
                raise BackendStartError(
                    f"The backend stopped while starting (exit code {self._process.returncode}). "
                    "Its messages are in the details; run 'ternaus serve' in a terminal to check "
                    "the installation.",
                    details=self.log_tail(),
                )
            self._url = self._url or self._url_from_log()
            if self._url:
                client = BackendClient(self._url, self._token)
                try:
                    health = client.health(timeout_s=2)
                except BackendUnreachableError:
                    pass
                except BackendVersionError:
                    self.stop()  # a backend of another API: never used, not left running
                    raise
                else:
                    report(f"Backend ready at {self._url}")
                    return client, BackendInfo(self._url, True, health)
            time.sleep(0.2)
        self.stop()
        raise BackendStartError(
            f"The backend did not answer within {START_TIMEOUT_S:.0f} s of starting. Its messages "
            "are in the details.",
            details=self.log_tail(),
        )

    def _url_from_log(self) -> str | None:
        if self._log_path is None:
            return None
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return None
        match = READY_LINE.search(text)
        return match.group(1) if match else None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the backend (SIGTERM, then kill after ``timeout_s``); cancels its jobs."""
        with self._lock:
            process, self._process, self._url = self._process, None, None
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None


class BackendConnection:
    """The backend as the settings say: the local child process or a remote URL + token."""

    def __init__(self) -> None:
        self.local = LocalBackend()

    def client(
        self,
        report: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> tuple[BackendClient, BackendInfo]:
        """A client of a backend that answers ``/v1/health`` (starting the local one if needed)."""
        if settings.get("backend/mode") == "remote":
            url = settings.get("backend/url")
            token = settings.get("backend/token") or None
            client = BackendClient(url, token)
            info = BackendInfo(url, False, client.health(timeout_s=10))
            warning = unshown_warning(plain_http_warning(url, token), url)
            if warning:
                info.warnings.append(warning)
            return client, info
        return self.local.client(report, cancelled)

    def describe_death(self, wait_s: float = 0.0) -> str | None:
        """A sentence when the local backend has died (``None`` while it runs or in remote mode);
        ``wait_s``: how long to wait for a backend that stopped answering to be seen ending."""
        if settings.get("backend/mode") == "remote" or self.local.process is None:
            return None
        code = self.local.exit_code(wait_s)
        if code is None:
            return None
        return f"The backend stopped (exit code {code}); the next run starts it again."

    def stop(self) -> None:
        self.local.stop()


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def unshown_warning(text: str | None, url: str) -> str | None:
    """``text`` the first time it is given for ``url`` (then also in QGIS's log, tab Ternaus),
    None afterwards: each warning is shown once per URL and QGIS session."""
    if not text:
        return None
    with _warned_lock:
        if (url, text) in _warned:
            return None
        _warned.add((url, text))
    from qgis.core import Qgis, QgsMessageLog

    QgsMessageLog.logMessage(text, "Ternaus", Qgis.Warning)
    return text


_connection: BackendConnection | None = None
_connection_lock = threading.Lock()


def connection() -> BackendConnection:
    """The one backend connection of this QGIS process (shared by the dock and Processing)."""
    global _connection
    with _connection_lock:
        if _connection is None:
            _connection = BackendConnection()
            atexit.register(_connection.stop)
        return _connection


def shutdown() -> None:
    """Stop the local backend, if one was started (plugin unload, QGIS quit)."""
    global _connection
    with _connection_lock:
        if _connection is not None:
            _connection.stop()
