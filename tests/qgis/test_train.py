"""Training from QGIS: the dock's Train tab with a labelled layer, a real backend training job,
epochs drawn as they arrive, the new model in the model lists at once; Stop keeps the best."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from ternaus_qgis import settings
from ternaus_qgis.exceptions import LayerError

from .conftest import add_raster, wait_until


@pytest.fixture
def plugin(iface, project, backend_command):
    from ternaus_qgis.plugin import TernausPlugin

    settings.set("backend/mode", "local")
    instance = TernausPlugin(iface)
    instance.initGui()
    wait_until(lambda: instance.controller.status_task is None, 120, "the backend")
    instance.controller.training_options = {"batch_size": 2, "crop_px": 64, "lr": 1e-3}
    yield instance
    instance.unload()


@pytest.fixture
def labelled(project, synthetic_scene):
    raster = add_raster(synthetic_scene)
    labels = QgsVectorLayer(str(synthetic_scene.parent / "scene_labels.geojson"), "labels", "ogr")
    assert labels.isValid()
    QgsProject.instance().addMapLayer(labels)
    return raster, labels


def test_train_tab_trains_a_model_that_appears_in_the_lists(plugin, labelled):
    raster, labels = labelled
    panel = plugin.dock.train_panel
    panel.rgb_combo.setLayer(raster)
    panel.labels_combo.setLayer(labels)
    panel.epochs_spin.setValue(2)
    panel.steps_spin.setValue(2)
    panel.name_edit.setText("my town")
    assert panel.base_combo.currentData(), "fine-tuning the default model is the default"
    QTest.mouseClick(panel.train_button, Qt.LeftButton)
    assert panel.cancel_button.isEnabled()
    wait_until(lambda: plugin.controller.train_task is None, 300, "the training")
    result = plugin.controller.last_training
    assert result is not None, plugin.controller.last_error.message
    assert result.model_path.name == "my_town.safetensors" and result.model_path.is_file()
    assert result.model_path.parent == settings.models_folder()
    assert [p.epoch for p in result.curve] == [1, 2]
    assert [p.epoch for p in panel.curve.points] == [1, 2]
    assert "my_town" in panel.stage_label.text()
    wait_until(lambda: plugin.controller.status_task is None, 60, "the model list")
    paths = [
        plugin.dock.model_combo.itemData(i, Qt.UserRole)
        for i in range(plugin.dock.model_combo.count())
    ]
    assert str(result.model_path) in paths
    assert panel.base_combo.findData(str(result.model_path)) >= 0
    panel.curve.grab().save(str(result.model_path.with_suffix(".png")))


def test_stop_keeps_the_best_model_so_far(plugin, labelled):
    raster, labels = labelled
    panel = plugin.dock.train_panel
    panel.rgb_combo.setLayer(raster)
    panel.labels_combo.setLayer(labels)
    panel.epochs_spin.setValue(50)
    panel.steps_spin.setValue(2)
    panel.name_edit.setText("stopped")
    QTest.mouseClick(panel.train_button, Qt.LeftButton)
    wait_until(
        lambda: plugin.controller.train_task is None or len(panel.curve.points) >= 1,
        300,
        "the first epoch",
    )
    QTest.mouseClick(panel.cancel_button, Qt.LeftButton)
    wait_until(lambda: plugin.controller.train_task is None, 120, "the training to stop")
    result = plugin.controller.last_training
    assert result is not None and result.cancelled, plugin.controller.last_error
    assert result.model_path.is_file() and len(result.curve) < 50
    assert "best kept" in panel.stage_label.text()


def test_a_model_needs_a_name(plugin, labelled):
    raster, labels = labelled
    panel = plugin.dock.train_panel
    panel.rgb_combo.setLayer(raster)
    panel.labels_combo.setLayer(labels)
    panel.name_edit.setText("  ")
    QTest.mouseClick(panel.train_button, Qt.LeftButton)
    assert isinstance(plugin.controller.last_error, LayerError)
    assert "Name" in plugin.controller.last_error.message


def test_processing_train_model(qgis_app, plugin, labelled):
    import processing

    raster, labels = labelled
    outputs = processing.run(
        "ternaus:train_model",
        {"RGB": raster, "LABELS": labels, "EPOCHS": 1, "STEPS": 1, "NAME": "from processing"},
    )
    model = outputs["OUTPUT"]
    assert model.endswith("from_processing.safetensors")
    from pathlib import Path

    assert Path(model).is_file() and Path(model).parent == settings.models_folder()


def test_train_tab_with_a_multispectral_layer_makes_an_11_band_model(plugin, labelled):
    raster, labels = labelled
    ms_path = Path(raster.source()).with_name("scene_ms.tif")
    ms = add_raster(ms_path, "multispectral")
    panel = plugin.dock.train_panel
    panel.rgb_combo.setLayer(raster)
    panel.ms_combo.setLayer(ms)
    panel.labels_combo.setLayer(labels)
    panel.epochs_spin.setValue(1)
    panel.steps_spin.setValue(1)
    panel.name_edit.setText("eleven bands")
    QTest.mouseClick(panel.train_button, Qt.LeftButton)
    wait_until(lambda: plugin.controller.train_task is None, 300, "the training")
    result = plugin.controller.last_training
    assert result is not None, plugin.controller.last_error.message
    from ternaus_backend.models.model_file import describe_model

    meta = describe_model(result.model_path)["metadata"]
    assert meta["in_channels"] == 11 and len(meta["band_names"]) == 11
