"""Tests of reading and writing vector files (fiona + shapely + pyproj)."""

from __future__ import annotations

import json
from pathlib import Path

import fiona
import pytest
import shapely
from rasterio.crs import CRS as RasterioCRS
from shapely.geometry import MultiPolygon, Polygon, box

from ternaus_backend.errors import InputError, LabelError
from ternaus_backend.vector_io import (
    polygon_parts,
    read_features,
    read_polygons,
    read_polygons_with_properties,
    reproject_geometries,
    to_crs,
    write_polygons,
)

# Two buildings in Atlanta, UTM zone 16N (metres).
UTM_BUILDINGS = [box(736300, 3722700, 736320, 3722715), box(736400, 3722800, 736412, 3722830)]
BOW_TIE = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".shp"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    props = [{"name": "a", "height": 3.5, "floors": 1}, {"name": None, "height": 7.0, "floors": 2}]
    path = write_polygons(tmp_path / f"out{suffix}", UTM_BUILDINGS, "EPSG:32616", props)
    data = read_features(path)
    assert len(data) == 2
    assert to_crs(data.crs).to_epsg() == 32616
    for got, expected in zip(data.geometries, UTM_BUILDINGS, strict=True):
        assert got.equals(expected)
    assert [p["floors"] for p in data.properties] == [1, 2]
    assert [p["height"] for p in data.properties] == [3.5, 7.0]
    assert data.properties[0]["name"] == "a"


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.gpkg"
    write_polygons(path, UTM_BUILDINGS, 32616)
    write_polygons(path, UTM_BUILDINGS[:1], 32616)
    assert len(read_polygons(path)) == 1


def test_write_promotes_mixed_polygons_to_multipolygons(tmp_path: Path) -> None:
    geoms = [UTM_BUILDINGS[0], MultiPolygon(UTM_BUILDINGS)]
    path = write_polygons(tmp_path / "mixed.gpkg", geoms, 32616)
    assert [g.geom_type for g in read_features(path).geometries] == ["MultiPolygon"] * 2


def test_write_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="suffix"):
        write_polygons(tmp_path / "out.csv", UTM_BUILDINGS, 32616)
    with pytest.raises(InputError, match="property rows"):
        write_polygons(tmp_path / "out.gpkg", UTM_BUILDINGS, 32616, [{}])


@pytest.mark.parametrize(
    "dst_crs", ["EPSG:4326", 4326, RasterioCRS.from_epsg(4326), to_crs(4326).to_wkt()]
)
def test_reprojection_round_trip_keeps_area(tmp_path: Path, dst_crs: object) -> None:
    path = write_polygons(tmp_path / "utm.gpkg", UTM_BUILDINGS, "EPSG:32616")
    lonlat = read_features(path, dst_crs=dst_crs)
    assert to_crs(lonlat.crs).equals(to_crs(4326))
    x, y = lonlat.geometries[0].exterior.coords[0]
    assert -85 < x < -84 and 33 < y < 34  # x is the longitude whatever the CRS axis order
    back = reproject_geometries(lonlat.geometries, lonlat.crs, "EPSG:32616")
    for got, expected in zip(back, UTM_BUILDINGS, strict=True):
        assert got.area == pytest.approx(expected.area, rel=1e-6)
        assert got.symmetric_difference(expected).area < 1e-6 * expected.area


def test_reproject_geometries_same_crs_is_identity() -> None:
    assert reproject_geometries(UTM_BUILDINGS, 32616, "EPSG:32616") == UTM_BUILDINGS


def test_geojson_without_crs_is_wgs84(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.geojson"
    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(
        box(-84.45, 33.61, -84.4498, 33.6102))}  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    utm = read_polygons(path, dst_crs="EPSG:32616")
    assert utm[0].bounds[0] == pytest.approx(736_000, abs=2_000)
    assert 300 < utm[0].area < 500


