"""Rasters must be placed on the map (issue 7, item 6): no geotransform or no CRS is refused
unless a CRS is assumed; any finite bounding box, even the whole world, is clipped to the raster."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from ternaus_backend.errors import InputError
from ternaus_backend.pipeline.raster import RasterInputs, check_bbox
from tests.helpers import write_raster


def write_plain(path, data, transform=None):
    """A GeoTIFF without CRS; without geotransform too unless ``transform`` is given."""
    bands, height, width = data.shape
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype=data.dtype)
    if transform is not None:
        profile["transform"] = transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    return path


def test_a_raster_without_geotransform_is_refused(tmp_path):
    path = write_plain(tmp_path / "chip.tif", np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(InputError, match="no georeferencing") as error:
        RasterInputs.open(path, assume_crs="EPSG:32723")  # a CRS alone cannot place it
    assert "georeference it" in error.value.message


def test_a_raster_without_crs_needs_an_assumed_one(tmp_path):
    transform = rasterio.transform.from_origin(500000.0, 7450000.0, 0.5, 0.5)
    path = write_plain(tmp_path / "nocrs.tif", np.zeros((3, 16, 16), np.uint8), transform)
    with pytest.raises(InputError, match="has no CRS") as error:
        RasterInputs.open(path)
    assert "--assume-crs EPSG:xxxx" in error.value.message
    with RasterInputs.open(path, assume_crs="EPSG:32723", resolution_m=1.0) as inputs:
        assert inputs.grid.crs.to_epsg() == 32723
        assert inputs.resampled and inputs.grid.width in (8, 9)  # UTM scale factor: 0.4998 m
        assert inputs.read(rasterio.windows.Window(0, 0, 8, 8)).shape == (3, 8, 8)
    with pytest.raises(InputError, match="not a known CRS"):
        RasterInputs.open(path, assume_crs="EPSG:0")


def test_a_multispectral_raster_without_crs_takes_the_assumed_one(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 16, 16), np.uint8))
    transform = rasterio.transform.from_origin(500000.0, 7450000.0, 1.0, 1.0)
    ms = write_plain(tmp_path / "ms.tif", np.ones((8, 8, 8), np.uint16), transform)
    with pytest.raises(InputError, match="multispectral raster .* has no CRS"):
        RasterInputs.open(rgb, ms)
    with RasterInputs.open(rgb, ms, assume_crs="EPSG:32723") as inputs:
        assert inputs.valid(rasterio.windows.Window(0, 0, 16, 16)).all()


def test_a_whole_world_bbox_is_clipped_to_the_raster(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 20, 30), np.uint8))
    with RasterInputs.open(rgb, bbox=(-180, -90, 180, 90), bbox_crs="EPSG:4326") as inputs:
        assert (inputs.grid.width, inputs.grid.height) == (30, 20)
    with RasterInputs.open(rgb, bbox=(-1e9, -1e9, 1e9, 1e9)) as inputs:
        assert (inputs.grid.width, inputs.grid.height) == (30, 20)
    with pytest.raises(InputError, match="does not overlap"):  # the other side of the world
        RasterInputs.open(rgb, bbox=(100, 10, 110, 20), bbox_crs="EPSG:4326")


@pytest.mark.parametrize(
    "bbox",
    [
        (float("nan"), 0.0, 1.0, 1.0),
        (float("-inf"), float("-inf"), float("inf"), float("inf")),
        (500010.0, 7449990.0, 500000.0, 7450000.0),
    ],
)
def test_non_finite_or_inverted_bboxes_are_refused(tmp_path, bbox):
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 20, 20), np.uint8))
    with pytest.raises(InputError, match="finite|inverted") as error:
        RasterInputs.open(rgb, bbox=bbox, bbox_crs="EPSG:4326")
    assert "XMIN,YMIN,XMAX,YMAX" in error.value.message
    with pytest.raises(InputError):
        check_bbox(bbox)
