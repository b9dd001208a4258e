"""Reading (and a little writing) of vector files: GeoJSON, GeoPackage, Shapefile.

Everything goes through fiona for I/O, shapely 2 for geometries and pyproj for reprojection.
Coordinates are always handled in x/y (easting/northing, longitude/latitude) order, whatever
axis order the CRS definition declares.

CRS arguments accept anything pyproj understands: ``"EPSG:32616"``, an EPSG code, WKT, PROJ
strings, ``pyproj.CRS`` and ``rasterio.crs.CRS`` objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fiona
import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from ternaus_backend.errors import InputError, TernausError
from ternaus_backend.network_files import check_local_file

__all__ = [
    "VectorData",
    "DRIVERS_BY_SUFFIX",
    "to_crs",
    "read_features",
    "read_polygons",
    "read_polygons_with_properties",
    "polygon_parts",
    "reproject_geometries",
    "write_polygons",
]

#: Output driver for each supported file suffix.
DRIVERS_BY_SUFFIX: dict[str, str] = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".shp": "ESRI Shapefile",
}

_GEOJSON_DEFAULT_CRS = "OGC:CRS84"  # RFC 7946: GeoJSON without a CRS is WGS 84 lon/lat


@dataclass
class VectorData:
    """Features of one layer: geometries and properties aligned by index, plus the layer CRS.

    Features with a null geometry get an empty ``GeometryCollection`` so that both lists keep
    the same length. ``crs`` is WKT, or ``None`` when the file declares no CRS.
    """

    geometries: list[BaseGeometry]
    properties: list[dict[str, Any]]
    crs: str | None

    def __len__(self) -> int:
        return len(self.geometries)


def to_crs(crs: Any, error_cls: type[TernausError] = InputError) -> CRS:
    """Return ``crs`` (EPSG string or code, WKT, pyproj or rasterio CRS) as a ``pyproj.CRS``."""
    if isinstance(crs, CRS):
        return crs
    try:
        return CRS.from_user_input(crs)
    except CRSError as exc:
        raise error_cls(
            f"Unknown coordinate reference system {crs!r}: give it as 'EPSG:<code>' or WKT.",
            details=str(exc),
        ) from exc


def reproject_geometries(
    geoms: Sequence[BaseGeometry], src_crs: Any, dst_crs: Any
) -> list[BaseGeometry]:
    """Reproject shapely geometries from ``src_crs`` to ``dst_crs`` (x/y order, 2D output)."""
    src, dst = to_crs(src_crs), to_crs(dst_crs)
    arr = np.asarray(geoms, dtype=object)
    if src.equals(dst, ignore_axis_order=True):
        return list(shapely.force_2d(arr))
    transformer = Transformer.from_crs(src, dst, always_xy=True)

    def _xy(coords: np.ndarray) -> np.ndarray:
        if len(coords) == 1:  # pyproj takes one-element arrays as a point and warns
            return np.array([transformer.transform(*map(float, coords[0, :2]), errcheck=True)])
        x, y = transformer.transform(coords[:, 0], coords[:, 1], errcheck=True)
        return np.column_stack([x, y])

    return list(shapely.transform(arr, _xy))


def read_features(
    path: str | Path,
    dst_crs: Any = None,
    layer: str | int | None = None,
    error_cls: type[TernausError] = InputError,
) -> VectorData:
    """Read every feature of one layer of a vector file, reprojected to ``dst_crs`` when given.

    A GeoJSON file without a CRS is WGS 84 (RFC 7946). Any other file without a CRS is read
    as is when ``dst_crs`` is None and refused otherwise. Errors raise ``error_cls``
    (``InputError`` by default; pass ``LabelError`` for training labels).
    """
    check_local_file(path, "vector file")
    path = Path(path)
    if not path.exists():
        raise error_cls(
            f"Vector file not found: {path}. Check the path, or choose an existing GeoJSON, "
            "GeoPackage or Shapefile."
        )
    _check_layer(path, layer, error_cls)
    try:
        with fiona.open(path, layer=layer) as src:
            crs = _declared_crs(src)
            geometries, properties = [], []
            for feature in src:
                geometries.append(_to_shapely(feature.geometry))
                properties.append(dict(feature.properties or {}))
    except TernausError:
        raise
    except Exception as exc:  # fiona/GDAL raise many types for unreadable files
        raise error_cls(
            f"Could not read {path.name} as a vector file. Use a GeoJSON, GeoPackage or "
            "Shapefile that opens in QGIS.",
            details=f"{type(exc).__name__}: {exc}",
        ) from exc
    if dst_crs is None:
        return VectorData(geometries, properties, crs)
    if crs is None:
        raise error_cls(
            f"{path.name} declares no coordinate reference system, so it cannot be reprojected. "
            "Assign its CRS (for example in QGIS: Layer > Set CRS, then save) and try again."
        )
    dst = to_crs(dst_crs, error_cls)
    try:
        geometries = reproject_geometries(geometries, crs, dst)
    except Exception as exc:  # pyproj raises ProjError for points outside the projection
        raise error_cls(
            f"Could not reproject {path.name} to {dst.name}: check that both CRSs cover the area.",
            details=f"{type(exc).__name__}: {exc}",
        ) from exc
    return VectorData(geometries, properties, dst.to_wkt())


def polygon_parts(geom: BaseGeometry | None) -> list[Polygon]:
    """Repair ``geom`` (``shapely.make_valid``) and return its non-empty Polygon parts in order.

    MultiPolygons and collections are exploded; points and lines are dropped.
    """
    if geom is None or geom.is_empty:
        return []
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    parts: list[Polygon] = []
    for part in shapely.get_parts(geom):
        if part.geom_type == "Polygon":
            parts.extend([part] if not part.is_empty else [])
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            parts.extend(polygon_parts(part))
    return parts


def read_polygons_with_properties(
    path: str | Path,
    dst_crs: Any = None,
    layer: str | int | None = None,
    error_cls: type[TernausError] = InputError,
) -> tuple[list[Polygon], list[dict[str, Any]]]:
    """Read valid, non-empty Polygons and their feature properties (repeated per part).

    Invalid geometries are repaired, MultiPolygons and collections are exploded, and
    non-polygonal parts (points, lines) are dropped. A layer of points or lines only (no
    polygon at all) is refused with ``error_cls``: such labels are not building footprints.
    """
    data = read_features(path, dst_crs=dst_crs, layer=layer, error_cls=error_cls)
    polygons: list[Polygon] = []
    properties: list[dict[str, Any]] = []
    kinds: set[str] = set()
    for geom, props in zip(data.geometries, data.properties, strict=True):
        parts = polygon_parts(geom)
        polygons.extend(parts)
        properties.extend(dict(props) for _ in parts)
        if geom is not None and not geom.is_empty:
            kinds.add(_SHAPE_KINDS.get(geom.geom_type, "polygons"))
    if not polygons and kinds and "polygons" not in kinds:
        held = "/".join(k for k in ("points", "lines") if k in kinds)
        raise error_cls(
            f"The label layer {Path(path).name} holds {held}, not polygons; draw building "
            "footprints as polygons (in QGIS: a polygon layer, Add Polygon Feature)."
        )
    return polygons, properties


#: Geometry types that are not polygons, by what a user would call them.
_SHAPE_KINDS = {
    "Point": "points",
    "MultiPoint": "points",
    "LineString": "lines",
    "MultiLineString": "lines",
    "LinearRing": "lines",
}


def read_polygons(
    path: str | Path,
    dst_crs: Any = None,
    layer: str | int | None = None,
    error_cls: type[TernausError] = InputError,
) -> list[Polygon]:
    """Read valid, non-empty Polygons (see ``read_polygons_with_properties``)."""
    return read_polygons_with_properties(path, dst_crs, layer, error_cls)[0]


def write_polygons(
    path: str | Path,
    polygons: Sequence[Polygon | MultiPolygon],
    crs: Any,
    properties: Sequence[dict[str, Any]] | None = None,
    layer: str | None = None,
    add_layer: bool = False,
) -> Path:
    """Write (Multi)Polygons with optional properties; the driver comes from the suffix.

    Supported suffixes: .gpkg, .geojson/.json, .shp. An existing file is replaced, unless
    ``add_layer`` (GeoPackage): then ``layer`` is added to it.
    """
    path = Path(path)
    driver = DRIVERS_BY_SUFFIX.get(path.suffix.lower())
    if driver is None:
        raise InputError(
            f"Cannot write {path.name}: use one of the suffixes {', '.join(DRIVERS_BY_SUFFIX)}."
        )
    if properties is not None and len(properties) != len(polygons):
        raise InputError(
            f"Got {len(polygons)} polygons but {len(properties)} property rows: pass one dict "
            "per polygon."
        )
    rows = [dict(p) for p in properties] if properties is not None else [{} for _ in polygons]
    geom_type, geoms = _common_geometry_type(polygons)
    schema = {"geometry": geom_type, "properties": _property_schema(rows)}
    if path.exists() and driver != "ESRI Shapefile" and not add_layer:
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    crs_wkt = to_crs(crs).to_wkt()
    records = (
        {"geometry": mapping(g), "properties": {k: row.get(k) for k in schema["properties"]}}
        for g, row in zip(geoms, rows, strict=True)
    )
    with fiona.open(path, "w", driver=driver, schema=schema, crs=crs_wkt, layer=layer) as dst:
        dst.writerecords(records)
    return path


def _check_layer(path: Path, layer: str | int | None, error_cls: type[TernausError]) -> None:
    """Raise ``error_cls`` listing the available layers when ``layer`` does not exist."""
    if layer is None:
        return
    try:
        layers = fiona.listlayers(path)
    except Exception:  # unreadable files are reported by the caller
        return
    if isinstance(layer, int) and 0 <= layer < len(layers) or layer in layers:
        return
    raise error_cls(f"{path.name} has no layer {layer!r}; choose one of: {', '.join(layers)}.")


def _declared_crs(src: fiona.Collection) -> str | None:
    """The layer's CRS as WKT; RFC 7946 WGS 84 for GeoJSON without one; else None."""
    if src.crs_wkt:
        return src.crs_wkt
    if src.driver in ("GeoJSON", "GeoJSONSeq"):
        return CRS.from_user_input(_GEOJSON_DEFAULT_CRS).to_wkt()
    return None


