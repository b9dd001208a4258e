"""The training loop's calibration step: real short fine-tunes of the default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from ternaus_backend.models import load_model
from ternaus_backend.models.model_file import calibration_sidecar
from ternaus_backend.pipeline.extract import DEFAULT_MODEL
from ternaus_backend.synthetic import make_scene
from ternaus_backend.training.calibration import MIN_BUILDINGS
from ternaus_backend.training.dataset import TrainingSource
from ternaus_backend.training.loop import TrainConfig, train

SHORT = dict(
    init="default",
    recipe="classic",
    epochs=1,
    steps_per_epoch=2,
    batch_size=4,
    crop_px=64,
    device="cpu",
    overwrite=True,
)


def _train(scene, out: Path, **fields):
    source = TrainingSource(rgb=scene.rgb, labels=scene.labels)
    return train(TrainConfig(sources=[source], out=out, **{**SHORT, **fields}))


@pytest.mark.slow
def test_a_fine_tuned_model_is_calibrated_on_its_validation_area(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, seed=2026, size_px=768, with_ms=False)
    result = _train(scene, tmp_path / "model.safetensors", val_fraction=0.5)

    report = result.calibration
    assert report is not None and report["buildings"] >= MIN_BUILDINGS
    assert 0 < report["true_positives"] < report["buildings"]
    # the reliability diagram before / after: 10 bins whose counts add up to the buildings
    for key in ("reliability_before", "reliability_after"):
        bins = report[key]
        assert len(bins) == 10 and sum(b["count"] for b in bins) == report["buildings"]
        assert all(b["tp_rate"] is None or 0 <= b["tp_rate"] <= 1 for b in bins)
    assert report["ece_after"] < report["ece_before"]

    model = load_model(result.model_path)
    calibration = model.metadata.calibration
    assert calibration is not None and model.load_report["calibration"] == "metadata"
    assert calibration.buildings == report["buildings"]
    assert calibration.ece_after == pytest.approx(report["ece_after"], abs=1e-4)
    assert "confidence calibrated on the validation areas" in model.metadata.provenance["notes"]
    assert any("confidence calibrated" in note for note in result.notes)


def test_too_few_buildings_leave_the_model_uncalibrated(tmp_path: Path) -> None:
    """The default model's calibration (read from its sidecar) is not inherited by a model
    fine-tuned from it: with too few validation buildings to fit its own, it has none."""
    if not calibration_sidecar(DEFAULT_MODEL).exists():
        pytest.skip("the default model's calibration is not written")
    assert load_model(DEFAULT_MODEL).metadata.calibration is not None
    scene = make_scene(tmp_path, seed=11, size_px=128, with_ms=False)
    result = _train(scene, tmp_path / "model.safetensors")

    assert result.calibration is not None
    assert result.calibration["buildings"] < MIN_BUILDINGS
    assert "reliability_after" not in result.calibration
    model = load_model(result.model_path)
    assert model.metadata.calibration is None
    assert model.load_report["calibration"] is None
    assert "confidence not calibrated" in model.metadata.provenance["notes"]


def test_the_cli_prints_the_reliability_diagram() -> None:
    import numpy as np

    from ternaus_backend.models.calibration import fit_calibration
    from ternaus_backend.training.calibration import Outcomes, calibration_report
    from ternaus_backend.training.command import _reliability_lines

    rng = np.random.default_rng(0)
    p, area = rng.uniform(0.6, 0.99, 300), rng.uniform(20, 300, 300)
    outcomes = Outcomes(p, area, rng.random(300) < p - 0.3, p)
    calibration = fit_calibration(p, area, outcomes.true_positive)
    lines = _reliability_lines(calibration_report(outcomes, calibration))
    assert lines[0].startswith("reliability on the validation areas")
    assert lines[1].startswith("  mean probability: 0.6-0.7: ")
    assert lines[2].startswith("  calibrated: ")
    assert _reliability_lines(calibration_report(outcomes, None)) == []
    assert _reliability_lines(None) == []
