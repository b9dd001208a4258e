"""Any ground resolution in, the model's resolution inside: resampled reading and extraction."""

from __future__ import annotations

import fiona
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window
from shapely.geometry import shape

from ternaus_backend.evaluation.spacenet import score
from ternaus_backend.pipeline.extract import ExtractOptions, extract
from ternaus_backend.pipeline.raster import RasterInputs, grid_scale, resampling_for
from tests.helpers import ThresholdModel, rectangles_image, write_raster

# About 183 km from the UTM zone's central meridian, where the projection's scale is 1: ground
# metres are CRS metres, so a 0.25 m raster is exactly half the model's 0.5 m.
ORIGIN = (683000.0, 7450000.0)
BOXES = [(20, 20, 60, 70), (30, 100, 50, 160), (110, 30, 170, 60), (120, 120, 150, 150)]


def read_polygons(path) -> list:
    with fiona.open(path) as src:
        return [shape(f["geometry"]) for f in src]


def upsampled(img: np.ndarray, factor: int) -> np.ndarray:
    """The same scene with ``factor`` x ``factor`` pixels per pixel (exactly the same ground)."""
    return img.repeat(factor, axis=1).repeat(factor, axis=2)


@pytest.fixture
def scene_pair(tmp_path):
    """One scene at 0.5 m (the ThresholdModel's resolution) and at 0.25 m."""
    img = rectangles_image(200, 200, BOXES)
    coarse = write_raster(tmp_path / "coarse.tif", img, origin=ORIGIN, pixel=0.5)
    fine = write_raster(tmp_path / "fine.tif", upsampled(img, 2), origin=ORIGIN, pixel=0.25)
    return coarse, fine


def test_grid_is_the_models_resolution_with_the_rasters_origin(scene_pair):
    coarse, fine = scene_pair
    with RasterInputs.open(fine, resolution_m=0.5) as r:
        assert r.resampled and r.scale == pytest.approx((2.0, 2.0), rel=1e-4)
        assert (r.grid.width, r.grid.height) == (200, 200)
        assert r.grid.pixel_size_m == pytest.approx(0.5, rel=1e-6)
        assert (r.grid.transform.c, r.grid.transform.f) == pytest.approx(ORIGIN)
        assert r.grid.crs.to_epsg() == 32723
        values = r.read(Window(0, 0, 200, 200))
    with RasterInputs.open(coarse) as r:
        expected = r.read(Window(0, 0, 200, 200))
    # Averaging 2x2 blocks of a 2x upsampled image gives the image back, except at roof edges.
    assert np.mean(values == expected) > 0.97
    with RasterInputs.open(fine) as r:  # no resolution: the raster's own pixels
        assert not r.resampled and (r.grid.width, r.grid.height) == (400, 400)


def test_pixels_within_the_tolerance_are_read_as_they_are(tmp_path):
    rgb = write_raster(
        tmp_path / "rgb.tif", rectangles_image(64, 64, []), origin=ORIGIN, pixel=0.51
    )
    with RasterInputs.open(rgb, resolution_m=0.5) as r:
        assert not r.resampled and r.grid.width == 64
    with RasterInputs.open(rgb, resolution_m=0.45) as r:  # 13 % off: resampled, upwards
        assert r.resampled and r.grid.width == 73
        assert r.grid.pixel_size_m == pytest.approx(0.45, rel=1e-6)


def test_resampling_kernels_and_scale():
    assert resampling_for(1.5) == Resampling.bilinear
    assert resampling_for(0.5) == Resampling.bilinear
    assert resampling_for(3.8) == Resampling.average
    from ternaus_backend.pipeline.raster import GridInfo

    grid = GridInfo(10, 10, from_origin(0, 0, 0.25, 0.5), None)  # plain units taken as metres
    assert grid_scale(grid, 0.5) == pytest.approx((2.0, 1.0))
    assert grid_scale(grid, None) is None and grid_scale(grid, 0.0) is None


def test_downsampling_by_more_than_2x_averages(tmp_path):
    checker = (np.indices((100, 100)).sum(axis=0) % 2 * 200).astype(np.uint8)
    rgb = write_raster(tmp_path / "rgb.tif", np.stack([checker] * 3), origin=ORIGIN, pixel=0.1)
    with RasterInputs.open(rgb, resolution_m=0.5) as r:
        assert (r.grid.width, r.grid.height) == (20, 20)
        values = r.read(Window(0, 0, 20, 20))
    assert np.abs(values - 100).max() <= 8  # the mean of a checkerboard, not its aliasing


