"""What the Processing algorithms share: progress from their feedback, errors as Processing's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from qgis.core import QgsProcessingException, QgsProcessingFeedback

from ..core.jobs import Progress
from ..exceptions import TernausPluginError


def feedback_progress(feedback: QgsProcessingFeedback) -> Progress:
    """A :class:`Progress` that reports to (and is cancelled by) Processing's feedback."""

    def report(percent: float, text: str) -> None:
        feedback.setProgress(percent)
        feedback.setProgressText(text)

    return Progress(report=report, cancelled=feedback.isCanceled, log=feedback.pushInfo)


@contextmanager
def user_errors(feedback: QgsProcessingFeedback) -> Iterator[None]:
    """Plugin errors become QgsProcessingException (the message), details go to the log."""
    try:
        yield
    except TernausPluginError as error:
        if error.details:
            feedback.reportError(error.details)
        raise QgsProcessingException(error.message) from None