def test_file_without_crs(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.shp"
    schema = {"geometry": "Polygon", "properties": {"id": "int"}}
    with fiona.open(path, "w", driver="ESRI Shapefile", schema=schema) as dst:
        dst.write({"geometry": shapely.geometry.mapping(box(0, 0, 1, 1)), "properties": {"id": 1}})
    assert read_features(path).crs is None
    assert len(read_polygons(path)) == 1
    with pytest.raises(InputError, match="no coordinate reference system"):
        read_polygons(path, dst_crs="EPSG:32616")


def test_invalid_polygon_is_repaired(tmp_path: Path) -> None:
    assert not BOW_TIE.is_valid
    path = write_polygons(tmp_path / "bowtie.geojson", [BOW_TIE], 32616, [{"id": 7}])
    polygons, props = read_polygons_with_properties(path)
    assert len(polygons) == 2 and all(p.is_valid for p in polygons)
    assert sum(p.area for p in polygons) == pytest.approx(50.0)
    assert props == [{"id": 7}, {"id": 7}]


def test_multipolygon_is_exploded_and_properties_follow(tmp_path: Path) -> None:
    geoms = [MultiPolygon(UTM_BUILDINGS), box(736500, 3722900, 736510, 3722910)]
    path = write_polygons(tmp_path / "multi.gpkg", geoms, 32616, [{"id": 1}, {"id": 2}])
    polygons, props = read_polygons_with_properties(path)
    assert [p.geom_type for p in polygons] == ["Polygon"] * 3
    assert [p["id"] for p in props] == [1, 1, 2]


def test_polygon_parts_drops_empty_and_non_polygonal() -> None:
    collection = shapely.GeometryCollection(
        [shapely.Point(0, 0), shapely.LineString([(0, 0), (1, 1)]), MultiPolygon(UTM_BUILDINGS)]
    )
    assert polygon_parts(collection) == UTM_BUILDINGS
    assert polygon_parts(Polygon()) == [] and polygon_parts(None) == []


def test_null_geometry_keeps_alignment(tmp_path: Path) -> None:
    path = tmp_path / "null.geojson"
    features = [
        {"type": "Feature", "properties": {"id": 1}, "geometry": None},
        {"type": "Feature", "properties": {"id": 2},
         "geometry": shapely.geometry.mapping(box(0, 0, 1, 1))},
    ]  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    data = read_features(path)
    assert len(data.geometries) == len(data.properties) == 2
    assert data.geometries[0].is_empty
    assert read_polygons_with_properties(path)[1] == [{"id": 2}]


def test_missing_file_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_polygons(tmp_path / "nope.gpkg")
    with pytest.raises(LabelError, match="not found"):
        read_polygons(tmp_path / "nope.gpkg", error_cls=LabelError)


def test_unreadable_file_raises_input_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.geojson"
    path.write_text("this is not json")
    with pytest.raises(InputError, match="Could not read") as info:
        read_features(path)
    assert info.value.details


def test_unknown_layer_lists_the_layers(tmp_path: Path) -> None:
    path = write_polygons(tmp_path / "layers.gpkg", UTM_BUILDINGS, 32616, layer="buildings")
    assert len(read_features(path, layer="buildings")) == 2
    with pytest.raises(InputError, match="buildings"):
        read_features(path, layer="roads")


def test_unknown_crs_raises_input_error(tmp_path: Path) -> None:
    path = write_polygons(tmp_path / "utm.gpkg", UTM_BUILDINGS, 32616)
    with pytest.raises(InputError, match="EPSG"):
        read_features(path, dst_crs="EPSG:not-a-code")


@pytest.mark.parametrize(
    ("geometries", "held"),
    [
        ([{"type": "Point", "coordinates": [1.0, 2.0]}], "points"),
        ([{"type": "LineString", "coordinates": [[0.0, 0.0], [1.0, 1.0]]}], "lines"),
        (
            [
                {"type": "MultiPoint", "coordinates": [[1.0, 2.0]]},
                {"type": "LineString", "coordinates": [[0.0, 0.0], [1.0, 1.0]]},
            ],
            "points/lines",
        ),
    ],
)
def test_a_layer_of_points_or_lines_is_not_taken_for_footprints(tmp_path, geometries, held):
    """Issue 18, item 12: the error says what the layer holds, not a CRS hint."""
    path = tmp_path / "labels.geojson"
    features = [{"type": "Feature", "geometry": g, "properties": {}} for g in geometries]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with pytest.raises(LabelError) as info:
        read_polygons(path, error_cls=LabelError)
    assert info.value.message.startswith(
        f"The label layer labels.geojson holds {held}, not polygons; draw building footprints "
        "as polygons"
    )
