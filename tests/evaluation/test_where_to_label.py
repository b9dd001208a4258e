"""Where to label next: the ranking follows the three signals (body probability near the
threshold, flips that disagree, buildings of low confidence) on small rasters whose answers are
known (stand-in models of tests/helpers.py), and the default model on real imagery."""

from __future__ import annotations

import json

import fiona
import numpy as np
import pytest
import torch
from shapely.geometry import shape

from ternaus_backend.cli import main
from ternaus_backend.errors import InputError
from ternaus_backend.evaluation.where_to_label import near_threshold_bytes, propose_cells
from ternaus_backend.models.calibration import Calibration
from tests.helpers import SHARED_DATA, ThresholdModel, write_raster

PIXEL_M = 0.5
CELL_M = 20.0  # 40 px cells
CELL = 40
BACKGROUND, ROOF, GREY = 40, 220, 124  # probabilities about 0, 1 and 0.39 (threshold 0.5)


def scene(tmp_path, paint, rows: int = 2, cols: int = 3):
    """A raster of ``rows`` x ``cols`` cells of background; ``paint(image)`` draws on it."""
    image = np.full((3, rows * CELL, cols * CELL), BACKGROUND, np.uint8)
    paint(image)
    return write_raster(tmp_path / "scene.tif", image, pixel=PIXEL_M)


def cell_at(proposal, row: int, col: int):
    return next(c for c in proposal.cells if (c.row, c.col) == (row, col))


def grey_and_roofs(image):
    image[:, 0:CELL, CELL : 2 * CELL] = GREY  # cell (0, 1): ambiguous everywhere
    image[:, 8:24, 2 * CELL + 8 : 2 * CELL + 24] = ROOF  # cell (0, 2): a clear building


def test_an_ambiguous_cell_ranks_above_clear_buildings_and_clear_background(tmp_path):
    raster = scene(tmp_path, grey_and_roofs)
    out = tmp_path / "cells.gpkg"
    proposal = propose_cells(raster, out, model=ThresholdModel(), cell_m=CELL_M, top=2)
    assert proposal.cell_px == CELL and len(proposal.cells) == 6
    first = proposal.cells[0]
    assert (first.row, first.col, first.rank) == (0, 1, 1)
    assert first.near_threshold == pytest.approx(1.0)
    building = cell_at(proposal, 0, 2)
    assert building.buildings == 1 and building.low_confidence_buildings == 0
    assert building.rank > 1 and building.score < 0.25 * first.score  # a building it is sure of
    for row, col in ((0, 0), (1, 0), (1, 1), (1, 2)):
        assert cell_at(proposal, row, col).score == 0.0  # background the model is sure of
    assert [c.rank for c in proposal.cells] == list(range(1, 7))
    assert [c.score for c in proposal.cells] == sorted(
        (c.score for c in proposal.cells), reverse=True
    )
    # the GeoPackage: cells ranked and marked top, the extraction's buildings beside them
    assert sorted(fiona.listlayers(out)) == ["buildings", "cells"]
    with fiona.open(out, layer="cells") as layer:
        rows = [dict(f.properties) for f in layer]
        geoms = [shape(f.geometry) for f in layer]
    assert [r["rank"] for r in rows] == list(range(1, 7))
    assert [r["top"] for r in rows] == [True, True, False, False, False, False]
    for r in rows:
        parts = r["near_threshold"] + r["flip_disagreement"] + r["low_confidence_share"]
        assert r["score"] == pytest.approx(parts, abs=1e-4)
    assert geoms[0].area == pytest.approx(CELL_M * CELL_M)
    with fiona.open(out, layer="buildings") as layer:
        assert len(layer) == 1 and 0 < next(iter(layer)).properties["confidence"] <= 1


