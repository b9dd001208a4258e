"""scripts/eval_real.py: the Banepa validation split, chip georeferencing, the table and the
bootstrap interval of an F1 difference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from shapely.geometry import box

from scripts.eval_real import (
    Counts,
    Matched,
    Row,
    banepa_train_chips,
    banepa_val_chips,
    markdown,
    paired_interval,
    tile_bounds,
    write_chip_mosaic,
    write_georeferenced_chip,
)
from ternaus_backend.evaluation.spacenet import match


def fake_chips(folder, xs=range(386690, 386696), ys=range(220241, 220249)):
    folder.mkdir()
    for x in xs:
        for y in ys:
            path = folder / f"OAM-{x}-{y}-19.tif"
            data = np.full((3, 8, 8), (x + y) % 255, np.uint8)
            with warnings.catch_warnings():  # like the real chips: no georeferencing
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(
                    path, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8"
                ) as dst:
                    dst.write(data)
    return folder


def test_banepa_validation_chips_are_the_easternmost_columns(tmp_path):
    folder = fake_chips(tmp_path / "chips")
    val = banepa_val_chips(folder)
    assert len(val) == 16  # two of six columns: at least a quarter of the 48 chips
    assert {p.name.split("-")[1] for p in val} == {"386694", "386695"}
    train = banepa_train_chips(folder)
    assert len(train) == 32 and not set(train) & set(val)
    (tmp_path / "none").mkdir()
    assert banepa_val_chips(tmp_path / "none") == []


def test_chips_are_placed_on_their_web_map_tiles(tmp_path):
    folder = fake_chips(tmp_path / "chips", xs=[386694, 386695], ys=[220241])
    xmin, ymin, xmax, ymax = tile_bounds(386694, 220241, 19)
    assert xmax - xmin == pytest.approx(76.437, abs=1e-3) == ymax - ymin
    one = write_georeferenced_chip(folder / "OAM-386694-220241-19.tif", tmp_path / "one.tif")
    with rasterio.open(one) as ds:
        assert ds.crs.to_epsg() == 3857
        assert tuple(ds.bounds) == pytest.approx((xmin, ymin, xmax, ymax))
    mosaic, region = write_chip_mosaic(sorted(folder.glob("*.tif")), tmp_path / "mosaic.tif")
    with rasterio.open(mosaic) as ds:
        assert (ds.width, ds.height) == (16, 8)
        assert ds.read_masks(1).all()
    assert region.equals(box(xmin, ymin, xmin + 2 * (xmax - xmin), ymax))


def test_the_table_puts_models_side_by_side():
    row = Row("Rio", ["rio:img56"], results={"old": Counts(50, 100, 3, 1, 1, 4, 4)})
    empty = Row("Rio empty", ["rio:img61"], True, {"old": Counts(0, 7, 0, 2, 0, 2, 0)})
    table = markdown([row, empty], ["old", "new"])
    assert "| Rio | pixel IoU | 0.500 | n/a |" in table
    assert "|  | building F1 | 0.750 | n/a |" in table
    assert "| Rio empty | false positives | 2 | n/a |" in table


def test_training_areas_never_touch_the_held_out_areas(tmp_path):
    import shapely

    from scripts.eval_real import DATA, RIO_HELD_OUT, oam_areas, training_areas

    if not (DATA / "hotosm_oam").exists():
        pytest.skip("shared OAM data not present")
    areas = training_areas(tmp_path)
    names = [a.name for a in areas]
    assert sum(n.startswith("oam-train:") for n in names) == 4
    assert "banepa_chips:train" in names
    assert not {f"rio-train:img{n}" for n in RIO_HELD_OUT} & set(names)
    held_out = {a.name.split(":")[1]: a.region for a in oam_areas()}
    for area in areas:
        if area.name.startswith("oam-train:"):
            region = held_out[area.name.split(":")[1]]
            assert area.region.area > 0.5 * region.area  # the rest of the AOI ...
            assert area.region.intersection(region).area < 1e-6 * region.area  # ... never val
            assert shapely.is_valid(area.region)


# ------------------------------------------------------------------------------ intervals
def town(found_per_block: list[int], houses: int = 4) -> Matched:
    """Blocks 100 m apart, each with ``houses`` 10 m houses, of which the first
    ``found_per_block[i]`` are predicted exactly (the rest missed)."""
    truth, predicted = [], []
    for i, found in enumerate(found_per_block):
        for k in range(houses):
            house = box(i * 100 + k * 20, 0, i * 100 + k * 20 + 10, 10)
            truth.append(house)
            if k < found:
                predicted.append(house)
    return Matched(predicted, truth, match(predicted, truth))


def test_the_same_result_twice_differs_by_nothing() -> None:
    a = town([2, 3, 4, 1, 0, 4])
    interval = paired_interval(a, a)
    assert (interval.delta, interval.low, interval.high, interval.b_wins) == (0, 0, 0, 0)


def test_a_result_better_everywhere_is_surely_better() -> None:
    a, b = town([2] * 20), town([4] * 20)
    interval = paired_interval(a, b)
    assert interval.delta == pytest.approx(1.0 - 2 * 40 / 120)
    assert 0 < interval.low <= interval.delta <= interval.high
    assert interval.b_wins == 1.0


def test_one_more_building_among_many_is_within_the_luck_of_the_draw() -> None:
    blocks = [2, 3, 1, 4, 2, 3, 2, 1, 3, 2, 4, 1]
    better = list(blocks)
    better[0] += 1
    interval = paired_interval(town(blocks), town(better))
    assert interval.delta > 0
    assert interval.low <= 0 < interval.high  # one building: not shown to be better
    assert 0.5 < interval.b_wins < 1.0
