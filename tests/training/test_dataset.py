"""Training sources, crops and augmentations: alignment, areas, validation split, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import Polygon, box

from ternaus_backend.errors import CancelledError, InputError, LabelError
from ternaus_backend.models.metadata import Normalization
from ternaus_backend.progress import CancelToken
from ternaus_backend.training import dataset as dataset_module
from ternaus_backend.training.augment import (
    AugmentConfig,
    Sample,
    augment,
    flip_rotate,
    resize_sample,
)
from ternaus_backend.training.dataset import (
    CropDataset,
    TrainingSource,
    prepare_source,
    prepare_sources,
    val_tiles,
)
from ternaus_backend.training.loop import TrainConfig, train
from ternaus_backend.training.targets import split_by_area
from ternaus_backend.vector_io import write_polygons

CRS = "EPSG:32723"
X0, Y0, RES = 683000.0, 7460000.0, 0.5
NORM = Normalization()


def px_box(row0: int, col0: int, row1: int, col1: int) -> Polygon:
    """Pixel-edge rectangle -> map polygon."""
    return box(X0 + col0 * RES, Y0 - row1 * RES, X0 + col1 * RES, Y0 - row0 * RES)


def write_scene(
    tmp: Path, height: int, width: int, boxes: list[tuple[int, int, int, int]], name: str = "s"
) -> tuple[Path, Path]:
    """uint8 RGB with bright roofs in ``boxes`` (row0, col0, row1, col1) and their labels."""
    img = np.full((3, height, width), 40, np.uint8)
    img += np.random.default_rng(0).integers(0, 10, img.shape, dtype=np.uint8)
    for r0, c0, r1, c1 in boxes:
        img[:, r0:r1, c0:c1] = 220
    rgb = tmp / f"{name}.tif"
    with rasterio.open(
        rgb,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        crs=CRS,
        transform=from_origin(X0, Y0, RES, RES),
    ) as dst:
        dst.write(img)
    labels = tmp / f"{name}_labels.geojson"
    write_polygons(labels, [px_box(*b) for b in boxes], CRS)
    return rgb, labels


def write_area(path: Path, *polygons: Polygon) -> Path:
    write_polygons(path, list(polygons), CRS)
    return path


# -- augmentations --------------------------------------------------------------------------


def _marked_sample() -> Sample:
    """Image channels copy the targets and weight, so any misalignment shows."""
    rng = np.random.default_rng(1)
    target = (rng.random((2, 32, 32)) > 0.6).astype(np.uint8)
    weight = (rng.random((32, 32)) > 0.3).astype(np.float32)
    image = np.stack([target[0], target[1], weight]).astype(np.float32)
    return Sample(image, target, weight)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_flip_rotate_keeps_image_masks_and_weight_aligned(k: int, flip: bool) -> None:
    out = flip_rotate(_marked_sample(), k, flip)
    assert np.array_equal(out.image[0], out.target[0])
    assert np.array_equal(out.image[1], out.target[1])
    assert np.array_equal(out.image[2], out.weight)


def test_augment_with_band_jitter_keeps_alignment() -> None:
    sample = _marked_sample()
    sample.image = sample.image * 10.0  # 0 / 10 per band
    for seed in range(10):
        out = augment(sample, np.random.default_rng(seed), AugmentConfig())
        for band, truth in ((0, out.target[0]), (1, out.target[1]), (2, out.weight)):
            low, high = out.image[band].min(), out.image[band].max()
            assert np.array_equal(out.image[band] > (low + high) / 2, truth > 0)


def test_resize_uses_nearest_for_masks_and_weight() -> None:
    sample = _marked_sample()
    out = resize_sample(sample, (40, 40))
    assert out.target.shape == (2, 40, 40) and out.weight.shape == (40, 40)
    assert set(np.unique(out.target)) <= {0, 1} and set(np.unique(out.weight)) <= {0.0, 1.0}
    big = resize_sample(Sample(sample.image, sample.target, sample.weight), (64, 64))
    assert np.array_equal(big.target[:, ::2, ::2], sample.target)  # exact x2 nearest


# -- sources --------------------------------------------------------------------------------


def test_source_masks_weights_and_automatic_validation_band(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 100, 80, [(10, 10, 20, 30), (60, 40, 75, 60)])
    src = prepare_source(TrainingSource(rgb=rgb, labels=labels), NORM, seed=3)
    assert src.image.shape == (3, 100, 80) and src.image.dtype == np.float32
    assert src.target[0].sum() == 10 * 20 + 15 * 20
    assert src.band_names == ["red", "green", "blue"]
    assert src.resolution_m == pytest.approx(0.5, rel=1e-4)  # ground size, geodesic
    val_rows = np.flatnonzero(src.val_mask.any(axis=1))
    assert np.array_equal(val_rows, np.arange(val_rows[0], val_rows[0] + 20))  # 20 % of 100 rows
    assert src.val_mask[val_rows].all()  # a band of whole rows, not random pixels
    gap = dataset_module.VAL_GAP_PX
    near = slice(max(0, val_rows[0] - gap), val_rows[-1] + 1 + gap)
    assert not src.train_weight[near].any()  # training never sees validation labels
    assert src.train_weight.sum() > 0
    tiles = list(val_tiles(src, 32))
    assert sum(t.sample.weight.sum() for t in tiles) == src.val_mask.sum()


def test_source_is_read_at_the_wanted_resolution(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 100, 80, [(10, 10, 20, 30), (60, 40, 75, 60)])
    src = prepare_source(TrainingSource(rgb=rgb, labels=labels), NORM, seed=3, resolution_m=1.0)
    assert src.resampled and src.image.shape == (3, 50, 40)
    assert src.resolution_m == pytest.approx(1.0, rel=1e-4)
    assert src.grid.transform.c == pytest.approx(X0) and src.grid.transform.f == pytest.approx(Y0)
    # The labels are rasterised on the resampled grid: 4x fewer pixels, still on the roofs.
    assert src.target[0].sum() == pytest.approx((10 * 20 + 15 * 20) / 4, abs=10)
    roof = src.target[0] > 0
    assert src.image[0][roof].min() > src.image[0][~roof].max()
    same = prepare_source(TrainingSource(rgb=rgb, labels=labels), NORM, resolution_m=0.51)
    assert not same.resampled and same.image.shape == (3, 100, 80)  # within the tolerance
    assert dataset_module.native_resolution_m(
        [TrainingSource(rgb=rgb, labels=labels)]
    ) == pytest.approx(0.5, rel=1e-3)


def test_labels_outside_the_training_area_are_ignored(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 64, 96, [(10, 5, 30, 25), (10, 60, 30, 80)])
    aoi = write_area(tmp_path / "aoi.geojson", px_box(0, 0, 64, 40))
    val = write_area(tmp_path / "val.geojson", px_box(48, 0, 64, 40))
    src = prepare_source(TrainingSource(rgb=rgb, labels=labels, aoi=aoi, val_aoi=val), NORM)
    outside = np.zeros((64, 96), bool)
    outside[:, 40:] = True
    assert src.target[0][outside].sum() > 0  # the building is rasterised ...
    assert not src.train_weight[outside].any()  # ... but has no weight
    assert src.val_mask[48:, :40].all() and src.val_mask.sum() == 16 * 40
    assert not src.train_weight[48 - dataset_module.VAL_GAP_PX :].any()
    assert src.positive_train_px == 20 * 20

    crops = CropDataset([src], crop_px=32, length=16, seed=0)
    for i in range(16):
        item = crops[i]
        assert item["weight"].shape == (32, 32)
        assert float(item["weight"].sum()) > 0


def test_no_labels_in_the_training_area_is_a_label_error(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 64, 96, [(10, 60, 30, 80)])
    aoi = write_area(tmp_path / "aoi.geojson", px_box(0, 0, 64, 40))
    source = TrainingSource(rgb=rgb, labels=labels, aoi=aoi)
    with pytest.raises(LabelError, match="no building inside"):
        prepare_source(source, NORM)
    negative = prepare_source(source, NORM, allow_empty_labels=True)
    assert negative.labelled_px == 0
    with pytest.raises(LabelError):  # negatives alone cannot train a model
        prepare_sources([source], NORM, allow_empty_labels=True)


def test_empty_label_file_and_missing_area_overlap(tmp_path: Path) -> None:
    rgb, _ = write_scene(tmp_path, 64, 64, [(10, 10, 20, 20)])
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(LabelError):
        prepare_source(TrainingSource(rgb=rgb, labels=empty), NORM)
    _, labels = write_scene(tmp_path, 64, 64, [(10, 10, 20, 20)], name="t")
    far = write_area(
        tmp_path / "far.geojson", box(X0 + 1e4, Y0 - 1e4 - 10, X0 + 1e4 + 10, Y0 - 1e4)
    )
    with pytest.raises(InputError, match="does not overlap"):
        prepare_source(TrainingSource(rgb=rgb, labels=labels, aoi=far), NORM)


def test_too_large_raster_asks_for_a_training_area(tmp_path: Path, monkeypatch) -> None:
    rgb, labels = write_scene(tmp_path, 64, 64, [(10, 10, 20, 20)])
    monkeypatch.setattr(dataset_module, "MAX_TRAIN_PIXELS", 1000)
    with pytest.raises(InputError, match=r"64x64 px.*training area \(--aoi\)"):
        prepare_source(TrainingSource(rgb=rgb, labels=labels), NORM)


def test_training_area_reads_only_its_box_plus_a_crop_margin(tmp_path: Path, monkeypatch) -> None:
    # a small AOI in a raster that would be too large whole: only the AOI box + margin is read
    rgb, labels = write_scene(tmp_path, 200, 160, [(110, 60, 125, 80), (20, 20, 40, 40)])
    aoi = write_area(tmp_path / "aoi.geojson", px_box(100, 50, 140, 90))
    monkeypatch.setattr(dataset_module, "MAX_TRAIN_PIXELS", 100 * 100)
    src = prepare_source(TrainingSource(rgb=rgb, labels=labels, aoi=aoi), NORM, margin_px=16)
    assert src.image.shape == (3, 40 + 32, 40 + 32)
    c, f = src.grid.transform.c, src.grid.transform.f
    assert (c, f) == pytest.approx((X0 + (50 - 16) * RES, Y0 - (100 - 16) * RES))
    # targets on the cropped grid: the building at rows 110-125, cols 60-80 is at 26-41, 26-46
    body = src.target[0].astype(bool)
    assert body.sum() == 15 * 20 and body[26:41, 26:46].all()
    assert np.array_equal(src.image[0] > src.image[0].mean(), body)  # image aligned with labels
    assert src.train_weight[:16].sum() == 0 and src.train_weight[:, :16].sum() == 0  # margin
    # the margin is clamped at the raster edge
    edge = write_area(tmp_path / "edge.geojson", px_box(0, 0, 50, 50))
    src = prepare_source(TrainingSource(rgb=rgb, labels=labels, aoi=edge), NORM, margin_px=16)
    assert src.image.shape == (3, 66, 66)
    assert src.grid.transform.c == pytest.approx(X0) and src.grid.transform.f == pytest.approx(Y0)
    # the size limit applies to what is read, with advice about the area
    monkeypatch.setattr(dataset_module, "MAX_TRAIN_PIXELS", 1000)
    with pytest.raises(InputError, match="training area aoi.geojson.*smaller training area"):
        prepare_source(TrainingSource(rgb=rgb, labels=labels, aoi=aoi), NORM, margin_px=16)


def test_training_area_box_includes_the_validation_area(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 200, 160, [(20, 20, 40, 40), (150, 100, 170, 120)])
    aoi = write_area(tmp_path / "aoi.geojson", px_box(10, 10, 50, 50))
    val = write_area(tmp_path / "val.geojson", px_box(140, 90, 180, 130))
    src = prepare_source(
        TrainingSource(rgb=rgb, labels=labels, aoi=aoi, val_aoi=val), NORM, margin_px=8
    )
    assert src.image.shape == (3, 180 + 8 - 2, 130 + 8 - 2)  # rows 2-188, cols 2-138
    assert src.val_mask.sum() == 40 * 40 and src.has_validation
    xmin, ymin, xmax, ymax = src.val_bbox()
    assert (xmin, ymax) == pytest.approx((X0 + 90 * RES, Y0 - 140 * RES))


def test_automatic_split_lies_inside_a_small_training_area(tmp_path: Path) -> None:
    # before: the band was drawn over the whole raster and usually missed a small AOI
    rgb, labels = write_scene(tmp_path, 400, 300, [(305, 25, 315, 35), (325, 40, 335, 55)])
    aoi_box = px_box(300, 20, 340, 60)
    aoi = write_area(tmp_path / "aoi.geojson", aoi_box)
    for seed in range(6):
        src = prepare_source(
            TrainingSource(rgb=rgb, labels=labels, aoi=aoi), NORM, seed=seed, margin_px=32
        )
        assert src.has_validation
        rows = np.flatnonzero(src.val_mask.any(axis=1))
        assert rows.size == 8 and src.val_mask[rows].sum() == 8 * 40  # 20 % of the AOI's rows
        assert src.val_region.area == pytest.approx(8 * 40 * RES * RES)
        assert src.val_region.within(aoi_box.buffer(1e-6))
        assert src.train_weight.sum() > 0
        assert not (src.train_weight.astype(bool) & src.val_mask).any()


def test_automatic_split_too_small_training_area(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 100, 100, [(42, 42, 48, 48)])
    aoi = write_area(tmp_path / "aoi.geojson", px_box(40, 40, 50, 50))
    with pytest.raises(InputError, match="training area aoi.geojson.*too small.*--val-aoi"):
        prepare_source(TrainingSource(rgb=rgb, labels=labels, aoi=aoi), NORM)


def _seed_missing(shape: tuple[int, int], rows: tuple[int, int]) -> int:
    """A seed whose automatic validation band misses the rows ``[rows[0], rows[1])``."""
    for seed in range(200):
        _, val = split_by_area(shape, 0.2, seed, gap_px=dataset_module.VAL_GAP_PX)
        band = np.flatnonzero(val.any(axis=1))
        if band[0] >= rows[0] and band[-1] < rows[1]:
            return seed
    raise AssertionError("no seed found")


def test_no_validation_messages_tell_automatic_from_given_areas(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 200, 200, [(10, 10, 30, 30), (170, 170, 190, 190)])
    # two far-apart squares: a band of their common box falling between them moves into one
    # of them (the largest part; where-to-label's cells are such areas), the other trains
    aoi = write_area(tmp_path / "aoi.geojson", px_box(0, 0, 40, 40), px_box(160, 160, 200, 200))
    seed = _seed_missing((200, 200), (40, 160))
    source = TrainingSource(rgb=rgb, labels=labels, aoi=aoi)
    (prepared,) = prepare_sources([source], NORM, seed=seed)
    val_rows = np.flatnonzero(prepared.val_mask.any(axis=1))
    assert len(val_rows) and (val_rows[-1] < 40 or val_rows[0] >= 160)
    assert prepared.train_weight[:40].any() and prepared.train_weight[160:].any()
    message = dataset_module._no_validation_message([source])
    assert "automatic validation split" in message and "--val-aoi" in message
    assert "does not overlap" not in message
    far = write_area(
        tmp_path / "far.geojson", box(X0 + 1e4, Y0 - 1e4 - 10, X0 + 1e4 + 10, Y0 - 1e4)
    )
    given = TrainingSource(rgb=rgb, labels=labels, val_aoi=far)
    with pytest.raises(InputError, match=r"--val-aoi far.geojson\) does not overlap") as info:
        prepare_sources([given], NORM)
    assert "automatic" not in str(info.value).replace("automatic split.", "")


def test_prepare_sources_stops_when_cancelled(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 64, 64, [(10, 10, 30, 30)])
    cancel = CancelToken()
    seen = []

    def progress(event) -> None:
        seen.append(event.done)
        cancel.cancel()  # cancelled while the first source is read

    sources = [TrainingSource(rgb=rgb, labels=labels)] * 3
    with pytest.raises(CancelledError):
        prepare_sources(sources, NORM, progress=progress, cancel=cancel)
    assert seen == [0]  # the second source was never started


def test_small_raster_crops_are_reflect_padded_with_zero_weight(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 40, 40, [(5, 5, 15, 15)])
    src = prepare_source(TrainingSource(rgb=rgb, labels=labels), NORM)
    crops = CropDataset(
        [src],
        crop_px=64,
        length=4,
        seed=1,
        augment_config=AugmentConfig(scale_min=1.0, scale_max=1.0),
    )
    item = crops[0]
    assert item["image"].shape == (3, 64, 64)
    assert float(item["weight"].sum()) <= src.train_weight.sum()  # padding adds no weight
    assert float(item["weight"].sum()) > 0


def test_crops_keep_image_and_masks_aligned(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 96, 96, [(10, 10, 30, 40), (50, 50, 70, 60)])
    src = prepare_source(TrainingSource(rgb=rgb, labels=labels), NORM)
    src.image = np.stack([src.target[0], src.target[1], src.train_weight]).astype(np.float32)
    config = AugmentConfig(brightness=0.0, contrast=0.0, scale_min=1.0, scale_max=1.0)
    crops = CropDataset([src], crop_px=32, length=20, seed=2, augment_config=config)
    positives = 0
    for i in range(20):
        item = crops[i]
        inside = item["weight"] > 0
        assert np.array_equal(item["image"][0][inside], item["target"][0][inside])
        assert np.array_equal(item["image"][2][inside], item["weight"][inside])
        positives += int(item["target"][0][inside].sum() > 0)
    assert positives >= 10  # crops prefer labelled areas


def test_sources_with_different_bands_are_refused(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 64, 64, [(10, 10, 30, 30)])
    ms = tmp_path / "ms.tif"
    with rasterio.open(
        ms,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=8,
        dtype="uint16",
        crs=CRS,
        transform=from_origin(X0, Y0, RES, RES),
    ) as dst:
        dst.write(np.random.default_rng(0).integers(0, 2047, (8, 64, 64), dtype=np.uint16))
    norm11 = Normalization(mean=[0.5] * 11, std=[0.25] * 11)
    with_ms = prepare_source(TrainingSource(rgb=rgb, ms=ms, labels=labels), norm11)
    assert with_ms.image.shape[0] == 11
    assert with_ms.band_names[3:] == [
        "coastal",
        "blue",
        "green",
        "yellow",
        "red",
        "red_edge",
        "nir1",
        "nir2",
    ]
    mixed = [TrainingSource(rgb=rgb, labels=labels), TrainingSource(rgb=rgb, ms=ms, labels=labels)]
    with pytest.raises(InputError, match="--ms"):
        train(TrainConfig(sources=mixed, out=tmp_path / "m.safetensors"))


def test_non_finite_pixels_are_nodata_in_training(tmp_path: Path) -> None:
    rgb, labels = write_scene(tmp_path, 100, 80, [(10, 10, 20, 30), (60, 40, 75, 60)])
    with rasterio.open(rgb) as src:
        img, profile = src.read().astype(np.float32), src.profile
    img[:, 3, 3] = np.nan
    img[1, 50, 50] = np.inf
    profile.update(dtype="float32")
    with rasterio.open(rgb, "w", **profile) as dst:
        dst.write(img)
    src = prepare_source(TrainingSource(rgb=rgb, labels=labels), NORM, seed=3)
    assert np.isfinite(src.image).all()
    assert src.train_weight[3, 3] == 0 and src.train_weight[50, 50] == 0
    assert not src.val_mask[3, 3] and not src.val_mask[50, 50]
