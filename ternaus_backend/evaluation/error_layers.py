"""Evaluation as map layers: SpaceNet scores inside an optional area, and the errors to look at.

:func:`evaluate_layers` matches a result against a reference by the SpaceNet rules (the code of
``ternaus evaluate``) and can write a GeoPackage with two layers, in the files' own CRS:
``result`` (every scored result polygon with ``match`` = ``true positive`` / ``false positive``
and its ``iou``) and ``missed`` (reference buildings no result matched, with their best ``iou``).
With an area, only polygons that intersect it are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import MultiPolygon

from ternaus_backend.errors import InputError
from ternaus_backend.evaluation.spacenet import Scores, file_confidences, match, read_pair
from ternaus_backend.vector_io import polygon_parts, read_features, read_polygons, write_polygons

TRUE_POSITIVE, FALSE_POSITIVE = "true positive", "false positive"


@dataclass(frozen=True)
class LayerEvaluation:
    """Scores, and how many result and reference polygons were scored (inside the area)."""

    scores: Scores
    results_scored: int
    references_scored: int
    out: Path | None
    repaired_pred: int = 0
    repaired_truth: int = 0

    def to_dict(self) -> dict:
        """The scores, what was scored and what was repaired (``ternaus evaluate`` prints it)."""
        return {
            **self.scores.to_dict(),
            "results_scored": self.results_scored,
            "references_scored": self.references_scored,
            "repaired_pred": self.repaired_pred,
            "repaired_truth": self.repaired_truth,
        }


def evaluate_layers(
    pred_path: str | Path,
    truth_path: str | Path,
    out: str | Path | None = None,
    area_path: str | Path | None = None,
    iou_threshold: float = 0.5,
    min_area: float = 0.0,
) -> LayerEvaluation:
    """Score ``pred_path`` against ``truth_path`` (inside ``area_path``'s polygons when given);
    with ``out``, write the ``result`` and ``missed`` layers there (a GeoPackage)."""
    inputs = read_pair(pred_path, truth_path)
    preds, truth = inputs.preds, inputs.truth
    keep_pred = np.arange(len(preds.geometries))
    keep_truth = np.arange(len(truth.geometries))
    if area_path is not None:
        crs = truth.crs or preds.crs
        area = shapely.union_all(read_polygons(area_path, dst_crs=crs))
        if area.is_empty:
            raise InputError(f"The area {Path(area_path).name} holds no polygon: choose another.")
        keep_pred = keep_pred[shapely.intersects(np.asarray(preds.geometries, object), area)]
        keep_truth = keep_truth[shapely.intersects(np.asarray(truth.geometries, object), area)]
    confidences = file_confidences(preds, pred_path)
    result = match(
        [preds.geometries[i] for i in keep_pred],
        [truth.geometries[i] for i in keep_truth],
        None if confidences is None else confidences[keep_pred],
        iou_threshold,
        min_area,
    )
    written = None
    if out is not None:
        written = _write_layers(
            Path(out), pred_path, truth_path, keep_pred, keep_truth, result, iou_threshold
        )
    return LayerEvaluation(
        result.scores,
        len(keep_pred),
        len(keep_truth),
        written,
        inputs.repaired_pred,
        inputs.repaired_truth,
    )


def _write_layers(out, pred_path, truth_path, keep_pred, keep_truth, result, iou_threshold):
    """The ``result`` and ``missed`` layers, in the files' own CRS."""
    preds = read_features(pred_path)
    truth = read_features(truth_path)
    rows, geoms = [], []
    for k, index in enumerate(keep_pred):
        geom = _polygonal(preds.geometries[index])
        if geom is None:
            continue
        matched = result.matched_truth[k] >= 0
        props = {
            "match": TRUE_POSITIVE if matched else FALSE_POSITIVE,
            "iou": round(float(result.proposal_iou[k]), 4),
        }
        for key in ("confidence", "area_m2"):
            if key in preds.properties[index]:
                props[key] = preds.properties[index][key]
        rows.append(props)
        geoms.append(geom)
    write_polygons(out, geoms, preds.crs or truth.crs, rows, layer="result")
    matched_truth = set(int(i) for i in result.matched_truth if i >= 0)
    missed_geoms, missed_rows = [], []
    for k, index in enumerate(keep_truth):
        geom = _polygonal(truth.geometries[index])
        if k in matched_truth or geom is None:
            continue
        missed_geoms.append(geom)
        missed_rows.append({"iou": round(float(result.truth_iou[k]), 4)})
    write_polygons(
        out, missed_geoms, truth.crs or preds.crs, missed_rows, layer="missed", add_layer=True
    )
    return out


def _polygonal(geom) -> MultiPolygon | None:
    """The polygons of a geometry as one MultiPolygon (None when it holds none)."""
    parts = polygon_parts(geom)
    return MultiPolygon(parts) if parts else None