@pytest.mark.parametrize("how", ["nodata", "mask"])
def test_nodata_and_mask_bands_stay_invalid_after_resampling(tmp_path, how):
    img = upsampled(rectangles_image(100, 100, [(20, 60, 50, 90)]), 2)
    img[:, :, :80] = 0  # the western 40 % (20 m) holds no data
    path = tmp_path / f"{how}.tif"
    if how == "nodata":
        write_raster(path, img, origin=ORIGIN, pixel=0.25, nodata=0)
    else:  # an internal GDAL mask band, as the OAM mosaics have
        write_raster(path, img, origin=ORIGIN, pixel=0.25)
        with rasterio.open(path, "r+") as dst:
            mask = np.full((200, 200), 255, np.uint8)
            mask[:, :80] = 0
            dst.write_mask(mask)
    with RasterInputs.open(path, resolution_m=0.5) as r:
        valid = r.valid(Window(0, 0, 100, 100))
    assert not valid[:, :39].any() and valid[:, 41:].all()
    result = extract(path, tmp_path / "out.gpkg", model=ThresholdModel())
    assert result.resampled and result.count == 1


def test_same_scene_at_two_resolutions_gives_the_same_buildings(scene_pair, tmp_path):
    coarse, fine = scene_pair
    model = ThresholdModel()  # its metadata: 0.5 m
    a = extract(coarse, tmp_path / "a.gpkg", model=model)
    b = extract(fine, tmp_path / "b.gpkg", model=model)
    assert not a.resampled and b.resampled
    assert (b.width_px, b.height_px) == (200, 200) and b.resolution_m == pytest.approx(
        0.5, rel=1e-6
    )
    pa, pb = read_polygons(a.path), read_polygons(b.path)
    assert len(pa) == len(pb) == len(BOXES)
    assert score(pb, pa, iou_threshold=0.9).f1 == 1.0
    # polygons in the raster's CRS and coordinates
    xmin, ymin, xmax, ymax = shapely.union_all(pb).bounds
    assert ORIGIN[0] < xmin < xmax < ORIGIN[0] + 100 and ORIGIN[1] - 100 < ymin < ymax < ORIGIN[1]


def test_native_resolution_keeps_the_rasters_pixels(scene_pair, tmp_path):
    _, fine = scene_pair
    result = extract(
        fine,
        tmp_path / "native.gpkg",
        model=ThresholdModel(),
        options=ExtractOptions(native_resolution=True),
    )
    assert not result.resampled
    assert (result.width_px, result.height_px) == (400, 400)
    assert result.resolution_m == pytest.approx(0.25, rel=1e-4)
    assert result.count == len(BOXES)


def test_bbox_crops_share_the_whole_rasters_resampled_grid(scene_pair):
    _, fine = scene_pair
    with RasterInputs.open(fine, resolution_m=0.5) as whole:
        full = whole.grid.transform
    bbox = (ORIGIN[0] + 10.3, ORIGIN[1] - 49.8, ORIGIN[0] + 60.7, ORIGIN[1] - 9.9)
    with RasterInputs.open(fine, bbox=bbox, resolution_m=0.5) as part:
        col, row = ~full * (part.grid.transform.c, part.grid.transform.f)
        assert col == pytest.approx(round(col)) and row == pytest.approx(round(row))
        assert part.grid.width == pytest.approx((bbox[2] - bbox[0]) / 0.5, abs=2)


def test_multispectral_raster_is_warped_onto_the_resampled_grid(tmp_path):
    img = upsampled(rectangles_image(96, 96, [(20, 20, 60, 60)]), 2)
    rgb = write_raster(tmp_path / "rgb.tif", img, origin=ORIGIN, pixel=0.25)
    ms = write_raster(
        tmp_path / "ms.tif", np.full((8, 24, 24), 500, np.uint16), origin=ORIGIN, pixel=2.0
    )
    with RasterInputs.open(rgb, ms, resolution_m=0.5) as r:
        assert r.band_count == 11 and (r.grid.width, r.grid.height) == (96, 96)
        values = r.read(Window(0, 0, 96, 96))
        assert values.shape == (11, 96, 96) and np.all(values[3:] == 500)
        assert r.valid(Window(0, 0, 96, 96)).all()
    result = extract(rgb, tmp_path / "out.gpkg", ms=ms, model=ThresholdModel(in_channels=11))
    assert result.resampled and result.count == 1
