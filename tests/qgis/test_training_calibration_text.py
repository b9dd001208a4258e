"""The Train tab's and ternaus:train_model's words for the run's confidence calibration."""

from __future__ import annotations

import numpy as np

from ternaus_backend.models.calibration import fit_calibration
from ternaus_backend.training.calibration import Outcomes, calibration_report
from ternaus_qgis.core.training import STAGE_SPAN, STAGE_TEXT, calibration_text


def _outcomes(n: int) -> Outcomes:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.6, 0.99, n)
    area = rng.uniform(20, 300, n)
    tp = rng.random(n) < p - 0.3
    return Outcomes(p, area, tp, p)


def test_the_calibration_report_in_words() -> None:
    outcomes = _outcomes(200)
    calibration = fit_calibration(outcomes.mean_body, outcomes.area_m2, outcomes.true_positive)
    report = calibration_report(outcomes, calibration)  # what the train job's summary carries
    text = calibration_text(report)
    assert text.startswith("confidence is the probability that a building is right")
    assert "200 validation buildings" in text
    assert f"{report['ece_before']:.2f} -> {report['ece_after']:.2f}" in text

    few = calibration_report(_outcomes(12), None)
    assert "mean building probability" in calibration_text(few)
    assert calibration_text(None) is None


def test_the_steps_after_training_keep_the_bar_full() -> None:
    for stage in ("thresholds", "calibration"):
        assert STAGE_SPAN[stage] == (100.0, 100.0) and STAGE_TEXT[stage]
