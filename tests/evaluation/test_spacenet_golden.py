"""Golden tests: every number of the SpaceNet metric reference MANIFEST, reproduced exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import shapely

from ternaus_backend.evaluation.spacenet import (
    Scores,
    evaluate_files,
    match_files,
    score,
    score_csv,
)
from ternaus_backend.vector_io import read_features, write_polygons

SN2_AOIS = ["AOI_2_Vegas", "AOI_5_Khartoum"]  # row order of SN2_test_results.csv (MANIFEST)


def read_rows(path: Path) -> list[dict[str, str]]:
    """All rows of a small CSV file as dicts."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_matches_row(scores: Scores, row: dict[str, str]) -> None:
    """Counts equal and metrics equal (to 1e-12) to one row of a solaris results CSV."""
    assert (scores.tp, scores.fp, scores.fn) == (
        int(row["TruePos"]),
        int(row["FalsePos"]),
        int(row["FalseNeg"]),
    )
    assert scores.precision == pytest.approx(float(row["Precision"]), rel=1e-12, abs=1e-15)
    assert scores.recall == pytest.approx(float(row["Recall"]), rel=1e-12, abs=1e-15)
    assert scores.f1 == pytest.approx(float(row["F1Score"]), rel=1e-12, abs=1e-15)


@pytest.fixture(scope="module")
def sn2(reference_dir: Path):
    """SN2 sample truth vs preds, scored with the competition settings (min_area=20 px)."""
    return score_csv(
        reference_dir / "SN2_sample_truth.csv",
        reference_dir / "SN2_sample_preds.csv",
        iou_threshold=0.5,
        min_area=20,
        group_by="aoi",
    )


def test_sn2_per_aoi(sn2, reference_dir: Path) -> None:
    rows = read_rows(reference_dir / "SN2_test_results.csv")
    assert len(rows) == len(SN2_AOIS)
    assert list(sn2.per_group) == SN2_AOIS
    for aoi, row in zip(SN2_AOIS, rows, strict=True):
        assert_matches_row(sn2.per_group[aoi], row)


def test_sn2_per_aoi_manifest_numbers(sn2) -> None:
    vegas, khartoum = sn2.per_group["AOI_2_Vegas"], sn2.per_group["AOI_5_Khartoum"]
    assert (vegas.tp, vegas.fp, vegas.fn, vegas.f1) == (35, 2, 7, 0.8860759493670887)
    assert (khartoum.tp, khartoum.fp, khartoum.fn, khartoum.f1) == (52, 55, 75, 0.4444444444444444)


def test_sn2_per_chip(sn2, reference_dir: Path) -> None:
    rows = read_rows(reference_dir / "SN2_test_results_full.csv")
    assert len(rows) == 6
    assert set(sn2.per_image) == {row["imageID"] for row in rows}
    for row in rows:
        assert_matches_row(sn2.per_image[row["imageID"]], row)


def test_sn2_empty_chip_scores_zero(sn2) -> None:
    assert sn2.per_image["AOI_5_Khartoum_img463"] == Scores(0, 0, 0)


def test_sn2_pooled_over_all_chips(sn2, reference_dir: Path) -> None:
    from_file = Scores.pool(
        Scores.from_counts(int(r["TruePos"]), int(r["FalsePos"]), int(r["FalseNeg"]))
        for r in read_rows(reference_dir / "SN2_test_results.csv")
    )
    assert sn2.total == from_file == Scores(87, 57, 82)
    assert sn2.total.f1 == 0.5559105431309903


def test_sn2_min_area_zero_keeps_the_two_small_truths(reference_dir: Path) -> None:
    result = score_csv(
        reference_dir / "SN2_sample_truth.csv", reference_dir / "SN2_sample_preds.csv", min_area=0
    )
    assert result.total == Scores(87, 57, 84)
    assert result.total.f1 == 0.5523809523809524


def test_sn2_iou_by_building(sn2, reference_dir: Path) -> None:
    rows = read_rows(reference_dir / "SN2_sample_iou_by_building.csv")
    assert len(rows) == len(sn2.per_building) == 172
    for row, building in zip(rows, sn2.per_building, strict=True):
        assert (building.image_id, building.building_id) == (row["ImageId"], row["BuildingId"])
        assert building.iou == pytest.approx(float(row["iou_score"]), rel=0, abs=1e-12)


@pytest.mark.parametrize("truth_name", ["gt.geojson", "gt_epsg4326.json"])
def test_geojson_pair(reference_dir: Path, truth_name: str) -> None:
    scores = evaluate_files(reference_dir / "pred.geojson", reference_dir / truth_name)
    assert (scores.tp, scores.fp, scores.fn) == (8, 20, 20)
    assert scores.precision == scores.recall == scores.f1 == 0.2857142857142857


def test_geojson_pair_is_order_insensitive(reference_dir: Path) -> None:
    preds = read_features(reference_dir / "pred.geojson").geometries
    truths = read_features(reference_dir / "gt.geojson").geometries
    assert score(preds[::-1], truths[::-1]) == score(preds, truths) == Scores(8, 20, 20)


def test_predictions_in_another_crs_are_reprojected(reference_dir: Path, tmp_path: Path) -> None:
    preds = read_features(reference_dir / "pred.geojson", dst_crs="EPSG:4326")
    pred_4326 = write_polygons(tmp_path / "pred_4326.gpkg", preds.geometries, "EPSG:4326")
    assert evaluate_files(pred_4326, reference_dir / "gt.geojson") == Scores(8, 20, 20)


def test_geographic_truth_scores_in_metres(reference_dir: Path) -> None:
    areas_m2 = sorted(shapely.area(read_features(reference_dir / "gt.geojson").geometries))
    min_area = float(areas_m2[3] + areas_m2[4]) / 2  # 88 m²: drops 4 truths, far from the rest
    in_utm = match_files(
        reference_dir / "pred.geojson", reference_dir / "gt.geojson", min_area=min_area
    )
    in_4326 = match_files(
        reference_dir / "pred.geojson", reference_dir / "gt_epsg4326.json", min_area=min_area
    )
    assert in_4326.scores == in_utm.scores
    assert in_utm.scores.tp > 0 and in_utm.scores != Scores(8, 20, 20)
    assert in_4326.truth_iou == pytest.approx(in_utm.truth_iou, abs=1e-6)


def test_sn4_sample_identical(reference_dir: Path) -> None:
    result = score_csv(
        reference_dir / "sample_truth.csv", reference_dir / "sample_preds.csv", group_by="nadir"
    )
    for row in read_rows(reference_dir / "test_results.csv"):
        assert_matches_row(result.per_group[row["nadir-category"]], row)
    for row in read_rows(reference_dir / "test_results_full.csv"):
        assert_matches_row(result.per_image[row["imageID"]], row)
    assert result.total == Scores(151, 0, 0) and result.total.f1 == 1.0


def test_sn4_competition_identical(reference_dir: Path) -> None:
    result = score_csv(
        reference_dir / "sample_truth_competition.csv",
        reference_dir / "sample_preds_competition.csv",
        group_by="nadir",
    )
    (total_row,) = read_rows(reference_dir / "competition_test_results.csv")
    assert_matches_row(result.total, total_row)
    rows = read_rows(reference_dir / "competition_test_results_full.csv")
    assert len(rows) == len(result.per_image) == 33
    for row in rows:
        assert_matches_row(result.per_image[row["imageID"]], row)
        assert row["nadir-category"] in result.per_group
    assert result.total == Scores(2319, 0, 0)
