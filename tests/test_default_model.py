"""The embedded default model: loads, is small, and finds buildings in scenes it never saw."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ternaus_backend import load_model
from ternaus_backend.evaluation.spacenet import evaluate_files
from ternaus_backend.pipeline.extract import DEFAULT_MODEL, extract
from ternaus_backend.synthetic import make_scene
from tests.helpers import REPO, SHARED_DATA

RIO = SHARED_DATA / "spacenet1_rio"
HELD_OUT = "013022223130_Public_img56"  # never used for training (see scripts/train_default.sh)
OAM = SHARED_DATA / "hotosm_oam"
VAL_AREAS = REPO / "resources" / "training"


def test_default_model_is_small_light_and_self_describing():
    assert DEFAULT_MODEL.stat().st_size < 50 * 2**20  # issue 8: under 50 MB
    model = load_model(DEFAULT_MODEL)
    meta = model.metadata
    assert meta.encoder == "resnet_light_deep" and meta.in_channels == 3
    assert meta.band_names == ["red", "green", "blue"]
    assert meta.resolution_m == pytest.approx(0.3, abs=0.01)
    assert "val_f1" in json.dumps(meta.provenance)
    assert "OpenStreetMap contributors (ODbL" in meta.provenance["attribution"]
    assert "OpenAerialMap" in meta.provenance["attribution"]
    assert not model.training


def test_default_model_finds_buildings_in_an_unseen_synthetic_scene(tmp_path):
    # Trained on real imagery only: synthetic scenes (0.5 m, resampled) are a sanity check.
    scene = make_scene(tmp_path, seed=2026, size_px=512, with_ms=False)
    result = extract(scene.rgb, tmp_path / "out.gpkg")
    scores = evaluate_files(result.path, scene.labels)
    assert scores.f1 > 0.3 and scores.tp > 20, scores.to_dict()


def test_default_model_on_a_held_out_oam_validation_area(tmp_path):
    """Kampala's validation area (never trained on): buildings found where OSM has them."""
    rgb = OAM / "kampala_rgb.tif"
    if not rgb.exists():
        pytest.skip("shared OAM mosaics not present")
    import shapely

    from ternaus_backend.evaluation.error_layers import evaluate_layers
    from ternaus_backend.vector_io import read_polygons

    area = VAL_AREAS / "kampala_val.geojson"
    bounds = shapely.union_all(read_polygons(area)).bounds
    result = extract(rgb, tmp_path / "out.gpkg", bbox=bounds, bbox_crs="EPSG:4326")
    evaluation = evaluate_layers(result.path, OAM / "kampala_buildings.geojson", area_path=area)
    # eval_real.py (clipping to the area) measures F1 0.51 here (stage 5: 0.47, first default 0.16).
    assert evaluation.scores.f1 > 0.25, evaluation.scores.to_dict()


def test_default_model_on_a_held_out_real_rio_tile(tmp_path):
    rgb = RIO / "images" / f"3band_{HELD_OUT}.tif"
    if not rgb.exists():
        pytest.skip("shared Rio tiles not present")
    result = extract(rgb, tmp_path / "out.gpkg")
    scores = evaluate_files(
        result.path, RIO / "derived_polygons" / f"{HELD_OUT}_mask_components.geojson"
    )
    assert result.count > 10
    assert scores.tp > 5, scores.to_dict()


def test_predict_without_model_uses_the_default(tmp_path):
    scene = make_scene(tmp_path, seed=5, size_px=256, with_ms=False)
    out = tmp_path / "b.gpkg"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ternaus_backend.cli",
            "predict",
            "--rgb",
            str(scene.rgb),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["buildings"] > 0


def _resampled_copy(src_path, dst_path, resolution_m: float):
    """``src_path`` resampled (average) to ``resolution_m`` ground metres, same CRS and corner."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    from ternaus_backend.pipeline.raster import RasterInputs

    with RasterInputs.open(src_path) as inputs:
        factor = resolution_m / inputs.grid.pixel_size_m
    with rasterio.open(src_path) as src:
        width, height = round(src.width / factor), round(src.height / factor)
        profile = dict(src.profile, width=width, height=height)
        profile["transform"] = src.transform * Affine.scale(src.width / width, src.height / height)
        with rasterio.open(dst_path, "w", **profile) as dst:
            for band in range(1, src.count + 1):
                reproject(
                    rasterio.band(src, band),
                    rasterio.band(dst, band),
                    resampling=Resampling.average,
                )
    return dst_path


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="not reached: at 0.5 m the resampled chip loses the narrow gaps between roofs that "
    "the 0.132 m chip shows, and the default model (stage 6) finds most of those roofs at "
    "0.132 m: pooled F1 0.65 between the two resolutions (TP 292, FP 104, FN 217), target 0.8",
)
def test_banepa_chips_at_0132_and_05_m_give_nearly_the_same_buildings(tmp_path):
    from scripts.eval_real import banepa_val_chips, write_georeferenced_chip
    from ternaus_backend.evaluation.spacenet import Scores, score
    from ternaus_backend.vector_io import read_polygons

    chips = banepa_val_chips(SHARED_DATA / "hotosm_oam" / "banepa_chips")
    if not chips:
        pytest.skip("shared Banepa chips not present")
    model = load_model(DEFAULT_MODEL)
    pooled = Scores()
    for chip in chips:  # the 16 validation chips, each at 0.132 m and resampled to 0.5 m
        fine = write_georeferenced_chip(chip, tmp_path / chip.name)
        coarse = _resampled_copy(fine, tmp_path / f"{chip.stem}_05m.tif", 0.5)
        found = []
        for path in (fine, coarse):
            result = extract(path, tmp_path / f"{path.stem}.gpkg", model=model)
            assert result.resampled  # both read at the model's resolution
            found.append(read_polygons(result.path) if result.count else [])
        pooled = pooled + score(found[1], found[0])
    assert pooled.tp > 20
    assert pooled.f1 >= 0.8, pooled.to_dict()
