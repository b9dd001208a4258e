"""LabelCellsTask: the Train tab's *Propose cells to label* off the GUI thread."""

from __future__ import annotations

from collections.abc import Callable

from ..backend_process import BackendConnection
from ..core.jobs import Progress
from ..core.labelling import LabelCellsRequest, LabelCellsResult, run_label_cells
from .base import TernausTask, log


class LabelCellsTask(TernausTask):
    """Runs :func:`~ternaus_qgis.core.labelling.run_label_cells`; ``on_done`` adds the layer."""

    def __init__(
        self,
        request: LabelCellsRequest,
        backend: BackendConnection,
        on_done: Callable[[LabelCellsResult], None],
        on_error: Callable,
    ) -> None:
        super().__init__(f"Ternaus: where to label in {request.rgb.name}", on_done, on_error)
        self.request = request
        self.backend = backend

    def work(self) -> LabelCellsResult:
        progress = Progress(report=self.set_stage, cancelled=self.isCanceled, log=log)
        return run_label_cells(self.request, self.backend, progress)
