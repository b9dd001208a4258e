"""The backend's error hierarchy.

Every error the user can cause carries a one-line ``message`` that says what went wrong and what
to do next, plus optional ``details`` for logs. The CLI prints ``message`` (never a traceback) and
the HTTP API maps ``http_status`` to a JSON body.
"""

from __future__ import annotations


class TernausError(Exception):
    """Base class of all expected backend errors."""

    http_status: int = 400

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InputError(TernausError):
    """Bad user input: wrong paths, band counts, CRS, extents, files that cannot be read."""


class ModelError(TernausError):
    """A model file that cannot be loaded or does not fit the request."""

    http_status = 422


class LabelError(TernausError):
    """Training labels that cannot be used (no polygons in the training area, unreadable file)."""

    http_status = 422


class CancelledError(TernausError):
    """The user cancelled a long job; whatever was finished is kept."""

    http_status = 409


class DiskFullError(TernausError):
    """A disk filled up while a file (a model, a checkpoint, a result) was being written."""

    http_status = 507
