"""benchmarks/bench_loop.py: the labelled block and the scored rest of each OAM area."""

from __future__ import annotations

import pytest

from benchmarks.bench_loop import BLOCK_BUILDINGS, BLOCK_SHARE, GAP_M, loop_areas, markdown
from scripts.eval_real import DATA


@pytest.fixture(scope="module")
def areas():
    if not (DATA / "hotosm_oam" / "kampala_rgb.tif").exists():
        pytest.skip("shared OAM data not present")
    return loop_areas()


def test_each_block_is_one_compact_piece_with_about_50_buildings(areas) -> None:
    assert [a.name for a in areas] == ["zanzibar", "kampala", "banepa_east", "nairobi"]
    for area in areas:
        in_aoi = [b for b in area.buildings if area.aoi.contains(b.centroid)]
        wanted = min(BLOCK_BUILDINGS, int(BLOCK_SHARE * len(in_aoi)))
        whole = [b for b in area.buildings if area.block.contains(b)]
        assert area.block.geom_type == "Polygon"
        assert wanted <= len(whole) <= 1.5 * wanted, area.name
        assert area.aoi.contains(area.block.buffer(-1e-6))


def test_the_rest_never_touches_the_block_and_holds_buildings_to_score(areas) -> None:
    for area in areas:
        rest = area.rest
        assert rest.distance(area.block) >= GAP_M - 0.05
        scored = [b for b in area.buildings if b.intersects(rest)]
        assert len(scored) >= 30, area.name
        assert all(not area.block.contains(b) for b in scored)


def test_the_table_has_a_column_per_model_and_a_block_of_rows_per_area() -> None:
    row = {
        "area": "kampala",
        "block_buildings": 68,
        "finetune_seconds": 300.0,
        "results": {
            "before": {"rest": {"f1": 0.5, "pixel_iou": 0.6}, "rest_val": {"f1": 0.4},
                       "rio_empty_fp": 0},
            "finetune": {"rest": {"f1": 0.7, "pixel_iou": 0.65}, "rest_val": {"f1": 0.6},
                         "rio_empty_fp": 1},
        },
        "rest_vs_before": {"finetune": {"delta": 0.2, "low": 0.05, "high": 0.31, "b_wins": 1.0}},
    }  # fmt: skip
    text = markdown([row], ["before", "finetune"])
    assert "| | rest F1 change, 95 % interval | - | +0.200 [+0.050, +0.310] |" in text
    assert "| kampala (68 labelled) | rest F1 | 0.500 | 0.700 |" in text
    assert "| | Rio building-free FP | 0 | 1 |" in text
    assert "| | seconds | - | 300 s |" in text
