"""One extraction from QGIS layers: inputs -> backend job -> GeoPackage, with progress and cancel.

:class:`ExtractionRequest` is collected on the GUI thread (layers are read there);
:func:`run_extraction` runs in a worker thread (a ``QgsTask`` of the dock, or a Processing
algorithm) and returns an :class:`ExtractionResult`; result layers are then made on the GUI thread
(:mod:`.result_layers`). Errors are :mod:`..exceptions` with user messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

from ..backend_process import BackendConnection
from ..exceptions import BackendUnreachableError, CancelledByUser, JobFailedError
from .raster_inputs import RasterInput, export_folder, materialize

#: Seconds between two polls of a running job.
POLL_INTERVAL_S = 0.4
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


@dataclass
class ExtractionRequest:
    """Everything one extraction needs, in plain values (safe to hand to a worker thread)."""

    rgb: RasterInput
    extent: QgsRectangle | None
    extent_crs: QgsCoordinateReferenceSystem
    out_path: Path
    ms: RasterInput | None = None
    model: str | None = None  # None: the backend's default model
    options: dict[str, Any] = field(default_factory=dict)
    aoi_wkt: str | None = None  # keep only buildings touching this (multi)polygon, in extent_crs
    title: str = "buildings"  # the result layer's name
    source_layer_id: str = ""  # the RGB layer's id (to find earlier results of it)
    model_name: str = "default"


@dataclass
class ExtractionResult:
    """The GeoPackage a run produced and what the backend reported."""

    path: Path
    layer_name: str
    count: int
    seconds: float
    device: str
    summary: dict[str, Any]
    request: ExtractionRequest


@dataclass
class Progress:
    """Progress callbacks of the caller (a task or Processing feedback)."""

    report: Callable[[float, str], None]  # percent 0-100, stage text
    cancelled: Callable[[], bool]
    log: Callable[[str], None] = lambda _text: None


def bbox_crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    """The CRS as the backend reads it: ``EPSG:n`` when QGIS knows one, else WKT."""
    authid = crs.authid()
    if authid.upper().startswith("EPSG:"):
        return authid
    return crs.toWkt()


def build_payload(request: ExtractionRequest, rgb_path: Path, ms_path: Path | None) -> dict:
    """The JSON body of ``POST /v1/jobs/predict``."""
    payload: dict[str, Any] = {
        "rgb": str(rgb_path),
        "out": str(request.out_path),
        "options": {k: v for k, v in request.options.items() if v is not None},
    }
    if ms_path is not None:
        payload["ms"] = str(ms_path)
    if request.model:
        payload["model"] = request.model
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
    _check_cancel(progress)
    paths = []
    for raster in (request.rgb, request.ms):
        if raster is None:
            paths.append(None)
            continue
        if raster.needs_export:
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
    request.out_path.parent.mkdir(parents=True, exist_ok=True)
    job = client.submit_predict(build_payload(request, paths[0], paths[1]))
    progress.log(f"Backend job {job['id']} on {info.device_text}")
    job = _follow(client, backend, job, progress)
    summary = job.get("result") or {}
    out = Path(summary.get("out") or request.out_path)
    return ExtractionResult(
        path=out,
        layer_name=summary.get("layer", "buildings"),
        count=int(summary.get("buildings", 0)),
        seconds=time.monotonic() - started,
        device=info.device_text,
        summary=summary,
        request=request,
    )


def _follow(client, backend: BackendConnection, job: dict, progress: Progress) -> dict:
    """Poll a job until it ends; cancel it when the user cancels. Returns the finished job."""
    job_id = job["id"]
    job_started = time.monotonic()
    while True:
        if progress.cancelled():
            _cancel_job(client, job_id)
            raise CancelledByUser("Extraction cancelled; nothing was added.")
        try:
            job = client.job(job_id)
        except BackendUnreachableError as error:
            death = backend.describe_death()
            if death:
                raise BackendUnreachableError(
                    f"{death} The extraction was lost; press Extract to run it again.",
                    details=backend.local.log_tail(),
                ) from None
            raise error
        status = job["status"]
        if status == "succeeded":
            progress.report(100.0, "Done")
            return job
        if status == "failed":
            error = job.get("error") or {}
            raise JobFailedError(
                error.get("message") or "The extraction failed in the backend.",
                details=error.get("details"),
            )
        if status == "cancelled":
            raise CancelledByUser("The extraction was cancelled in the backend.")
        _report_job(job, job_started, progress)
        time.sleep(POLL_INTERVAL_S)


def _report_job(job: dict, started: float, progress: Progress) -> None:
    state = job.get("progress") or {}
    stage = state.get("stage") or job["status"]
    fraction = float(state.get("fraction") or 0.0)
    # Network inference dominates; instances and polygons follow it.
    weights = {"infer": (5.0, 85.0), "instances": (85.0, 97.0), "done": (97.0, 100.0)}
    low, high = weights.get(stage, (5.0, 5.0))
    percent = low + (high - low) * fraction
    text = STAGE_TEXT.get(stage, stage.capitalize())
    elapsed = time.monotonic() - started
    if percent > 10 and elapsed > 2:
        remaining = elapsed * (100.0 - percent) / max(percent - 5.0, 1e-6)
        text += f" (about {format_seconds(remaining)} left)"
    progress.report(percent, text)


def format_seconds(seconds: float) -> str:
    """``"45 s"``, ``"3 min"``, ``"1 h 05 min"``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def _cancel_job(client, job_id: str, wait_s: float = 15.0) -> None:
    """Ask the backend to cancel, and wait (briefly) until it has stopped."""
    try:
        client.cancel(job_id)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if client.job(job_id)["status"] in ("cancelled", "failed", "succeeded"):
                return
            time.sleep(0.2)
    except Exception:  # noqa: BLE001 - a cancel that cannot reach the backend is still a cancel
        return


def _check_cancel(progress: Progress) -> None:
    if progress.cancelled():
        raise CancelledByUser("Extraction cancelled; nothing was added.")
