"""benchmarks/bench_where_to_label.py: the candidate cells, the labelled sets and the table."""

from __future__ import annotations

import pytest
from shapely.geometry import box

from benchmarks.bench_loop import loop_areas
from benchmarks.bench_where_to_label import CELLS, MIN_INSIDE, candidates, labelled, markdown
from scripts.eval_real import DATA
from ternaus_backend.evaluation.where_to_label import Cell


def cell(rank: int, x0: float, y0: float, side: float = 30.0) -> Cell:
    return Cell(0, rank, box(x0, y0, x0 + side, y0 + side), 0.1, 0.0, 0.0, 0, 0, None, 1.0, rank)


@pytest.fixture(scope="module")
def kampala():
    if not (DATA / "hotosm_oam" / "kampala_rgb.tif").exists():
        pytest.skip("shared OAM data not present")
    return loop_areas(names=["kampala"])[0]


def test_candidates_avoid_the_validation_quarter_and_the_outside(kampala) -> None:
    x0, y0, x1, y1 = kampala.aoi.bounds
    grid = [
        cell(1 + i + 100 * j, x, y)
        for j, y in enumerate(range(int(y0), int(y1), 30))
        for i, x in enumerate(range(int(x0), int(x1), 30))
    ]
    kept = candidates(kampala, grid)
    assert 0 < len(kept) < len(grid)
    assert [c.rank for c in kept] == sorted(c.rank for c in kept)  # best-ranked first
    for c in kept:
        assert not c.geometry.intersects(kampala.val)
        assert c.geometry.intersection(kampala.aoi).area >= MIN_INSIDE * c.geometry.area
    chosen = labelled(kampala, kept[:CELLS], "guided")
    assert chosen.name == "kampala_guided"
    assert chosen.block_buildings and all(
        b.intersects(chosen.block) for b in chosen.block_buildings
    )


def test_the_table_says_which_choice_won() -> None:
    row = {
        "area": "kampala",
        "candidates": 18,
        "cells": {
            "guided": [{"buildings_labelled": 20}, {"buildings_labelled": 13}],
            "random": [{"buildings_labelled": 5}],
        },
        "results": {"before": {"f1": 0.5}, "guided": {"f1": 0.62}, "random": {"f1": 0.55}},
        "random_mean_f1": 0.55,
        "guided_wins": True,
        "guided_vs": {"random": {"delta": 0.07, "low": -0.01, "high": 0.15, "b_wins": 0.96}},
        "guided_seconds": 600.0,
        "random_seconds": 500.0,
    }
    text = markdown([row, {"area": "nairobi", "candidates": 2, "skipped": True}])
    assert (
        "| kampala (18) | 33 / 5 | 0.500 | 0.620 | 0.550 | yes | +0.070 [-0.010, +0.150] | "
        "600 / 500 |" in text
    )
    assert "| nairobi (2) | too few cells |" in text
    assert "Guided wins on 1 of 1 areas run." in text


def test_runs_of_one_set_each_merge_into_one_row(tmp_path) -> None:
    from benchmarks.bench_where_to_label import merge

    guided = {
        "area": "kampala",
        "candidates": 18,
        "cells": {"guided": [{"buildings_labelled": 43}]},
        "results": {"before": {"f1": 0.568}, "guided": {"f1": 0.61}},
        "guided_seconds": 1200.0,
    }
    random_ = {
        "area": "kampala",
        "candidates": 18,
        "cells": {"random": [{"buildings_labelled": 19}]},
        "results": {"before": {"f1": 0.568}, "random": {"f1": 0.58}},
        "random_seconds": 1100.0,
    }
    (row,) = merge([{"rows": [guided]}, {"rows": [random_]}])
    assert set(row["cells"]) == {"guided", "random"}
    assert row["random_mean_f1"] == 0.58 and row["guided_wins"] is True
    assert (row["guided_seconds"], row["random_seconds"]) == (1200.0, 1100.0)


def test_errors_only_rows_make_the_errors_table_alone() -> None:
    row = {
        "area": "kampala",
        "candidates": 18,
        "errors_only": True,
        "score_errors_spearman": 0.43,
        "guided_errors": 24,
        "random_errors": 10,
        "mean_errors_per_cell": 3.94,
    }
    text = markdown([row])
    assert text.splitlines()[0].startswith("| area (candidate cells) | default model's errors")
    assert "| kampala (18) | 24 / 10 | 3.94 | 0.43 |" in text
    assert "rest F1" not in text and "Guided wins" not in text
