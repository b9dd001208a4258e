"""Instance labels to building polygons: outlines, simplification, right angles, area, attributes.

Outlines come from ``rasterio.features.shapes`` (8-connected pixels), are simplified by a tolerance
in pixels and, on request, regularised to right angles around the building's dominant direction.
``area_m2`` is true square metres in any CRS (see ``geodesy.GroundMeasure``).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import fiona
import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import shapes
from shapely import affinity, make_valid
from shapely.geometry import MultiPolygon, Polygon, mapping

from ternaus_backend.errors import InputError
from ternaus_backend.pipeline.geodesy import GroundMeasure
from ternaus_backend.scratch import scratch_name, sweep

LAYER_NAME = "buildings"
SCHEMA = {
    "geometry": "Polygon",
    "properties": {"id": "int", "confidence": "float", "area_m2": "float"},
}


def largest_polygon(geom) -> Polygon | None:
    """The largest polygonal part of a geometry (None when it has none)."""
    if geom.is_empty:
        return None
    if isinstance(geom, Polygon):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
    polys = [p for g in parts for p in (g.geoms if isinstance(g, MultiPolygon) else [g])]
    return max(polys, key=lambda p: p.area) if polys else None


def label_polygons(
    labels: np.ndarray, ids: np.ndarray, transform: Affine, min_hole_px: int = 0
) -> dict[int, Polygon]:
    """Polygons of the instances ``ids`` in map coordinates: each instance's largest 8-connected
    outline, without holes smaller than ``min_hole_px`` pixels. Validity is checked later, once,
    after simplification (:func:`finish_polygons`), so noisy masks cost little."""
    if len(ids) == 0:
        return {}
    min_hole_area = min_hole_px * abs(transform.determinant)
    keep = np.isin(labels, ids)
    result: dict[int, Polygon] = {}
    for geom, value in shapes(labels, mask=keep, connectivity=8, transform=transform):
        poly = _without_small_holes(geom["coordinates"], min_hole_area)
        previous = result.get(int(value))
        if previous is None or poly.area > previous.area:
            result[int(value)] = poly
    return result


def _without_small_holes(rings: list, min_area: float) -> Polygon:
    """A polygon from GeoJSON-like rings (exterior first), holes under ``min_area`` dropped."""
    holes = [ring for ring in rings[1:] if abs(_ring_area(ring)) >= min_area]
    return Polygon(rings[0], holes)


def _ring_area(ring: list) -> float:
    """Signed area of a closed ring (shoelace)."""
    xy = np.asarray(ring, dtype=np.float64)
    return 0.5 * float(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))


def _dominant_angle(ring: np.ndarray) -> float:
    """Edge-length-weighted dominant direction (radians, modulo 90 degrees) of a ring."""
    d = np.diff(ring, axis=0)
    lengths = np.hypot(d[:, 0], d[:, 1])
    angles = np.arctan2(d[:, 1], d[:, 0])
    z = np.sum(lengths * np.exp(4j * angles))
    return float(np.angle(z) / 4.0)


def _square_ring(coords: np.ndarray) -> np.ndarray | None:
    """Right-angled version of an axis-aligned-ish closed ring, or None when not possible."""
    pts = coords[:-1]
    n = len(pts)
    if n < 4:
        return None
    d = np.roll(pts, -1, axis=0) - pts
    horizontal = np.abs(d[:, 0]) >= np.abs(d[:, 1])
    # Runs of consecutive edges with the same orientation, rotated so a run starts at index 0.
    change = np.nonzero(horizontal != np.roll(horizontal, 1))[0]
    if len(change) < 4:
        return None
    start = change[0]
    order = np.roll(np.arange(n), -start)
    runs: list[tuple[bool, list[int]]] = []
    for i in order:
        if runs and runs[-1][0] == horizontal[i]:
            runs[-1][1].append(i)
        else:
            runs.append((bool(horizontal[i]), [i]))
    lines = []  # (is_horizontal, coordinate)
    for is_h, edges in runs:
        a, b = pts[edges], pts[(np.asarray(edges) + 1) % n]
        w = np.hypot(*(b - a).T) + 1e-9
        axis = 1 if is_h else 0
        lines.append((is_h, float(np.sum(w * (a[:, axis] + b[:, axis]) / 2) / np.sum(w))))
    corners = []
    for k in range(len(lines)):
        (h1, v1), (h2, v2) = lines[k - 1], lines[k]
        if h1 == h2:
            return None
        corners.append((v2, v1) if h1 else (v1, v2))
    corners.append(corners[0])
    return np.asarray(corners)


def regularize(poly: Polygon, max_area_change: float = 0.25) -> Polygon:
    """Right-angle regularisation around the dominant direction; the input when it fails."""
    ring = np.asarray(poly.exterior.coords)
    angle = math.degrees(_dominant_angle(ring))
    origin = poly.centroid
    rotated = affinity.rotate(poly, -angle, origin=origin)
    exterior = _square_ring(np.asarray(rotated.exterior.coords))
    if exterior is None:
        return poly
    holes = [
        h for h in (_square_ring(np.asarray(i.coords)) for i in rotated.interiors) if h is not None
    ]
    candidate = affinity.rotate(Polygon(exterior, holes), angle, origin=origin)
    if not candidate.is_valid or candidate.is_empty:
        return poly
    if abs(candidate.area - poly.area) > max_area_change * poly.area:
        return poly
    return candidate


def finish_polygons(
    polygons: list[Polygon], pixel_size: float, simplify_px: float, regular: bool
) -> list[Polygon | None]:
    """Simplified (and optionally right-angled) outlines; None where nothing is left.

    Bounded work on noisy masks: one Douglas-Peucker pass over all outlines, then one vectorised
    validity check; only the few invalid results are repaired (largest valid part kept).
    """
    shapes_ = np.asarray(polygons, dtype=object)
    if not len(shapes_):
        return []
    if simplify_px > 0:
        shapes_ = shapely.simplify(shapes_, simplify_px * pixel_size, preserve_topology=False)
    if regular:
        shapes_ = np.asarray([p if p.is_empty else regularize(p) for p in shapes_], dtype=object)
    fine = shapely.is_valid(shapes_) & ~shapely.is_empty(shapes_)
    fine &= shapely.get_type_id(shapes_) == shapely.GeometryType.POLYGON
    return [
        poly if ok else largest_polygon(make_valid(poly))
        for poly, ok in zip(shapes_, fine, strict=True)
    ]


class BuildingWriter:
    """Streams building polygons into a GeoPackage layer.

    Writes to a hidden temporary with a unique name in the output's folder
    (``.<out stem>.XXXX.partial.gpkg``) and moves it over ``out`` atomically only in ``commit()``,
    so an earlier result at ``out`` survives a failed or cancelled run, a user's own files are
    never touched, and two runs writing to one output each leave a whole file (the last one wins).
    """

    def __init__(self, out: str | Path, crs: CRS | None) -> None:
        self.out = Path(out)
        if self.out.suffix.lower() != ".gpkg":
            raise InputError(f"The output {self.out} must be a GeoPackage: name it *.gpkg.")
        if not self.out.parent.exists():
            raise InputError(
                f"The output folder {self.out.parent} does not exist; create it first."
            )
        self.crs = crs
        self._measure = GroundMeasure(crs)
        sweep(f".{self.out.stem}.", self.out.parent)  # partial files of killed runs
        handle, name = tempfile.mkstemp(
            prefix=scratch_name(f".{self.out.stem}."),
            suffix=".partial.gpkg",
            dir=self.out.parent,
        )
        os.close(handle)
        self.partial = Path(name)
        # The GPKG driver creates its file itself: free the unique name just reserved.
        self.partial.unlink()
        try:
            self._sink = fiona.open(
                self.partial,
                "w",
                driver="GPKG",
                layer=LAYER_NAME,
                schema=SCHEMA,
                crs_wkt=crs.to_wkt() if crs is not None else None,
            )
        except BaseException:
            self.partial.unlink(missing_ok=True)
            raise
        self.count = 0

    def write(self, polygons: list[Polygon], confidences: list[float]) -> None:
        records = []
        for poly, conf, area in zip(
            polygons, confidences, self._measure.areas_m2(polygons), strict=True
        ):
            self.count += 1
            records.append(
                {
                    "geometry": mapping(poly),
                    "properties": {
                        "id": self.count,
                        "confidence": round(float(conf), 4),
                        "area_m2": round(float(area), 2),
                    },
                }
            )
        if records:
            self._sink.writerecords(records)

    def commit(self) -> Path:
        try:
            self._sink.close()
            os.replace(self.partial, self.out)
        except BaseException:
            self.partial.unlink(missing_ok=True)
            raise
        return self.out

    def abort(self) -> None:
        try:
            self._sink.close()
        finally:
            self.partial.unlink(missing_ok=True)
