"""The loop users come for, clicked as a user would: extract with the default model, correct the
result by hand inside one area, train on the corrected layer, extract again with the new model,
and compare both results with the reference on a held-out area."""

from __future__ import annotations

import pytest
from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from .conftest import add_raster, wait_until
from .test_dock import plugin, result_layers  # noqa: F401

pytestmark = pytest.mark.slow


def polygon_layer(name: str, crs, geometry: QgsGeometry) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"Polygon?crs={crs.authid()}", name, "memory")
    feature = QgsFeature()
    feature.setGeometry(geometry)
    layer.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(layer)
    return layer


def extract(plugin, raster, model_index: int) -> QgsVectorLayer:  # noqa: F811
    dock = plugin.dock
    dock.rgb_combo.setLayer(raster)
    dock.extent_widget.clear()
    dock.model_combo.setCurrentIndex(model_index)
    plugin.controller.extraction.ask_replace = lambda parent, title: "add"
    before = {layer.id() for layer in result_layers(raster)}
    QTest.mouseClick(dock.extract_button, Qt.LeftButton)
    wait_until(lambda: plugin.controller.extraction.task is None, 300, "the extraction")
    assert plugin.controller.extraction.last_error is None, (
        plugin.controller.extraction.last_error.message
    )
    (layer,) = [layer for layer in result_layers(raster) if layer.id() not in before]
    return layer


def evaluate(plugin, result: QgsVectorLayer, reference, area) -> dict:  # noqa: F811
    panel = plugin.dock.evaluate_panel
    panel.result_combo.setLayer(result)
    panel.reference_combo.setLayer(reference)
    panel.area_combo.setLayer(area)
    QTest.mouseClick(panel.evaluate_button, Qt.LeftButton)
    wait_until(lambda: plugin.controller.evaluation.task is None, 120, "the evaluation")
    assert plugin.controller.evaluation.last is not None, plugin.controller.evaluation.last_error
    assert "F1" in panel.scores_label.text()
    return plugin.controller.evaluation.last.scores


def correct_by_hand(result: QgsVectorLayer, reference: QgsVectorLayer, area: QgsGeometry) -> None:
    """What a user does in the training area: delete false positives, draw missed buildings."""
    truth = [f.geometry() for f in reference.getFeatures() if f.geometry().intersects(area)]
    assert result.startEditing()
    for feature in result.getFeatures():
        geometry = feature.geometry()
        if geometry.intersects(area) and not any(geometry.intersects(t) for t in truth):
            result.deleteFeature(feature.id())
    kept = [f.geometry() for f in result.getFeatures() if f.geometry().intersects(area)]
    for geometry in truth:
        if not any(geometry.intersects(k) for k in kept):
            feature = QgsFeature(result.fields())
            feature.setGeometry(geometry)
            result.addFeature(feature)
    assert result.commitChanges(), result.commitErrors()


def test_extract_correct_train_extract_again_and_compare(plugin, synthetic_scene):  # noqa: F811
    raster = add_raster(synthetic_scene)
    reference = QgsVectorLayer(str(synthetic_scene.parent / "scene_labels.geojson"), "truth", "ogr")
    QgsProject.instance().addMapLayer(reference)
    whole = raster.extent()
    middle = whole.xMinimum() + whole.width() * 0.6
    west = QgsGeometry.fromRect(
        whole.__class__(whole.xMinimum(), whole.yMinimum(), middle, whole.yMaximum())
    )
    east = QgsGeometry.fromRect(
        whole.__class__(middle, whole.yMinimum(), whole.xMaximum(), whole.yMaximum())
    )
    training_area = polygon_layer("training area", raster.crs(), west)
    held_out = polygon_layer("held-out area", raster.crs(), east)

    first = extract(plugin, raster, 0)
    before = evaluate(plugin, first, reference, held_out)
    correct_by_hand(first, reference, west)

    panel = plugin.dock.train_panel
    plugin.controller.training.options = {"batch_size": 4, "crop_px": 128}
    panel.rgb_combo.setLayer(raster)
    panel.labels_combo.setLayer(first)
    panel.area_combo.setLayer(training_area)
    panel.epochs_spin.setValue(3)
    panel.steps_spin.setValue(8)
    panel.name_edit.setText("corrected here")
    QTest.mouseClick(panel.train_button, Qt.LeftButton)
    wait_until(lambda: plugin.controller.training.task is None, 600, "the training")
    trained = plugin.controller.training.last
    assert trained is not None, plugin.controller.training.last_error.message
    wait_until(lambda: plugin.controller.backend_status.task is None, 60, "the model list")
    index = plugin.dock.model_combo.findData(str(trained.model_path))
    assert index > 0, "the new model is not in the dock's list"

    second = extract(plugin, raster, index)
    after = evaluate(plugin, second, reference, held_out)
    print(
        f"held-out F1 before {before['f1']:.3f} (P {before['precision']:.3f}, R "
        f"{before['recall']:.3f}), after {after['f1']:.3f} (P {after['precision']:.3f}, R "
        f"{after['recall']:.3f}); training curve {[(p.epoch, p.val_f1) for p in trained.curve]}"
    )
    assert 0.0 <= before["f1"] <= 1.0 and 0.0 <= after["f1"] <= 1.0
    assert before["tp"] + before["fn"] == after["tp"] + after["fn"] > 0  # same reference
