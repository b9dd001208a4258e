"""Reading RGB and multispectral rasters onto one grid."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from ternaus_backend.errors import InputError
from ternaus_backend.pipeline.raster import RasterInputs
from tests.helpers import SHARED_DATA, write_raster


def test_ms_of_other_resolution_and_crs_is_warped_onto_rgb_grid(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 80, 100), np.uint8), pixel=0.5)
    # MS: 4x coarser, an east-west ramp, in geographic coordinates covering the same ground.
    from rasterio.warp import transform_bounds

    with RasterInputs.open(rgb) as r:
        left, bottom, right, top = transform_bounds(r.grid.crs, "EPSG:4326", *r.grid.bounds)
    ms_data = np.tile(np.linspace(0, 2000, 25, dtype=np.float32), (8, 20, 1)).astype(np.uint16)
    pixel_x, pixel_y = (right - left) / 25, (top - bottom) / 20
    import rasterio
    from rasterio.transform import from_origin

    ms = tmp_path / "ms.tif"
    with rasterio.open(
        ms,
        "w",
        driver="GTiff",
        width=25,
        height=20,
        count=8,
        dtype="uint16",
        crs="EPSG:4326",
        transform=from_origin(left, top, pixel_x, pixel_y),
    ) as dst:
        dst.write(ms_data)
    with RasterInputs.open(rgb, ms) as r:
        assert r.band_count == 11
        values = r.read(Window(0, 0, r.grid.width, r.grid.height))
        assert values.shape[0] == 11
        row = values[3, r.grid.height // 2]
        assert row[5] < row[50] < row[-5]  # the ramp survives the warp, west to east
        assert 700 < row[50] < 1300


def test_grid_is_cropped_to_the_overlap_of_rgb_and_ms(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 100, 100), np.uint8))
    ms = write_raster(
        tmp_path / "ms.tif",
        np.ones((8, 50, 50), np.uint16),
        origin=(500025.0, 7450000.0),
        pixel=1.0,
    )  # covers columns 50..149 of RGB
    with RasterInputs.open(rgb, ms) as r:
        assert (r.grid.width, r.grid.height) == (50, 100)
        assert r.grid.transform.c == pytest.approx(500025.0)


def test_rasters_that_do_not_overlap_are_refused(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 10, 10), np.uint8))
    ms = write_raster(
        tmp_path / "ms.tif", np.zeros((8, 10, 10), np.uint16), origin=(600000, 7450000)
    )
    with pytest.raises(InputError, match="does not overlap"):
        RasterInputs.open(rgb, ms)


def test_bbox_crops_and_outside_bbox_is_refused(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 100, 100), np.uint8))
    with RasterInputs.open(rgb, bbox=(500010.0, 7449970.0, 500020.0, 7449990.0)) as r:
        assert (r.grid.width, r.grid.height) == (20, 40)
    with pytest.raises(InputError, match="does not overlap"):
        RasterInputs.open(rgb, bbox=(0.0, 0.0, 1.0, 1.0))
    with pytest.raises(InputError, match="empty"):
        RasterInputs.open(rgb, bbox=(500020.0, 7449970.0, 500010.0, 7449990.0))


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        RasterInputs.open(tmp_path / "missing.tif")
    (tmp_path / "broken.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="cannot be read"):
        RasterInputs.open(tmp_path / "broken.tif")
    one_band = write_raster(tmp_path / "gray.tif", np.zeros((1, 10, 10), np.uint8))
    with pytest.raises(InputError, match="at least 3"):
        RasterInputs.open(one_band)


def test_nodata_pixels_are_invalid(tmp_path):
    data = np.full((3, 20, 20), 100, np.uint8)
    data[:, :5] = 0
    rgb = write_raster(tmp_path / "rgb.tif", data, nodata=0)
    with RasterInputs.open(rgb) as r:
        valid = r.valid(Window(0, 0, 20, 20))
        assert not valid[:5].any() and valid[5:].all()


def test_real_spacenet_tiles_read(tmp_path):
    shanghai = (
        SHARED_DATA
        / "spacenet2_shanghai_rgb_unlabeled"
        / "RGB-PanSharpen_AOI_4_Shanghai_img6917.tif"
    )
    vegas = SHARED_DATA / "spacenet3_vegas_rgb_unlabeled" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    if not shanghai.exists() or not vegas.exists():
        pytest.skip("shared SpaceNet data not present")
    with RasterInputs.open(shanghai) as r:
        values = r.read(Window(0, 0, 650, 650))
        assert values.shape == (3, 650, 650) and values.max() > 255  # 16-bit, not truncated
        assert r.grid.crs.is_geographic and 0.2 < r.grid.pixel_size_m < 0.35
    with RasterInputs.open(vegas) as r:  # RGB + alpha: three bands are read
        assert r.band_count == 3
        assert r.valid(Window(0, 0, 64, 64)).all()


def test_south_up_raster_with_bbox(tmp_path):
    import rasterio
    from rasterio.transform import Affine

    data = np.zeros((3, 40, 50), np.uint8)
    data[:, :10] = 200  # the first rows are the southern edge in a south-up raster
    path = tmp_path / "southup.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=50,
        height=40,
        count=3,
        dtype="uint8",
        crs="EPSG:32723",
        transform=Affine(1.0, 0, 500000, 0, 1.0, 7450000),
    ) as dst:
        dst.write(data)
    with RasterInputs.open(path, bbox=(500000, 7450000, 500020, 7450010)) as r:
        assert (r.grid.width, r.grid.height) == (20, 10)
        assert r.read(Window(0, 0, 20, 10)).min() == 200


def test_ms_pixels_outside_its_footprint_are_invalid(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", np.full((3, 40, 40), 100, np.uint8), pixel=1.0)
    import rasterio
    from rasterio.transform import Affine

    # An MS raster rotated by 45 degrees (a diamond): the corners of its envelope are uncovered.
    rot = Affine.translation(500020, 7449990) * Affine.rotation(45) * Affine.scale(1, -1)
    ms = tmp_path / "ms.tif"
    with rasterio.open(
        ms,
        "w",
        driver="GTiff",
        width=20,
        height=20,
        count=8,
        dtype="uint16",
        crs="EPSG:32723",
        transform=rot,
    ) as dst:
        dst.write(np.full((8, 20, 20), 700, np.uint16))
    with RasterInputs.open(rgb, ms) as r:
        window = Window(0, 0, r.grid.width, r.grid.height)
        valid, values = r.valid(window), r.read(window)
        assert 0 < valid.sum() < valid.size
        assert np.all(values[3:, valid] > 0)  # every valid pixel has real MS data


def test_non_finite_pixels_are_invalid(tmp_path):
    data = np.full((3, 20, 20), 100, np.float32)
    data[0, 2, 3] = np.nan
    data[1, 7, 7] = np.inf
    data[2, 9, 1] = -np.inf
    rgb = write_raster(tmp_path / "rgb.tif", data)
    with RasterInputs.open(rgb) as r:
        valid = r.valid(Window(0, 0, 20, 20))
        assert valid.sum() == 400 - 3
        assert not valid[2, 3] and not valid[7, 7] and not valid[9, 1]
        values, valid = r.read_overview()
        assert valid.sum() == 400 - 3
