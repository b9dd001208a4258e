"""JobTask: any work of :mod:`ternaus_qgis.core` that takes a ``Progress``, off the GUI thread.

Extraction, evaluation, training, the map check and changes, *Propose cells to label*, the backend
check and the install differ only in the function they run; the controllers of
:mod:`ternaus_qgis.gui` hand that function (and a description for QGIS's task list) to one
:class:`JobTask`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qgis.PyQt.QtCore import pyqtSignal

from ..core.jobs import Progress
from ..exceptions import TernausPluginError
from .base import TernausTask, log


@dataclass
class JobProgress(Progress):
    """The task's :class:`~ternaus_qgis.core.jobs.Progress`, plus ``partial``: hands an
    intermediate result (e.g. a validated epoch) to the GUI thread."""

    partial: Callable[[Any], None] = lambda _item: None


class JobTask(TernausTask):
    """Runs ``work(progress)`` in a worker thread; ``on_done(result)`` or ``on_error(error)`` then
    run on the GUI thread.

    The progress reports go out as ``stage_changed(percent, stage)``, the partial results as
    ``partial(item)`` (both queued signals); ``progress.cancelled()`` is the task's cancel.
    """

    partial = pyqtSignal(object)

    def __init__(
        self,
        description: str,
        work: Callable[[JobProgress], Any],
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[TernausPluginError], None] | None = None,
    ) -> None:
        super().__init__(description, on_done, on_error)
        self._work = work

    def work(self) -> Any:
        progress = JobProgress(
            report=self.set_stage, cancelled=self.isCanceled, log=log, partial=self.partial.emit
        )
        return self._work(progress)
