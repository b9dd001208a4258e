"""Training (or fine-tuning) a model on layers the user labelled, as the backend's train job.

:class:`TrainingRequest` is collected on the GUI thread (the label and area layers are exported
there); :func:`run_training` runs in a worker thread, reports each epoch (loss, validation F1) as
it arrives, and returns the model file. Cancel keeps the best model so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

from ..backend_process import BackendConnection
from ..exceptions import CancelledByUser
from .jobs import Progress, follow_job
from .models import with_render_resolution
from .raster_inputs import RasterInput, export_folder, materialize
from .transfer import backend_path, fetch_output, needs_upload

STAGE_TEXT = {
    "queued": "Waiting for the backend",
    "prepare": "Reading the training data",
    "train": "Training",
}
STAGE_SPAN = {"prepare": (0.0, 5.0), "train": (5.0, 100.0)}


@dataclass
class EpochPoint:
    """One validated epoch: the training loss and the validation F1 (None: no buildings there)."""

    epoch: int
    loss: float
    val_f1: float | None
    val_iou: float | None = None
    best: bool = False

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> EpochPoint:
        """From a validated-epoch progress report, or a row of the job's ``history``."""
        return cls(
            epoch=int(row["epoch"]),
            loss=float(row.get("loss", row.get("train_loss", 0.0))),
            val_f1=row.get("val_f1"),
            val_iou=row.get("val_iou"),
            best=bool(row.get("best")),
        )


@dataclass
class TrainingRequest:
    """What to train on and where the model goes."""

    rgb: RasterInput
    labels_path: Path
    out_path: Path
    name: str
    ms: RasterInput | None = None  # the multispectral partner (11-band models)
    area_path: Path | None = None
    val_area_path: Path | None = None
    init_model: str | None = None  # None: a new model
    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 8
    crop_px: int = 256
    options: dict[str, Any] = field(default_factory=dict)
    #: Where a web RGB layer is rendered (the training area's or the labels' extent).
    extent: QgsRectangle | None = None
    extent_crs: QgsCoordinateReferenceSystem | None = None


@dataclass
class TrainingResult:
    """The model file and the learning curve; ``cancelled`` when the user stopped it early."""

    model_path: Path
    curve: list[EpochPoint]
    summary: dict[str, Any]
    seconds: float
    cancelled: bool = False


def build_payload(
    request: TrainingRequest, paths: dict[str, str | None], remote: bool = False
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/jobs/train``; ``paths``: ``rgb``, ``labels``, ``aoi``,
    ``val_aoi``, ``init`` as the backend reads them. A ``remote`` backend keeps the model in its
    job folder (downloaded afterwards)."""
    source: dict[str, Any] = {
        key: paths[key] for key in ("rgb", "ms", "labels", "aoi", "val_aoi") if paths.get(key)
    }
    body: dict[str, Any] = {
        "sources": [source],
        "epochs": request.epochs,
        "steps_per_epoch": request.steps_per_epoch,
        "batch_size": request.batch_size,
        "crop_px": request.crop_px,
        "name": request.name,
        "allow_empty_labels": True,
        **request.options,
    }
    if not remote:
        body["out"] = str(request.out_path)
        body["overwrite"] = True
    if paths.get("init"):
        body["init"] = paths["init"]
    return body


def run_training(
    request: TrainingRequest,
    backend: BackendConnection,
    progress: Progress,
    on_epoch: Callable[[EpochPoint], None] | None = None,
) -> TrainingResult:
    """Run the train job; ``on_epoch`` sees each validated epoch (from the worker thread)."""
    started = time.monotonic()
    progress.report(0.0, "Connecting to the backend")
    client, info = backend.client(lambda text: progress.report(0.0, text), progress.cancelled)
    for warning in info.warnings:  # shown once per URL: here when no dock showed it
        progress.log(warning)
    rgb = with_render_resolution(request.rgb, client.models(), request.init_model)
    rgb_path = materialize(
        rgb,
        request.extent or rgb.extent,
        request.extent_crs or rgb.crs,
        export_folder(),
        lambda pct: progress.report(0.0, f"Exporting the raster ({pct:.0f} %)"),
        progress.cancelled,
    )
    ms_path = None
    if request.ms is not None:
        ms_path = materialize(
            request.ms,
            request.extent or request.ms.extent,
            request.extent_crs or request.ms.crs,
            export_folder(),
            lambda pct: progress.report(0.0, f"Exporting the multispectral raster ({pct:.0f} %)"),
            progress.cancelled,
        )
    request.out_path.parent.mkdir(parents=True, exist_ok=True)
    init = request.init_model
    files = {
        "rgb": rgb_path,
        "ms": ms_path,
        "labels": request.labels_path,
        "aoi": request.area_path,
        "val_aoi": request.val_area_path,
        # a model file of this machine (uploaded if need be), else a path the backend knows
        "init": Path(init) if init and Path(init).is_file() else None,
    }
    paths = {key: backend_path(client, info, path, key, progress) for key, path in files.items()}
    paths["init"] = paths["init"] or init
    job = client.submit_train(build_payload(request, paths, needs_upload(info)))
    curve: list[EpochPoint] = []

    def watch(polled: dict) -> None:
        info = (polled.get("progress") or {}).get("info") or {}
        # A step's report repeats the last validated epoch: quick epochs are drawn live too.
        epoch = info if info.get("phase") == "validated" else info.get("last_validated") or {}
        if epoch.get("phase") != "validated":
            return
        if curve and curve[-1].epoch == epoch.get("epoch"):
            return
        point = EpochPoint.from_dict(epoch)
        curve.append(point)
        if on_epoch is not None:
            on_epoch(point)

    try:
        job = follow_job(client, backend, job, progress, STAGE_TEXT, STAGE_SPAN, on_update=watch)
        cancelled = False
    except CancelledByUser:
        job = client.job(job["id"])
        summary = job.get("result") or {}
        kept = summary.get("model_path")
        if not kept or (not needs_upload(info) and not Path(kept).is_file()):
            raise CancelledByUser(
                "Training cancelled before the first epoch ended; no model was kept."
            ) from None
        cancelled = True
    summary = job.get("result") or {}
    # Epochs shorter than a poll may have been missed live: the job's history has them all.
    seen = {p.epoch for p in curve}
    for row in summary.get("history") or []:
        if row.get("epoch") in seen:
            continue
        point = EpochPoint.from_dict(row)
        curve.append(point)
        if on_epoch is not None:
            on_epoch(point)
    curve.sort(key=lambda p: p.epoch)
    model_path = fetch_output(client, info, job, request.out_path)
    return TrainingResult(
        model_path=model_path or Path(summary.get("model_path") or request.out_path),
        curve=curve,
        summary=summary,
        seconds=time.monotonic() - started,
        cancelled=cancelled,
    )
