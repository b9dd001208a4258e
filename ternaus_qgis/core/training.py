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


def build_payload(request: TrainingRequest, rgb_path: Path) -> dict[str, Any]:
    """The JSON body of ``POST /v1/jobs/train``."""
    source: dict[str, Any] = {"rgb": str(rgb_path), "labels": str(request.labels_path)}
    if request.area_path is not None:
        source["aoi"] = str(request.area_path)
    if request.val_area_path is not None:
        source["val_aoi"] = str(request.val_area_path)
    body: dict[str, Any] = {
        "sources": [source],
        "out": str(request.out_path),
        "epochs": request.epochs,
        "steps_per_epoch": request.steps_per_epoch,
        "batch_size": request.batch_size,
        "crop_px": request.crop_px,
        "name": request.name,
        "allow_empty_labels": True,
        "overwrite": True,
        **request.options,
    }
    if request.init_model:
        body["init"] = request.init_model
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
    client, _info = backend.client(lambda text: progress.report(0.0, text), progress.cancelled)
    rgb = with_render_resolution(request.rgb, client.models(), request.init_model)
    rgb_path = materialize(
        rgb,
        request.extent or rgb.extent,
        request.extent_crs or rgb.crs,
        export_folder(),
        lambda pct: progress.report(0.0, f"Exporting the raster ({pct:.0f} %)"),
        progress.cancelled,
    )
    request.out_path.parent.mkdir(parents=True, exist_ok=True)
    job = client.submit_train(build_payload(request, rgb_path))
    curve: list[EpochPoint] = []

    def watch(polled: dict) -> None:
        info = (polled.get("progress") or {}).get("info") or {}
        if info.get("phase") != "validated":
            return
        if curve and curve[-1].epoch == info.get("epoch"):
            return
        point = EpochPoint.from_dict(info)
        curve.append(point)
        if on_epoch is not None:
            on_epoch(point)

    try:
        job = follow_job(client, backend, job, progress, STAGE_TEXT, STAGE_SPAN, on_update=watch)
        cancelled = False
    except CancelledByUser:
        job = client.job(job["id"])
        summary = job.get("result") or {}
        if not summary.get("model_path") or not Path(summary["model_path"]).is_file():
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
    return TrainingResult(
        model_path=Path(summary.get("model_path") or request.out_path),
        curve=curve,
        summary=summary,
        seconds=time.monotonic() - started,
        cancelled=cancelled,
    )
