"""What the map is missing: our extraction against an existing building layer (OpenStreetMap or
any other), as ``ternaus compare``, ``POST /v1/jobs/compare`` and ``ternaus:compare_with_map``.

The layers are matched one to one by the SpaceNet rules at a low IoU (0.3 by default) after the
map has been moved by its estimated offset (see :mod:`.layer_matching`), so a map drawn a few
metres off still matches. The GeoPackage holds three layers, in the map's CRS:

* ``unmapped``: buildings seen in the imagery and absent from the map (result polygons no map
  building matched), ``rank`` 1 for the most confident (largest when the result has no
  confidence), with the result's own attributes, ``area_m2`` and the best ``iou`` with the map;
* ``unseen``: buildings of the map not seen in the imagery (demolished? mis-drawn? hidden?), with
  the map's own attributes, ``area_m2`` and ``iou``;
* ``offsets``: lines from the map's buildings toward where the imagery shows them: one for the
  whole area (``scope`` = ``overall``) and one per grid cell (250 m by default) holding at least 3
  matched pairs (``scope`` = ``cell``); fields ``dx_m``, ``dy_m`` (the median offset of the pairs'
  centroids, metres east and north in a local metric CRS), ``offset_m`` and ``pairs``. A mapper
  shifts the map by (dx_m, dy_m) to line it up with the imagery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString

from ternaus_backend.errors import InputError
from ternaus_backend.evaluation.layer_matching import (
    Layer,
    LayerPair,
    Shift,
    centroids,
    check_thresholds,
    crs_text,
    match_shifted,
    median_offset,
    multipolygon,
    read_layers,
    source_rows,
    temporary_output,
    to_output_crs,
    write_layer,
)

LAYERS = ("unmapped", "unseen", "offsets")
UNMAPPED_FIELDS = {"rank": "int", "confidence": "float", "area_m2": "float", "iou": "float"}
UNSEEN_FIELDS = {"area_m2": "float", "iou": "float"}
OFFSET_FIELDS = {
    "scope": "str",
    "dx_m": "float",
    "dy_m": "float",
    "offset_m": "float",
    "pairs": "int",
}


@dataclass(frozen=True)
class CellOffset:
    """The median offset of the matched pairs whose map building's centroid lies in one cell;
    ``x``, ``y``: the mean of those centroids (work CRS), where the offset line starts."""

    x: float
    y: float
    offset: Shift


@dataclass
class MapComparison:
    """Counts, offsets and the GeoPackage (``out``) of a comparison."""

    results_scored: int
    references_scored: int
    matched: int
    unmapped: int
    unseen: int
    offset: Shift | None
    shift: Shift
    cells: list[CellOffset]
    iou_threshold: float
    cell_m: float
    out: Path | None
    crs: str | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The summary ``ternaus compare`` prints and the compare job returns."""
        return {
            "results_scored": self.results_scored,
            "references_scored": self.references_scored,
            "matched": self.matched,
            "unmapped": self.unmapped,
            "unseen": self.unseen,
            "offset": None if self.offset is None else self.offset.to_dict(),
            "shift": self.shift.to_dict(),
            "cells": len(self.cells),
            "iou_threshold": self.iou_threshold,
            "cell_m": self.cell_m,
            "out": None if self.out is None else str(self.out),
            "layers": list(LAYERS) if self.out is not None else [],
            "metric_crs": self.crs,
            "warnings": self.warnings,
        }


def compare_with_map(
    pred_path: str | Path,
    reference_path: str | Path,
    out: str | Path | None = None,
    area_path: str | Path | None = None,
    iou_threshold: float = 0.3,
    cell_m: float = 250.0,
    min_pairs: int = 3,
) -> MapComparison:
    """Compare our result (``pred_path``, with its ``confidence``) with a map's buildings
    (``reference_path``), inside ``area_path``'s polygons when given; with ``out``, write the
    ``unmapped``, ``unseen`` and ``offsets`` layers there (see the module docstring)."""
    check_thresholds(iou_threshold=iou_threshold)
    if not cell_m > 0:
        raise InputError(f"The grid cell size must be positive (metres), got {cell_m}.")
    if min_pairs < 1:
        raise InputError(f"The pairs per cell must be 1 or more, got {min_pairs}.")
    pair = read_layers(pred_path, reference_path, area_path, ("result", "reference layer"))
    matching = match_shifted(pair, iou_threshold)
    first, second = matching.pairs(pair.first.inside)
    c_result = centroids(pair.first.geometries)
    c_map = centroids(pair.second.geometries)
    offsets = c_result[first] - c_map[second]
    overall = median_offset(offsets)
    cells = cell_offsets(c_map[second], offsets, cell_m, min_pairs)
    warnings = []
    if overall is None:
        warnings.append(
            "No building of the result matched one of the reference layer: check that both "
            "cover the same place (and the CRS of each)."
        )
    comparison = MapComparison(
        results_scored=int(pair.first.inside.sum()),
        references_scored=int(pair.second.inside.sum()),
        matched=len(first),
        unmapped=len(matching.unmatched_first(pair.first.inside)),
        unseen=len(matching.unmatched_second(pair.second.inside)),
        offset=overall,
        shift=matching.shift,
        cells=cells,
        iou_threshold=iou_threshold,
        cell_m=cell_m,
        out=None,
        crs=crs_text(pair),
        warnings=warnings,
    )
    if out is not None:
        comparison.out = _write(Path(out), pair, matching, comparison, c_map[second])
    return comparison


