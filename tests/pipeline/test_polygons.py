"""The GeoPackage writer: a unique temporary beside the output, an atomic replace."""

from __future__ import annotations

import fiona
from rasterio.crs import CRS
from shapely.geometry import box

from ternaus_backend.pipeline.polygons import BuildingWriter

UTM = CRS.from_epsg(32723)


def _count(path) -> int:
    with fiona.open(path) as src:
        return len(src)


def test_a_users_own_partial_file_is_never_touched(tmp_path):
    own = tmp_path / "out.partial.gpkg"
    own.write_bytes(b"mine")
    writer = BuildingWriter(tmp_path / "out.gpkg", UTM)
    writer.write([box(0, 0, 1, 1)], [0.9])
    writer.commit()
    failed = BuildingWriter(tmp_path / "out.gpkg", UTM)
    failed.abort()
    assert own.read_bytes() == b"mine"
    assert _count(tmp_path / "out.gpkg") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gpkg", "out.partial.gpkg"]


def test_two_writers_to_one_output_give_one_valid_file(tmp_path):
    out = tmp_path / "out.gpkg"
    first, second = BuildingWriter(out, UTM), BuildingWriter(out, UTM)
    first.write([box(0, 0, 1, 1)], [0.9])
    second.write([box(0, 0, 1, 1), box(2, 2, 3, 3)], [0.9, 0.8])
    first.commit()
    assert _count(out) == 1
    second.commit()  # the last writer wins
    assert _count(out) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out.gpkg"]


def test_temporary_is_hidden_and_unique_in_the_output_folder(tmp_path):
    a, b = BuildingWriter(tmp_path / "x.gpkg", UTM), BuildingWriter(tmp_path / "x.gpkg", UTM)
    try:
        assert a.partial != b.partial
        for w in (a, b):
            assert w.partial.parent == tmp_path
            assert w.partial.name.startswith(".x.") and w.partial.name.endswith(".partial.gpkg")
    finally:
        a.abort()
        b.abort()
    assert list(tmp_path.iterdir()) == []


def test_concurrent_extractions_to_one_output(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from ternaus_backend.pipeline.extract import extract
    from tests.helpers import ThresholdModel, rectangles_image, write_raster

    rgb = write_raster(tmp_path / "rgb.tif", rectangles_image(128, 128, [(20, 20, 60, 60)]))
    out = tmp_path / "out.gpkg"
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(extract, rgb, out, model=ThresholdModel()) for _ in range(2)]
        results = [j.result() for j in jobs]
    assert all(r.count == 1 for r in results)
    assert _count(out) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gpkg", "rgb.tif"]


def test_holes_under_the_minimum_area_are_dropped_and_outlines_stay_valid():
    """Issue 11: bounded finishing on a noisy mask; pinholes go, a large courtyard stays."""
    import numpy as np
    import shapely
    from affine import Affine

    from ternaus_backend.pipeline.polygons import finish_polygons, label_polygons

    labels = np.zeros((200, 200), np.int32)
    labels[10:190, 10:190] = 1
    labels[60:140, 60:140] = 0  # courtyard: 6400 px
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(12, 58, size=(2, 300))
    labels[rows, cols] = 0  # pinholes of one pixel
    polys = label_polygons(labels, np.array([1]), Affine.identity(), min_hole_px=20)
    assert len(polys[1].interiors) == 1
    (finished,) = finish_polygons([polys[1]], 1.0, 1.0, regular=False)
    assert shapely.is_valid(finished) and len(finished.interiors) == 1
