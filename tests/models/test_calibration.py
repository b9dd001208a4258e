"""Confidence calibration: fitting where the truth is known, ECE, JSON, model files, sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from ternaus_backend.models import create_model, load_model, save_model
from ternaus_backend.models.calibration import (
    Calibration,
    expected_calibration_error,
    fit_calibration,
    reliability,
)
from ternaus_backend.models.metadata import ModelMetadata
from ternaus_backend.models.model_file import (
    calibration_sidecar,
    describe_model,
    write_calibration_sidecar,
)
from ternaus_backend.pipeline.extract import DEFAULT_MODEL

#: The true rule of the synthetic buildings: P(TP) = sigmoid(A * logit(p) + B * log(area) + C).
A, B, C = 1.6, -0.4, -1.2


def synthetic_buildings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean body probabilities in [0.6, 1) (over-confident, as a network's are), areas of 10 to
    1000 m², their true probability of being a true positive, and drawn outcomes."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.6, 0.995, n)
    area = np.exp(rng.uniform(np.log(10), np.log(1000), n))
    truth = 1 / (1 + np.exp(-(A * np.log(p / (1 - p)) + B * np.log(area) + C)))
    return p, area, truth, rng.random(n) < truth


def test_ece_and_reliability_by_hand() -> None:
    conf = [0.05, 0.15, 0.15, 0.95, 0.95, 0.95, 1.0]
    tp = [0, 0, 1, 1, 1, 0, 1]
    bins = reliability(conf, tp)
    assert [b.count for b in bins] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 4]  # 1.0 falls in the last
    assert bins[1].tp_rate == 0.5 and bins[1].mean_confidence == 0.15
    assert bins[2].mean_confidence is None and bins[2].tp_rate is None
    expected = (1 * 0.05 + 2 * 0.35 + 4 * abs(0.9625 - 0.75)) / 7
    assert expected_calibration_error(conf, tp) == pytest.approx(expected, abs=1e-4)
    assert expected_calibration_error([], []) == 0.0


@pytest.mark.parametrize("isotonic", [False, True])
def test_fit_recovers_a_known_rule_and_lowers_the_ece_on_new_buildings(isotonic: bool) -> None:
    p, area, _, tp = synthetic_buildings(4000, seed=1)
    calibration = fit_calibration(p, area, tp, isotonic=isotonic)
    if not isotonic:
        assert calibration.coefficients == pytest.approx([A, B], abs=0.25)
        assert calibration.intercept == pytest.approx(C, abs=0.8)
    test_p, test_area, test_truth, test_tp = synthetic_buildings(4000, seed=2)
    calibrated = calibration.apply(test_p, test_area)
    before = expected_calibration_error(test_p, test_tp)
    after = expected_calibration_error(calibrated, test_tp)
    assert before > 0.2  # the mean probability is far from the TP rate
    assert after < 0.04 and after < before / 5
    assert np.abs(calibrated - test_truth).mean() < 0.05  # close to the true probability
    assert calibration.ece_before > 0.2 and calibration.ece_after < 0.04
    assert calibration.buildings == 4000


def test_isotonic_map_is_monotone_and_in_range() -> None:
    p, area, _, tp = synthetic_buildings(2000, seed=3)
    calibration = fit_calibration(p, area, tp, isotonic=True)
    x, y = np.asarray(calibration.isotonic_x), np.asarray(calibration.isotonic_y)
    assert x[0] == 0.0 and x[-1] == 1.0 and np.all(np.diff(x) >= 0) and np.all(np.diff(y) >= 0)
    grid = np.linspace(0.5, 0.999, 200)
    out = calibration.apply(grid, np.full(200, 100.0))
    assert np.all(np.diff(out) >= -1e-12) and out.min() >= 0 and out.max() <= 1


def test_fit_needs_both_outcomes() -> None:
    with pytest.raises(ValueError, match="both true and false positives"):
        fit_calibration([0.9, 0.8], [50, 60], [True, True])


def test_calibration_is_plain_json_and_checked() -> None:
    p, area, _, tp = synthetic_buildings(500, seed=4)
    calibration = fit_calibration(p, area, tp, isotonic=True, fitted_on="synthetic")
    text = calibration.model_dump_json()
    again = Calibration.model_validate(json.loads(text))
    assert again == calibration
    np.testing.assert_allclose(again.apply(p, area), calibration.apply(p, area))
    with pytest.raises(ValidationError, match="coefficients"):
        Calibration(coefficients=[1.0], intercept=0.0)  # two features by default
    with pytest.raises(ValidationError, match="non-decreasing"):
        Calibration(
            coefficients=[1.0, 0.0], intercept=0.0, isotonic_x=[0, 1], isotonic_y=[0.9, 0.1]
        )
    with pytest.raises(ValidationError, match="finite"):
        Calibration(coefficients=[float("nan"), 0.0], intercept=0.0)


def _small_model(tmp_path, calibration: Calibration | None = None):
    model = create_model("resnet_light", in_channels=3)
    meta = ModelMetadata(
        name="small",
        encoder="resnet_light",
        in_channels=3,
        num_filters=int(model.num_filters),
        band_names=["red", "green", "blue"],
        resolution_m=0.5,
        calibration=calibration,
    )
    path = tmp_path / "small.safetensors"
    save_model(model, meta, path)
    return path


def test_calibration_is_saved_in_the_model_file(tmp_path) -> None:
    p, area, _, tp = synthetic_buildings(500, seed=5)
    calibration = fit_calibration(p, area, tp)
    path = _small_model(tmp_path, calibration)
    model = load_model(path)
    assert model.metadata.calibration == calibration
    assert model.load_report["calibration"] == "metadata"
    assert describe_model(path)["metadata"]["calibration"]["coefficients"] == (
        calibration.coefficients
    )
    (tmp_path / "plain").mkdir()
    plain = load_model(_small_model(tmp_path / "plain"))
    assert plain.metadata.calibration is None and plain.load_report["calibration"] is None


def test_a_sidecar_calibrates_only_the_file_it_was_fitted_for(tmp_path) -> None:
    p, area, _, tp = synthetic_buildings(500, seed=6)
    calibration = fit_calibration(p, area, tp)
    path = _small_model(tmp_path)
    sidecar = write_calibration_sidecar(path, calibration)
    assert sidecar == calibration_sidecar(path) == tmp_path / "small.calibration.json"
    model = load_model(path)
    assert model.metadata.calibration == calibration
    assert model.load_report["calibration"] == "sidecar"
    assert describe_model(path)["metadata"]["calibration"] is not None
    # the model file rewritten (retrained, re-tuned): the sidecar no longer describes it
    model.metadata = model.metadata.model_copy(update={"name": "retrained", "calibration": None})
    save_model(model, model.metadata, path)
    again = load_model(path)
    assert again.metadata.calibration is None and again.load_report["calibration"] is None
    # a file's own calibration wins over a sidecar
    own = calibration.model_copy(update={"intercept": 0.5})
    save_model(model, model.metadata.model_copy(update={"calibration": own}), path)
    assert load_model(path).metadata.calibration.intercept == 0.5


def test_the_default_model_carries_its_calibration() -> None:
    if not calibration_sidecar(DEFAULT_MODEL).exists():
        pytest.skip("the default model's calibration is not written")
    model = load_model(DEFAULT_MODEL)
    calibration = model.metadata.calibration
    assert calibration is not None, "default.calibration.json is stale: run bench_calibration"
    assert model.load_report["calibration"] == "sidecar"
    # a building of mean body probability 0.9 is right less often than 90 % of the time
    assert calibration.apply([0.9], [80.0])[0] < 0.85
