"""HTTP-specific errors and the handlers that turn every error into ``{"error": {...}}`` JSON.

Bodies always have the shape of :class:`~ternaus_backend.api.schemas.ErrorOut`: a ``message``
that says what to do next and optional ``details`` for logs.
"""

from __future__ import annotations

import errno
import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ternaus_backend.errors import TernausError

log = logging.getLogger(__name__)


class ForbiddenPathError(TernausError):
    """A path outside the folders the backend may use, or a download that is not a job's file."""

    http_status = 403


class TooManyJobsError(TernausError):
    """The queue of waiting jobs is full."""

    http_status = 429


class NotFoundError(TernausError):
    """A job, file or model that the request names does not exist."""

    http_status = 404


class ConflictError(TernausError):
    """The request does not fit the job's current state (e.g. a result before it is ready)."""

    http_status = 409


class TooManyUploadsError(TernausError):
    """Too many uploads are unfinished."""

    http_status = 429


class InsufficientStorageError(TernausError):
    """The disk has no room for what the request asks to store."""

    http_status = 507


class UploadTooLargeError(TernausError):
    """An upload larger than the room left on the backend's disk (a request the backend cannot
    take, not a failure of the server)."""

    http_status = 413


class GoneError(TernausError):
    """A result file that existed has since been removed."""

    http_status = 410


def error_response(
    status: int, message: str, details: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error body every failing request gets."""
    body = {"error": {"message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "request body"


async def _ternaus_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TernausError)
    return error_response(exc.http_status, exc.message, exc.details)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{_field(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in exc.errors()
    ]
    message = (
        f"Invalid request: {'; '.join(problems[:3])}"
        f"{f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''}. "
        "Fix the request and send it again (the schemas are in /v1/openapi.json)."
    )
    return error_response(422, message, "\n".join(problems))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"No such endpoint: {request.url.path}. See /v1/docs for the API."
    elif exc.status_code == 405:
        message = (
            f"{request.method} is not allowed on {request.url.path}. See /v1/docs for the API."
        )
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, None, getattr(exc, "headers", None))


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == 13 or "disk is full" in str(exc)
    return False


def disk_full_error(exc: BaseException, where: str | None = None) -> InsufficientStorageError:
    """The 507 error of a full disk, naming the file or folder when known."""
    place = where or getattr(exc, "filename", None) or "the backend's work folder"
    return InsufficientStorageError(
        f"The disk holding {place} is full; free space there (or delete old jobs and uploads: "
        "DELETE /v1/jobs/{id}, DELETE /v1/uploads/{id}), then send the request again.",
        details=f"{type(exc).__name__}: {exc}",
    )


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    if is_disk_full(exc):
        log.warning("disk full in %s %s: %s", request.method, request.url.path, exc)
        error = disk_full_error(exc)
        return error_response(error.http_status, error.message, error.details)
    return await _unexpected_error(request, exc)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return error_response(
        500,
        "The backend hit an unexpected error; see its log, and report the problem if it repeats.",
        f"{type(exc).__name__}: {exc}",
    )


def add_exception_handlers(app: FastAPI) -> None:
    """Map TernausError, validation errors, HTTP errors and bugs to JSON error bodies."""
    app.add_exception_handler(TernausError, _ternaus_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(sqlite3.Error, _os_error)
    app.add_exception_handler(Exception, _unexpected_error)
