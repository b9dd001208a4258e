"""``detect_changes``: two dates of one place, on Kampala's real buildings.

The earlier date is the mapped buildings as they are (WGS 84 GeoJSON). The later date
(tests/evaluation/edited_layers.py, written in UTM 36N) has 8 isolated buildings removed, 6
rectangles of 8 x 12 m added in empty spots, and 4 isolated buildings enlarged by 40 % in width
and length about their centroid (area x 1.96, IoU 0.51 with the original); the other 194 are
unchanged.
"""

from __future__ import annotations

import fiona
import pytest
import shapely

from ternaus_backend.errors import InputError
from ternaus_backend.evaluation.changes import detect_changes
from ternaus_backend.vector_io import read_features, write_polygons
from tests.evaluation.edited_layers import UTM, second_date


def ids(path, layer):
    with fiona.open(path, layer=layer) as src:
        return sorted(f.properties["id"] for f in src)


def test_counts_new_demolished_changed_unchanged(tmp_path):
    case = second_date(tmp_path)
    out = tmp_path / "changes.gpkg"
    summary = detect_changes(case.before, case.after, out).to_dict()
    counts = {k: summary[k] for k in ("new", "demolished", "changed", "unchanged")}
    assert counts == {"new": 6, "demolished": 8, "changed": 4, "unchanged": 194}
    assert (summary["before"], summary["after"]) == (206, 204)
    assert abs(summary["shift"]["dx_m"]) < 0.05 and abs(summary["shift"]["dy_m"]) < 0.05
    assert sorted(fiona.listlayers(out)) == ["changed", "demolished", "new"]
    assert ids(out, "new") == case.added_ids
    assert ids(out, "demolished") == sorted(case.removed_ids)
    assert ids(out, "changed") == sorted(case.enlarged_ids)
    with fiona.open(out, layer="changed") as src:
        assert src.crs.to_epsg() == 4326  # the earlier layer's CRS
        for feature in src:
            p = feature.properties
            assert p["iou"] == pytest.approx(1 / 1.96, abs=0.01)
            assert p["area_change_pct"] == pytest.approx(96.0, abs=1.0)
            assert p["area_after_m2"] == pytest.approx(1.96 * p["area_before_m2"], rel=0.01)


def test_the_change_threshold_decides_what_changed(tmp_path):
    case = second_date(tmp_path)
    strict = detect_changes(case.before, case.after, change_iou=0.5)  # 0.51 is above it
    assert (strict.changed, strict.unchanged) == (0, 198)
    loose = detect_changes(case.before, case.after, match_iou=0.6, change_iou=0.7)
    assert (loose.new, loose.demolished) == (6 + 4, 8 + 4)  # enlarged ones no longer match


def test_a_shift_between_the_dates_is_not_a_change(tmp_path):
    """Two images misregistered by 3 m east and 2 m south: the same counts."""
    case = second_date(tmp_path)
    after = read_features(case.after)
    moved = shapely.transform(
        shapely.from_wkb([g.wkb for g in after.geometries]), lambda xy: xy + [3.0, -2.0]
    )
    shifted = write_polygons(tmp_path / "shifted.gpkg", list(moved), UTM, after.properties)
    summary = detect_changes(case.before, shifted).to_dict()
    assert (summary["new"], summary["demolished"], summary["changed"]) == (6, 8, 4)
    assert summary["shift"]["dx_m"] == pytest.approx(3.0, abs=0.2)
    assert summary["shift"]["dy_m"] == pytest.approx(-2.0, abs=0.2)


def test_thresholds_in_the_wrong_order_are_refused(tmp_path):
    case = second_date(tmp_path)
    with pytest.raises(InputError, match="must not be below"):
        detect_changes(case.before, case.after, match_iou=0.5, change_iou=0.3)
