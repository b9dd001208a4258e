"""The plugin as a user meets it: loaded into a (stand-in) QGIS window, the dock's widgets set and
its buttons clicked, a real backend subprocess doing the work."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from ternaus_qgis import backend_process, settings
from ternaus_qgis.core.result_layers import PROP_SOURCE
from ternaus_qgis.exceptions import BackendUnreachableError, CancelledByUser, LayerError

from .conftest import add_raster, wait_until


@pytest.fixture
def plugin(iface, project, backend_command):
    from ternaus_qgis.plugin import TernausPlugin

    settings.set("backend/mode", "local")
    settings.set("backend/command", "")
    settings.set("output/folder", "")
    instance = TernausPlugin(iface)
    instance.initGui()
    wait_until(
        lambda: instance.dock.backend_label.text().startswith(("ready", "not available")),
        what="the backend to answer",
    )
    assert instance.dock.backend_label.text().startswith("ready"), (
        instance.dock.backend_label.text()
    )
    yield instance
    if instance.dock is not None:
        instance.unload()


def result_layers(source: QgsRasterLayer) -> list[QgsVectorLayer]:
    return [
        layer
        for layer in QgsProject.instance().mapLayers().values()
        if layer.customProperty(PROP_SOURCE) == source.id()
    ]


def click_extract(plugin) -> None:
    QTest.mouseClick(plugin.dock.extract_button, Qt.LeftButton)


def wait_for_task(plugin, timeout_s: float = 180.0) -> None:
    wait_until(
        lambda: plugin.controller.extraction.task is None, timeout_s, "the extraction task to end"
    )


def bar_texts(iface) -> list[str]:
    return [item.text() for item in iface.bar.items()]


def test_plugin_loads_and_unloads_without_leaving_a_process(iface, plugin):
    assert plugin.dock in iface.docks and plugin.dock.windowTitle() == "Ternaus Building Extraction"
    assert "CPU" in plugin.dock.backend_label.text() or "CUDA" in plugin.dock.backend_label.text()
    assert plugin.dock.model_combo.count() >= 1
    assert "default" in plugin.dock.model_combo.itemText(0)
    process = backend_process.connection().local.process
    assert process is not None and process.poll() is None
    plugin.unload()
    assert process.poll() is not None, "the backend outlived the plugin"
    assert iface.docks == [] and iface.menu_actions == [] and iface.toolbar_actions == []
    from qgis.core import QgsApplication

    assert QgsApplication.processingRegistry().providerById("ternaus") is None


def test_extract_through_the_dock_adds_an_editable_styled_layer(iface, plugin, synthetic_scene):
    raster = add_raster(synthetic_scene)
    plugin.dock.rgb_combo.setLayer(raster)
    click_extract(plugin)
    assert not plugin.dock.extract_button.isEnabled() and plugin.dock.cancel_button.isEnabled()
    wait_for_task(plugin)
    assert plugin.controller.extraction.last_error is None, (
        plugin.controller.extraction.last_error.message
    )
    (layer,) = result_layers(raster)
    assert layer.featureCount() > 5
    assert layer.crs() == raster.crs()
    assert {"confidence", "area_m2"} <= set(layer.fields().names())
    assert layer.renderer().type() == "graduatedSymbol"
    assert layer.dataProvider().capabilities() & layer.dataProvider().AddFeatures
    path = Path(layer.source().split("|")[0])
    assert path.parent == Path(QgsProject.instance().absolutePath()) / "ternaus_results"
    assert plugin.dock.progress_bar.value() == 100
    assert any("buildings extracted" in text for text in bar_texts(iface))
    assert plugin.dock.extract_button.isEnabled() and not plugin.dock.cancel_button.isEnabled()

    # A second run on the same layer asks: "add" keeps both, "replace" leaves one.
    plugin.controller.extraction.ask_replace = lambda parent, title: "add"
    click_extract(plugin)
    wait_for_task(plugin)
    assert len(result_layers(raster)) == 2
    plugin.controller.extraction.ask_replace = lambda parent, title: "replace"
    click_extract(plugin)
    wait_for_task(plugin)
    assert len(result_layers(raster)) == 1


def test_extent_limits_the_extraction(plugin, synthetic_scene):
    raster = add_raster(synthetic_scene)
    plugin.dock.rgb_combo.setLayer(raster)
    whole = raster.extent()
    part = whole.buffered(-whole.width() / 4)
    plugin.dock.extent_widget.setOutputExtentFromUser(part, raster.crs())
    click_extract(plugin)
    wait_for_task(plugin)
    (layer,) = result_layers(raster)
    assert layer.featureCount() > 0
    assert part.buffered(2.0).contains(layer.extent())


def test_wrong_layer_gets_a_clear_message(iface, plugin, tmp_path):
    import numpy as np

    from tests.helpers import write_raster

    single = add_raster(write_raster(tmp_path / "one_band.tif", np.zeros((1, 64, 64), np.uint8)))
    plugin.dock.rgb_combo.setLayer(single)
    click_extract(plugin)
    assert isinstance(plugin.controller.extraction.last_error, LayerError)
    assert "band" in plugin.controller.extraction.last_error.message
    assert plugin.controller.extraction.task is None


@pytest.fixture(scope="module")
def large_scene(tmp_path_factory) -> Path:
    from ternaus_backend.synthetic import make_scene

    return make_scene(tmp_path_factory.mktemp("large"), seed=5, size_px=2048, with_ms=False).rgb


def wait_until_running_network(plugin) -> None:
    wait_until(
        lambda: plugin.controller.extraction.task is None or plugin.dock.progress_bar.value() >= 6,
        what="the network to start",
    )
    assert plugin.controller.extraction.task is not None, (
        "the job ended before it could be interrupted"
    )


def test_cancel_stops_a_running_job(iface, plugin, large_scene):
    raster = add_raster(large_scene, "large")
    plugin.dock.rgb_combo.setLayer(raster)
    click_extract(plugin)
    wait_until_running_network(plugin)
    QTest.mouseClick(plugin.dock.cancel_button, Qt.LeftButton)
    wait_for_task(plugin, 60)
    assert isinstance(plugin.controller.extraction.last_error, CancelledByUser)
    assert result_layers(raster) == []
    assert plugin.dock.extract_button.isEnabled()


def test_backend_killed_mid_job_is_reported_and_restarted(
    iface, plugin, large_scene, synthetic_scene
):
    raster = add_raster(large_scene, "large")
    plugin.dock.rgb_combo.setLayer(raster)
    click_extract(plugin)
    wait_until_running_network(plugin)
    os.kill(backend_process.connection().local.process.pid, signal.SIGKILL)
    wait_for_task(plugin, 60)
    error = plugin.controller.extraction.last_error
    assert isinstance(error, BackendUnreachableError), error
    assert "stopped" in error.message and "again" in error.message
    assert any("stopped" in text for text in bar_texts(iface))
    assert iface.bar.findChildren(type(plugin.dock.extract_button), "ternausDetailsButton")
    # The next Extract starts the backend again.
    small = add_raster(synthetic_scene, "small")
    plugin.dock.rgb_combo.setLayer(small)
    click_extract(plugin)
    wait_for_task(plugin)
    assert plugin.controller.extraction.last_error is error  # no new error
    assert result_layers(small) and result_layers(small)[0].featureCount() > 0


def _gdal_copy(source: Path, target: Path, driver: str) -> Path:
    from osgeo import gdal

    if driver == "VRT":
        gdal.BuildVRT(str(target), [str(source)]).FlushCache()
    else:
        gdal.Translate(str(target), str(source), format=driver).FlushCache()
    return target


@pytest.mark.parametrize("driver, suffix", [("VRT", ".vrt"), ("GPKG", ".gpkg")])
def test_vrt_and_geopackage_layers_are_exported(plugin, synthetic_scene, tmp_path, driver, suffix):
    copy = _gdal_copy(synthetic_scene, tmp_path / f"scene{suffix}", driver)
    raster = add_raster(copy, f"scene {driver}")
    plugin.dock.rgb_combo.setLayer(raster)
    request, _ = plugin.controller.extraction.collect_request()
    assert request.rgb.needs_export
    click_extract(plugin)
    wait_for_task(plugin)
    assert plugin.controller.extraction.last_error is None, (
        plugin.controller.extraction.last_error.message
    )
    (layer,) = result_layers(raster)
    assert layer.featureCount() > 5 and layer.crs() == raster.crs()


def test_a_failed_job_shows_the_backends_message(iface, plugin, synthetic_scene):
    from qgis.core import QgsRectangle

    from ternaus_qgis.exceptions import BackendRequestError, JobFailedError

    raster = add_raster(synthetic_scene)
    plugin.dock.rgb_combo.setLayer(raster)
    far = QgsRectangle(0, 0, 100, 100)  # in the raster's UTM CRS: far from the scene
    plugin.dock.extent_widget.setOutputExtentFromUser(far, raster.crs())
    click_extract(plugin)
    wait_for_task(plugin)
    error = plugin.controller.extraction.last_error
    assert isinstance(error, (JobFailedError, BackendRequestError)), error
    assert "overlap" in error.message.lower()
    assert any("overlap" in text.lower() for text in bar_texts(iface))
    assert result_layers(raster) == []


def test_choices_persist_between_sessions(iface, plugin, synthetic_scene):
    from ternaus_qgis.gui.dock import TernausDockWidget

    raster = add_raster(synthetic_scene)
    dock = plugin.dock
    dock.rgb_combo.setLayer(raster)
    dock.threshold_spin.setValue(0.55)
    dock.min_area_spin.setValue(40)
    dock.regularize_check.setChecked(True)
    dock.tile_combo.setCurrentIndex(dock.tile_combo.findData(512))
    assert dock.options().engine is None  # the backend's default until chosen
    dock.engine_combo.setCurrentIndex(dock.engine_combo.findData("openvino"))
    dock.save_choices()
    again = TernausDockWidget(iface.canvas)
    assert again.threshold_spin.value() == pytest.approx(0.55)
    assert again.min_area_spin.value() == 40
    assert again.regularize_check.isChecked()
    assert again.tile_combo.currentData() == 512
    assert again.rgb_layer() is raster
    options = again.options()
    assert options.body_threshold == pytest.approx(0.55) and options.min_area_px == 40
    assert options.tile_size_px == 512 and options.regularize is True
    assert options.engine == "openvino" and options.payload()["engine"] == "openvino"
    again.deleteLater()
    keys = ("dock/threshold", "dock/min_area_px", "dock/regularize", "dock/tile_px", "dock/engine")
    for key in keys:
        settings.set(key, settings.DEFAULTS[key])
