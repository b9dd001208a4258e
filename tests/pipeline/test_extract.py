"""The whole extraction: seams, blocks, nodata, bands, outputs kept on failure, cancellation."""

from __future__ import annotations

import fiona
import numpy as np
import pytest
import torch
from rasterio.windows import Window
from shapely.geometry import shape

from ternaus_backend.errors import CancelledError, InputError
from ternaus_backend.pipeline.extract import ExtractOptions, extract
from ternaus_backend.pipeline.inference import predict_probabilities
from ternaus_backend.pipeline.normalize import Normalizer
from ternaus_backend.pipeline.raster import RasterInputs
from ternaus_backend.pipeline.store import ProbabilityStore
from ternaus_backend.pipeline.windows import window_grid
from ternaus_backend.progress import CancelToken
from tests.helpers import ThresholdModel, rectangles_image, write_raster


def read_buildings(path):
    with fiona.open(path) as src:
        return [(shape(f["geometry"]), dict(f["properties"])) for f in src]


@pytest.mark.parametrize("flush_chunk_px", [2048, 50])
def test_blended_windows_reproduce_the_per_pixel_answer(tmp_path, monkeypatch, flush_chunk_px):
    """With a per-pixel model, stitching must give exactly the per-pixel probabilities (also when
    finished rows are written in column chunks)."""
    from ternaus_backend.pipeline import inference

    monkeypatch.setattr(inference, "FLUSH_CHUNK_PX", flush_chunk_px)
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, size=(3, 150, 210)).astype(np.uint8)
    rgb = write_raster(tmp_path / "rgb.tif", data)
    model = ThresholdModel()
    with RasterInputs.open(rgb) as inputs:
        norm = Normalizer.fit(model.metadata.normalization, inputs)
        store = ProbabilityStore(tmp_path / "p.u8", 150, 210)
        grid = window_grid(150, 210, 64, 24)
        assert grid.count > 9
        predict_probabilities(
            model, inputs, norm, store, grid, 24, 3, __import__("torch").device("cpu")
        )
        x = norm(inputs.read(Window(0, 0, 210, 150)))
    expected = 1 / (1 + np.exp(-8.0 * x[0]))
    got = store.read(0, 150, 0, 210)[0]
    np.testing.assert_allclose(got, expected, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize(
    "options",
    [
        ExtractOptions(tile_size_px=64, overlap_px=16),  # window seams cross the building
        ExtractOptions(tile_size_px=64, overlap_px=16, block_px=64, halo_px=48),  # block seams too
    ],
)
def test_a_building_on_seams_is_one_polygon(tmp_path, options):
    # Windows start every 48 px; the building spans columns 40..70 and rows 30..75.
    img = rectangles_image(160, 200, [(30, 40, 75, 70), (120, 150, 140, 170)])
    rgb = write_raster(tmp_path / "rgb.tif", img, pixel=0.5)
    result = extract(rgb, tmp_path / "out.gpkg", model=ThresholdModel(), options=options)
    buildings = read_buildings(result.path)
    assert result.count == len(buildings) == 2
    areas = sorted(props["area_m2"] for _, props in buildings)
    assert areas == pytest.approx([20 * 20 * 0.25, 45 * 30 * 0.25], rel=0.03)
    assert all(props["confidence"] > 0.9 for _, props in buildings)


def test_area_is_true_square_metres_in_geographic_crs(tmp_path):
    img = rectangles_image(100, 100, [(20, 20, 60, 80)])
    deg = 4.5e-6  # about 0.5 m at the equator
    rgb = write_raster(
        tmp_path / "rgb.tif", img, crs="EPSG:4326", origin=(-43.68, -22.95), pixel=deg
    )
    result = extract(rgb, tmp_path / "out.gpkg", model=ThresholdModel())
    ((poly, props),) = read_buildings(result.path)
    import math

    side_y = deg * 111_320 * 40  # metres per degree of latitude, roughly
    side_x = deg * 111_320 * math.cos(math.radians(22.95)) * 60
    assert props["area_m2"] == pytest.approx(side_x * side_y, rel=0.01)


def test_nodata_area_yields_no_buildings(tmp_path):
    img = rectangles_image(100, 120, [(10, 10, 40, 40), (60, 70, 90, 110)])
    img[:, :, :50] = 0
    rgb = write_raster(tmp_path / "rgb.tif", img, nodata=0)
    result = extract(rgb, tmp_path / "out.gpkg", model=ThresholdModel())
    ((poly, _),) = read_buildings(result.path)
    assert poly.bounds[0] > 500000 + 50 * 0.5


def test_eleven_band_model_without_ms_refuses_and_says_why(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", rectangles_image(64, 64, []))
    with pytest.raises(InputError, match="multispectral"):
        extract(rgb, tmp_path / "out.gpkg", model=ThresholdModel(in_channels=11))


def test_eleven_band_model_with_ms_runs(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", rectangles_image(96, 96, [(20, 20, 60, 60)]))
    ms = write_raster(tmp_path / "ms.tif", np.full((8, 24, 24), 500, np.uint16), pixel=2.0)
    result = extract(rgb, tmp_path / "out.gpkg", ms=ms, model=ThresholdModel(in_channels=11))
    assert result.count == 1


def test_multispectral_bands_in_another_order_are_refused(tmp_path):
    import rasterio

    from ternaus_backend.models.metadata import MS_BANDS, RGB_BANDS

    rgb = write_raster(tmp_path / "rgb.tif", rectangles_image(64, 64, []))
    ms = write_raster(tmp_path / "ms.tif", np.full((8, 16, 16), 500, np.uint16), pixel=2.0)
    with rasterio.open(ms, "r+") as dst:
        dst.descriptions = tuple(reversed(MS_BANDS))
    model = ThresholdModel(in_channels=11)
    model.metadata.band_names = list(RGB_BANDS + MS_BANDS)
    with pytest.raises(InputError, match="another order"):
        extract(rgb, tmp_path / "out.gpkg", ms=ms, model=model)


def test_failed_or_cancelled_run_keeps_the_earlier_result(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", rectangles_image(200, 200, [(20, 20, 60, 60)]))
    out = tmp_path / "out.gpkg"
    extract(rgb, out, model=ThresholdModel())
    before = out.read_bytes()
    token = CancelToken()

    def cancel_after_first(event):
        if event.stage == "infer" and event.done > 0:
            token.cancel()

    with pytest.raises(CancelledError):
        extract(
            rgb,
            out,
            model=ThresholdModel(),
            progress=cancel_after_first,
            cancel=token,
            options=ExtractOptions(batch_size=1),
        )
    assert out.read_bytes() == before
    assert not list(tmp_path.glob(".*.partial.gpkg"))


def test_bbox_limits_the_extent(tmp_path):
    img = rectangles_image(100, 200, [(20, 20, 60, 60), (20, 120, 60, 160)])
    rgb = write_raster(tmp_path / "rgb.tif", img)  # origin (500000, 7450000), 0.5 m pixels
    result = extract(
        rgb,
        tmp_path / "out.gpkg",
        model=ThresholdModel(),
        bbox=(500050.0, 7449950.0, 500100.0, 7450000.0),
    )
    ((poly, _),) = read_buildings(result.path)
    assert result.width_px == 100 and poly.centroid.x > 500050


def test_regularize_squares_a_rotated_building(tmp_path):
    from skimage.draw import polygon as draw_polygon

    img = np.full((3, 120, 120), 40, np.uint8)
    angle = np.radians(20)
    corners = np.array([[-30, -18], [30, -18], [30, 18], [-30, 18]], float)
    rot = (
        corners @ np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]).T + 60
    )
    rr, cc = draw_polygon(rot[:, 1], rot[:, 0], (120, 120))
    img[:, rr, cc] = 220
    rgb = write_raster(tmp_path / "rgb.tif", img)
    result = extract(
        rgb, tmp_path / "out.gpkg", model=ThresholdModel(), options=ExtractOptions(regularize=True)
    )
    ((poly, props),) = read_buildings(result.path)
    coords = np.asarray(poly.exterior.coords)[:-1]
    assert len(coords) == 4
    for i in range(4):  # all corners are right angles
        a, b, c = coords[i - 1], coords[i], coords[(i + 1) % 4]
        cosine = np.dot(a - b, c - b) / np.linalg.norm(a - b) / np.linalg.norm(c - b)
        assert abs(cosine) < 1e-6
    assert props["area_m2"] == pytest.approx(60 * 36 * 0.25, rel=0.06)


def test_area_is_true_square_metres_in_web_mercator(tmp_path):
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(10.0, 50.0)
    img = rectangles_image(100, 100, [(20, 20, 60, 60)])  # 40 x 40 px of 1 "metre" each in 3857
    rgb = write_raster(tmp_path / "rgb.tif", img, crs="EPSG:3857", origin=(x, y), pixel=1.0)
    result = extract(rgb, tmp_path / "out.gpkg", model=ThresholdModel())
    ((_, props),) = read_buildings(result.path)
    assert props["area_m2"] == pytest.approx(1600 * np.cos(np.radians(50)) ** 2, rel=0.02)


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(tile_size_px=100), "multiple of 32"),
        (dict(batch_size=0), "batch size"),
        (dict(overlap_px=-1), "overlap"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options, message):
    with pytest.raises(InputError, match=message):
        ExtractOptions(**options)


class WindowBiasModel(ThresholdModel):
    """Adds a bias that depends on the whole window (like a network's context): cropping windows
    would show it as steps at the seams, blending must fade it smoothly."""

    def forward(self, x):
        out = super().forward(x)
        bias = 0.5 * x[:, :1].mean(dim=(2, 3), keepdim=True)
        return torch.cat([out[:, :1] * 0 + bias, out[:, 1:]], dim=1)


def test_blending_leaves_no_step_at_window_seams(tmp_path):
    # A left-to-right ramp gives every window column another bias.
    ramp = np.tile(np.linspace(0, 255, 256), (192, 1)).astype(np.uint8)
    rgb = write_raster(tmp_path / "rgb.tif", np.stack([ramp] * 3))
    model, overlap = WindowBiasModel(), 32
    with RasterInputs.open(rgb) as inputs:
        norm = Normalizer.fit(model.metadata.normalization, inputs)
        store = ProbabilityStore(tmp_path / "p.u8", 192, 256)
        grid = window_grid(192, 256, 64, overlap)
        predict_probabilities(model, inputs, norm, store, grid, overlap, 4, torch.device("cpu"))
    probs = np.clip(store.read(0, 192, 0, 256)[0], 1e-3, 1 - 1e-3)
    logit = np.log(probs / (1 - probs))
    step = np.abs(np.diff(logit, axis=1)).max()
    # Windows start 32 px apart: their biases differ by 0.5 * (32/255) / 0.25 = 0.25 in logit units;
    # cropping would jump by that much at a seam, blending spreads it over the 32 px overlap.
    window_bias_gap = 0.5 * (32 / 255) / 0.25
    assert step < window_bias_gap / 4, (step, window_bias_gap)


def _percentile_model() -> ThresholdModel:
    """A ThresholdModel whose RGB scaling comes from the raster's min/max (statistics)."""
    from ternaus_backend.models.metadata import BandScaling

    model = ThresholdModel()
    model.metadata.normalization = model.metadata.normalization.model_copy(
        update={"rgb": BandScaling(method="percentile", low=0, high=100)}
    )
    return model


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_count_as_nodata(tmp_path, bad):
    """One NaN/inf pixel (and a NaN strip) must neither empty the result nor change it."""
    boxes = [(10, 10, 40, 40), (60, 70, 90, 110)]
    img = rectangles_image(100, 120, boxes).astype(np.float32)
    clean = write_raster(tmp_path / "clean.tif", img)
    img[:, 5, 5] = bad
    img[0, 95:, :] = np.nan  # a strip along the bottom, away from the buildings
    dirty = write_raster(tmp_path / "dirty.tif", img)
    want = read_buildings(extract(clean, tmp_path / "a.gpkg", model=_percentile_model()).path)
    got = read_buildings(extract(dirty, tmp_path / "b.gpkg", model=_percentile_model()).path)
    assert len(got) == len(want) == 2
    for (g, _), (w, _) in zip(
        sorted(got, key=lambda b: b[0].bounds), sorted(want, key=lambda b: b[0].bounds), strict=True
    ):
        assert g.symmetric_difference(w).area < 0.05 * w.area


def test_all_nan_raster_is_refused_like_an_all_nodata_one(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", np.full((3, 64, 64), np.nan, np.float32))
    with pytest.raises(InputError, match="no valid pixels"):
        extract(rgb, tmp_path / "out.gpkg", model=ThresholdModel())
    nodata = write_raster(tmp_path / "nd.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    with pytest.raises(InputError, match="no valid pixels"):
        extract(nodata, tmp_path / "out.gpkg", model=ThresholdModel())


def test_stored_bytes_round_probabilities_as_before(tmp_path):
    """Issue 11: the in-place quantisation stores round(p * 255), as the old float path did."""
    from ternaus_backend.pipeline.store import quantise_into

    rng = np.random.default_rng(2)
    probs = rng.random((2, 7, 9)).astype(np.float32)
    probs[0, 0, :3] = (0.0, 1.0, 0.5)
    expected = np.moveaxis(np.clip(probs * 255.0 + 0.5, 0, 255).astype(np.uint8), 0, -1)
    out = np.empty((7, 9, 2), np.uint8)
    quantise_into(probs.copy(), out)
    np.testing.assert_array_equal(out, expected)
    store = ProbabilityStore(tmp_path / "p.u8", 7, 9)
    store.write_rows(0, out)
    np.testing.assert_array_equal(store.read_bytes(0, 7, 0, 9), np.moveaxis(expected, -1, 0))
