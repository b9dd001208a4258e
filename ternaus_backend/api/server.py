"""``serve()``: run the backend's HTTP app with uvicorn (behind ``ternaus serve``)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from pydantic import ValidationError

from ternaus_backend.api.security import is_loopback
from ternaus_backend.errors import InputError, TernausError
from ternaus_backend.network_files import ALLOW_NETWORK_ENV
from ternaus_backend.scratch import pid_alive
from ternaus_backend.settings import Settings


def check_exposure(host: str, token: str | None) -> None:
    """Refuses to listen beyond loopback without a token."""
    if not is_loopback(host) and not token:
        raise TernausError(
            f"Listening on {host} makes the backend reachable from other machines; that needs a "
            "token: pass --token SECRET (or set TERNAUS_TOKEN), or listen on 127.0.0.1."
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; TernausError when the port is taken."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        return socket.create_server(info[4][:2], family=info[0])
    except OSError as error:
        raise TernausError(
            f"Cannot listen on {host}:{port} ({error.strerror or error}); the port may be in use "
            "(another backend?): stop that, or pass another --port.",
            details=str(error),
        ) from error


def make_settings(
    host: str | None = None,
    port: int | None = None,
    token: str | None = None,
    allow_network_files: bool | None = None,
    allowed_dirs: list[str] | None = None,
    dask_scheduler: str | None = None,
) -> Settings:
    """Settings from the environment, with the given (non-None) values taking precedence."""
    given = {
        "host": host,
        "port": port,
        "token": token,
        "allow_network_files": allow_network_files,
        "allowed_dirs": allowed_dirs,
        "dask_scheduler": dask_scheduler,
    }
    try:
        return Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())) or "setting"
        if name == "token":  # never echo a secret
            raise InputError(
                f"Invalid token (--token or TERNAUS_TOKEN): {first.get('msg')}.",
            ) from None
        raise InputError(
            f"Invalid {name} {first.get('input')!r}: {first.get('msg')} (--{name} or "
            f"TERNAUS_{name.upper()}); the port is a number from 0 to 65535.",
            details=str(exc),
        ) from exc


def watch_parent(pid: int, interval_s: float = 1.0) -> threading.Thread:
    """A daemon thread that stops this server (SIGTERM to itself, as Ctrl-C would) once ``pid``
    has ended or this process was re-parented: the backend never outlives the QGIS that started
    it, even when QGIS crashes."""
    original_parent = os.getppid()

    def watch() -> None:
        while pid_alive(pid) and os.getppid() == original_parent:
            time.sleep(interval_s)
        logging.getLogger("uvicorn.error").info("parent process %d ended: stopping", pid)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def serve(
    host: str | None = None,
    port: int | None = None,
    token: str | None = None,
    parent_pid: int | None = None,
    allow_network_files: bool | None = None,
    allowed_dirs: list[str] | None = None,
    dask_scheduler: str | None = None,
) -> None:
    """Serve the API until stopped; Ctrl-C (or SIGTERM) cancels unfinished jobs and returns.

    ``None`` takes the value from TERNAUS_HOST / TERNAUS_PORT / TERNAUS_TOKEN, else
    127.0.0.1, 8765 and no token. With ``parent_pid`` the server stops when that process ends.
    ``allowed_dirs``: the folders requests may name besides the backend's own (None: from
    TERNAUS_ALLOWED_DIRS, else the user's home and the temporary folder); ``dask_scheduler``:
    the cluster jobs run on (None: TERNAUS_DASK_SCHEDULER, else none).
    The first line on stdout is ``TERNAUS_BACKEND_READY <url>`` once the port is bound. Raises
    TernausError for a non-loopback host without a token or a port that is in use.
    """
    import uvicorn

    from ternaus_backend.api.main import create_app

    settings = make_settings(host, port, token, allow_network_files, allowed_dirs, dask_scheduler)
    check_exposure(settings.host, settings.token_value())
    if settings.allow_network_files:  # the pipeline reads the variable in this process
        os.environ[ALLOW_NETWORK_ENV] = "1"
    app = create_app(settings)
    sock = bind(settings.host, settings.port)
    actual_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host=settings.host, port=actual_port, log_level="info", timeout_graceful_shutdown=10
    )
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    logging.getLogger("uvicorn.error").info(
        "Ternaus backend on http://%s:%d/v1 (docs: /v1/docs; jobs in %s; token %s)",
        shown_host,
        actual_port,
        settings.work_dir,
        "required" if settings.token else "not required",
    )
    print(f"TERNAUS_BACKEND_READY http://{shown_host}:{actual_port}/v1", flush=True)
    if parent_pid is not None:
        watch_parent(parent_pid)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down cleanly and re-raised it
        pass
    finally:
        sock.close()
