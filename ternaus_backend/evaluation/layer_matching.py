"""Two building layers of one place, matched one to one while allowing for a shift between them.

What :mod:`.map_gaps` (our result against a map's buildings) and :mod:`.changes` (two dates)
share:

* :func:`read_layers` reads both layers into one local metric CRS (the second layer's CRS when it
  is projected in metres and not a Mercator; otherwise a transverse Mercator centred on the data,
  so offsets are metres east and north), repairs invalid polygons, keeps polygonal features
  and copies of them in the output CRS (the second layer's own) to write. With an area, the
  buildings that intersect it are reported (``inside``) but those up to 50 m around it are
  matched too, so a building on the area's edge does not lose its partner across it;
* :func:`estimate_shift` finds how far the first layer lies from the second: each polygon of the
  first is paired with the polygon of the second whose centroid is nearest; pairs whose IoU is
  above 0.1 give the median offset of their centroids; repeated (the second layer moved by the
  estimate) until it settles. Started from no shift and from the most common offset between
  centroids up to 30 m apart, so offsets larger than the buildings are found too;
* :func:`match_shifted` matches by the SpaceNet rules (:func:`~.spacenet.match`: confidence
  order, best IoU, one to one) after moving the second layer by that shift, so a layer drawn a
  few metres off still matches at an IoU threshold like 0.3;
* :func:`write_layer` writes a GeoPackage layer with a fixed schema (empty layers keep their
  fields), the source features' own attributes kept beside ours.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fiona
import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import MultiPolygon, mapping
from shapely.geometry.base import BaseGeometry

from ternaus_backend.errors import InputError
from ternaus_backend.evaluation.spacenet import MatchResult, file_confidences, match
from ternaus_backend.vector_io import (
    VectorData,
    polygon_parts,
    read_features,
    read_polygons,
    reproject_geometries,
    to_crs,
)

#: How far around an area (metres) buildings are matched, though only those inside are reported.
AREA_MARGIN_M = 50.0
#: IoU above which nearest-centroid pairs count when the shift is estimated.
SHIFT_PAIR_IOU = 0.1
#: How far apart (metres) centroids may be in the vote for offsets larger than the buildings.
SHIFT_SEARCH_M = 30.0


@dataclass
class Layer:
    """The kept features of one input: polygons in the work CRS (``geometries``) and in the
    output CRS (``originals``), their attributes, their positions in the file (``index``), and
    which of them lie in the area (``inside``; all without an area)."""

    path: Path
    geometries: np.ndarray
    originals: list[MultiPolygon]
    properties: list[dict[str, Any]]
    index: np.ndarray
    inside: np.ndarray
    repaired: int = 0

    def __len__(self) -> int:
        return len(self.geometries)

    def confidences(self) -> np.ndarray | None:
        """The ``confidence`` (or ``conf``) attribute, when the layer has one."""
        return file_confidences(VectorData(list(self.geometries), self.properties, None), self.path)


@dataclass
class LayerPair:
    """Two layers in one metric CRS (``work_crs``; None when neither file declares a CRS);
    ``out_crs``: the CRS the output layers are written in (the second layer's)."""

    first: Layer
    second: Layer
    work_crs: CRS | None
    out_crs: str | None


@dataclass(frozen=True)
class Shift:
    """How far the first layer lies from the second: metres east (``dx_m``) and north
    (``dy_m``), the median over ``pairs`` pairs of buildings."""

    dx_m: float
    dy_m: float
    pairs: int

    def to_dict(self) -> dict[str, float | int]:
        return {"dx_m": round(self.dx_m, 3), "dy_m": round(self.dy_m, 3), "pairs": self.pairs}


NO_SHIFT = Shift(0.0, 0.0, 0)


# ------------------------------------------------------------------------------ reading


def read_layers(
    first_path: str | Path,
    second_path: str | Path,
    area_path: str | Path | None = None,
    roles: tuple[str, str] = ("first layer", "second layer"),
) -> LayerPair:
    """Both layers in one local metric CRS (see the module docstring), polygonal features only,
    with an area, those within :data:`AREA_MARGIN_M` of its polygons (``inside``: those that
    intersect it)."""
    first_path, second_path = Path(first_path), Path(second_path)
    second = read_features(second_path)
    first = read_features(first_path)
    if (second.crs is None) != (first.crs is None):
        missing, other = (
            (second_path, first_path) if second.crs is None else (first_path, second_path)
        )
        raise InputError(
            f"{missing.name} declares no CRS but {other.name} does: assign it its CRS (QGIS: "
            "Layer > Set CRS, then save) and try again."
        )
    work_crs = out_crs = None
    if second.crs is not None:
        out_crs = second.crs
        work_crs = local_metric_crs(to_crs(second.crs), second.geometries)
        first = read_features(first_path, dst_crs=out_crs)
    area = None
    if area_path is not None:
        area = shapely.union_all(read_polygons(area_path, dst_crs=work_crs))
        if area.is_empty:
            raise InputError(f"The area {Path(area_path).name} holds no polygon: choose another.")
    layers = [
        _kept(data, path, out_crs, work_crs, area)
        for data, path in ((first, first_path), (second, second_path))
    ]
    for layer, role, path in zip(layers, roles, (first_path, second_path), strict=True):
        if not layer.inside.any():
            where = " inside the area" if area is not None else ""
            raise InputError(
                f"The {role} {path.name} holds no building polygon{where}: choose a polygon layer "
                "with buildings" + (" or another area." if area is not None else ".")
            )
    return LayerPair(layers[0], layers[1], work_crs, out_crs)


def local_metric_crs(crs: CRS, geoms: Sequence[BaseGeometry]) -> CRS:
    """``crs`` when it is projected in metres and not a Mercator (whose metres grow away from the
    equator); otherwise a transverse Mercator centred on the geometries (in ``crs``)."""
    unit = (crs.axis_info[0].unit_name or "").lower() if crs.axis_info else ""
    method = (
        (crs.coordinate_operation.method_name or "").lower() if crs.coordinate_operation else ""
    )
    mercator = "mercator" in method and "transverse" not in method
    if crs.is_projected and unit in ("metre", "meter") and not mercator:
        return crs
    arr = np.asarray([g for g in geoms if g is not None and not g.is_empty], dtype=object)
    if len(arr) == 0:
        return crs
    west, south, east, north = shapely.total_bounds(arr)
    to_lonlat = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    lon, lat = to_lonlat.transform((west + east) / 2.0, (south + north) / 2.0)
    return CRS.from_proj4(
        f"+proj=tmerc +lat_0={lat:.8f} +lon_0={lon:.8f} +k=1 +x_0=0 +y_0=0 +datum=WGS84 "
        "+units=m +no_defs"
    )


def _kept(data: VectorData, path: Path, out_crs: str | None, work_crs: CRS | None, area) -> Layer:
    """The polygonal features of ``data`` (in ``out_crs``), repaired, in the area."""
    index, originals, repaired = [], [], 0
    for n, geom in enumerate(data.geometries):
        if geom is None or geom.is_empty:
            continue
        parts = polygon_parts(geom)
        if not parts:
            continue
        repaired += int(not geom.is_valid)
        index.append(n)
        originals.append(MultiPolygon(parts))
    work = list(originals)
    if out_crs is not None and work_crs is not None and originals:
        work = reproject_geometries(originals, out_crs, work_crs)
    geoms = np.empty(len(work), dtype=object)
    geoms[:] = work
    keep = np.ones(len(geoms), dtype=bool)
    inside = keep
    if area is not None and len(geoms):
        keep = shapely.intersects(geoms, area.buffer(AREA_MARGIN_M))
        inside = shapely.intersects(geoms[keep], area)
    geoms = geoms[keep]
    invalid = ~shapely.is_valid(geoms) if len(geoms) else np.zeros(0, dtype=bool)
    geoms[invalid] = shapely.buffer(geoms[invalid], 0.0)  # a reprojection may pinch a ring
    return Layer(
        path,
        geoms,
        [g for g, k in zip(originals, keep, strict=True) if k],
        [data.properties[n] for n, k in zip(index, keep, strict=True) if k],
        np.asarray(index, dtype=np.int64)[keep],
        inside,
        repaired,
    )


# ------------------------------------------------------------------------------ matching


def centroids(geoms: np.ndarray) -> np.ndarray:
    """The (n, 2) centroids of ``geoms``."""
    if len(geoms) == 0:
        return np.zeros((0, 2))
    points = shapely.centroid(geoms)
    return np.column_stack([shapely.get_x(points), shapely.get_y(points)])


def translated(geoms: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``geoms`` moved by (dx, dy)."""
    if len(geoms) == 0 or (dx == 0.0 and dy == 0.0):
        return geoms
    return shapely.transform(geoms, lambda xy: xy + np.array([dx, dy]))


def pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``a[k]`` with ``b[k]`` (0 where they do not overlap)."""
    if len(a) == 0:
        return np.zeros(0)
    inter = shapely.area(shapely.intersection(a, b))
    union = shapely.area(shapely.union(a, b))
    return np.divide(inter, union, out=np.zeros(len(a)), where=union > 0)


def estimate_shift(
    first: np.ndarray,
    second: np.ndarray,
    min_iou: float = SHIFT_PAIR_IOU,
    search_m: float = SHIFT_SEARCH_M,
) -> Shift:
    """How far ``first`` lies from ``second`` (first minus second); :data:`NO_SHIFT` when no
    pair of buildings overlaps.

    From no shift, and from the most common offset between centroids less than ``search_m``
    apart (a vote, for offsets larger than the buildings), :func:`refine_shift` pairs nearest
    centroids; the start whose answer holds more pairs with IoU above ``min_iou`` wins (no shift
    on ties); a shift found by the vote alone must hold at least 3 pairs and a tenth of the
    smaller layer.
    """
    if len(first) == 0 or len(second) == 0:
        return NO_SHIFT
    c_first, c_second = centroids(first), centroids(second)
    best = refine_shift(first, second, c_first, c_second, NO_SHIFT, min_iou)
    guess = _vote(c_first, c_second, search_m) if search_m > 0 else None
    if guess is not None and np.hypot(guess.dx_m - best.dx_m, guess.dy_m - best.dy_m) > 0.5:
        other = refine_shift(first, second, c_first, c_second, guess, min_iou)
        # A shift no building overlaps at zero needs broad support, not a chance pair or two.
        enough = max(3, 0.1 * min(len(first), len(second)))
        if other.pairs > best.pairs and other.pairs >= enough:
            best = other
    return best


def refine_shift(
    first: np.ndarray,
    second: np.ndarray,
    c_first: np.ndarray,
    c_second: np.ndarray,
    start: Shift,
    min_iou: float = SHIFT_PAIR_IOU,
    rounds: int = 5,
) -> Shift:
    """From ``start``: each polygon of ``first`` paired with the (moved) polygon of ``second``
    whose centroid is nearest; the median offset of the pairs with IoU above ``min_iou`` is the
    next estimate, until it settles. ``start`` (with 0 pairs) when no pair overlaps enough."""
    shift = Shift(start.dx_m, start.dy_m, 0)
    for _ in range(rounds):
        moved = translated(second, shift.dx_m, shift.dy_m)
        tree = shapely.STRtree(shapely.points(c_second + [shift.dx_m, shift.dy_m]))
        i_first, i_second = tree.query_nearest(shapely.points(c_first), all_matches=False)
        iou = pair_iou(first[i_first], moved[i_second])
        good = iou > min_iou
        if not good.any():
            return shift
        offsets = c_first[i_first[good]] - c_second[i_second[good]]
        dx, dy = np.median(offsets, axis=0)
        settled = abs(dx - shift.dx_m) < 0.005 and abs(dy - shift.dy_m) < 0.005
        shift = Shift(float(dx), float(dy), int(good.sum()))
        if settled:
            break
    return shift


def _vote(c_first: np.ndarray, c_second: np.ndarray, search_m: float, bin_m: float = 0.5):
    """The most common offset between centroids less than ``search_m`` apart (bins of
    ``bin_m``, the mean of the winning bin and its neighbours); None without such pairs."""
    tree = shapely.STRtree(shapely.points(c_second))
    i_first, i_second = tree.query(shapely.points(c_first), predicate="dwithin", distance=search_m)
    if len(i_first) == 0:
        return None
    offsets = c_first[i_first] - c_second[i_second]
    edges = np.arange(-search_m, search_m + bin_m, bin_m)
    counts, _, _ = np.histogram2d(offsets[:, 0], offsets[:, 1], bins=[edges, edges])
    ix, iy = np.unravel_index(np.argmax(counts), counts.shape)
    near = (np.abs(offsets[:, 0] - (edges[ix] + bin_m / 2)) <= 1.5 * bin_m) & (
        np.abs(offsets[:, 1] - (edges[iy] + bin_m / 2)) <= 1.5 * bin_m
    )
    dx, dy = offsets[near].mean(axis=0)
    return Shift(float(dx), float(dy), int(near.sum()))


@dataclass(frozen=True)
class ShiftedMatch:
    """A one-to-one matching after the shift: ``result`` (per polygon of the first layer:
    ``matched_truth``, ``proposal_iou``; per polygon of the second: ``truth_iou``)."""

    shift: Shift
    result: MatchResult

    @property
    def all_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices (first, second) of the matched pairs, in the area or around it."""
        first = np.flatnonzero(self.result.matched_truth >= 0)
        return first, self.result.matched_truth[first]

    def pairs(self, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The matched pairs whose polygon of the first layer lies in the area."""
        first, second = self.all_pairs
        keep = inside[first]
        return first[keep], second[keep]

    def unmatched_first(self, inside: np.ndarray) -> np.ndarray:
        """Polygons of the first layer in the area that matched none."""
        return np.flatnonzero((self.result.matched_truth < 0) & inside)

    def unmatched_second(self, inside: np.ndarray) -> np.ndarray:
        """Polygons of the second layer in the area that matched none."""
        matched = np.zeros(len(self.result.truth_iou), dtype=bool)
        matched[self.all_pairs[1]] = True
        return np.flatnonzero(~matched & inside)


def match_shifted(
    pair: LayerPair, iou_threshold: float, shift: Shift | None = None
) -> ShiftedMatch:
    """Estimate the shift (unless given), move the second layer by it, match by the SpaceNet
    rules: the first layer's polygons are visited by confidence (when it has one)."""
    first, second = pair.first.geometries, pair.second.geometries
    if shift is None:
        shift = estimate_shift(first, second)
    moved = translated(second, shift.dx_m, shift.dy_m)
    result = match(list(first), list(moved), pair.first.confidences(), iou_threshold)
    return ShiftedMatch(shift, result)


def median_offset(offsets: np.ndarray) -> Shift | None:
    """The median of (n, 2) offsets, None when there are none."""
    if len(offsets) == 0:
        return None
    dx, dy = np.median(offsets, axis=0)
    return Shift(float(dx), float(dy), len(offsets))


# ------------------------------------------------------------------------------ writing


def check_thresholds(**thresholds: float) -> None:
    """Refuse IoU thresholds outside [0, 1)."""
    for name, value in thresholds.items():
        if not 0.0 <= value < 1.0:
            label = THRESHOLD_NAMES.get(name, name)
            raise InputError(f"The {label} must be in [0, 1) (e.g. 0.3), got {value}.")


THRESHOLD_NAMES = {
    "iou_threshold": "IoU threshold",
    "match_iou": "matching IoU threshold",
    "change_iou": "change IoU threshold",
}


def source_rows(layer: Layer, picks: Sequence[int]) -> list[dict[str, Any]]:
    """The attributes of ``layer``'s features ``picks`` in types GeoPackage takes: numbers,
    text and booleans as they are, anything else (dates, lists) as text; ``fid`` renamed."""
    rows = []
    for k in picks:
        row = {}
        for key, value in layer.properties[k].items():
            if key.lower() == "fid":
                key = "source_fid"
            if isinstance(value, (datetime.date, datetime.time, list, dict, bytes)):
                value = str(value)
            row[key] = value
        rows.append(row)
    return rows


def write_layer(
    path: Path,
    layer_name: str,
    geometries: Sequence[BaseGeometry],
    rows: Sequence[dict[str, Any]],
    fields: dict[str, str],
    crs: str | None,
    geometry_type: str = "MultiPolygon",
) -> None:
    """One GeoPackage layer; ``fields`` (ours, name -> fiona type) come first and are always
    there, the other attributes of ``rows`` follow, typed by their values (text when mixed)."""
    schema = dict(fields)
    for key, kind in _row_types(rows).items():
        if key.lower() not in {name.lower() for name in schema}:
            schema[key] = kind
    records = (
        {
            "geometry": mapping(geom),
            "properties": {key: _cast(row.get(key), kind) for key, kind in schema.items()},
        }
        for geom, row in zip(geometries, rows, strict=True)
    )
    with fiona.open(  # an existing GeoPackage gets one more layer
        path,
        "w",
        driver="GPKG",
        schema={"geometry": geometry_type, "properties": schema},
        crs_wkt=to_crs(crs).to_wkt() if crs is not None else None,
        layer=layer_name,
    ) as dst:
        dst.writerecords(records)


def _row_types(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Each attribute's fiona type: int, float, bool or str; str when its values are mixed."""
    types: dict[str, str | None] = {}
    for row in rows:
        for key, value in row.items():
            kind = None if value is None else _kind(value)
            known = types.get(key)
            if known is None:
                types[key] = kind
            elif kind is not None and kind != known:
                types[key] = "float" if {kind, known} == {"int", "float"} else "str"
    return {key: kind or "str" for key, kind in types.items()}


def _kind(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    return "str"


def _cast(value: Any, kind: str) -> Any:
    """``value`` as the field's type (None stays None)."""
    if value is None:
        return None
    if kind == "str":
        return str(value)
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    return bool(value)


def temporary_output(out: Path) -> Path:
    """A sibling of ``out`` to write into before it replaces ``out`` (so a failure midway
    leaves an earlier file whole)."""
    return out.with_name(f".{out.stem}.part-{os.getpid()}{out.suffix}")


def multipolygon(geom: BaseGeometry) -> MultiPolygon:
    """A (Multi)Polygon as a MultiPolygon (one geometry type per layer)."""
    return geom if geom.geom_type == "MultiPolygon" else MultiPolygon(polygon_parts(geom))


def crs_text(pair: LayerPair) -> str | None:
    """The work CRS in words: its name, or its PROJ string when it is our local one."""
    if pair.work_crs is None:
        return None
    name = pair.work_crs.name
    return pair.work_crs.srs if name in ("", "unknown") else name


def to_output_crs(pair: LayerPair, geoms: Sequence[BaseGeometry]) -> list[BaseGeometry]:
    """Geometries made in the work CRS, in the output CRS."""
    if not geoms or pair.work_crs is None or pair.out_crs is None:
        return list(geoms)
    return reproject_geometries(geoms, pair.work_crs, pair.out_crs)
