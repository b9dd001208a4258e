"""Where to label next, from QGIS layers: the backend's ``where_to_label`` job (the code of
``ternaus where-to-label``) ranks square cells of the image by how unsure the model is there.

:class:`LabelCellsRequest` is collected on the GUI thread (the Train tab, or
``ternaus:where_to_label``); :func:`run_label_cells` runs in a worker thread (rasters exported or
uploaded as for an extraction, :func:`~.extraction.backend_rasters`) and returns the GeoPackage
with the layers ``cells`` (ranked, ``top`` marked) and ``buildings``; the layer is then added on
the GUI thread (:func:`~.result_layers.add_label_cells_layer`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

from ..backend_process import BackendConnection
from .extraction import backend_rasters, bbox_crs_text
from .jobs import Progress, follow_job
from .raster_inputs import RasterInput
from .results import WhereToLabelResult, parse_result
from .transfer import backend_path, fetch_output, needs_upload

STAGE_TEXT = {
    "queued": "Waiting for the backend",
    "infer": "Running the network (four flips)",
    "instances": "Separating buildings",
    "done": "Ranking the cells",
}
STAGE_SPAN = {"infer": (5.0, 90.0), "instances": (90.0, 98.0), "done": (98.0, 100.0)}


@dataclass
class LabelCellsRequest:
    """The image (and extent or area) to rank cells of, in plain values (worker-thread safe)."""

    rgb: RasterInput
    extent: QgsRectangle | None
    extent_crs: QgsCoordinateReferenceSystem
    out_path: Path
    ms: RasterInput | None = None
    model: str | None = None  # None: the backend's default model
    aoi_path: Path | None = None  # rank only cells inside these polygons
    exclude_path: Path | None = None  # already labelled: cells at least half inside left out
    cell_m: float = 100.0
    top: int = 3
    title: str = "cells to label"


@dataclass
class LabelCellsResult:
    """The backend's summary (the top cells), the GeoPackage and the time it took."""

    result: WhereToLabelResult
    path: Path
    seconds: float
    request: LabelCellsRequest
    layers: list[str] = field(default_factory=lambda: ["cells", "buildings"])

    @property
    def summary(self) -> dict[str, Any]:
        """The backend's whole result, as JSON."""
        return self.result.raw

    @property
    def text(self) -> str:
        """One line for the user."""
        s = self.result
        if not s.top:
            if s.excluded:
                return "no cell to propose: every cell in view lies in the training area"
            return "no cell to propose: the image holds no pixel inside the area"
        best = ", ".join(
            f"#{c.rank} ({c.near_threshold:.0%} near the threshold, "
            f"{c.flip_disagreement:.0%} flips disagree, "
            f"{c.low_confidence_buildings} of {c.buildings} buildings doubtful)"
            for c in s.top
        )
        left_out = f" ({s.excluded} in the training area left out)" if s.excluded else ""
        return f"{s.cells} cells of {s.cell_m:g} m ranked{left_out}; label first {best}"


def run_label_cells(
    request: LabelCellsRequest, backend: BackendConnection, progress: Progress
) -> LabelCellsResult:
    """Start the backend if needed, export or upload the rasters, run the job, return its
    GeoPackage (downloaded from a remote backend)."""
    started = time.monotonic()
    progress.report(0.0, "Connecting to the backend")
    client, info = backend.client(lambda text: progress.report(0.0, text), progress.cancelled)
    for warning in info.warnings:
        progress.log(warning)
    request.out_path.parent.mkdir(parents=True, exist_ok=True)
    remote = needs_upload(info)
    rgb_path, ms_path = backend_rasters(request, client, info, progress)
    body: dict[str, Any] = {"rgb": rgb_path, "cell_m": request.cell_m, "top": request.top}
    if ms_path is not None:
        body["ms"] = ms_path
    model = request.model
    if remote and model and Path(model).is_file():  # a model file of this machine
        model = backend_path(client, info, Path(model), "the model", progress)
    if model:
        body["model"] = model
    if request.aoi_path is not None:
        body["aoi"] = backend_path(client, info, request.aoi_path, "the area", progress)
    if request.exclude_path is not None:
        body["exclude"] = backend_path(
            client, info, request.exclude_path, "the labelled area", progress
        )
    if request.extent is not None and not request.extent.isEmpty():
        e = request.extent
        body["bbox"] = [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]
        body["bbox_crs"] = bbox_crs_text(request.extent_crs)
    if not remote:
        body["out"] = str(request.out_path)
    job = client.submit_where_to_label(body)
    progress.log(f"Backend job {job['id']} on {info.device_text}")
    job = follow_job(client, backend, job, progress, STAGE_TEXT, STAGE_SPAN)
    result = parse_result(job, WhereToLabelResult)
    for warning in result.warnings:
        progress.log(warning)
    out = fetch_output(client, info, job, request.out_path) or Path(result.out or request.out_path)
    return LabelCellsResult(result, out, time.monotonic() - started, request)
