"""Body, touching-border and instance targets from polygons; labels, training areas, splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio.features
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin
from shapely.geometry import MultiPolygon, Point, Polygon, box
from shapely.ops import unary_union

from ternaus_backend.errors import InputError, LabelError
from ternaus_backend.training.targets import (
    aoi_mask,
    border_radius_px,
    make_targets,
    read_label_polygons,
    split_by_area,
    touching_borders,
)
from ternaus_backend.vector_io import write_polygons

X0, Y0 = 683000.0, 7460000.0  # upper-left corner, EPSG:32723 metres
RES = 0.5
TRANSFORM = from_origin(X0, Y0, RES, RES)
SHAPE = (40, 60)


def px_box(col0: float, row0: float, col1: float, row1: float) -> Polygon:
    """A rectangle given in pixel edges (columns/rows) as a polygon in map coordinates."""
    return box(X0 + col0 * RES, Y0 - row1 * RES, X0 + col1 * RES, Y0 - row0 * RES)


def border_columns(border: np.ndarray) -> set[int]:
    return set(np.nonzero(border.any(axis=0))[0].tolist())


def border_rows(border: np.ndarray) -> set[int]:
    return set(np.nonzero(border.any(axis=1))[0].tolist())


def test_shared_wall_marks_both_sides_within_width() -> None:
    left, right = px_box(10, 10, 20, 30), px_box(20, 10, 32, 30)  # wall between cols 19 and 20
    t = make_targets([left, right], TRANSFORM, SHAPE, border_width_px=3)
    r = border_radius_px(3)
    assert r == 2
    assert t.body.dtype == np.uint8 and t.border.dtype == np.uint8 and t.instances.dtype == np.int32
    assert set(np.unique(t.instances)) == {0, 1, 2}
    # a band r px wide on each side of the wall, over the whole length of the wall
    assert t.border[10:30, 18:20].all() and t.border[10:30, 20:22].all()
    assert border_columns(t.border) == {18, 19, 20, 21}
    # nothing beyond r rows past the ends of the wall
    assert border_rows(t.border) <= set(range(10 - r, 30 + r))
    assert t.border[:, :18].sum() == 0 and t.border[:, 22:].sum() == 0


@pytest.mark.parametrize(
    ("width", "columns"), [(1, {19, 20}), (2, {19, 20}), (5, set(range(17, 23)))]
)
def test_border_width_sets_band(width: int, columns: set[int]) -> None:
    t = make_targets([px_box(10, 10, 20, 30), px_box(20, 10, 32, 30)], TRANSFORM, SHAPE, width)
    assert border_columns(t.border) == columns


def test_isolated_and_distant_buildings_have_no_border() -> None:
    assert make_targets([px_box(10, 10, 30, 30)], TRANSFORM, SHAPE).border.sum() == 0
    far_apart = [px_box(5, 10, 20, 30), px_box(26, 10, 40, 30)]  # 6 px gap > 2r - 1
    t = make_targets(far_apart, TRANSFORM, SHAPE, border_width_px=3)
    assert t.border.sum() == 0
    assert t.body.sum() == 15 * 20 + 14 * 20


@pytest.mark.parametrize("gap", [1, 2])
def test_narrow_gap_is_border(gap: int) -> None:
    t = make_targets([px_box(10, 10, 20, 30), px_box(20 + gap, 10, 32, 30)], TRANSFORM, SHAPE, 3)
    gap_cols = slice(20, 20 + gap)
    assert t.body[10:30, gap_cols].sum() == 0
    assert t.border[10:30, gap_cols].all()
    # the band is the gap plus r - gap px into each building
    r = border_radius_px(3)
    assert border_columns(t.border) == set(range(20 + gap - r, 20 + r))


def test_gap_wider_than_radius_marks_its_middle() -> None:
    t = make_targets([px_box(10, 10, 20, 30), px_box(23, 10, 32, 30)], TRANSFORM, SHAPE, 3)
    assert border_columns(t.border) == {21}  # 3 px gap (cols 20-22), r = 2: 2r - g = 1 px
    t = make_targets([px_box(10, 10, 20, 30), px_box(24, 10, 32, 30)], TRANSFORM, SHAPE, 3)
    assert t.border.sum() == 0  # g = 2r


def test_body_is_union_and_instances_follow_order() -> None:
    polys = [px_box(2, 2, 10, 10), px_box(10, 2, 18, 10), px_box(30, 20, 45, 35)]
    t = make_targets(polys, TRANSFORM, SHAPE)
    union = rasterio.features.rasterize(
        [(unary_union(polys), 1)], out_shape=SHAPE, transform=TRANSFORM, dtype=np.uint8
    )
    np.testing.assert_array_equal(t.body, union)
    np.testing.assert_array_equal(t.body, (t.instances > 0).astype(np.uint8))
    assert t.instances[5, 5] == 1 and t.instances[5, 15] == 2 and t.instances[25, 40] == 3
    assert t.n_instances == 3


def test_multipolygon_is_exploded_into_buildings() -> None:
    multi = MultiPolygon([px_box(2, 2, 10, 10), px_box(11, 2, 18, 10)])  # 1 px apart
    t = make_targets([multi, None, Point(X0, Y0)], TRANSFORM, SHAPE)
    assert t.n_instances == 2
    assert t.border[2:10, 10].all()
    # an invalid MultiPolygon whose parts share an edge is repaired into one building
    merged = MultiPolygon([px_box(2, 2, 10, 10), px_box(10, 2, 18, 10)])
    assert not merged.is_valid
    t = make_targets([merged], TRANSFORM, SHAPE)
    assert t.n_instances == 1 and t.body.sum() == 16 * 8 and t.border.sum() == 0


def test_invalid_bowtie_is_repaired() -> None:
    x0, y0, x1, y1 = X0 + 5.0, Y0 - 15.0, X0 + 15.0, Y0 - 5.0
    bowtie = Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])
    assert not bowtie.is_valid
    t = make_targets([bowtie], TRANSFORM, SHAPE)
    area_px = 0.5 * 10.0 * 10.0 / RES**2  # two triangles, half the bounding square
    assert abs(int(t.body.sum()) - area_px) < 0.1 * area_px
    assert t.n_instances == 2


def test_overlapping_polygons_later_wins() -> None:
    t = make_targets([px_box(5, 5, 20, 20), px_box(15, 15, 30, 30)], TRANSFORM, SHAPE)
    assert t.instances[17, 17] == 2 and t.instances[10, 10] == 1
    assert t.border[14, 17] == 1 and t.border[15, 17] == 1 and t.border[18, 18] == 0


def test_touching_borders_on_id_image() -> None:
    ids = np.zeros((10, 10), dtype=np.int32)
    ids[2:5, 2:5] = 1
    ids[5:8, 5:8] = 2  # touching at a corner only
    border = touching_borders(ids, border_width_px=1)
    assert border[4, 4] and border[5, 5] and border[4, 5] and border[5, 4]
    assert border.sum() == 4
    assert touching_borders(np.zeros((5, 5), dtype=np.int32)).sum() == 0


def test_empty_inputs() -> None:
    t = make_targets([], TRANSFORM, SHAPE)
    assert t.body.sum() == 0 and t.border.sum() == 0 and t.body.shape == SHAPE
    with pytest.raises(InputError):
        make_targets([], TRANSFORM, (0, 10))
    with pytest.raises(InputError):
        make_targets([px_box(1, 1, 5, 5)], TRANSFORM, SHAPE, border_width_px=0)


def test_read_label_polygons_reprojects_from_wgs84(tmp_path: Path) -> None:
    utm = [px_box(10, 10, 20, 30), px_box(20, 10, 32, 30)]
    to_wgs84 = Transformer.from_crs("EPSG:32723", "EPSG:4326", always_xy=True).transform
    path = write_polygons(
        tmp_path / "labels.geojson",
        [
            shapely.transform(p, lambda xy: np.column_stack(to_wgs84(xy[:, 0], xy[:, 1])))
            for p in utm
        ],
        "EPSG:4326",
        [{"id": 1}, {"id": 2}],
    )
    polys = read_label_polygons(path, "EPSG:32723")
    assert len(polys) == 2
    expected = make_targets(utm, TRANSFORM, SHAPE)
    got = make_targets(polys, TRANSFORM, SHAPE)
    np.testing.assert_array_equal(got.body, expected.body)
    assert got.border.sum() > 0


def test_read_label_polygons_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(LabelError, match="no building polygons"):
        read_label_polygons(empty, "EPSG:32723")
    with pytest.raises(LabelError):
        read_label_polygons(tmp_path / "missing.geojson", "EPSG:32723")
    points = tmp_path / "points.geojson"
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Point", "coordinates": [0, 0]},
    }
    points.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(LabelError):
        read_label_polygons(points, "EPSG:32723")


def test_aoi_mask() -> None:
    assert aoi_mask(None, TRANSFORM, SHAPE).all()
    assert not aoi_mask([], TRANSFORM, SHAPE).any()
    mask = aoi_mask([px_box(0, 0, 30, 20)], TRANSFORM, SHAPE)
    assert mask.dtype == bool and mask.shape == SHAPE
    assert mask[:20, :30].all() and mask.sum() == 600


def _runs(lines: np.ndarray) -> int:
    """Number of contiguous runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], lines, [False]])
    return int(np.count_nonzero(np.diff(padded.astype(np.int8)) == 1))


