"""Training (or fine-tuning) a model on layers the user labelled, as the backend's train job.

:class:`TrainingRequest` is collected on the GUI thread (the label and area layers are exported
there); :func:`run_training` runs in a worker thread, reports each epoch (loss, validation F1) as
it arrives, and returns the model file. Cancel keeps the best model so far.

A job that ends failed or interrupted (the backend killed, out of memory) after a validated epoch
has left its best model and a resumable checkpoint beside it: :func:`run_training` then raises
:class:`~ternaus_qgis.exceptions.TrainingStoppedError`, with which the dock offers to use that
model or to resume (the same job body again, with ``resume: true``). This needs the model to be
written where the plugin can see it (a local backend, or one that shares this machine's disks):
a remote backend keeps a failed job's files in its job folder and does not serve them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

from ..backend_process import BackendConnection, BackendInfo
from ..client import BackendClient
from ..exceptions import (
    BackendUnreachableError,
    CancelledByUser,
    JobFailedError,
    TrainingStoppedError,
)
from .jobs import Progress, follow_job
from .models import with_render_resolution
from .raster_inputs import RasterInput, export_folder, materialize
from .results import TrainResult, parse_result
from .transfer import backend_path, fetch_output, needs_upload

STAGE_TEXT = {
    "queued": "Waiting for the backend",
    "prepare": "Reading the training data",
    "train": "Training",
    "blend": "Blending with the starting model",
    "thresholds": "Tuning the thresholds on the labels",
    "calibration": "Calibrating the confidence on the validation area",
}
STAGE_SPAN = {
    "prepare": (0.0, 5.0),
    "plan": (5.0, 5.0),
    "train": (5.0, 100.0),
    "blend": (100.0, 100.0),
    "thresholds": (100.0, 100.0),
    "calibration": (100.0, 100.0),
}


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
            loss=float(row.get("loss", row.get("train_loss")) or 0.0),
            val_f1=row.get("val_f1"),
            val_iou=row.get("val_iou"),
            best=bool(row.get("best")),
        )


@dataclass
class TrainingRequest:
    """What to train on and where the model goes."""

    rgb: RasterInput
    labels_path: Path | None  # None: no labels, adapt to the imagery by self-training alone
    out_path: Path
    name: str
    ms: RasterInput | None = None  # the multispectral partner (11-band models)
    area_path: Path | None = None
    val_area_path: Path | None = None
    init_model: str | None = None  # None: a new model
    epochs: int | None = None  # None: the backend's recipe chooses (from the labels)
    steps_per_epoch: int | None = None
    #: Learn from the starting model's confident answers on the imagery around the labels too.
    self_training: bool = True
    batch_size: int = 8
    crop_px: int = 256
    options: dict[str, Any] = field(default_factory=dict)
    #: Where a web RGB layer is rendered (the training area's or the labels' extent).
    extent: QgsRectangle | None = None
    extent_crs: QgsCoordinateReferenceSystem | None = None
    #: The body of a stopped job to resume from its checkpoint (nothing is exported again).
    resume_payload: dict[str, Any] | None = None


@dataclass
class TrainingResult:
    """The model file and the learning curve; ``cancelled`` when the user stopped it early."""

    model_path: Path
    curve: list[EpochPoint]
    result: TrainResult
    seconds: float
    cancelled: bool = False

    @property
    def summary(self) -> dict[str, Any]:
        """The backend's whole result, as JSON."""
        return self.result.raw