def _to_shapely(geometry: Any) -> BaseGeometry:
    """A fiona geometry as shapely; null geometries become an empty collection."""
    if geometry is None:
        return shapely.GeometryCollection()
    return shape(geometry)


def _common_geometry_type(
    polygons: Iterable[Polygon | MultiPolygon],
) -> tuple[str, list[Polygon | MultiPolygon]]:
    """One schema type for all geometries, promoting Polygons to MultiPolygons when mixed."""
    geoms = list(polygons)
    types = {g.geom_type for g in geoms}
    if not types <= {"Polygon", "MultiPolygon"}:
        raise InputError(f"write_polygons writes polygons only, got {sorted(types)}.")
    if types == {"Polygon", "MultiPolygon"}:
        return "MultiPolygon", [MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geoms]
    return (types.pop() if types else "Polygon"), geoms


def _property_schema(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """A fiona property schema: each key typed by its non-None values ("str" when all None)."""
    types: dict[str, str | None] = {}
    for row in rows:
        for key, value in row.items():
            known = types.get(key)
            new = None if value is None else _field_type(value)
            if known is None or (known, new) == ("int", "float"):
                types[key] = new
    return {key: kind or "str" for key, kind in types.items()}


def _field_type(value: Any) -> str:
    """The fiona field type of one Python value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    return "str"
