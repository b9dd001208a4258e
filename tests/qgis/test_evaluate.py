"""Evaluation on the map: the dock's Evaluate tab and ``ternaus:evaluate_buildings``, against a
real backend, with layers whose right answer is known (reference buildings edited by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsFeature, QgsGeometry, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from ternaus_qgis import settings

from .conftest import wait_until


@pytest.fixture
def layers(project, synthetic_scene):
    """The scene's reference buildings, and a "result": the same buildings with the first one
    missing, the second shifted by half its width, and one invented building (a memory layer,
    not a file: it must be exported)."""
    labels = synthetic_scene.parent / "scene_labels.geojson"
    reference = QgsVectorLayer(str(labels), "reference", "ogr")
    assert reference.isValid() and reference.featureCount() > 10
    result = QgsVectorLayer(f"Polygon?crs={reference.crs().authid()}", "result", "memory")
    features = list(reference.getFeatures())
    added = []
    for n, feature in enumerate(features[1:], start=1):
        geometry = QgsGeometry(feature.geometry())
        if n == 1:
            box = geometry.boundingBox()
            geometry.translate(box.width() * 0.6, 0)
        out = QgsFeature()
        out.setGeometry(geometry)
        added.append(out)
    extent = reference.extent()
    invented = QgsFeature()
    invented.setGeometry(
        QgsGeometry.fromWkt(
            f"POLYGON(({extent.xMinimum() - 50} {extent.yMinimum() - 50}, "
            f"{extent.xMinimum() - 40} {extent.yMinimum() - 50}, "
            f"{extent.xMinimum() - 40} {extent.yMinimum() - 40}, "
            f"{extent.xMinimum() - 50} {extent.yMinimum() - 40}, "
            f"{extent.xMinimum() - 50} {extent.yMinimum() - 50}))"
        )
    )
    added.append(invented)
    result.dataProvider().addFeatures(added)
    QgsProject.instance().addMapLayers([reference, result])
    return result, reference, len(features)


@pytest.fixture
def plugin(iface, project, backend_command):
    from ternaus_qgis.plugin import TernausPlugin

    settings.set("backend/mode", "local")
    instance = TernausPlugin(iface)
    instance.initGui()
    yield instance
    instance.unload()


def test_evaluate_tab_scores_and_shows_the_errors(iface, plugin, layers):
    result, reference, n = layers
    panel = plugin.dock.evaluate_panel
    panel.result_combo.setLayer(result)
    panel.reference_combo.setLayer(reference)
    QTest.mouseClick(panel.evaluate_button, Qt.LeftButton)
    wait_until(lambda: plugin.controller.evaluation.task is None, 120, "the evaluation")
    evaluation = plugin.controller.evaluation.last
    assert evaluation is not None, plugin.controller.evaluation.last_error
    scores = evaluation.scores
    assert (scores["tp"], scores["fp"], scores["fn"]) == (n - 2, 2, 2)
    assert "F1" in panel.scores_label.text()
    project = QgsProject.instance()
    (errors,) = project.mapLayersByName("result (true / false positives)")
    (missed,) = project.mapLayersByName("missed reference buildings")
    matches = [f["match"] for f in errors.getFeatures()]
    assert matches.count("false positive") == 2 and matches.count("true positive") == n - 2
    assert missed.featureCount() == 2
    assert errors.renderer().type() == "categorizedSymbol"
    assert Path(evaluation.path).parent.name == "ternaus_results"
    group = project.layerTreeRoot().findGroup("evaluation - result")
    assert group is not None and len(group.findLayers()) == 2


def test_evaluate_inside_selected_polygons(iface, plugin, layers):
    result, reference, n = layers
    features = list(reference.getFeatures())
    edited = [features[0].geometry(), features[1].geometry().buffer(20, 4)]
    far = [f for f in features[2:] if all(f.geometry().distance(g) > 20 for g in edited)]
    reference.selectByIds([f.id() for f in far[:3]])
    panel = plugin.dock.evaluate_panel
    panel.result_combo.setLayer(result)
    panel.reference_combo.setLayer(reference)
    panel.area_combo.setLayer(reference)
    panel.area_selected_check.setChecked(True)
    QTest.mouseClick(panel.evaluate_button, Qt.LeftButton)
    wait_until(lambda: plugin.controller.evaluation.task is None, 120, "the evaluation")
    scores = plugin.controller.evaluation.last.scores
    assert scores["fn"] == 0 and scores["fp"] == 0 and scores["tp"] >= 3
    assert scores["references_scored"] < n


def test_evaluating_a_layer_against_itself_is_refused(plugin, layers):
    result, _reference, _n = layers
    panel = plugin.dock.evaluate_panel
    panel.result_combo.setLayer(result)
    panel.reference_combo.setLayer(result)
    QTest.mouseClick(panel.evaluate_button, Qt.LeftButton)
    assert "same layer" in plugin.controller.evaluation.last_error.message
    assert plugin.controller.evaluation.task is None


def test_processing_evaluate_buildings(qgis_app, plugin, layers, tmp_path):
    import processing

    result, reference, n = layers
    assert QgsApplication.processingRegistry().algorithmById("ternaus:evaluate_buildings")
    outputs = processing.run(
        "ternaus:evaluate_buildings",
        {"PREDICTED": result, "REFERENCE": reference, "OUTPUT": str(tmp_path / "errors.gpkg")},
    )
    assert (outputs["TP"], outputs["FP"], outputs["FN"]) == (n - 2, 2, 2)
    assert outputs["F1"] == pytest.approx(2 * (n - 2) / (2 * (n - 2) + 4))
    missed = QgsVectorLayer(f"{outputs['OUTPUT']}|layername=missed", "m", "ogr")
    assert missed.isValid() and missed.featureCount() == 2
