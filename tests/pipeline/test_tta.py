"""Flip test-time augmentation: averaged over flips, undone exactly, off by default."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit

from ternaus_backend.pipeline.extract import ExtractOptions, extract
from ternaus_backend.pipeline.inference import TTA_FLIPS, run_network, run_network_tta
from tests.helpers import ThresholdModel, rectangles_image, write_raster

CPU = torch.device("cpu")


class RampModel(ThresholdModel):
    """Not flip-equivariant: adds a left-to-right and top-to-bottom ramp to the logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        h, w = x.shape[-2:]
        ramp = torch.linspace(-2, 2, w).view(1, 1, 1, w) + torch.linspace(0, 1, h).view(1, 1, h, 1)
        return out + ramp


def images(n: int = 2, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3, size, size)).astype(np.float32)


def test_tta_of_a_flip_invariant_model_is_the_plain_answer():
    x = images()
    plain = run_network(ThresholdModel(), x, CPU)
    tta = run_network_tta(ThresholdModel(), x, CPU)
    assert tta.shape == plain.shape == (2, 2, 64, 64) and tta.dtype == np.float32
    np.testing.assert_allclose(expit(tta), expit(plain), atol=1e-5)


def test_tta_averages_the_probabilities_of_the_flips():
    x, model = images(), RampModel()
    expected = np.mean(
        [
            np.flip(expit(run_network(model, np.ascontiguousarray(np.flip(x, a)), CPU)), a)
            for a in TTA_FLIPS
        ],
        axis=0,
    )
    np.testing.assert_allclose(expit(run_network_tta(model, x, CPU)), expected, atol=1e-5)


@pytest.mark.parametrize("axes", [(3,), (2,), (2, 3)])
def test_tta_is_exactly_flip_equivariant(axes):
    x, model = images(), RampModel()
    assert not np.allclose(  # the model alone is not
        run_network(model, np.ascontiguousarray(np.flip(x, axes)), CPU),
        np.flip(run_network(model, x, CPU), axes),
        atol=1e-3,
    )
    flipped = run_network_tta(model, np.ascontiguousarray(np.flip(x, axes)), CPU)
    unflipped = np.flip(run_network_tta(model, x, CPU), axes)
    np.testing.assert_allclose(expit(flipped), expit(unflipped), atol=1e-5)


def test_extraction_with_tta_finds_the_same_buildings(tmp_path):
    img = rectangles_image(150, 170, [(20, 20, 60, 70), (90, 100, 130, 150)])
    rgb = write_raster(tmp_path / "rgb.tif", img, origin=(683000.0, 7450000.0))
    assert ExtractOptions().tta is False
    plain = extract(rgb, tmp_path / "plain.gpkg", model=ThresholdModel())
    tta = extract(
        rgb, tmp_path / "tta.gpkg", model=ThresholdModel(), options=ExtractOptions(tta=True)
    )
    assert plain.count == tta.count == 2
