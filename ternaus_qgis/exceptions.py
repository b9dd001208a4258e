"""The plugin's errors: each carries a user message (what went wrong, what to do) and details.

The dock and the Processing algorithms show ``message`` (message bar, feedback) and keep
``details`` behind a "Details" action or in the log; nothing reaches the user as a traceback.
"""

from __future__ import annotations


class TernausPluginError(Exception):
    """Base of every error the plugin reports to the user."""

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BackendMissingError(TernausPluginError):
    """No ``ternaus`` executable could be found to start a local backend."""


class InstallError(TernausPluginError):
    """Installing the backend from the plugin failed (the details hold the log's last lines)."""


class BackendStartError(TernausPluginError):
    """The local backend was started but never became ready."""


class BackendUnreachableError(TernausPluginError):
    """The backend does not answer (not running, died, wrong URL)."""


class BackendAuthError(TernausPluginError):
    """The backend refused the token."""


class BackendRequestError(TernausPluginError):
    """The backend answered a request with an error (its JSON message is the user message)."""

    def __init__(self, message: str, details: str | None = None, status: int = 0) -> None:
        super().__init__(message, details)
        self.status = status


class JobFailedError(TernausPluginError):
    """A backend job ended in failure (its message says why)."""


class LayerError(TernausPluginError):
    """A layer cannot be used as asked (wrong band count, not readable, not exportable)."""


class CancelledByUser(TernausPluginError):
    """The user cancelled the work."""

    def __init__(self, message: str = "Cancelled.", details: str | None = None) -> None:
        super().__init__(message, details)
