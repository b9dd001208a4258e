"""Unit tests of the SpaceNet matching rules on tiny synthetic polygons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from ternaus_backend.errors import InputError
from ternaus_backend.evaluation.spacenet import (
    Scores,
    aoi_of,
    evaluate_files,
    match,
    nadir_category_of,
    score,
    score_csv,
)
from ternaus_backend.vector_io import write_polygons

# A self-intersecting "bow-tie": a big lobe (area 200/3) and a small one (50/3), signed area 50.
BOW_TIE = Polygon([(0, 0), (10, 10), (10, 0), (0, 20)])
BIG_LOBE = Polygon([(0, 0), (0, 20), (20 / 3, 20 / 3)])


# --- Scores ---------------------------------------------------------------------------------


def test_scores_metrics_and_dict() -> None:
    s = Scores.from_counts(tp=3, fp=1, fn=2)
    assert (s.precision, s.recall) == (0.75, 0.6)
    assert s.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert s.to_dict() == {
        "tp": 3, "fp": 1, "fn": 2, "precision": 0.75, "recall": 0.6, "f1": s.f1,
    }  # fmt: skip


def test_scores_zero_when_nothing_matches() -> None:
    assert Scores().to_dict() == {
        "tp": 0, "fp": 0, "fn": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0,
    }  # fmt: skip
    assert Scores(0, 5, 0).f1 == 0.0 and Scores(0, 0, 5).f1 == 0.0


def test_scores_pool_sums_counts_not_f1() -> None:
    a, b = Scores(1, 0, 0), Scores(0, 0, 1)
    assert a + b == Scores.pool([a, b]) == Scores(1, 0, 1)
    assert (a + b).f1 == pytest.approx(2 / 3)  # mean of per-image F1 would be 0.5


def test_scores_refuse_negative_counts() -> None:
    with pytest.raises(InputError):
        Scores.from_counts(-1, 0, 0)


# --- matching rules -------------------------------------------------------------------------


def test_identical_squares_are_a_true_positive() -> None:
    assert score([box(0, 0, 10, 10)], [box(0, 0, 10, 10)]) == Scores(1, 0, 0)


def test_disjoint_squares_are_fp_and_fn() -> None:
    assert score([box(0, 0, 10, 10)], [box(20, 0, 30, 10)]) == Scores(0, 1, 1)


def test_low_overlap_is_fp_and_fn_with_its_iou_reported() -> None:
    result = match([box(5, 0, 15, 10)], [box(0, 0, 10, 10)])
    assert result.scores == Scores(0, 1, 1)
    assert result.truth_iou[0] == pytest.approx(1 / 3)
    assert result.matched_truth.tolist() == [-1]


def test_iou_threshold_is_strict() -> None:
    half = [box(0, 0, 10, 5)]  # IoU exactly 0.5 with the truth
    truth = [box(0, 0, 10, 10)]
    assert score(half, truth, iou_threshold=0.5) == Scores(0, 1, 1)
    assert score(half, truth, iou_threshold=0.49) == Scores(1, 0, 0)


def test_min_area_keeps_truth_at_the_limit_but_not_proposals() -> None:
    square = box(0, 0, 4, 5)  # area exactly 20
    assert score([square], [square], min_area=20) == Scores(0, 0, 1)  # proposal dropped
    assert score([square], [square], min_area=19.5) == Scores(1, 0, 0)
    assert score([square], [square], min_area=20.5) == Scores(0, 0, 0)  # both dropped


def test_invalid_proposal_is_repaired_with_buffer0() -> None:
    assert not BOW_TIE.is_valid
    assert score([BOW_TIE], [BIG_LOBE]) == Scores(1, 0, 0)


def test_invalid_truth_gives_iou_zero() -> None:
    result = match([BIG_LOBE], [BOW_TIE])
    assert result.scores == Scores(0, 1, 1)
    assert result.truth_iou[0] == 0.0


def test_zero_area_proposal_is_ignored() -> None:
    symmetric_bow_tie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # signed area 0
    assert score([symmetric_bow_tie], [box(5, 0, 10, 10)]) == Scores(0, 0, 1)


def test_empty_and_missing_geometries_are_ignored() -> None:
    assert score([Polygon(), None], [Polygon()]) == Scores(0, 0, 0)
    assert score([], []) == Scores(0, 0, 0)


def test_zero_area_truth_is_never_a_false_negative() -> None:
    assert score([], [Polygon([(0, 0), (1, 0), (2, 0)])]) == Scores(0, 0, 0)


def test_each_truth_matches_once() -> None:
    result = match([box(0, 0, 10, 10), box(0, 0, 10, 9)], [box(0, 0, 10, 10)])
    assert result.scores == Scores(1, 1, 0)
    assert result.matched_truth.tolist() == [0, -1]


def test_best_candidate_wins_and_ties_go_to_the_first_truth() -> None:
    truths = [box(0, 0, 10, 10), box(1, 0, 11, 10)]
    assert match([box(0.8, 0, 10.8, 10)], truths).matched_truth.tolist() == [1]
    assert match([box(0.5, 0, 10.5, 10)], truths).matched_truth.tolist() == [0]


def test_confidence_order_changes_the_result() -> None:
    a, b = box(0, 0, 10, 10), box(5, 0, 15, 10)
    wide = box(3, 0, 13, 10)  # IoU 7/13 with a, 8/12 with b: takes b when first
    exact_b = box(5, 0, 15, 10)  # IoU 1 with b, 1/3 with a
    proposals, truths = [wide, exact_b], [a, b]
    assert score(proposals, truths, confidences=[0.9, 0.1]) == Scores(1, 1, 1)
    assert score(proposals, truths, confidences=[0.1, 0.9]) == Scores(2, 0, 0)


def test_ties_and_no_confidence_keep_input_order() -> None:
    a, b = box(0, 0, 10, 10), box(5, 0, 15, 10)
    proposals, truths = [box(3, 0, 13, 10), box(5, 0, 15, 10)], [a, b]
    assert score(proposals, truths) == Scores(1, 1, 1)
    assert score(proposals, truths, confidences=[0.5, 0.5]) == Scores(1, 1, 1)
    assert score(proposals[::-1], truths, confidences=[0.5, 0.5]) == Scores(2, 0, 0)


def test_truth_iou_is_the_best_while_unmatched() -> None:
    truth = [box(0, 0, 10, 10)]
    weak = match([box(0, 0, 10, 3), box(0, 0, 10, 4)], truth)  # IoU 0.3 then 0.4: both FP
    assert weak.scores == Scores(0, 2, 1)
    assert weak.truth_iou[0] == pytest.approx(0.4)
    after_match = match([box(0, 0, 10, 9), box(0, 0, 10, 9.5)], truth)  # 0.9 matches first
    assert after_match.truth_iou[0] == pytest.approx(0.9)
    assert after_match.proposal_iou[1] == 0.0


def test_many_buildings_are_fast() -> None:
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 20_000, size=(5_000, 2))
    shift = rng.normal(0, 1, size=corners.shape)
    truths = [box(x, y, x + 10, y + 10) for x, y in corners]
    proposals = [box(x, y, x + 10, y + 10) for x, y in corners + shift]
    result = score(proposals, truths, confidences=rng.uniform(size=len(proposals)))
    assert result.tp + result.fn == 5_000 and result.tp > 3_000


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"iou_threshold": 1.0}, "IoU threshold"),
        ({"min_area": -1.0}, "minimum area"),
        ({"confidences": [1.0, 2.0]}, "confidences"),
        ({"confidences": [float("nan")]}, "NaN"),
    ],
)
def test_bad_parameters_raise_input_error(kwargs: dict, words: str) -> None:
    with pytest.raises(InputError, match=words):
        score([box(0, 0, 1, 1)], [box(0, 0, 1, 1)], **kwargs)


# --- image ids and CSV files -----------------------------------------------------------------


def test_aoi_and_nadir_from_image_ids() -> None:
    assert aoi_of("AOI_2_Vegas_img3457") == "AOI_2_Vegas"
    assert aoi_of("Atlanta_nadir10_catid_1030010003CAF100_740801_3728289") == "Atlanta"
    assert aoi_of("tile_7") == "other"
    assert nadir_category_of("Atlanta_nadir25_catid_X_1_2") == "Nadir"
    assert nadir_category_of("Atlanta_nadir26_catid_X_1_2") == "Off-Nadir"
    assert nadir_category_of("Atlanta_nadir44_catid_X_1_2") == "Very-Off-Nadir"
    assert nadir_category_of("AOI_2_Vegas_img1") == "other"


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    """A small CSV file."""
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_score_csv_images_on_one_side_only(tmp_path: Path) -> None:
    square = '"POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0))"'
    truth = write_csv(
        tmp_path / "truth.csv",
        "ImageId,BuildingId,PolygonWKT_Pix",
        [f"AOI_1_A_img1,1,{square}", f"AOI_1_A_img2,1,{square}", "AOI_3_B_img3,-1,POLYGON EMPTY"],
    )
    preds = write_csv(
        tmp_path / "preds.csv",
        "ImageId,BuildingId,PolygonWKT_Pix,Confidence",
        [f"AOI_1_A_img1,0,{square},1", f"AOI_3_B_img4,0,{square},1"],
    )
    result = score_csv(truth, preds, min_area=0)
    assert result.per_image == {
        "AOI_1_A_img1": Scores(1, 0, 0),
        "AOI_1_A_img2": Scores(0, 0, 1),
        "AOI_3_B_img3": Scores(0, 0, 0),
        "AOI_3_B_img4": Scores(0, 1, 0),
    }
    assert result.per_group == {"AOI_1_A": Scores(1, 0, 1), "AOI_3_B": Scores(0, 1, 0)}
    assert [b.iou for b in result.per_building] == [1.0, 0.0, 0.0]
    assert score_csv(truth, preds, min_area=0, group_by=None).per_group == {}
    by_digit = score_csv(truth, preds, min_area=0, group_by=lambda i: i[-1])
    assert set(by_digit.per_group) == {"1", "2", "3", "4"}


def test_score_csv_errors(tmp_path: Path) -> None:
    good = write_csv(tmp_path / "good.csv", "ImageId,PolygonWKT_Pix", ["a,POLYGON EMPTY"])
    no_wkt = write_csv(tmp_path / "no_wkt.csv", "ImageId,Geometry", ["a,POLYGON EMPTY"])
    bad_wkt = write_csv(tmp_path / "bad.csv", "ImageId,PolygonWKT_Pix", ['a,"POLYGON ((0 0"'])
    with pytest.raises(InputError, match="PolygonWKT_Pix"):
        score_csv(good, no_wkt)
    with pytest.raises(InputError, match="line 2"):
        score_csv(good, bad_wkt)
    with pytest.raises(InputError, match="not found"):
        score_csv(tmp_path / "missing.csv", good)
    with pytest.raises(InputError, match="group_by"):
        score_csv(good, good, group_by="continent")


# --- vector files ---------------------------------------------------------------------------


def test_evaluate_files_orders_by_confidence_field(tmp_path: Path) -> None:
    truths = write_polygons(tmp_path / "truth.gpkg", [box(0, 0, 10, 10), box(5, 0, 15, 10)], 32616)
    proposals = [box(3, 0, 13, 10), box(5, 0, 15, 10)]
    first = write_polygons(
        tmp_path / "p1.geojson", proposals, 32616, [{"Confidence": c} for c in (0.9, 0.1)]
    )
    second = write_polygons(
        tmp_path / "p2.geojson", proposals, 32616, [{"CONF": c} for c in (1, 9)]
    )
    assert evaluate_files(first, truths) == Scores(1, 1, 1)
    assert evaluate_files(second, truths) == Scores(2, 0, 0)


def test_evaluate_files_refuses_missing_confidence_values(tmp_path: Path) -> None:
    truths = write_polygons(tmp_path / "truth.gpkg", [box(0, 0, 10, 10)], "EPSG:32616")
    preds = write_polygons(
        tmp_path / "preds.gpkg",
        [box(0, 0, 10, 10)] * 2,
        32616,
        [{"confidence": 1.0}, {"confidence": None}],
    )
    with pytest.raises(InputError, match="confidence"):
        evaluate_files(preds, truths)
