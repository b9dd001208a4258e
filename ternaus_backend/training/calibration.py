"""Fitting a model's confidence calibration on labelled areas, through the real extraction.

After training, the best model extracts the validation areas (exactly as a user's extraction
would, with its final thresholds); each extracted building is matched to the labels by the
SpaceNet rule (IoU > 0.5, :func:`~ternaus_backend.evaluation.spacenet.match`), which says whether
it is a true positive; a :class:`~ternaus_backend.models.calibration.Calibration` is fitted from
those buildings' mean body probability and area and written into the model's metadata. The
reliability diagram before (mean probability as confidence) and after goes into the training
result (``TrainResult.calibration``). Too few buildings (fewer than :data:`MIN_BUILDINGS`, or
fewer than :data:`MIN_EACH` true or false positives) leave the model uncalibrated, said in a note.

The same collection (:func:`building_outcomes`) serves ``benchmarks/bench_calibration.py``,
which calibrates the embedded default model.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ternaus_backend.evaluation.spacenet import match
from ternaus_backend.models.calibration import (
    Calibration,
    expected_calibration_error,
    fit_calibration,
    reliability,
)
from ternaus_backend.pipeline.extract import ExtractOptions, extract
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from ternaus_backend.training.dataset import PreparedSource
from ternaus_backend.training.validation import clip_to
from ternaus_backend.vector_io import read_polygons_with_properties

log = logging.getLogger(__name__)

__all__ = [
    "MIN_BUILDINGS",
    "MIN_EACH",
    "Outcomes",
    "building_outcomes",
    "calibrate_on_validation",
    "calibration_report",
]

#: Fewest extracted buildings (and true / false positives among them) to fit a calibration.
MIN_BUILDINGS = 30
MIN_EACH = 5
#: Labelled buildings (and parts of extracted ones) smaller than this (m²) are not scored,
#: as :mod:`.thresholds` and ``scripts/eval_real.py`` score.
TRUTH_MIN_M2 = 1.0


@dataclass
class Outcomes:
    """Extracted buildings with their features and whether each is a true positive."""

    mean_body: np.ndarray = field(default_factory=lambda: np.zeros(0))
    area_m2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    true_positive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    #: The confidence the extraction wrote (calibrated when the model has a calibration).
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.true_positive)

    def __add__(self, other: Outcomes) -> Outcomes:
        return Outcomes(
            *(
                np.concatenate([getattr(self, name), getattr(other, name)])
                for name in ("mean_body", "area_m2", "true_positive", "confidence")
            )
        )

    def to_json(self) -> dict[str, list]:
        return {
            "mean_body": [float(v) for v in self.mean_body],
            "area_m2": [float(v) for v in self.area_m2],
            "true_positive": [bool(v) for v in self.true_positive],
            "confidence": [float(v) for v in self.confidence],
        }


def _uncalibrated(model: nn.Module) -> nn.Module:
    """``model`` itself, its metadata without a calibration (the extraction then writes the mean
    body probability as ``confidence``); restore it with :func:`_restore`."""
    model._calibrated_metadata = model.metadata
    model.metadata = model.metadata.model_copy(update={"calibration": None})
    return model


def _restore(model: nn.Module) -> None:
    model.metadata = model.__dict__.pop("_calibrated_metadata", model.metadata)


def building_outcomes(
    model: nn.Module,
    rgb: str | Path,
    region: Any,
    truths: Sequence[Any],
    min_area: float,
    device: torch.device | str = "cpu",
    ms: str | Path | None = None,
    assume_crs: str | None = None,
    work: Path | None = None,
    cancel: CancelToken | None = None,
) -> Outcomes:
    """The buildings ``model`` extracts over ``region`` (raster CRS) and whether each matches a
    labelled building of ``truths`` (IoU > 0.5, both clipped to the region; parts smaller than
    ``min_area``, in squared CRS units, left out), with their uncalibrated features (mean body
    probability, area in m² of the whole building) and the confidence the model itself writes."""
    if region is None or region.is_empty:
        return Outcomes()
    with tempfile.TemporaryDirectory(prefix="ternaus-calib-", dir=work) as tmp:
        out = Path(tmp) / "buildings.gpkg"
        calibration = model.metadata.calibration
        try:
            result = extract(
                rgb,
                out,
                ms=ms,
                model=_uncalibrated(model),
                bbox=region.bounds,
                assume_crs=assume_crs,
                options=ExtractOptions(device=str(device)),
                cancel=cancel,
            )
        finally:
            _restore(model)
        polygons, properties = (
            read_polygons_with_properties(result.path) if result.count else ([], [])
        )
    proposals, kept = clip_to(polygons, region, min_area)
    mean_body = np.array([float(properties[k]["confidence"]) for k in kept], dtype=np.float64)
    area_m2 = np.array([float(properties[k]["area_m2"]) for k in kept], dtype=np.float64)
    clipped_truths, _ = clip_to(truths, region, min_area)
    matched = match(proposals, clipped_truths, confidences=mean_body).matched_truth >= 0
    confidence = calibration.apply(mean_body, area_m2) if calibration is not None else mean_body
    return Outcomes(mean_body, area_m2, matched, np.asarray(confidence, dtype=np.float64))


def calibration_report(outcomes: Outcomes, calibration: Calibration | None) -> dict[str, Any]:
    """ECE and the reliability diagram (10 bins) of ``outcomes`` with the mean body probability
    as confidence (``before``) and with ``calibration`` (``after``; absent without one)."""
    y = outcomes.true_positive
    report: dict[str, Any] = {
        "buildings": len(outcomes),
        "true_positives": int(y.sum()),
        "ece_before": round(expected_calibration_error(outcomes.mean_body, y), 4),
        "reliability_before": [b.model_dump() for b in reliability(outcomes.mean_body, y)],
    }
    if calibration is not None:
        calibrated = calibration.apply(outcomes.mean_body, outcomes.area_m2)
        report["ece_after"] = round(expected_calibration_error(calibrated, y), 4)
        report["reliability_after"] = [b.model_dump() for b in reliability(calibrated, y)]
    return report


def validation_outcomes(
    model: nn.Module,
    sources: Sequence[PreparedSource],
    device: torch.device,
    cancel: CancelToken | None = None,
) -> Outcomes:
    """:func:`building_outcomes` over every labelled source's validation area."""
    meta = model.metadata
    total = Outcomes()
    for src in sources:
        if src.source.labels is None or not src.has_validation:
            continue
        pixel_area = abs(src.grid.transform.a * src.grid.transform.e)
        min_area = TRUTH_MIN_M2 / meta.resolution_m**2 * pixel_area
        total = total + building_outcomes(
            model,
            src.source.rgb,
            src.val_region,
            src.label_polygons,
            min_area,
            device,
            ms=src.source.ms,
            assume_crs=src.source.assume_crs,
            cancel=cancel,
        )
    return total


