"""Web layers (XYZ tiles here; WMS/WMTS go the same way) as extraction inputs: drawn by QGIS for
the extent at a chosen ground resolution, block by block, then sent like a file layer. The tiles
are local (``file:///``), made from the synthetic scene, so nothing needs the internet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Geod
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from rasterio.vrt import WarpedVRT

from ternaus_qgis.core.raster_inputs import band_count, is_rendered, materialize, raster_input
from ternaus_qgis.exceptions import LayerError

from .test_dock import click_extract, plugin, result_layers, wait_for_task  # noqa: F401
from .test_processing import provider  # noqa: F401
from .xyz_tiles import write_xyz_tiles

ZOOM = 19  # ~0.27 m tiles at the scene's latitude (23 deg S)


@pytest.fixture(scope="module")
def xyz_source(synthetic_scene: Path, tmp_path_factory) -> str:
    return write_xyz_tiles(synthetic_scene, tmp_path_factory.mktemp("xyz"), ZOOM)


def xyz_layer(source: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(source, "basemap", "wms")
    assert layer.isValid(), source
    QgsProject.instance().addMapLayer(layer)
    return layer


def scene_extent(scene: Path, crs: QgsCoordinateReferenceSystem) -> QgsRectangle:
    with rasterio.open(scene) as src:
        own = QgsCoordinateReferenceSystem(src.crs.to_string())
        box = QgsRectangle(*src.bounds)
    return QgsCoordinateTransform(own, crs, QgsProject.instance()).transformBoundingBox(box)


def test_xyz_layer_is_drawn_at_the_chosen_ground_resolution(
    qgis_app, project, synthetic_scene, xyz_source, tmp_path
):
    layer = xyz_layer(xyz_source)
    assert is_rendered(layer) and band_count(layer) == 3
    with pytest.raises(LayerError, match="web layer"):
        raster_input(layer, "multispectral", 1)
    rgb = raster_input(layer, "RGB", 3, resolution_m=0.5)
    assert rgb.needs_export and rgb.rendered
    extent = scene_extent(synthetic_scene, layer.crs())
    out = materialize(rgb, extent, layer.crs(), tmp_path, lambda pct: None, lambda: False)

    with rasterio.open(out) as drawn:
        assert drawn.count == 4 and drawn.colorinterp[3].name == "alpha"
        left, bottom, right, top = drawn.bounds
        # One pixel covers 0.5 m on the ground (web mercator units are not metres there).
        lon0, lat0 = drawn.crs and rasterio.warp.transform(drawn.crs, "EPSG:4326", [left], [top])
        lon1, _ = rasterio.warp.transform(drawn.crs, "EPSG:4326", [right], [top])
        ground = Geod(ellps="WGS84").inv(lon0[0], lat0[0], lon1[0], lat0[0])[2]
        assert ground / drawn.width == pytest.approx(0.5, rel=0.02)
        # The drawing shows the scene: same pixels as the scene warped onto the same grid.
        with rasterio.open(synthetic_scene) as src, WarpedVRT(
            src, crs=drawn.crs, transform=drawn.transform, width=drawn.width, height=drawn.height
        ) as expected:
            want = expected.read([1, 2, 3]).astype(np.float32)
            inside = expected.dataset_mask() > 0
        got = drawn.read([1, 2, 3]).astype(np.float32)
        valid = drawn.read(4) > 0
    both = inside & valid
    assert both.mean() > 0.7, "the drawing does not cover the scene"
    corr = np.corrcoef(got[:, both].ravel(), want[:, both].ravel())[0, 1]
    assert corr > 0.9, f"drawn pixels differ from the scene (correlation {corr:.2f})"


def test_xyz_layer_is_extracted_like_the_file_it_shows(
    plugin, synthetic_scene, xyz_source  # noqa: F811
):
    from .conftest import add_raster

    scene = add_raster(synthetic_scene)
    web = xyz_layer(xyz_source)
    dock = plugin.dock

    dock.model_combo.setCurrentIndex(0)  # the default model, whatever an earlier test chose
    # A web layer has no extent of its own: the user is told to choose one.
    dock.rgb_combo.setLayer(web)
    dock.extent_widget.clear()
    click_extract(plugin)
    wait_for_task(plugin)
    assert isinstance(plugin.controller.extraction.last_error, LayerError)
    assert "extent" in plugin.controller.extraction.last_error.message

    inner = scene.extent().buffered(-10.0)
    counts, shapes = {}, {}
    for layer in (scene, web):
        dock.rgb_combo.setLayer(layer)
        dock.extent_widget.setOutputExtentFromUser(inner, scene.crs())
        plugin.controller.extraction.last_error = None
        click_extract(plugin)
        wait_for_task(plugin, 300.0)
        assert plugin.controller.extraction.last_error is None, (
            plugin.controller.extraction.last_error.message
        )
        (result,) = result_layers(layer)
        to_scene = QgsCoordinateTransform(result.crs(), scene.crs(), QgsProject.instance())
        polygons = []
        for feature in result.getFeatures():
            geometry = feature.geometry()
            geometry.transform(to_scene)
            polygons.append(shapely.from_wkt(geometry.asWkt()))
        counts[layer.name()] = len(polygons)
        shapes[layer.name()] = shapely.union_all(polygons)
    assert counts["basemap"] > 0
    assert result.crs().authid() == "EPSG:3857"  # in the web layer's CRS, as QGIS shows it
    a, b = shapes["scene"], shapes["basemap"]
    iou = a.intersection(b).area / a.union(b).area
    print(f"file layer {counts['scene']} buildings, XYZ layer {counts['basemap']}; IoU {iou:.2f}")
    # The tiles are the scene resampled twice (to zoom 19, then to the model's pixel), and the
    # default model, trained on real imagery, is unsure on synthetic roofs: agreement, not identity
    # (the drawing itself is checked pixel by pixel above).
    assert iou > 0.45
    assert abs(counts["basemap"] - counts["scene"]) <= max(3, 0.3 * counts["scene"])


def test_processing_renders_a_web_layer_at_the_given_resolution(
    provider, project, synthetic_scene, xyz_source, tmp_path  # noqa: F811
):
    import processing
    from qgis.core import QgsProcessingFeedback, QgsVectorLayer

    class Recorder(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def pushInfo(self, info: str) -> None:  # noqa: N802
            self.lines.append(info)

    web = xyz_layer(xyz_source)
    box = scene_extent(synthetic_scene, web.crs())
    extent = f"{box.xMinimum()},{box.xMaximum()},{box.yMinimum()},{box.yMaximum()} [EPSG:3857]"
    feedback = Recorder()
    result = processing.run(
        "ternaus:extract_buildings",
        {"RGB": web, "EXTENT": extent, "RESOLUTION": 0.6, "OUTPUT": str(tmp_path / "web.gpkg")},
        feedback=feedback,
    )
    assert any("at 0.6 m per pixel" in line for line in feedback.lines), feedback.lines
    layer = QgsVectorLayer(result["OUTPUT"], "result", "ogr")
    assert layer.isValid() and layer.featureCount() > 0
