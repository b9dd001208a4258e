"""Evaluation of extracted building footprints against ground truth (SpaceNet F1)."""

from __future__ import annotations

from ternaus_backend.evaluation.spacenet import (
    BuildingIoU,
    CsvScores,
    MatchResult,
    Scores,
    aoi_of,
    evaluate_files,
    match,
    match_files,
    nadir_category_of,
    score,
    score_csv,
)

__all__ = [
    "BuildingIoU",
    "CsvScores",
    "MatchResult",
    "Scores",
    "aoi_of",
    "evaluate_files",
    "match",
    "match_files",
    "nadir_category_of",
    "score",
    "score_csv",
]
