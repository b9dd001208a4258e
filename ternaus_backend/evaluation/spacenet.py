"""The SpaceNet building-footprint F1 (the rules of the SpaceNet 2/4 scoring code).

Per image:

* ground-truth polygons are kept when ``area >= min_area``, proposals when ``area > min_area``
  (the asymmetry is part of the official rules); empty geometries are ignored;
* proposals are visited by confidence, highest first (ties keep input order); each is compared
  with the still-unmatched ground truths it intersects (an invalid proposal is repaired with
  ``buffer(0)`` first; IoU is 0 when either polygon is invalid) and the best one (the first in
  ground-truth order on ties) is taken: IoU ``> iou_threshold`` (strict) is a true positive and
  removes that ground truth, anything else is a false positive;
* false negatives are the unmatched ground truths with a positive area.

Counts are pooled over images by summing TP/FP/FN; precision, recall and F1 then come from the
sums (never a mean of per-image F1).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS
from shapely.errors import GEOSException
from shapely.geometry import MultiPolygon
from shapely.geometry.base import BaseGeometry

from ternaus_backend.errors import InputError
from ternaus_backend.vector_io import VectorData, polygon_parts, read_features, to_crs

__all__ = [
    "Scores",
    "MatchResult",
    "BuildingIoU",
    "CsvScores",
    "match",
    "score",
    "score_csv",
    "match_files",
    "evaluate_files",
    "aoi_of",
    "nadir_category_of",
]

#: Property names (case-insensitive, in order of preference) that hold a proposal's confidence.
CONFIDENCE_FIELDS: tuple[str, ...] = ("confidence", "conf")


@dataclass(frozen=True)
class Scores:
    """True/false positive and false negative counts with the metrics derived from them."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int) -> Scores:
        """Scores from counts (non-negative integers)."""
        counts = (int(tp), int(fp), int(fn))
        if min(counts) < 0:
            raise InputError(f"Counts must be non-negative, got tp={tp}, fp={fp}, fn={fn}.")
        return cls(*counts)

    @classmethod
    def pool(cls, items: Iterable[Scores]) -> Scores:
        """The sum of several Scores (counts added, metrics recomputed)."""
        total = cls()
        for item in items:
            total = total + item
        return total

    @property
    def precision(self) -> float:
        """TP / (TP + FP), 0 when there are no proposals."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN), 0 when there is no ground truth."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall, 0 when either is 0."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p * r else 0.0

    def __add__(self, other: Scores) -> Scores:
        if not isinstance(other, Scores):
            return NotImplemented
        return Scores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def to_dict(self) -> dict[str, int | float]:
        """Counts and metrics as a plain dict (JSON-ready)."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


@dataclass(frozen=True)
class MatchResult:
    """Scores plus the per-polygon outcome of the matching, aligned with the inputs.

    ``truth_iou[i]``: the largest IoU among the proposals for which truth ``i`` was the best
    still-unmatched candidate (0 for ignored truths). ``proposal_iou[j]``: the IoU of proposal
    ``j`` with its best candidate (0 when ignored or without candidates). ``matched_truth[j]``:
    the truth index that proposal ``j`` matched as a true positive, or -1.
    """

    scores: Scores
    truth_iou: np.ndarray
    proposal_iou: np.ndarray
    matched_truth: np.ndarray


