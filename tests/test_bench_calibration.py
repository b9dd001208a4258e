"""benchmarks/bench_calibration.py on real data: Kampala's held-out quarter, the default model."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_calibration import markdown, measure, noise_floor, oam_split
from scripts.eval_real import DATA, MIN_AREA_M2
from ternaus_backend.models import load_model
from ternaus_backend.models.calibration import expected_calibration_error
from ternaus_backend.models.model_file import calibration_sidecar
from ternaus_backend.pipeline.extract import DEFAULT_MODEL
from ternaus_backend.training.calibration import Outcomes, building_outcomes


def test_noise_floor_of_a_perfect_calibration_shrinks_with_more_buildings() -> None:
    rng = np.random.default_rng(0)
    few, many = rng.uniform(0.3, 0.9, 50), rng.uniform(0.3, 0.9, 2000)
    assert noise_floor(few, draws=200) > 2 * noise_floor(many, draws=200)
    assert noise_floor(np.zeros(0)) == 0.0


def test_the_default_models_calibration_on_kampalas_held_out_quarter(tmp_path) -> None:
    if not (DATA / "hotosm_oam" / "kampala_rgb.tif").exists():
        pytest.skip("shared OAM data not present")
    if not calibration_sidecar(DEFAULT_MODEL).exists():
        pytest.skip("the default model's calibration is not written")
    fit, held = oam_split(tmp_path)
    (kampala,) = [a for a in held if a.name == "oam:kampala"]
    (kampala_fit,) = [a for a in fit if a.name == "oam-train:kampala"]
    assert kampala.region.intersection(kampala_fit.region).area < 1e-6 * kampala.region.area

    model = load_model(DEFAULT_MODEL)
    calibration = model.metadata.calibration
    outcomes = building_outcomes(
        model, kampala.raster, kampala.region, kampala.truth, MIN_AREA_M2, work=tmp_path
    )
    assert len(outcomes) > 30 and 0 < outcomes.true_positive.sum() < len(outcomes)
    # the extraction wrote the calibrated confidence, not the mean probability
    np.testing.assert_allclose(
        outcomes.confidence, calibration.apply(outcomes.mean_body, outcomes.area_m2)
    )
    before = expected_calibration_error(outcomes.mean_body, outcomes.true_positive)
    after = expected_calibration_error(outcomes.confidence, outcomes.true_positive)
    # bench_calibration measures 0.327 -> 0.158 here (58 buildings: the noise of a perfect
    # calibration is about 0.10)
    assert before > 0.25 and after < before - 0.1, (before, after)

    rows = measure(calibration, {kampala.name: outcomes}, {kampala.name: Outcomes()})
    assert rows[0]["ece_after"] == pytest.approx(after, abs=1e-4)
    assert "| oam:kampala |" in markdown(rows)
