"""Normalisation from model metadata, including the authors' SpaceNet-2 scheme."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from ternaus_backend.errors import InputError
from ternaus_backend.models.metadata import IMAGENET_MEAN, IMAGENET_STD, spacenet2_metadata
from ternaus_backend.pipeline.normalize import Normalizer
from ternaus_backend.pipeline.raster import RasterInputs
from tests.helpers import SHARED_DATA, write_raster


def test_authors_scheme_minmax_rgb_and_ms_divided_by_2047(tmp_path):
    rng = np.random.default_rng(0)
    rgb_data = rng.integers(37, 1437, size=(3, 64, 64)).astype(np.uint16)
    ms_data = rng.integers(0, 2047, size=(8, 64, 64)).astype(np.uint16)
    rgb = write_raster(tmp_path / "rgb.tif", rgb_data)
    ms = write_raster(tmp_path / "ms.tif", ms_data)
    meta = spacenet2_metadata()
    with RasterInputs.open(rgb, ms) as inputs:
        norm = Normalizer.fit(meta.normalization, inputs)
        x = norm(inputs.read(Window(0, 0, 64, 64)))
    for c in range(3):
        lo, hi = rgb_data[c].min(), rgb_data[c].max()
        expected = ((rgb_data[c] - lo) / (hi - lo) - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(x[c], expected, atol=1e-5)
    np.testing.assert_allclose(x[3:], ms_data / 2047.0, atol=1e-6)


def test_shanghai_tile_matches_the_authors_per_tile_minmax():
    path = (
        SHARED_DATA
        / "spacenet2_shanghai_rgb_unlabeled"
        / "RGB-PanSharpen_AOI_4_Shanghai_img6917.tif"
    )
    if not path.exists():
        pytest.skip("shared SpaceNet data not present")
    meta = spacenet2_metadata(
        in_channels=3,
        normalization=spacenet2_metadata().normalization.model_copy(
            update={"ms": None, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        ),
    )
    with RasterInputs.open(path) as inputs:
        norm = Normalizer.fit(meta.normalization, inputs)
        x = norm(inputs.read(Window(0, 0, 650, 650)))
    for c in range(3):
        assert x[c].min() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c], abs=1e-5)
        assert x[c].max() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], abs=1e-5)


def test_all_nodata_input_is_refused(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 16, 16), np.uint8), nodata=0)
    with RasterInputs.open(rgb) as inputs, pytest.raises(InputError, match="no valid pixels"):
        Normalizer.fit(
            spacenet2_metadata(in_channels=3).normalization.model_copy(
                update={"mean": [0, 0, 0], "std": [1, 1, 1]}
            ),
            inputs,
        )


def test_statistics_do_not_depend_on_the_chosen_extent(tmp_path):
    rng = np.random.default_rng(3)
    rgb = write_raster(
        tmp_path / "rgb.tif", rng.integers(0, 255, size=(3, 100, 100)).astype(np.uint8)
    )
    meta = spacenet2_metadata(
        in_channels=3,
        normalization=spacenet2_metadata().normalization.model_copy(
            update={"ms": None, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        ),
    )
    with RasterInputs.open(rgb) as whole:
        full = Normalizer.fit(meta.normalization, whole)
    with RasterInputs.open(rgb, bbox=(500000.0, 7449990.0, 500005.0, 7450000.0)) as part:
        cropped = Normalizer.fit(meta.normalization, part)
        assert part.grid.width == 10
    np.testing.assert_allclose(cropped.gain, full.gain)
    np.testing.assert_allclose(cropped.offset, full.offset)


def _auto_normalization():
    from ternaus_backend.models.metadata import BandScaling, Normalization

    return Normalization(
        rgb=BandScaling(method="auto", low=1.0, high=99.0), mean=[0] * 3, std=[1] * 3
    )


def test_auto_scaling_keeps_a_flat_8_bit_scene_flat(tmp_path):
    # A mudflat: grey with a little sensor noise. A 1-99 % stretch would make the noise span
    # the whole range (texture the network can take for roofs); 8-bit imagery is divided by 255.
    rng = np.random.default_rng(1)
    flat = (120 + rng.integers(-3, 4, size=(3, 64, 64))).astype(np.uint8)
    rgb = write_raster(tmp_path / "flat.tif", flat)
    with RasterInputs.open(rgb) as inputs:
        x = Normalizer.fit(_auto_normalization(), inputs)(inputs.read(Window(0, 0, 64, 64)))
    np.testing.assert_allclose(x, flat / 255.0, atol=1e-6)
    assert float(x.max() - x.min()) < 0.03


def test_auto_scaling_stretches_rasters_that_are_not_8_bit(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.integers(200, 1800, size=(3, 64, 64)).astype(np.uint16)
    rgb = write_raster(tmp_path / "uint16.tif", data)
    with RasterInputs.open(rgb) as inputs:
        x = Normalizer.fit(_auto_normalization(), inputs)(inputs.read(Window(0, 0, 64, 64)))
    for c in range(3):
        lo, hi = np.percentile(data[c], [1, 99])
        np.testing.assert_allclose(x[c], (data[c] - lo) / (hi - lo), atol=1e-5)