def match(
    proposals: Sequence[BaseGeometry],
    truths: Sequence[BaseGeometry],
    confidences: Sequence[float] | None = None,
    iou_threshold: float = 0.5,
    min_area: float = 0.0,
) -> MatchResult:
    """Match proposals to ground truth by the SpaceNet rules (see the module docstring).

    ``min_area`` is in the squared units of the coordinates (pixels for SpaceNet CSVs).
    """
    _check_parameters(iou_threshold, min_area)
    props, gts = _as_geometry_array(proposals), _as_geometry_array(truths)
    order = _visit_order(props, _confidence_array(confidences, len(props)), min_area)
    gt_kept = np.flatnonzero(~shapely.is_empty(gts) & (shapely.area(gts) >= min_area))
    repaired = _repair(props[order])
    pos, cand, iou = _candidate_ious(repaired, gts, gt_kept)
    bounds = np.searchsorted(pos, np.arange(len(order) + 1))

    truth_iou = np.zeros(len(gts))
    proposal_iou = np.zeros(len(props))
    matched_truth = np.full(len(props), -1, dtype=np.int64)
    unmatched = np.zeros(len(gts), dtype=bool)
    unmatched[gt_kept] = True
    tp = 0
    for k, j in enumerate(order):
        lo, hi = bounds[k], bounds[k + 1]
        free = unmatched[cand[lo:hi]]
        if not free.any():
            continue
        best = lo + np.flatnonzero(free)[np.argmax(iou[lo:hi][free])]
        i, value = cand[best], iou[best]
        truth_iou[i] = max(truth_iou[i], value)
        proposal_iou[j] = value
        if value > iou_threshold:
            unmatched[i] = False
            matched_truth[j] = i
            tp += 1
    fn = int(np.count_nonzero(unmatched & (shapely.area(gts) > 0)))
    scores = Scores(tp=tp, fp=len(order) - tp, fn=fn)
    return MatchResult(scores, truth_iou, proposal_iou, matched_truth)


def score(
    proposals: Sequence[BaseGeometry],
    truths: Sequence[BaseGeometry],
    confidences: Sequence[float] | None = None,
    iou_threshold: float = 0.5,
    min_area: float = 0.0,
) -> Scores:
    """SpaceNet TP/FP/FN, precision, recall and F1 of one image (see ``match``)."""
    return match(proposals, truths, confidences, iou_threshold, min_area).scores


def _check_parameters(iou_threshold: float, min_area: float) -> None:
    """Refuse thresholds outside [0, 1) and negative areas."""
    if not 0.0 <= iou_threshold < 1.0:
        raise InputError(f"The IoU threshold must be in [0, 1), got {iou_threshold}.")
    if not min_area >= 0.0:
        raise InputError(f"The minimum area must be 0 or more, got {min_area}.")


def _as_geometry_array(geoms: Sequence[BaseGeometry | None]) -> np.ndarray:
    """An object array of 2D geometries; None becomes an empty geometry."""
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = [shapely.GeometryCollection() if g is None else g for g in geoms]
    return shapely.force_2d(arr)


def _confidence_array(confidences: Sequence[float] | None, n: int) -> np.ndarray:
    """Confidences as floats (all equal when None); refuses wrong lengths and NaN."""
    if confidences is None:
        return np.zeros(n)
    conf = np.asarray(confidences, dtype=float)
    if conf.shape != (n,):
        raise InputError(f"Got {n} proposals but {conf.size} confidences: give one per proposal.")
    if np.isnan(conf).any():
        raise InputError("Some proposal confidences are NaN: give every proposal a number.")
    return conf


def _visit_order(props: np.ndarray, conf: np.ndarray, min_area: float) -> np.ndarray:
    """Indices of the kept proposals, highest confidence first, input order on ties."""
    kept = np.flatnonzero(~shapely.is_empty(props) & (shapely.area(props) > min_area))
    return kept[np.argsort(-conf[kept], kind="stable")]


def _repair(geoms: np.ndarray) -> np.ndarray:
    """Invalid geometries replaced by their ``buffer(0)``."""
    out = geoms.copy()
    invalid = ~shapely.is_valid(out)
    out[invalid] = shapely.buffer(out[invalid], 0.0)
    return out


