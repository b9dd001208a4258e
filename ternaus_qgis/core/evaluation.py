"""Evaluation of a result layer against a reference layer, as the backend's evaluate job.

:class:`EvaluationRequest` is collected on the GUI thread (layers exported there, see
:mod:`.vector_inputs`); :func:`run_evaluation` runs in a worker thread and returns the scores and
the GeoPackage of error layers (``result`` with ``match`` and ``iou``, ``missed``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backend_process import BackendConnection
from .jobs import Progress, follow_job
from .results import EvaluateResult, parse_result
from .transfer import backend_path, fetch_output, needs_upload

STAGE_TEXT = {"queued": "Waiting for the backend", "evaluate": "Matching buildings"}
STAGE_SPAN = {"evaluate": (10.0, 95.0)}


@dataclass
class EvaluationRequest:
    """Files on the backend's machine, and the names to show."""

    result_path: Path
    reference_path: Path
    out_path: Path
    area_path: Path | None = None
    iou_threshold: float = 0.5
    result_name: str = "result"
    reference_name: str = "reference"


@dataclass
class EvaluationResult:
    """Scores (``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``) and the error layers."""

    result: EvaluateResult
    path: Path
    seconds: float
    request: EvaluationRequest
    layers: list[str] = field(default_factory=lambda: ["result", "missed"])

    @property
    def scores(self) -> dict[str, Any]:
        """The backend's whole result, as JSON."""
        return self.result.raw

    @property
    def summary(self) -> str:
        s = self.result
        return (
            f"F1 {s.f1:.3f} (precision {s.precision:.3f}, recall {s.recall:.3f}; "
            f"{s.tp} matched, {s.fp} false, {s.fn} missed)"
        )


def run_evaluation(
    request: EvaluationRequest, backend: BackendConnection, progress: Progress
) -> EvaluationResult:
    """Run the backend's evaluate job (SpaceNet rules, the code of ``ternaus evaluate``)."""
    started = time.monotonic()
    progress.report(0.0, "Connecting to the backend")
    client, info = backend.client(lambda text: progress.report(0.0, text), progress.cancelled)
    for warning in info.warnings:  # shown once per URL: here when no dock showed it
        progress.log(warning)
    request.out_path.parent.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {
        "pred": backend_path(client, info, request.result_path, "the result layer", progress),
        "truth": backend_path(client, info, request.reference_path, "the reference", progress),
        "iou_threshold": request.iou_threshold,
    }
    if not needs_upload(info):
        body["out"] = str(request.out_path)
    if request.area_path is not None:
        body["area"] = backend_path(client, info, request.area_path, "the area", progress)
    job = client.submit_evaluate(body)
    job = follow_job(client, backend, job, progress, STAGE_TEXT, STAGE_SPAN)
    result = parse_result(job, EvaluateResult)
    return EvaluationResult(
        result=result,
        path=fetch_output(client, info, job, request.out_path)
        or Path(result.out or request.out_path),
        seconds=time.monotonic() - started,
        request=request,
    )
