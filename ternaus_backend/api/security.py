"""Who may talk to the backend: a bearer token when one is set, loopback host names otherwise.

Implemented as ASGI middleware so it also covers the OpenAPI document and the docs page.

* With a token, every request except ``GET /v1/health`` needs ``Authorization: Bearer <token>``
  (401 otherwise).
* Without a token, the backend is meant for loopback only: requests must be addressed to a
  loopback name (``127.0.0.1``, ``localhost``, ``[::1]``); others get 403. This stops web pages
  from reaching the backend through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from ternaus_backend.api.errors import error_response

OPEN_PATHS = frozenset({"/v1/health"})


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.x.x.x``, ``::1``)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The host part of a Host header (``[::1]:8765`` -> ``::1``, ``a:80`` -> ``a``)."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class AccessGuard:
    """ASGI middleware enforcing the token (when set) or loopback host names (when not)."""

    def __init__(self, app: ASGIApp, token: str | None, open_paths: Iterable[str] = OPEN_PATHS):
        self.app = app
        self.token = token
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = self._problem(scope)
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _header(self, scope: Scope, name: bytes) -> str:
        for key, value in scope.get("headers", ()):
            if key.lower() == name:
                return value.decode("latin-1")
        return ""

    def _problem(self, scope: Scope):
        if self.token is None:
            host = host_name(self._header(scope, b"host"))
            if host and not is_loopback(host):
                return error_response(
                    403,
                    f"This backend has no token, so it only answers requests addressed to "
                    f"127.0.0.1 or localhost (this one was addressed to {host!r}). Start it with "
                    "--token (or TERNAUS_TOKEN) to accept other host names.",
                )
            return None
        if scope.get("path") in self.open_paths:
            return None
        scheme, _, given = self._header(scope, b"authorization").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            return None
        return error_response(
            401,
            "This backend needs a token: send the header 'Authorization: Bearer <token>' with the "
            "token it was started with (--token or TERNAUS_TOKEN).",
            "the token is missing" if not scheme else "the token does not match",
            headers={"WWW-Authenticate": "Bearer"},
        )