def test_split_by_area_is_one_band() -> None:
    train, val = split_by_area((100, 80), val_fraction=0.2, seed=3)
    assert train.dtype == bool and val.shape == (100, 80)
    assert not (train & val).any() and (train | val).all()
    val_rows = val.any(axis=1)
    assert val_rows.sum() == 20 and _runs(val_rows) == 1
    assert (val[val_rows]).all()  # whole rows, never scattered pixels
    wide_train, wide_val = split_by_area((50, 200), val_fraction=0.25, seed=0)
    assert wide_val.any(axis=0).sum() == 50 and wide_val[:, wide_val.any(axis=0)].all()
    starts = {
        int(np.argmax(split_by_area((100, 80), 0.2, seed=s)[1].any(axis=1))) for s in range(8)
    }
    assert len(starts) > 1
    np.testing.assert_array_equal(split_by_area((100, 80), 0.2, seed=3)[1], val)


def test_split_by_area_gap_and_errors() -> None:
    train, val = split_by_area((100, 80), val_fraction=0.2, seed=3, gap_px=4)
    ignored = ~(train | val)
    assert not (train & val).any()
    assert 4 <= ignored.any(axis=1).sum() <= 8
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(InputError):
            split_by_area((100, 80), val_fraction=bad)
    with pytest.raises(InputError):
        split_by_area((1, 1), 0.2)
