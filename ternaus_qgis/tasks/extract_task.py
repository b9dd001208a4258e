"""ExtractTask: one extraction (backend start, layer export, job, polling) off the GUI thread."""

from __future__ import annotations

from collections.abc import Callable

from ..backend_process import BackendConnection
from ..core.extraction import ExtractionRequest, ExtractionResult, run_extraction
from ..core.jobs import Progress
from .base import TernausTask, log


class ExtractTask(TernausTask):
    """Runs :func:`~ternaus_qgis.core.extraction.run_extraction`; the dock adds the layer in
    ``on_done`` (GUI thread)."""

    def __init__(
        self,
        request: ExtractionRequest,
        backend: BackendConnection,
        on_done: Callable[[ExtractionResult], None],
        on_error: Callable,
        on_stage: Callable[[float, str], None] | None = None,
    ) -> None:
        super().__init__(
            f"Ternaus: extracting buildings from {request.rgb.name}", on_done, on_error
        )
        self.request = request
        self.backend = backend
        self._on_stage = on_stage

    def work(self) -> ExtractionResult:
        return run_extraction(
            self.request,
            self.backend,
            Progress(report=self._report, cancelled=self.isCanceled, log=log),
        )

    def _report(self, percent: float, stage: str) -> None:
        self.set_stage(percent, stage)