class FlipSensitiveModel(ThresholdModel):
    """Not flip-equivariant: a left-to-right ramp of -3..3 added to the body logit, so the
    left-right flips disagree where the plain logit is near 0 and agree where it is far."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        ramp = torch.linspace(-3, 3, x.shape[-1]).view(1, 1, 1, -1)
        return torch.cat([out[:, :1] + ramp, out[:, 1:]], dim=1)


def test_cells_where_the_flips_disagree_rank_first(tmp_path):
    def paint(image):
        image[:, CELL:, 2 * CELL :] = 128  # cell (1, 2): logit about 0, the ramp decides

    raster = scene(tmp_path, paint)
    proposal = propose_cells(raster, model=FlipSensitiveModel(), cell_m=CELL_M)
    first = proposal.cells[0]
    assert (first.row, first.col) == (1, 2)
    assert first.flip_disagreement > 0.3
    for cell in proposal.cells[1:]:
        assert cell.flip_disagreement == 0.0  # clear background: a ramp of 3 changes nothing
    # the same scene, flip-equivariant model: no disagreement anywhere
    plain = propose_cells(raster, model=ThresholdModel(), cell_m=CELL_M)
    assert all(c.flip_disagreement == 0.0 for c in plain.cells)


def calibrated(intercept: float) -> ThresholdModel:
    """A stand-in whose every building has the same calibrated confidence sigmoid(intercept)."""
    model = ThresholdModel()
    calibration = Calibration(features=["log_area_m2"], coefficients=[0.0], intercept=intercept)
    model.metadata = model.metadata.model_copy(update={"calibration": calibration})
    return model


def test_buildings_of_low_confidence_raise_their_cell(tmp_path):
    def paint(image):
        image[:, 20:40, CELL : 2 * CELL] = GREY  # cell (0, 1): half ambiguous
        image[:, 5:35, 2 * CELL + 5 : 2 * CELL + 35] = ROOF  # cell (0, 2): one 30 x 30 px roof

    raster = scene(tmp_path, paint)
    sure = propose_cells(raster, model=calibrated(3.0), cell_m=CELL_M)
    doubtful = propose_cells(raster, model=calibrated(-3.0), cell_m=CELL_M)
    assert (sure.cells[0].row, sure.cells[0].col) == (0, 1)  # the building is trusted
    assert (doubtful.cells[0].row, doubtful.cells[0].col) == (0, 2)  # the building is doubted
    roof_sure, roof_doubt = cell_at(sure, 0, 2), cell_at(doubtful, 0, 2)
    assert roof_sure.low_confidence_buildings == 0 and roof_sure.low_confidence_share == 0
    assert roof_doubt.low_confidence_buildings == 1 and roof_doubt.buildings == 1
    assert roof_doubt.low_confidence_share == pytest.approx(900 / 1600, abs=0.05)
    assert roof_doubt.mean_confidence == pytest.approx(1 / (1 + np.exp(3.0)), abs=1e-3)
    grey = cell_at(doubtful, 0, 1)
    assert grey.score == pytest.approx(cell_at(sure, 0, 1).score)  # no building there


def test_the_aoi_limits_the_cells_and_weighs_partly_covered_ones_less(tmp_path):
    def paint(image):
        image[:, :, :] = GREY  # everything ambiguous

    raster = scene(tmp_path, paint)
    x0, y0 = 500000.0, 7450000.0  # the raster's top-left corner (tests/helpers.write_raster)
    aoi = tmp_path / "aoi.geojson"
    ring = [[x0, y0], [x0 + 30, y0], [x0 + 30, y0 - 20], [x0, y0 - 20], [x0, y0]]
    aoi.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:32723"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    proposal = propose_cells(raster, model=ThresholdModel(), aoi=aoi, cell_m=CELL_M)
    # the AOI's box is 60 x 40 px: one whole cell (0, 0) and the left half of (0, 1)
    assert [(c.row, c.col) for c in proposal.cells] == [(0, 0), (0, 1)]
    whole, half = proposal.cells
    assert whole.covered == pytest.approx(1.0) and half.covered == pytest.approx(0.5)
    assert whole.score == pytest.approx(1.0) and half.score == pytest.approx(0.5)


def test_near_threshold_band_is_symmetric_in_logit():
    low, high = near_threshold_bytes(0.8)
    assert low / 255 == pytest.approx(0.5953, abs=1e-3) and high / 255 == pytest.approx(
        0.9158, abs=1e-3
    )
    low, high = near_threshold_bytes(0.5)
    assert (low + high) / 255 == pytest.approx(1.0)


def test_bad_input_is_refused_before_any_work(tmp_path):
    raster = scene(tmp_path, lambda image: None)
    with pytest.raises(InputError, match="positive"):
        propose_cells(raster, model=ThresholdModel(), cell_m=0)
    with pytest.raises(InputError, match="at least 4 m"):  # 8 px of 0.5 m
        propose_cells(raster, model=ThresholdModel(), cell_m=1.0)
    (tmp_path / "taken.gpkg").write_bytes(b"x")
    with pytest.raises(InputError, match="exists"):
        propose_cells(raster, tmp_path / "taken.gpkg", model=ThresholdModel(), overwrite=False)


KAMPALA = SHARED_DATA / "hotosm_oam" / "kampala_rgb.tif"


@pytest.mark.slow
@pytest.mark.skipif(not KAMPALA.exists(), reason="the OAM Kampala raster is not here")
def test_cli_on_kampala_with_the_default_model(tmp_path, capsys):
    """The real model on real imagery: the Kampala area (its AOI), 40 m cells."""
    out = tmp_path / "cells.gpkg"
    aoi = KAMPALA.with_name("kampala_aoi.geojson")
    args = ["--rgb", str(KAMPALA), "--aoi", str(aoi), "--cell-m", "40", "--out", str(out)]
    assert main(["where-to-label", *args]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cells"] >= 6 and summary["buildings"] > 50 and len(summary["top"]) == 3
    scores = [c["score"] for c in summary["top"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.1
    assert summary["body_threshold"] == pytest.approx(0.8)
    with fiona.open(out, layer="cells") as layer:
        rows = [dict(f.properties) for f in layer]
    assert len(rows) == summary["cells"] and sum(r["top"] for r in rows) == 3
    assert sum(r["buildings"] for r in rows) <= summary["buildings"]
    # the best cells hold the doubtful buildings: more of them than the worst cells
    best, worst = rows[:3], rows[-3:]
    assert sum(r["low_confidence_buildings"] for r in best) >= sum(
        r["low_confidence_buildings"] for r in worst
    )


def test_cells_already_labelled_are_left_out(tmp_path):
    def paint(image):
        image[:, :, :] = GREY  # everything ambiguous

    raster = scene(tmp_path, paint)
    x0, y0 = 500000.0, 7450000.0
    done = tmp_path / "labelled.geojson"
    # all of cell (0, 0), a quarter of cell (0, 1)
    ring = [[x0, y0], [x0 + 30, y0], [x0 + 30, y0 - 10], [x0 + 20, y0 - 10], [x0 + 20, y0 - 20]]
    ring += [[x0, y0 - 20], [x0, y0]]
    done.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:32723"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    proposal = propose_cells(raster, model=ThresholdModel(), cell_m=CELL_M, exclude=done)
    assert proposal.excluded == 1 and len(proposal.cells) == 5
    assert (0, 0) not in [(c.row, c.col) for c in proposal.cells]
    assert proposal.to_dict()["excluded"] == 1
