"""The largest request body the backend accepts (``TERNAUS_MAX_REQUEST_BYTES``): 413 beyond it.

ASGI middleware, so nothing reads a body that is too large: a ``Content-Length`` above the limit
is refused before the body is read; a body without one (chunked) is read up to the limit only.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ternaus_backend.api.errors import error_response


class RequestSizeLimit:
    """ASGI middleware answering 413 (JSON) to request bodies larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> JSONResponse:
        return error_response(
            413,
            f"The request body ({size}) is larger than this backend accepts ({self.max_bytes:,} "
            "bytes); send paths to files rather than their contents, or start the backend with "
            "a larger TERNAUS_MAX_REQUEST_BYTES.",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.max_bytes:
                await self._too_large(f"{declared:,} bytes")(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # No length given (chunked): read at most max_bytes, then hand the body on.
        chunks: list[Message] = []
        size = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._too_large("over the limit")(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)
