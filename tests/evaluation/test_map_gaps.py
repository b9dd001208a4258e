"""``compare_with_map``: our result against a map's buildings, on Kampala's real buildings.

The result is made from the map (tests/evaluation/edited_layers.py): every building moved 2.0 m
east and 1.0 m north in UTM 36N, 10 isolated buildings deleted, 5 rectangles added in empty spots
(confidence 0.9 down to 0.5). The module must find exactly those 5 and those 10, and the offset.
"""

from __future__ import annotations

import fiona
import numpy as np
import pytest
import shapely
from shapely.geometry import box

from ternaus_backend.errors import InputError
from ternaus_backend.evaluation.map_gaps import compare_with_map
from ternaus_backend.vector_io import read_features, write_polygons
from tests.evaluation.edited_layers import UTM, map_and_result


def rows(path, layer):
    with fiona.open(path, layer=layer) as src:
        return [dict(f.properties) for f in src], src.crs.to_epsg()


def test_finds_the_added_and_deleted_buildings_and_the_offset(tmp_path):
    case = map_and_result(tmp_path)
    out = tmp_path / "compare.gpkg"
    comparison = compare_with_map(case.result, case.reference, out)
    summary = comparison.to_dict()
    assert (summary["unmapped"], summary["unseen"]) == (5, 10)
    assert summary["references_scored"] == 206 and summary["results_scored"] == 201
    assert summary["matched"] == 196
    assert summary["offset"]["dx_m"] == pytest.approx(2.0, abs=0.2)
    assert summary["offset"]["dy_m"] == pytest.approx(1.0, abs=0.2)
    assert summary["offset"]["pairs"] == 196
    assert sorted(fiona.listlayers(out)) == ["offsets", "unmapped", "unseen"]

    unmapped, epsg = rows(out, "unmapped")
    assert epsg == 4326  # the map's CRS
    assert [r["id"] for r in unmapped] == case.added_ids  # added with falling confidence
    assert [r["rank"] for r in unmapped] == [1, 2, 3, 4, 5]
    assert [r["confidence"] for r in unmapped] == [0.9, 0.8, 0.7, 0.6, 0.5]
    assert all(r["iou"] == 0 and r["area_m2"] == pytest.approx(96, rel=0.01) for r in unmapped)

    unseen, _ = rows(out, "unseen")
    assert sorted(r["id"] for r in unseen) == sorted(case.removed_ids)
    assert all("osm_id" in r for r in unseen)  # the map's own attributes are kept

    offsets, _ = rows(out, "offsets")
    assert offsets[0]["scope"] == "overall" and offsets[0]["pairs"] == 196
    cells = offsets[1:]
    assert len(cells) == summary["cells"] >= 2  # the block spans 700 x 400 m: several cells
    assert all(r["scope"] == "cell" and r["pairs"] >= 3 for r in cells)
    assert sum(r["pairs"] for r in cells) <= 196
    for r in offsets:
        assert r["dx_m"] == pytest.approx(2.0, abs=0.2) and r["dy_m"] == pytest.approx(1.0, abs=0.2)
        assert r["offset_m"] == pytest.approx(5**0.5, abs=0.2)


def test_the_offset_line_points_from_the_map_toward_the_imagery(tmp_path):
    case = map_and_result(tmp_path)
    out = tmp_path / "compare.gpkg"
    compare_with_map(case.result, case.reference, out)
    lines = read_features(out, dst_crs=UTM, layer="offsets")
    for line in lines.geometries:
        (x0, y0), (x1, y1) = line.coords
        assert x1 - x0 == pytest.approx(2.0, abs=0.2) and y1 - y0 == pytest.approx(1.0, abs=0.2)


def test_an_offset_larger_than_the_buildings_is_found(tmp_path):
    """9 m east, 6 m south: most buildings no longer overlap their drawing at all."""
    case = map_and_result(tmp_path, shift=(9.0, -6.0))
    summary = compare_with_map(case.result, case.reference).to_dict()
    assert (summary["unmapped"], summary["unseen"]) == (5, 10)
    assert summary["offset"]["dx_m"] == pytest.approx(9.0, abs=0.2)
    assert summary["offset"]["dy_m"] == pytest.approx(-6.0, abs=0.2)


def test_cells_need_enough_pairs(tmp_path):
    case = map_and_result(tmp_path)
    few = compare_with_map(case.result, case.reference, cell_m=100.0, min_pairs=3)
    none = compare_with_map(case.result, case.reference, cell_m=100.0, min_pairs=500)
    assert len(few.cells) > 3 and none.cells == []
    assert none.offset is not None  # the overall offset does not depend on cells


def test_only_inside_the_area_and_its_edge_splits_no_pair(tmp_path):
    """The area: the eastern half of the block, its western edge 1 m east of a building in the
    middle: that building's map outline lies outside, its copy (moved 2 m east) inside. They
    still match (buildings around the area are matched too), so only the added and deleted
    buildings inside the area are reported."""
    case = map_and_result(tmp_path)
    result = read_features(case.result)
    reference = read_features(case.reference, dst_crs=UTM)
    geoms = np.asarray(reference.geometries, dtype=object)
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    middle = np.argmin(np.abs(shapely.get_x(shapely.centroid(geoms)) - (x0 + x1) / 2))
    edge = shapely.bounds(geoms[middle])[2] + 1.0
    half = box(edge, y0 - 100, x1 + 10, y1 + 10)
    area = write_polygons(tmp_path / "area.gpkg", [half], UTM)
    added_inside = [
        p["id"]
        for g, p in zip(result.geometries, result.properties, strict=True)
        if p["id"] in case.added_ids and g.intersects(half)
    ]
    removed_inside = [
        p["id"]
        for g, p in zip(reference.geometries, reference.properties, strict=True)
        if p["id"] in case.removed_ids and g.intersects(half)
    ]
    moved = shapely.transform(geoms[middle], lambda xy: xy + np.array(case.shift))
    assert not geoms[middle].intersects(half) and moved.intersects(half)  # a split pair
    out = tmp_path / "half.gpkg"
    summary = compare_with_map(case.result, case.reference, out, area_path=area).to_dict()
    assert (summary["unmapped"], summary["unseen"]) == (len(added_inside), len(removed_inside))
    assert summary["results_scored"] == summary["matched"] + summary["unmapped"] < 201
    assert sorted(r["id"] for r in rows(out, "unseen")[0]) == sorted(removed_inside)
    assert sorted(r["id"] for r in rows(out, "unmapped")[0]) == sorted(added_inside)


def test_layers_without_a_common_place_say_so(tmp_path):
    case = map_and_result(tmp_path, shift=(5000.0, 0.0))
    summary = compare_with_map(case.result, case.reference).to_dict()
    assert summary["matched"] == 0 and summary["offset"] is None
    assert "same place" in summary["warnings"][0]


def test_bad_thresholds_and_empty_layers_are_refused(tmp_path):
    case = map_and_result(tmp_path)
    with pytest.raises(InputError, match="IoU threshold"):
        compare_with_map(case.result, case.reference, iou_threshold=1.5)
    empty = write_polygons(tmp_path / "empty.gpkg", [], UTM)
    with pytest.raises(InputError, match="no building polygon"):
        compare_with_map(empty, case.reference)