def _candidate_ious(
    props: np.ndarray, gts: np.ndarray, gt_kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All intersecting (proposal position, truth index) pairs and their IoU.

    Pairs are sorted by proposal position, then truth index; the IoU is 0 when either
    polygon is invalid.
    """
    tree = shapely.STRtree(gts[gt_kept])
    pos, leaf = tree.query(props, predicate="intersects")
    cand = gt_kept[leaf]
    sort = np.lexsort((cand, pos))
    pos, cand = pos[sort], cand[sort]
    iou = np.zeros(len(pos))
    ok = shapely.is_valid(props[pos]) & shapely.is_valid(gts[cand])
    a, b = props[pos[ok]], gts[cand[ok]]
    iou[ok] = shapely.area(shapely.intersection(a, b)) / shapely.area(shapely.union(a, b))
    return pos, cand, iou


# --- SpaceNet CSV files --------------------------------------------------------------------


@dataclass(frozen=True)
class BuildingIoU:
    """The IoU of one ground-truth row of a SpaceNet CSV (0 when unmatched or ignored)."""

    image_id: str
    building_id: str
    iou: float


@dataclass(frozen=True)
class CsvScores:
    """Scores of a SpaceNet CSV pair per image, per group (AOI by default) and pooled.

    ``per_building`` follows the rows of the ground-truth CSV.
    """

    per_image: dict[str, Scores]
    per_group: dict[str, Scores]
    total: Scores
    per_building: list[BuildingIoU]


@dataclass
class _CsvTable:
    """The rows of one SpaceNet CSV file."""

    image_ids: list[str]
    building_ids: list[str]
    geometries: np.ndarray
    confidences: np.ndarray


_SN2_AOI = re.compile(r"^(AOI_\d+_[^_]+)_")
_SN4_NADIR = re.compile(r"^(.+?)_nadir(\d+)_")


def aoi_of(image_id: str) -> str:
    """The area of interest of a SpaceNet image id.

    ``AOI_2_Vegas_img3457`` -> ``AOI_2_Vegas``; ``Atlanta_nadir10_catid_..`` -> ``Atlanta``;
    anything else -> ``other``.
    """
    for pattern in (_SN2_AOI, _SN4_NADIR):
        found = pattern.match(image_id)
        if found:
            return found.group(1)
    return "other"


def nadir_category_of(image_id: str) -> str:
    """The SpaceNet-4 look-angle category of an image id (``..._nadir10_..`` -> ``Nadir``).

    Nadir: up to 25 degrees; Off-Nadir: 26 to 40; Very-Off-Nadir: above 40; ``other`` when the
    id has no ``_nadirNN_`` part.
    """
    found = _SN4_NADIR.match(image_id)
    if not found:
        return "other"
    angle = int(found.group(2))
    return "Nadir" if angle <= 25 else "Off-Nadir" if angle <= 40 else "Very-Off-Nadir"


_GROUPERS: dict[str, Callable[[str], str]] = {"aoi": aoi_of, "nadir": nadir_category_of}


def score_csv(
    truth_csv: str | Path,
    pred_csv: str | Path,
    iou_threshold: float = 0.5,
    min_area: float = 20.0,
    group_by: str | Callable[[str], str] | None = "aoi",
) -> CsvScores:
    """Score a SpaceNet proposal CSV against a ground-truth CSV (pixel WKT, ``min_area`` in px).

    Both files have the columns ImageId, BuildingId, PolygonWKT_Pix (+ Confidence for the
    proposals; without it all proposals rank equal). ``POLYGON EMPTY`` rows mark images without
    buildings: the image is scored (0/0/0 when both sides are empty) but the row is not.
    ``group_by``: "aoi", "nadir", a function of the image id, or None for no groups.
    """
    grouper = _grouper(group_by)
    truth, preds = _read_spacenet_csv(truth_csv), _read_spacenet_csv(pred_csv)
    truth_rows, pred_rows = _rows_by_image(truth.image_ids), _rows_by_image(preds.image_ids)
    truth_iou = np.zeros(len(truth.image_ids))
    per_image: dict[str, Scores] = {}
    for image_id in dict.fromkeys([*truth_rows, *pred_rows]):
        t_idx = np.asarray(truth_rows.get(image_id, []), dtype=np.int64)
        p_idx = np.asarray(pred_rows.get(image_id, []), dtype=np.int64)
        result = match(
            preds.geometries[p_idx],
            truth.geometries[t_idx],
            preds.confidences[p_idx],
            iou_threshold,
            min_area,
        )
        per_image[image_id] = result.scores
        truth_iou[t_idx] = result.truth_iou
    per_group: dict[str, Scores] = {}
    if grouper is not None:
        for image_id, scores in per_image.items():
            key = grouper(image_id)
            per_group[key] = per_group.get(key, Scores()) + scores
    per_building = [
        BuildingIoU(i, b, float(v))
        for i, b, v in zip(truth.image_ids, truth.building_ids, truth_iou, strict=True)
    ]
    return CsvScores(per_image, per_group, Scores.pool(per_image.values()), per_building)


def _grouper(group_by: str | Callable[[str], str] | None) -> Callable[[str], str] | None:
    """Resolve ``group_by`` to a function of the image id."""
    if group_by is None or callable(group_by):
        return group_by
    if group_by not in _GROUPERS:
        raise InputError(f"Unknown group_by {group_by!r}: use one of {', '.join(_GROUPERS)}.")
    return _GROUPERS[group_by]


def _rows_by_image(image_ids: Sequence[str]) -> dict[str, list[int]]:
    """Row indices per image id, in order of first appearance."""
    rows: dict[str, list[int]] = {}
    for index, image_id in enumerate(image_ids):
        rows.setdefault(image_id, []).append(index)
    return rows


def _read_spacenet_csv(path: str | Path) -> _CsvTable:
    """Read a SpaceNet CSV; column names are matched case-insensitively."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"SpaceNet CSV not found: {path}. Check the path.")
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long polygon WKT
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {name.lower(): name for name in reader.fieldnames or []}
        image_col = columns.get("imageid")
        wkt_col = columns.get("polygonwkt_pix")
        if image_col is None or wkt_col is None:
            raise InputError(
                f"{path.name} is not a SpaceNet CSV: it needs the columns ImageId and "
                f"PolygonWKT_Pix, found {', '.join(reader.fieldnames or []) or 'none'}."
            )
        building_col, conf_col = columns.get("buildingid"), columns.get("confidence")
        rows = list(reader)
    return _CsvTable(
        image_ids=[row[image_col] for row in rows],
        building_ids=[row[building_col] if building_col else str(n) for n, row in enumerate(rows)],
        geometries=_parse_wkt([row[wkt_col] for row in rows], path),
        confidences=_parse_confidences(rows, conf_col, path),
    )


def _parse_wkt(texts: list[str], path: Path) -> np.ndarray:
    """Pixel WKT strings as 2D geometries; a bad row raises InputError naming it."""
    try:
        return shapely.force_2d(shapely.from_wkt(np.asarray(texts, dtype=object)))
    except GEOSException:
        for line, text in enumerate(texts, start=2):
            try:
                shapely.from_wkt(text)
            except GEOSException as exc:
                raise InputError(
                    f"{path.name}, line {line}: the polygon is not valid WKT; fix or remove it.",
                    details=str(exc),
                ) from exc
        raise


def _parse_confidences(rows: list[dict[str, str]], column: str | None, path: Path) -> np.ndarray:
    """The Confidence column as floats (zeros when the column is absent)."""
    if column is None:
        return np.zeros(len(rows))
    try:
        return np.asarray([float(row[column]) for row in rows], dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{path.name}: every Confidence must be a number; fix the column or remove it.",
            details=str(exc),
        ) from exc


# --- vector files ---------------------------------------------------------------------------


def match_files(
    pred_path: str | Path,
    truth_path: str | Path,
    iou_threshold: float = 0.5,
    min_area: float = 0.0,
) -> MatchResult:
    """Match predicted footprints to ground truth from two vector files (see ``match``).

    Predictions are reprojected to the ground truth's CRS. When that CRS is geographic,
    both are projected to a local equal-area CRS first, so that IoU and ``min_area`` are
    in metres. Invalid polygons on either side are repaired (``read_pair``). A ``confidence``
    (or ``conf``) property, any case, orders the proposals.
    """
    inputs = read_pair(pred_path, truth_path)
    confidences = _file_confidences(inputs.preds.properties, Path(pred_path))
    return match(
        inputs.preds.geometries, inputs.truth.geometries, confidences, iou_threshold, min_area
    )


@dataclass(frozen=True)
class MatchInputs:
    """Predictions and ground truth in one CRS, repaired; how many polygons needed repair."""

    preds: VectorData
    truth: VectorData
    repaired_pred: int = 0
    repaired_truth: int = 0


def read_pair(pred_path: str | Path, truth_path: str | Path) -> MatchInputs:
    """Predictions and ground truth in one CRS, for matching.

    Predictions are reprojected to the ground truth's CRS; when that CRS is geographic, both are
    projected to a local equal-area CRS, so that IoU and areas are in metres. Invalid polygons
    (self-intersections, bow-ties) on either side are repaired as training repairs labels
    (``make_valid``, polygon parts kept) instead of silently scoring as empty; they are counted.
    """
    truth = read_features(truth_path)
    if truth.crs is None:
        preds = read_features(pred_path)
        if preds.crs is not None:
            raise InputError(
                f"{Path(truth_path).name} declares no CRS but the predictions do: assign the "
                "ground truth its CRS (QGIS: Layer > Set CRS, then save) and try again."
            )
    else:
        work_crs = _metric_crs(to_crs(truth.crs), truth.geometries)
        preds = read_features(pred_path, dst_crs=work_crs)
        truth = read_features(truth_path, dst_crs=work_crs)
    pred_geoms, repaired_pred = _repaired(preds.geometries)
    truth_geoms, repaired_truth = _repaired(truth.geometries)
    return MatchInputs(
        VectorData(pred_geoms, preds.properties, preds.crs),
        VectorData(truth_geoms, truth.properties, truth.crs),
        repaired_pred,
        repaired_truth,
    )


def _repaired(geoms: Sequence[BaseGeometry]) -> tuple[list[BaseGeometry], int]:
    """Invalid geometries made valid (their polygon parts); how many were invalid."""
    out, count = [], 0
    for geom in geoms:
        if geom is not None and not geom.is_empty and not geom.is_valid:
            parts = polygon_parts(geom)
            geom = parts[0] if len(parts) == 1 else MultiPolygon(parts)
            count += 1
        out.append(geom)
    return out, count


def file_confidences(preds: VectorData, path: str | Path) -> np.ndarray | None:
    """The proposals' confidences from a ``confidence`` (or ``conf``) property, if any."""
    return _file_confidences(preds.properties, Path(path))


def evaluate_files(
    pred_path: str | Path,
    truth_path: str | Path,
    iou_threshold: float = 0.5,
    min_area: float = 0.0,
) -> Scores:
    """SpaceNet scores of a prediction file against a ground-truth file (see ``match_files``)."""
    return match_files(pred_path, truth_path, iou_threshold, min_area).scores


def _metric_crs(crs: CRS, geoms: Sequence[BaseGeometry]) -> CRS:
    """``crs`` when projected; otherwise a Lambert equal-area CRS centred on the geometries."""
    if not crs.is_geographic:
        return crs
    arr = np.asarray(geoms, dtype=object)
    if len(arr) == 0 or shapely.is_empty(arr).all():
        return crs
    west, south, east, north = shapely.total_bounds(arr)
    lon, lat = (west + east) / 2.0, (south + north) / 2.0
    return CRS.from_proj4(f"+proj=laea +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m +no_defs")


def _file_confidences(properties: list[dict[str, Any]], path: Path) -> np.ndarray | None:
    """Values of the first confidence property found, or None when there is none."""
    if not properties:
        return None
    names = {key.lower(): key for key in properties[0]}
    key = next((names[n] for n in CONFIDENCE_FIELDS if n in names), None)
    if key is None:
        return None
    values = [row.get(key) for row in properties]
    bad = [n for n, v in enumerate(values) if not _is_number(v)]
    if bad:
        raise InputError(
            f"{path.name}: the '{key}' field of feature {bad[0]} is not a number; give every "
            "prediction a confidence or remove the field.",
        )
    return np.asarray(values, dtype=float)


def _is_number(value: Any) -> bool:
    """True for finite ints and floats (not bools)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not math.isnan(float(value))
    )