def calibrate_on_validation(
    model: nn.Module,
    sources: Sequence[PreparedSource],
    device: torch.device,
    cancel: CancelToken | None = None,
    progress: ProgressCallback = no_progress,
) -> tuple[Calibration | None, str, dict[str, Any] | None]:
    """Fit ``model``'s calibration on the validation areas of ``sources``: the calibration
    (``None`` when there are too few buildings), a note saying what happened, and the report
    (:func:`calibration_report`, ``None`` when nothing was labelled). ``model`` carries its
    metadata (with its final thresholds) and is not changed."""
    progress(ProgressEvent("calibration", 0, 1, {"phase": "calibration"}))
    outcomes = validation_outcomes(model, sources, device, cancel)
    tp = int(outcomes.true_positive.sum())
    fp = len(outcomes) - tp
    if len(outcomes) == 0 and not any(s.has_validation for s in sources):
        return None, "confidence not calibrated: no labelled validation area", None
    report = calibration_report(outcomes, None)
    if len(outcomes) < MIN_BUILDINGS or min(tp, fp) < MIN_EACH:
        note = (
            f"confidence not calibrated (it is the mean body probability): the validation areas "
            f"hold {len(outcomes)} extracted buildings ({tp} true, {fp} false positives); "
            f"calibrating needs {MIN_BUILDINGS} with {MIN_EACH} of each"
        )
        return None, note, report
    calibration = fit_calibration(
        outcomes.mean_body,
        outcomes.area_m2,
        outcomes.true_positive,
        fitted_on=f"validation areas of the training run ({len(outcomes)} buildings)",
    )
    report = calibration_report(outcomes, calibration)
    note = (
        f"confidence calibrated on the validation areas ({len(outcomes)} buildings, {tp} true "
        f"positives): expected calibration error {report['ece_before']:.3f} -> "
        f"{report['ece_after']:.3f} (measured where it was fitted)"
    )
    progress(ProgressEvent("calibration", 1, 1, {"phase": "calibration", "note": note}))
    return calibration, note, report


def calibration_step(
    run: Any, device: torch.device, progress: ProgressCallback, cancel: CancelToken
) -> dict[str, Any] | None:
    """The training loop's last step: calibrate the saved best model (``run.out``) on the
    validation areas and rewrite it with the calibration (or without the one it inherited from
    its starting model, which no longer describes it); the note goes into the run's notes and
    provenance. Returns the report for ``TrainResult.calibration``. ``run`` is the loop's
    ``Run`` (:class:`~.run.Run`: ``out``, ``meta``, ``sources``, ``notes``, ``_metadata()``)."""
    from ternaus_backend.models.model_file import load_model, save_model

    best = load_model(run.out, device=str(device))
    best.metadata = best.metadata.model_copy(update={"calibration": None})
    calibration, note, report = calibrate_on_validation(best, run.sources, device, cancel, progress)
    run.notes.append(note)
    log.info(note)
    if calibration is None and run.meta.calibration is None:
        return report
    run.meta = run.meta.model_copy(update={"calibration": calibration})
    meta = run._metadata()
    best.metadata = meta
    save_model(best, meta, run.out)
    return report
