"""EvaluateTask: one evaluation job off the GUI thread."""

from __future__ import annotations

from collections.abc import Callable

from ..backend_process import BackendConnection
from ..core.evaluation import EvaluationRequest, EvaluationResult, run_evaluation
from ..core.jobs import Progress
from .base import TernausTask, log


class EvaluateTask(TernausTask):
    """Runs :func:`~ternaus_qgis.core.evaluation.run_evaluation`; ``on_done`` adds the layers."""

    def __init__(
        self,
        request: EvaluationRequest,
        backend: BackendConnection,
        on_done: Callable[[EvaluationResult], None],
        on_error: Callable,
    ) -> None:
        super().__init__(
            f"Ternaus: evaluating {request.result_name} against {request.reference_name}",
            on_done,
            on_error,
        )
        self.request = request
        self.backend = backend

    def work(self) -> EvaluationResult:
        return run_evaluation(
            self.request,
            self.backend,
            Progress(report=self.set_stage, cancelled=self.isCanceled, log=log),
        )