def cell_offsets(
    starts: np.ndarray, offsets: np.ndarray, cell_m: float, min_pairs: int
) -> list[CellOffset]:
    """Median offsets per grid cell (cells of ``cell_m`` aligned on the work CRS's origin) of the
    pairs whose map centroid (``starts``) lies in it; cells with fewer than ``min_pairs`` left
    out. Ordered south to north, then west to east."""
    if len(starts) == 0:
        return []
    cells = np.floor(starts / cell_m).astype(np.int64)
    keys, inverse = np.unique(cells[:, ::-1], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    out = []
    for k in range(len(keys)):
        members = inverse == k
        if members.sum() < min_pairs:
            continue
        x, y = starts[members].mean(axis=0)
        out.append(CellOffset(float(x), float(y), median_offset(offsets[members])))
    return out


def _write(out, pair: LayerPair, matching, comparison: MapComparison, starts) -> Path:
    """The three layers into ``out`` (replaced only once all are written)."""
    part = temporary_output(out)
    part.unlink(missing_ok=True)
    try:
        _write_unmapped(part, pair, matching)
        _write_unseen(part, pair, matching)
        _write_offsets(part, pair, comparison, starts)
        part.replace(out)
    finally:
        part.unlink(missing_ok=True)
    return out


def _write_unmapped(path: Path, pair: LayerPair, matching) -> None:
    result: Layer = pair.first
    picks = matching.unmatched_first(result.inside)
    confidences = result.confidences()
    areas = shapely.area(result.geometries)
    if confidences is not None:  # most confident first; input order on ties
        order = picks[np.argsort(-confidences[picks], kind="stable")]
    else:
        order = picks[np.argsort(-areas[picks], kind="stable")]
    rows = source_rows(result, order)
    for rank, (row, k) in enumerate(zip(rows, order, strict=True), start=1):
        row.update(
            rank=rank,
            confidence=None if confidences is None else float(confidences[k]),
            area_m2=round(float(areas[k]), 2),
            iou=round(float(matching.result.proposal_iou[k]), 4),
        )
    geoms = [multipolygon(result.originals[k]) for k in order]
    write_layer(path, "unmapped", geoms, rows, UNMAPPED_FIELDS, pair.out_crs)


def _write_unseen(path: Path, pair: LayerPair, matching) -> None:
    reference: Layer = pair.second
    picks = matching.unmatched_second(reference.inside)
    areas = shapely.area(reference.geometries)
    rows = source_rows(reference, picks)
    for row, k in zip(rows, picks, strict=True):
        row.update(
            area_m2=round(float(areas[k]), 2),
            iou=round(float(matching.result.truth_iou[k]), 4),
        )
    geoms = [multipolygon(reference.originals[k]) for k in picks]
    write_layer(path, "unseen", geoms, rows, UNSEEN_FIELDS, pair.out_crs)


def _write_offsets(path: Path, pair: LayerPair, comparison: MapComparison, starts) -> None:
    lines, rows = [], []
    entries = []
    if comparison.offset is not None:
        x, y = starts.mean(axis=0)
        entries.append(("overall", float(x), float(y), comparison.offset))
    entries.extend(("cell", c.x, c.y, c.offset) for c in comparison.cells)
    for scope, x, y, offset in entries:
        lines.append(LineString([(x, y), (x + offset.dx_m, y + offset.dy_m)]))
        rows.append(
            {
                "scope": scope,
                "dx_m": round(offset.dx_m, 3),
                "dy_m": round(offset.dy_m, 3),
                "offset_m": round(float(np.hypot(offset.dx_m, offset.dy_m)), 3),
                "pairs": offset.pairs,
            }
        )
    write_layer(
        path, "offsets", to_output_crs(pair, lines), rows, OFFSET_FIELDS, pair.out_crs, "LineString"
    )
