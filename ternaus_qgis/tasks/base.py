"""A QgsTask whose ``run()`` keeps its error for ``finished()`` (on the GUI thread).

Rules for subclasses, as for any QgsTask: ``work()`` runs in a worker thread, so it must not touch
widgets, the map canvas, ``iface`` or layers of the project (read layers on the GUI thread before
the task starts; create layers in the ``done``/``failed`` callbacks). Keep a reference to a running
task (the dock does), or Python may collect it.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..exceptions import CancelledByUser, TernausPluginError

LOG_TAG = "Ternaus"


def log(message: str, level: Any = Qgis.Info) -> None:
    """A line in QGIS's log panel, tab 'Ternaus'."""
    QgsMessageLog.logMessage(message, LOG_TAG, level)


class TernausTask(QgsTask):
    """Runs ``work()``; then calls ``on_done(result)`` or ``on_error(error)`` on the GUI thread.

    ``error`` is always a :class:`TernausPluginError` (unexpected exceptions are wrapped, with the
    traceback as details); a cancel gives :class:`CancelledByUser`. ``stage_changed(percent,
    stage)`` carries each :meth:`set_stage` to the GUI thread (a queued signal).
    """

    stage_changed = pyqtSignal(float, str)

    def __init__(
        self,
        description: str,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[TernausPluginError], None] | None = None,
        can_cancel: bool = True,
    ) -> None:
        flags = QgsTask.CanCancel if can_cancel else QgsTask.Flags()
        super().__init__(description, flags)
        self.result: Any = None
        self.error: TernausPluginError | None = None
        self.stage = ""
        self._on_done = on_done
        self._on_error = on_error

    def work(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self) -> bool:
        try:
            self.result = self.work()
            return True
        except TernausPluginError as error:
            self.error = error
        except Exception as error:  # noqa: BLE001 - reported to the user, never raised in Qt
            self.error = TernausPluginError(
                f"Unexpected error: {error}. Please report it with the details.",
                details=traceback.format_exc(),
            )
        return False

    def finished(self, ok: bool) -> None:
        # An exception escaping a Qt virtual aborts QGIS: report it in the log instead.
        try:
            if ok:
                if self._on_done is not None:
                    self._on_done(self.result)
                return
            error = self.error or CancelledByUser()  # cancelled before run(), or killed
            if self._on_error is not None:
                self._on_error(error)
        except Exception:  # noqa: BLE001
            log(f"{self.description()}: {traceback.format_exc()}", Qgis.Critical)

    def detach(self) -> None:
        """Forget the callbacks (their widgets are going away) and cancel."""
        self._on_done = self._on_error = None
        self.cancel()

    def set_stage(self, percent: float, stage: str) -> None:
        """Progress from the worker thread: the bar (0-100) and a stage text."""
        percent = max(0.0, min(100.0, percent))
        self.stage = stage
        self.stage_changed.emit(percent, stage)
        self.setProgress(percent)
