"""The work of the Map check and Changes tabs: a ``compare`` job, or a ``changes`` job (dates given
as images extracted first), run by a :class:`~ternaus_qgis.tasks.job_task.JobTask`."""

from __future__ import annotations

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


@dataclass
class ComparisonOutcome:
    """What the task hands back: the comparison, and the buildings extracted from images."""

    comparison: ComparisonResult
    request: CompareRequest | ChangesRequest
    extracted: dict[str, ExtractionResult] = field(default_factory=dict)


def describe(request: CompareRequest | ChangesRequest) -> str:
    """The task's line in QGIS's task list."""
    if isinstance(request, CompareRequest):
        return f"Ternaus: checking {request.reference_name} against {request.result_name}"
    return f"Ternaus: changes from {request.before_name} to {request.after_name}"


def run_comparison(
    request: CompareRequest | ChangesRequest,
    extractions: dict[str, ExtractionRequest],
    backend: BackendConnection,
    progress: Progress,
) -> ComparisonOutcome:
    """:func:`~ternaus_qgis.core.comparison.run_compare` (a :class:`CompareRequest`) or
    :func:`~ternaus_qgis.core.comparison.run_changes_of_images` (a :class:`ChangesRequest` and
    the extraction requests of the dates given as images); blocking: worker threads only."""
    if isinstance(request, CompareRequest):
        return ComparisonOutcome(run_compare(request, backend, progress), request)
    comparison, extracted = run_changes_of_images(request, extractions, backend, progress)
    return ComparisonOutcome(comparison, request, extracted)