def calibration_text(report: dict[str, Any] | None) -> str | None:
    """What the run's confidence calibration (the train job's ``calibration`` report,
    ``TrainResult.calibration``) means for the new model's ``confidence`` field, in a few words;
    ``None`` without a report."""
    if not isinstance(report, dict):
        return None
    buildings = report.get("buildings", 0)
    if report.get("ece_after") is None:
        return (
            f"confidence is the mean building probability ({buildings} validation buildings "
            "were too few to calibrate it)"
        )
    return (
        f"confidence is the probability that a building is right, calibrated on {buildings} "
        f"validation buildings (calibration error {report['ece_before']:.2f} -> "
        f"{report['ece_after']:.2f})"
    )


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
        "batch_size": request.batch_size,
        "crop_px": request.crop_px,
        "name": request.name,
        "allow_empty_labels": True,
        **request.options,
    }
    for key in ("epochs", "steps_per_epoch"):
        if getattr(request, key):
            body[key] = getattr(request, key)
    if not request.self_training:
        body["self_training"] = False
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
    if request.resume_payload is not None:
        body = {**request.resume_payload, "resume": True}
        progress.log(f"Resuming the training of {request.name} from its checkpoint")
    else:
        body = _prepare(request, client, info, progress)
    submitted = time.time()
    job = client.submit_train(body)
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
    except (JobFailedError, BackendUnreachableError) as error:
        raise _stopped(error, request, body, curve, submitted, needs_upload(info)) from None
    except CancelledByUser:
        job = client.job(job["id"])
        kept = parse_result(job, TrainResult).model_path if job.get("result") is not None else None
        if not kept or (not needs_upload(info) and not Path(kept).is_file()):
            raise CancelledByUser(
                "Training cancelled before the first epoch ended; no model was kept."
            ) from None
        cancelled = True
    result = parse_result(job, TrainResult)
    # Epochs shorter than a poll may have been missed live: the job's history has them all.
    seen = {p.epoch for p in curve}
    for row in result.history:
        if row.epoch in seen:
            continue
        point = EpochPoint.from_dict(dataclasses.asdict(row))
        curve.append(point)
        if on_epoch is not None:
            on_epoch(point)
    curve.sort(key=lambda p: p.epoch)
    model_path = fetch_output(client, info, job, request.out_path)
    return TrainingResult(
        model_path=model_path or Path(result.model_path or request.out_path),
        curve=curve,
        result=result,
        seconds=time.monotonic() - started,
        cancelled=cancelled,
    )


def checkpoint_path(model_path: Path) -> Path:
    """The backend's resumable checkpoint beside a model file: ``<model>.ckpt.pt`` (as
    ``ternaus_backend.training.checkpoint.checkpoint_path`` names it)."""
    return model_path.with_name(model_path.name + ".ckpt.pt")


def _prepare(
    request: TrainingRequest, client: BackendClient, info: BackendInfo, progress: Progress
) -> dict[str, Any]:
    """Export (and upload) the inputs; the body of ``POST /v1/jobs/train``."""
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
    return build_payload(request, paths, needs_upload(info))


def _stopped(
    error: JobFailedError | BackendUnreachableError,
    request: TrainingRequest,
    body: dict[str, Any],
    curve: list[EpochPoint],
    submitted: float,
    remote: bool,
) -> Exception:
    """:class:`TrainingStoppedError` when the stopped job left a model and its checkpoint (written
    by this job, not an earlier run of the same name), else ``error`` itself."""
    model, checkpoint = request.out_path, checkpoint_path(request.out_path)
    if remote or not (model.is_file() and checkpoint.is_file()):
        return error
    written = min(model.stat().st_mtime, checkpoint.stat().st_mtime)
    if request.resume_payload is None and written < submitted - 1.0:
        return error  # an earlier run's files, not this job's
    best = [point for point in curve if point.best]
    epoch = best[-1].epoch if best else None
    f1 = best[-1].val_f1 if best else None
    what = ""
    if epoch is not None:
        f1_text = "n/a" if f1 is None else f"{f1:.3f}"
        what = f" (epoch {epoch}, validation F1 {f1_text})"
    return TrainingStoppedError(
        f"The training stopped early, but its best model so far{what} is saved in {model}: use "
        f"it, or resume the training from its checkpoint. Why it stopped: {error.message}",
        details=error.details,
        model_path=model,
        checkpoint_path=checkpoint,
        resume_payload=body,
        best_epoch=epoch,
        best_f1=f1,
    )
