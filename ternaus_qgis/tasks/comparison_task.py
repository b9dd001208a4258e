"""ComparisonTask: a map check (``compare``) or a changes job (``changes``, images extracted
first) off the GUI thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..backend_process import BackendConnection
from ..core.comparison import (
    ChangesRequest,
    CompareRequest,
    ComparisonResult,
    run_changes_of_images,
    run_compare,
)
from ..core.extraction import ExtractionRequest, ExtractionResult
from ..core.jobs import Progress
from .base import TernausTask, log


@dataclass
class ComparisonOutcome:
    """What the task hands back: the comparison, and the buildings extracted from images."""

    comparison: ComparisonResult
    request: CompareRequest | ChangesRequest
    extracted: dict[str, ExtractionResult] = field(default_factory=dict)


class ComparisonTask(TernausTask):
    """Runs :func:`~ternaus_qgis.core.comparison.run_compare` (a :class:`CompareRequest`) or
    :func:`~ternaus_qgis.core.comparison.run_changes_of_images` (a :class:`ChangesRequest` and
    the extraction requests of the dates given as images); ``on_done`` adds the layers."""

    def __init__(
        self,
        request: CompareRequest | ChangesRequest,
        backend: BackendConnection,
        on_done: Callable[[ComparisonOutcome], None],
        on_error: Callable,
        extractions: dict[str, ExtractionRequest] | None = None,
    ) -> None:
        if isinstance(request, CompareRequest):
            what = f"checking {request.reference_name} against {request.result_name}"
        else:
            what = f"changes from {request.before_name} to {request.after_name}"
        super().__init__(f"Ternaus: {what}", on_done, on_error)
        self.request = request
        self.extractions = dict(extractions or {})
        self.backend = backend

    def work(self) -> ComparisonOutcome:
        progress = Progress(report=self.set_stage, cancelled=self.isCanceled, log=log)
        if isinstance(self.request, CompareRequest):
            return ComparisonOutcome(
                run_compare(self.request, self.backend, progress), self.request
            )
        comparison, extracted = run_changes_of_images(
            self.request, self.extractions, self.backend, progress
        )
        return ComparisonOutcome(comparison, self.request, extracted)
