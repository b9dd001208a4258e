"""What changed: two extractions of one place from different dates, as ``ternaus changes``,
``POST /v1/jobs/changes`` and ``ternaus:detect_changes``.

The layers are matched by the rules of :mod:`.map_gaps` (one to one by the SpaceNet rules at a
low IoU, 0.3 by default, after the earlier layer has been moved by the estimated offset between
the two dates' images, see :mod:`.layer_matching`). Then:

* ``new``: buildings of the later layer that match none of the earlier one;
* ``demolished``: buildings of the earlier layer that match none of the later one;
* ``changed``: matched pairs whose IoU (after the shift) is below the change threshold (0.7 by
  default): extended, rebuilt, or drawn differently; the later outline, with ``iou``,
  ``area_before_m2``, ``area_after_m2`` and ``area_change_pct``;
* unchanged: the other matched pairs (counted, not written).

The GeoPackage holds the layers ``new``, ``demolished`` and ``changed``, in the earlier layer's
CRS, each building with its own layer's attributes beside ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely

from ternaus_backend.errors import InputError
from ternaus_backend.evaluation.layer_matching import (
    LayerPair,
    Shift,
    check_thresholds,
    crs_text,
    match_shifted,
    multipolygon,
    read_layers,
    source_rows,
    temporary_output,
    write_layer,
)

LAYERS = ("new", "demolished", "changed")
NEW_FIELDS = {"area_m2": "float", "iou": "float"}
DEMOLISHED_FIELDS = {"area_m2": "float", "iou": "float"}
CHANGED_FIELDS = {
    "iou": "float",
    "area_before_m2": "float",
    "area_after_m2": "float",
    "area_change_pct": "float",
}


@dataclass
class ChangeDetection:
    """Counts, the shift between the dates and the GeoPackage (``out``) of a change detection."""

    before: int
    after: int
    new: int
    demolished: int
    changed: int
    unchanged: int
    shift: Shift
    match_iou: float
    change_iou: float
    out: Path | None
    crs: str | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The summary ``ternaus changes`` prints and the changes job returns."""
        return {
            "before": self.before,
            "after": self.after,
            "new": self.new,
            "demolished": self.demolished,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "shift": self.shift.to_dict(),
            "match_iou": self.match_iou,
            "change_iou": self.change_iou,
            "out": None if self.out is None else str(self.out),
            "layers": list(LAYERS) if self.out is not None else [],
            "metric_crs": self.crs,
            "warnings": self.warnings,
        }


def detect_changes(
    before_path: str | Path,
    after_path: str | Path,
    out: str | Path | None = None,
    area_path: str | Path | None = None,
    match_iou: float = 0.3,
    change_iou: float = 0.7,
) -> ChangeDetection:
    """Compare the buildings of ``before_path`` and ``after_path`` (inside ``area_path``'s
    polygons when given); with ``out``, write the ``new``, ``demolished`` and ``changed`` layers
    there (see the module docstring)."""
    check_thresholds(match_iou=match_iou, change_iou=change_iou)
    if change_iou < match_iou:
        raise InputError(
            f"The change threshold ({change_iou}) must not be below the matching threshold "
            f"({match_iou}): a matched pair below it counts as changed."
        )
    pair = read_layers(after_path, before_path, area_path, ("later layer", "earlier layer"))
    matching = match_shifted(pair, match_iou)
    after_idx, before_idx = matching.pairs(pair.first.inside)
    iou = matching.result.proposal_iou[after_idx]
    changed = iou < change_iou
    warnings = []
    if len(after_idx) == 0:
        warnings.append(
            "No building of the later layer matched one of the earlier layer: check that both "
            "cover the same place (and the CRS of each)."
        )
    detection = ChangeDetection(
        before=int(pair.second.inside.sum()),
        after=int(pair.first.inside.sum()),
        new=len(matching.unmatched_first(pair.first.inside)),
        demolished=len(matching.unmatched_second(pair.second.inside)),
        changed=int(changed.sum()),
        unchanged=int((~changed).sum()),
        shift=matching.shift,
        match_iou=match_iou,
        change_iou=change_iou,
        out=None,
        crs=crs_text(pair),
        warnings=warnings,
    )
    if out is not None:
        changed_pairs = (after_idx[changed], before_idx[changed])
        detection.out = _write(Path(out), pair, matching, changed_pairs)
    return detection


def _write(out: Path, pair: LayerPair, matching, changed_pairs) -> Path:
    """The three layers into ``out`` (replaced only once all are written)."""
    after, before = pair.first, pair.second
    area_after = shapely.area(after.geometries)
    area_before = shapely.area(before.geometries)
    part = temporary_output(out)
    part.unlink(missing_ok=True)
    try:
        new = matching.unmatched_first(after.inside)
        rows = source_rows(after, new)
        for row, k in zip(rows, new, strict=True):
            row.update(
                area_m2=round(float(area_after[k]), 2),
                iou=round(float(matching.result.proposal_iou[k]), 4),
            )
        geoms = [multipolygon(after.originals[k]) for k in new]
        write_layer(part, "new", geoms, rows, NEW_FIELDS, pair.out_crs)

        gone = matching.unmatched_second(before.inside)
        rows = source_rows(before, gone)
        for row, k in zip(rows, gone, strict=True):
            row.update(
                area_m2=round(float(area_before[k]), 2),
                iou=round(float(matching.result.truth_iou[k]), 4),
            )
        geoms = [multipolygon(before.originals[k]) for k in gone]
        write_layer(part, "demolished", geoms, rows, DEMOLISHED_FIELDS, pair.out_crs)

        a_idx, b_idx = changed_pairs
        rows = source_rows(after, a_idx)
        for row, a, b in zip(rows, a_idx, b_idx, strict=True):
            grown = 100.0 * (area_after[a] - area_before[b]) / area_before[b]
            row.update(
                iou=round(float(matching.result.proposal_iou[a]), 4),
                area_before_m2=round(float(area_before[b]), 2),
                area_after_m2=round(float(area_after[a]), 2),
                area_change_pct=round(float(grown), 1),
            )
        geoms = [multipolygon(after.originals[k]) for k in a_idx]
        write_layer(part, "changed", geoms, rows, CHANGED_FIELDS, pair.out_crs)
        part.replace(out)
    finally:
        part.unlink(missing_ok=True)
    return out
