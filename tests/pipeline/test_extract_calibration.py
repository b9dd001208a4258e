"""Extraction writes the calibrated confidence when the model has a calibration."""

from __future__ import annotations

import fiona
import numpy as np
import pytest
from shapely.geometry import shape

from ternaus_backend.evaluation.spacenet import evaluate_files
from ternaus_backend.models import load_model
from ternaus_backend.models.calibration import Calibration
from ternaus_backend.models.model_file import calibration_sidecar
from ternaus_backend.pipeline.extract import DEFAULT_MODEL, ExtractOptions, extract
from ternaus_backend.synthetic import make_scene
from ternaus_backend.training.calibration import building_outcomes

#: A calibration whose answer is easy to tell from a mean probability.
CALIBRATION = Calibration(coefficients=[1.0, -0.5], intercept=0.5)


def read_buildings(path):
    with fiona.open(path) as src:
        return [(shape(f["geometry"]), dict(f["properties"])) for f in src]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("scene"), seed=2026, size_px=512, with_ms=False)


def test_extraction_writes_the_calibrated_confidence(scene, tmp_path) -> None:
    model = load_model(DEFAULT_MODEL)
    model.metadata = model.metadata.model_copy(update={"calibration": None})
    options = ExtractOptions(device="cpu")
    raw = read_buildings(
        extract(scene.rgb, tmp_path / "raw.gpkg", model=model, options=options).path
    )
    model.metadata = model.metadata.model_copy(update={"calibration": CALIBRATION})
    calibrated = read_buildings(
        extract(scene.rgb, tmp_path / "cal.gpkg", model=model, options=options).path
    )

    assert len(raw) == len(calibrated) > 20
    mean_body = np.array([props["confidence"] for _, props in raw])
    area = np.array([props["area_m2"] for _, props in raw])
    got = np.array([props["confidence"] for _, props in calibrated])
    # the same buildings, the same areas; only the confidence changed, as the calibration says
    assert [p.wkb for p, _ in raw] == [p.wkb for p, _ in calibrated]
    assert area == pytest.approx([props["area_m2"] for _, props in calibrated])
    np.testing.assert_allclose(got, CALIBRATION.apply(mean_body, area), atol=2e-3)
    assert np.abs(got - mean_body).max() > 0.05
    assert np.all((0 <= got) & (got <= 1))


def test_the_default_model_writes_its_calibrated_confidence(scene, tmp_path) -> None:
    if not calibration_sidecar(DEFAULT_MODEL).exists():
        pytest.skip("the default model's calibration is not written")
    result = extract(scene.rgb, tmp_path / "out.gpkg", options=ExtractOptions(device="cpu"))
    outcomes = building_outcomes(
        load_model(DEFAULT_MODEL),
        scene.rgb,
        shape_of_raster(scene.rgb),
        [g for g, _ in read_buildings(scene.labels)],
        min_area=1.0,
    )
    written = sorted(props["confidence"] for _, props in read_buildings(result.path))
    # what building_outcomes says the model writes is what the extraction wrote
    assert written == pytest.approx(sorted(outcomes.confidence), abs=2e-3)
    assert written != pytest.approx(sorted(outcomes.mean_body), abs=2e-3)
    scores = evaluate_files(result.path, scene.labels)
    assert int(outcomes.true_positive.sum()) == scores.tp


def shape_of_raster(path):
    import rasterio
    from shapely.geometry import box

    with rasterio.open(path) as ds:
        return box(*ds.bounds)
