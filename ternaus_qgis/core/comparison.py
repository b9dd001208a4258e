"""Two building layers compared by the backend: a result against a map (``compare``: what the
map is missing, and its offset) and two dates (``changes``: new, demolished, changed).

The requests are collected on the GUI thread (layers exported there, see :mod:`.vector_inputs`);
:func:`run_compare` and :func:`run_changes` run in a worker thread and return the counts and the
GeoPackage of layers (``unmapped``, ``unseen``, ``offsets``; ``new``, ``demolished``,
``changed``). :func:`run_changes_of_images` first extracts the buildings of a date given as an
image (the extraction job of :mod:`.extraction`), then runs the changes job on them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backend_process import BackendConnection
from ..client import BackendClient
from .extraction import ExtractionRequest, ExtractionResult, run_extraction
from .jobs import Progress, follow_job
from .results import ChangesResult, CompareResult, parse_result
from .transfer import backend_path, fetch_output, needs_upload

STAGE_TEXT = {
    "queued": "Waiting for the backend",
    "compare": "Matching buildings with the map",
    "changes": "Matching the two dates' buildings",
}
STAGE_SPAN = {"compare": (10.0, 95.0), "changes": (10.0, 95.0)}
COMPARE_LAYERS = ["unmapped", "unseen", "offsets"]
CHANGES_LAYERS = ["new", "demolished", "changed"]


@dataclass
class CompareRequest:
    """Our result and a map's buildings (files on this machine), and the names to show."""

    result_path: Path
    reference_path: Path
    out_path: Path
    area_path: Path | None = None
    iou_threshold: float = 0.3
    cell_m: float = 250.0
    result_name: str = "result"
    reference_name: str = "map"


@dataclass
class ChangesRequest:
    """Two dates' building layers (files on this machine), and the names to show."""

    before_path: Path
    after_path: Path
    out_path: Path
    area_path: Path | None = None
    change_iou: float = 0.7
    match_iou: float = 0.3
    before_name: str = "before"
    after_name: str = "after"


@dataclass
class ComparisonResult:
    """The backend's summary (counts, offset), the GeoPackage and its layers."""

    kind: str
    result: CompareResult | ChangesResult
    path: Path
    seconds: float
    layers: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        """The backend's whole result, as JSON."""
        return self.result.raw

    @property
    def text(self) -> str:
        """One line for the user."""
        s = self.result
        if isinstance(s, ChangesResult):
            return (
                f"{s.new} new, {s.demolished} demolished, {s.changed} changed, "
                f"{s.unchanged} unchanged"
            )
        offset = s.offset
        where = (
            f"the buildings lie {offset.dx_m:+.2f} m east, {offset.dy_m:+.2f} m north of "
            f"the map's (median of {offset.pairs} pairs): shift the map by that"
            if offset
            else "no building matched: no offset"
        )
        return (
            f"{s.unmapped} buildings seen and not on the map, {s.unseen} on the map and "
            f"not seen, {s.matched} matched; {where}"
        )


def run_compare(
    request: CompareRequest, backend: BackendConnection, progress: Progress
) -> ComparisonResult:
    """Run the backend's compare job (the code of ``ternaus compare``)."""

    def body(client: BackendClient, info) -> dict[str, Any]:
        return {
            "pred": backend_path(client, info, request.result_path, "the result layer", progress),
            "reference": backend_path(
                client, info, request.reference_path, "the map's buildings", progress
            ),
            "iou_threshold": request.iou_threshold,
            "cell_m": request.cell_m,
        }

    return _run(
        "compare", body, request.area_path, request.out_path, backend, progress, COMPARE_LAYERS
    )


def run_changes(
    request: ChangesRequest, backend: BackendConnection, progress: Progress
) -> ComparisonResult:
    """Run the backend's changes job (the code of ``ternaus changes``)."""

    def body(client: BackendClient, info) -> dict[str, Any]:
        return {
            "before": backend_path(
                client, info, request.before_path, "the earlier layer", progress
            ),
            "after": backend_path(client, info, request.after_path, "the later layer", progress),
            "match_iou": request.match_iou,
            "change_iou": request.change_iou,
        }

    return _run(
        "changes", body, request.area_path, request.out_path, backend, progress, CHANGES_LAYERS
    )


def _run(
    kind: str,
    make_body: Callable[[BackendClient, Any], dict[str, Any]],
    area_path: Path | None,
    out_path: Path,
    backend: BackendConnection,
    progress: Progress,
    layers: list[str],
) -> ComparisonResult:
    started = time.monotonic()
    progress.report(0.0, "Connecting to the backend")
    client, info = backend.client(lambda text: progress.report(0.0, text), progress.cancelled)
    for warning in info.warnings:  # shown once per URL: here when no dock showed it
        progress.log(warning)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    body = make_body(client, info)
    if not needs_upload(info):
        body["out"] = str(out_path)
    if area_path is not None:
        body["area"] = backend_path(client, info, area_path, "the area", progress)
    submit = client.submit_compare if kind == "compare" else client.submit_changes
    job = follow_job(client, backend, submit(body), progress, STAGE_TEXT, STAGE_SPAN)
    result = parse_result(job, CompareResult if kind == "compare" else ChangesResult)
    for warning in result.warnings:
        progress.log(warning)
    return ComparisonResult(
        kind=kind,
        result=result,
        path=fetch_output(client, info, job, out_path) or Path(result.out or out_path),
        seconds=time.monotonic() - started,
        layers=layers,
    )


def scaled_progress(progress: Progress, low: float, high: float, prefix: str = "") -> Progress:
    """``progress`` seen through a part of the bar (``low``-``high`` percent), the stage text
    prefixed (e.g. ``"Earlier image: "``), one step of several."""

    def report(percent: float, text: str) -> None:
        progress.report(low + (high - low) * percent / 100.0, prefix + text)

    return Progress(report=report, cancelled=progress.cancelled, log=progress.log)


def run_changes_of_images(
    request: ChangesRequest,
    extractions: dict[str, ExtractionRequest],
    backend: BackendConnection,
    progress: Progress,
) -> tuple[ComparisonResult, dict[str, ExtractionResult]]:
    """The changes between two dates, either of which may be an image: ``extractions`` holds an
    extraction request for ``"before"`` and/or ``"after"``; its buildings (the extraction job,
    as the dock's Extract) replace ``request.before_path``/``after_path``. The extractions take
    most of the bar, the changes job its last tenth; the result's ``seconds`` count them all."""
    started = time.monotonic()
    results: dict[str, ExtractionResult] = {}
    sides = [side for side in ("before", "after") if side in extractions]
    share = 90.0 / max(1, len(sides))
    for n, side in enumerate(sides):
        label = "Earlier image: " if side == "before" else "Later image: "
        part = scaled_progress(progress, n * share, (n + 1) * share, label)
        results[side] = run_extraction(extractions[side], backend, part)
        progress.log(f"{results[side].count} buildings extracted from {extractions[side].rgb.name}")
        request = dataclasses.replace(request, **{f"{side}_path": results[side].path})
    low = 90.0 if sides else 0.0
    comparison = run_changes(request, backend, scaled_progress(progress, low, 100.0))
    comparison.seconds = time.monotonic() - started
    return comparison, results
