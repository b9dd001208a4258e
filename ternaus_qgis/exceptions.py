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


class BackendAnswerError(BackendRequestError):
    """The server at the backend URL answered with something the plugin cannot use: a redirect
    (never followed, so the token stays with the backend) or a body that is not JSON (a proxy's
    error page, another web server). The message names the URL and says to check it."""


class BackendVersionError(TernausPluginError):
    """The backend speaks another major version of the API than this plugin."""


class TokenError(TernausPluginError):
    """The token cannot be sent as an HTTP header (e.g. non-ASCII characters)."""


class JobFailedError(TernausPluginError):
    """A backend job ended in failure (its message says why)."""


class TrainingStoppedError(JobFailedError):
    """A training job ended failed or interrupted (e.g. the backend was killed) after it had
    saved a validated model and its checkpoint: the best model so far can be used, or the
    training resumed from the checkpoint.

    ``model_path``: the best model so far; ``checkpoint_path``: its resumable checkpoint;
    ``resume_payload``: the body of the stopped job's ``POST /v1/jobs/train`` (resubmitted with
    ``resume: true``); ``best_epoch``/``best_f1``: what the model is (None when unknown).
    """

    def __init__(
        self,
        message: str,
        details: str | None,
        model_path,
        checkpoint_path,
        resume_payload: dict,
        best_epoch: int | None = None,
        best_f1: float | None = None,
    ) -> None:
        super().__init__(message, details)
        self.model_path = model_path
        self.checkpoint_path = checkpoint_path
        self.resume_payload = resume_payload
        self.best_epoch = best_epoch
        self.best_f1 = best_f1


class LayerError(TernausPluginError):
    """A layer cannot be used as asked (wrong band count, not readable, not exportable)."""


class CancelledByUser(TernausPluginError):
    """The user cancelled the work."""

    def __init__(self, message: str = "Cancelled.", details: str | None = None) -> None:
        super().__init__(message, details)
