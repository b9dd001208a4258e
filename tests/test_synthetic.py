"""Synthetic scenes: files, grids, spectra, labels that match the roofs, determinism."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely

from ternaus_backend.errors import InputError
from ternaus_backend.synthetic import (
    LANDCOVER_CLASSES,
    MS_BANDS,
    SceneFiles,
    make_scene,
    make_scenes,
)
from ternaus_backend.training.targets import make_targets
from ternaus_backend.vector_io import read_polygons_with_properties

SIZE = 256


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> SceneFiles:
    return make_scene(tmp_path_factory.mktemp("scene"), seed=0, size_px=SIZE)


def read(path: Path) -> tuple[np.ndarray, rasterio.profiles.Profile, rasterio.coords.BoundingBox]:
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.bounds


def files_of(s: SceneFiles) -> list[Path]:
    return [p for p in (s.rgb, s.ms, s.labels, s.landcover) if p is not None]


def test_files_and_grids(scene: SceneFiles) -> None:
    for path in files_of(scene):
        assert path.exists() and path.stat().st_size > 0
    rgb, rgb_profile, rgb_bounds = read(scene.rgb)
    ms, ms_profile, ms_bounds = read(scene.ms)
    assert rgb.shape == (3, SIZE, SIZE) and rgb.dtype == np.uint8
    assert ms.shape == (8, SIZE // 4, SIZE // 4) and ms.dtype == np.uint16
    assert ms.max() <= 2047 and ms.min() >= 0
    assert rgb_profile["crs"].to_epsg() == 32723 and ms_profile["crs"].to_epsg() == 32723
    assert rgb_profile["transform"].a == 0.5 and ms_profile["transform"].a == 2.0
    assert rgb_bounds == ms_bounds
    with rasterio.open(scene.ms) as src:
        assert src.descriptions == MS_BANDS
    assert rgb.std() > 10  # not flat


def test_vegetation_is_bright_in_nir_and_red_edge(scene: SceneFiles) -> None:
    ms, _, _ = read(scene.ms)
    cover, _, _ = read(scene.landcover)
    blocks = cover[0].reshape(SIZE // 4, 4, SIZE // 4, 4)
    grass, tree, road = (LANDCOVER_CLASSES.index(c) for c in ("grass", "tree", "road"))
    veg = np.isin(blocks, [grass, tree]).all(axis=(1, 3))
    pure_road = (blocks == road).all(axis=(1, 3))
    assert veg.sum() > 50 and pure_road.sum() > 5
    band = {name: ms[i].astype(float) for i, name in enumerate(MS_BANDS)}
    assert band["nir1"][veg].mean() > 2.0 * band["red"][veg].mean()
    assert band["red_edge"][veg].mean() > band["red"][veg].mean()
    assert band["nir1"][pure_road].mean() < 0.5 * band["nir1"][veg].mean()


def test_labels_fall_on_roofs(scene: SceneFiles) -> None:
    rgb, profile, _ = read(scene.rgb)
    polygons, props = read_polygons_with_properties(scene.labels, dst_crs=profile["crs"])
    assert len(polygons) == scene.counts["buildings"] > 5
    assert [p["id"] for p in props] == list(range(1, len(polygons) + 1))
    targets = make_targets(polygons, profile["transform"], (SIZE, SIZE))
    inside = targets.body.astype(bool)
    cover, _, _ = read(scene.landcover)
    building = LANDCOVER_CLASSES.index("building")
    tree = LANDCOVER_CLASSES.index("tree")
    # the rendered roofs are the label polygons (a few roof pixels hide under trees)
    assert np.isin(cover[0][inside], [building, tree]).all()
    assert (cover[0][inside] == building).mean() > 0.9
    assert not (cover[0][~inside] == building).any()
    mean_in = rgb[:, inside].mean(axis=1)
    mean_out = rgb[:, ~inside].mean(axis=1)
    assert np.abs(mean_in - mean_out).sum() > 20
    # each roof shows its material's colour: red tiles reddish, white roofs bright
    red, green, blue = (rgb[i].astype(float) for i in range(3))
    roofs = inside & (cover[0] == building)
    checked = 0
    for k, p in enumerate(props, start=1):
        own = roofs & (targets.instances == k)
        if own.sum() < 10:
            continue
        if p["roof"] == "red_tile":
            assert red[own].mean() > green[own].mean() + 30
            checked += 1
        elif p["roof"] == "white":
            assert min(red[own].mean(), green[own].mean(), blue[own].mean()) > 170
            checked += 1
        elif p["roof"] == "blue_metal":
            assert blue[own].mean() > red[own].mean() + 20
            checked += 1
    assert checked >= 3


def test_terraced_rows_touch_exactly(scene: SceneFiles) -> None:
    polygons, props = read_polygons_with_properties(scene.labels)
    assert scene.counts["rows"] >= 1 and scene.counts["touching_pairs"] >= 2
    touching = 0
    for (a, pa), (b, pb) in itertools.combinations(zip(polygons, props, strict=True), 2):
        assert a.intersection(b).area < 1e-6  # no overlaps
        if a.touches(b) and a.intersection(b).length > 1.0:
            touching += 1
            assert pa["row"] == pb["row"] > 0
    assert touching == scene.counts["touching_pairs"]
    assert all(p.is_valid for p in polygons)
    assert shapely.area(np.asarray(polygons, dtype=object)).min() >= 6.0 * 5.0 * 0.9


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = make_scene(tmp_path / "a", seed=5, size_px=128)
    b = make_scene(tmp_path / "b", seed=5, size_px=128)
    c = make_scene(tmp_path / "c", seed=6, size_px=128)
    for pa, pb in zip(files_of(a), files_of(b), strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    assert a.counts == b.counts
    assert a.rgb.read_bytes() != c.rgb.read_bytes()
    assert a.labels.read_bytes() != c.labels.read_bytes()


def test_options(tmp_path: Path) -> None:
    same_grid = make_scene(tmp_path, seed=1, size_px=64, ms_scale=1, name="fine")
    ms, profile, bounds = read(same_grid.ms)
    assert ms.shape == (8, 64, 64) and profile["transform"].a == 0.5
    no_ms = make_scene(tmp_path, seed=1, size_px=64, with_ms=False, crs="EPSG:32616", name="rgb")
    assert no_ms.ms is None
    assert read(no_ms.rgb)[1]["crs"].to_epsg() == 32616
    with pytest.raises(InputError):
        make_scene(tmp_path, size_px=66, ms_scale=4)
    with pytest.raises(InputError):
        make_scene(tmp_path, size_px=64, crs="EPSG:not-a-code")
    tiny = make_scene(tmp_path, seed=0, size_px=32, name="tiny")  # may hold no building at all
    assert tiny.labels.exists() and read(tiny.rgb)[0].shape == (3, 32, 32)


def test_make_scenes_side_by_side(tmp_path: Path) -> None:
    scenes = make_scenes(tmp_path, 2, seed=0, size_px=64, with_ms=False)
    assert [s.rgb.name for s in scenes] == ["scene_000_rgb.tif", "scene_001_rgb.tif"]
    b0, b1 = read(scenes[0].rgb)[2], read(scenes[1].rgb)[2]
    assert b0.right < b1.left
    assert scenes[0].rgb.read_bytes() != scenes[1].rgb.read_bytes()
