"""TrainTask: one training job off the GUI thread; epochs reach the dock as they arrive."""

from __future__ import annotations

from collections.abc import Callable

from qgis.PyQt.QtCore import pyqtSignal

from ..backend_process import BackendConnection
from ..core.jobs import Progress
from ..core.training import EpochPoint, TrainingRequest, TrainingResult, run_training
from .base import TernausTask, log


class TrainTask(TernausTask):
    """Runs :func:`~ternaus_qgis.core.training.run_training`; ``epoch_done`` carries each
    validated epoch to the GUI thread (a queued signal)."""

    epoch_done = pyqtSignal(object)

    def __init__(
        self,
        request: TrainingRequest,
        backend: BackendConnection,
        on_done: Callable[[TrainingResult], None],
        on_error: Callable,
    ) -> None:
        super().__init__(f"Ternaus: training {request.name}", on_done, on_error)
        self.request = request
        self.backend = backend

    def work(self) -> TrainingResult:
        return run_training(
            self.request,
            self.backend,
            Progress(report=self.set_stage, cancelled=self.isCanceled, log=log),
            on_epoch=self._epoch,
        )

    def _epoch(self, point: EpochPoint) -> None:
        self.epoch_done.emit(point)
