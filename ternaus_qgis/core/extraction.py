"""One extraction from QGIS layers: inputs -> backend job -> GeoPackage, with progress and cancel.

:class:`ExtractionRequest` is collected on the GUI thread (layers are read there);
:func:`run_extraction` runs in a worker thread (a ``QgsTask`` of the dock, or a Processing
algorithm) and returns an :class:`ExtractionResult`; result layers are then made on the GUI thread
(:mod:`.result_layers`). Errors are :mod:`..exceptions` with user messages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

from ..backend_process import BackendConnection
from ..client import BackendClient
from ..exceptions import CancelledByUser, LayerError
from .extract_options import ExtractionOptions
from .jobs import Progress, follow_job
from .models import with_render_resolution
from .raster_inputs import RasterInput, export_folder, materialize
from .results import PredictResult, parse_result
from .transfer import backend_path, fetch_output, needs_upload

#: What the backend's stages mean to a user.
STAGE_TEXT = {
    "queued": "Waiting for the backend",
    "read": "Reading the raster",
    "prepare": "Preparing",
    "statistics": "Reading raster statistics",
    "infer": "Running the network",
    "instances": "Separating buildings",
    "polygons": "Making polygons",
    "write": "Writing polygons",
    "done": "Finishing",
}
#: Where each backend stage lies on the progress bar (percent); the network dominates.
PREDICT_STAGE_SPAN = {"infer": (5.0, 85.0), "instances": (85.0, 97.0), "done": (97.0, 100.0)}


@dataclass
class ExtractionRequest:
    """Everything one extraction needs, in plain values (safe to hand to a worker thread)."""

    rgb: RasterInput
    extent: QgsRectangle | None
    extent_crs: QgsCoordinateReferenceSystem
    out_path: Path
    ms: RasterInput | None = None
    model: str | None = None  # None: the backend's default model
    options: ExtractionOptions = field(default_factory=ExtractionOptions)
    title: str = "buildings"  # the result layer's name
    source_layer_id: str = ""  # the RGB layer's id (to find earlier results of it)
    model_name: str = "default"
    #: Replace ``out_path`` if it exists (the backend refuses an existing output otherwise).
    overwrite: bool = False


@dataclass
class ExtractionResult:
    """The GeoPackage a run produced and what the backend reported."""

    path: Path
    layer_name: str
    count: int
    seconds: float
    device: str
    result: PredictResult
    request: ExtractionRequest

    @property
    def summary(self) -> dict[str, Any]:
        """The backend's whole result, as JSON."""
        return self.result.raw


def bbox_crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    """The CRS as the backend reads it: ``EPSG:n`` when QGIS knows one, else WKT."""
    authid = crs.authid()
    if authid.upper().startswith("EPSG:"):
        return authid
    return crs.toWkt()


def build_payload(
    request: ExtractionRequest,
    rgb_path: Path | str,
    ms_path: Path | str | None,
    remote: bool = False,
    model: str | None = None,
) -> dict:
    """The JSON body of ``POST /v1/jobs/predict``; a ``remote`` backend writes its output in its
    job folder (downloaded afterwards) and reads ``model`` (the request's, or its upload)."""
    payload: dict[str, Any] = {
        "rgb": str(rgb_path),
        "options": request.options.payload(),
    }
    if not remote:
        payload["out"] = str(request.out_path)
    if ms_path is not None:
        payload["ms"] = str(ms_path)
    if request.overwrite and not remote:
        payload["overwrite"] = True
    model = model or request.model
    if model:
        payload["model"] = model
    if request.extent is not None and not request.extent.isEmpty():
        e = request.extent
        payload["bbox"] = [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]
        payload["bbox_crs"] = bbox_crs_text(request.extent_crs)
    return payload


def run_extraction(
    request: ExtractionRequest, backend: BackendConnection, progress: Progress
) -> ExtractionResult:
    """Start the backend if needed, export layers that need it, run the job, return its output."""
    started = time.monotonic()
    progress.report(0.0, "Connecting to the backend")
    client, info = backend.client(lambda text: progress.report(0.0, text), progress.cancelled)
    for warning in info.warnings:  # shown once per URL: here when no dock showed it
        progress.log(warning)
    _check_cancel(progress)
    request.out_path.parent.mkdir(parents=True, exist_ok=True)
    remote = needs_upload(info)
    rgb_path, ms_path = backend_rasters(request, client, info, progress)
    model = request.model
    if remote and model and Path(model).is_file():  # a model file of this machine
        model = backend_path(client, info, Path(model), "the model", progress)
    job = client.submit_predict(build_payload(request, rgb_path, ms_path, remote, model))
    progress.log(f"Backend job {job['id']} on {info.device_text}")
    job = follow_job(client, backend, job, progress, STAGE_TEXT, PREDICT_STAGE_SPAN)
    result = parse_result(job, PredictResult)
    return ExtractionResult(
        path=fetch_output(client, info, job, request.out_path) or Path(result.out),
        layer_name=result.layer,
        count=result.buildings,
        seconds=time.monotonic() - started,
        device=info.device_text,
        result=result,
        request=request,
    )


def backend_rasters(request: Any, client: BackendClient, info: Any, progress: Progress):
    """The paths the backend reads ``request.rgb`` and ``request.ms`` from (``None`` for no
    multispectral layer): web layers rendered and other layers exported over ``request.extent``
    (in ``request.extent_crs``; the layer's own extent when None) where needed, uploaded to a
    remote backend. ``request``: an :class:`ExtractionRequest` or any request with those fields
    and ``model`` (e.g. the Train tab's cells to label)."""
    paths = []
    for raster in (request.rgb, request.ms):
        if raster is None:
            paths.append(None)
            continue
        if raster.rendered:
            if request.extent is None:
                raise LayerError(
                    f"The {raster.role} layer '{raster.name}' is a web layer, with no extent of "
                    "its own: choose an extent (the map canvas, a layer or a drawn rectangle).",
                )
            raster = with_render_resolution(raster, client.models(), request.model)
            progress.log(f"Rendering '{raster.name}' at {raster.resolution_m:g} m per pixel")
        elif raster.needs_export:
            progress.log(f"Exporting {raster.role} layer '{raster.name}' ({raster.reason})")
        extent = request.extent if request.extent is not None else raster.extent
        crs = request.extent_crs if request.extent is not None else raster.crs
        paths.append(
            materialize(
                raster,
                extent,
                crs,
                export_folder(),
                lambda pct, r=raster: progress.report(pct * 0.05, f"Exporting {r.role} layer"),
                progress.cancelled,
            )
        )
    rgb_path = backend_path(client, info, paths[0], f"the {request.rgb.role} raster", progress)
    ms_path = backend_path(client, info, paths[1], "the multispectral raster", progress)
    return rgb_path, ms_path


def _check_cancel(progress: Progress) -> None:
    if progress.cancelled():
        raise CancelledByUser("Extraction cancelled; nothing was added.")
