"""Training from QGIS: the dock's Train tab with a labelled layer, a real backend training job,
epochs drawn as they arrive, the new model in the model lists at once; Stop keeps the best."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QPushButton

from ternaus_qgis import settings
from ternaus_qgis.exceptions import LayerError, TrainingStoppedError

from .conftest import add_raster, record_texts, wait_until


@pytest.fixture
def plugin(iface, project, backend_command):
    from ternaus_qgis.plugin import TernausPlugin

    settings.set("backend/mode", "local")
    instance = TernausPlugin(iface)
    instance.initGui()
    wait_until(lambda: instance.controller.backend_status.task is None, 120, "the backend")
    instance.controller.training.options = {"batch_size": 2, "crop_px": 64, "lr": 1e-3}
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
    wait_until(lambda: plugin.controller.training.task is None, 300, "the training")
    result = plugin.controller.training.last
    assert result is not None, plugin.controller.training.last_error.message
    assert result.model_path.name == "my_town.safetensors" and result.model_path.is_file()
    assert result.model_path.parent == settings.models_folder()
    assert [p.epoch for p in result.curve] == [1, 2]
    assert [p.epoch for p in panel.curve.points] == [1, 2]
    assert "my_town" in panel.stage_label.text()
    wait_until(lambda: plugin.controller.backend_status.task is None, 60, "the model list")
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
        lambda: plugin.controller.training.task is None or len(panel.curve.points) >= 1,
        300,
        "the first epoch",
    )
    QTest.mouseClick(panel.cancel_button, Qt.LeftButton)
    wait_until(lambda: plugin.controller.training.task is None, 120, "the training to stop")
    result = plugin.controller.training.last
    assert result is not None and result.cancelled, plugin.controller.training.last_error
    assert result.model_path.is_file() and len(result.curve) < 50
    assert "best kept" in panel.stage_label.text()


def test_a_killed_training_offers_its_best_model_and_resumes(plugin, labelled, iface):
    raster, labels = labelled
    panel = plugin.dock.train_panel
    panel.rgb_combo.setLayer(raster)
    panel.labels_combo.setLayer(labels)
    panel.epochs_spin.setValue(4)
    panel.steps_spin.setValue(3)
    panel.name_edit.setText("killed")
    out = settings.models_folder() / "killed.safetensors"
    checkpoint = out.with_name(out.name + ".ckpt.pt")
    QTest.mouseClick(panel.train_button, Qt.LeftButton)
    wait_until(
        lambda: plugin.controller.training.task is None or checkpoint.is_file(),
        300,
        "the first checkpoint",
    )
    assert plugin.controller.training.task is not None, "the training ended before it was killed"
    backend = plugin.controller.backend.local.process
    os.kill(backend.pid, signal.SIGKILL)  # the backend dies mid-training
    wait_until(lambda: plugin.controller.training.task is None, 60, "the training to stop")
    error = plugin.controller.training.last_error
    assert isinstance(error, TrainingStoppedError), error
    assert error.model_path == out and out.is_file() and error.checkpoint_path == checkpoint
    assert "best model so far" in error.message and str(out) in error.message
    assert "resume" in error.message and "exit code" in error.message
    items = [item for item in iface.bar.items() if "best model so far" in item.text()]
    assert len(items) == 1
    use = items[0].findChild(QPushButton, "ternausUseStoppedModel")
    resume = items[0].findChild(QPushButton, "ternausResumeTraining")
    assert use is not None and resume is not None
    # "Use this model": chosen for extraction, listed once the (restarted) backend answers.
    QTest.mouseClick(use, Qt.LeftButton)
    assert settings.get("dock/model") == str(out)
    wait_until(lambda: plugin.controller.backend_status.task is None, 120, "the model list")
    paths = [
        plugin.dock.model_combo.itemData(i, Qt.UserRole)
        for i in range(plugin.dock.model_combo.count())
    ]
    assert str(out) in paths
    # "Resume training" (what its button calls): the same job continues from the checkpoint.
    plugin.controller.training.resume(error)
    assert plugin.controller.training.task is not None
    wait_until(lambda: plugin.controller.training.task is None, 300, "the resumed training")
    result = plugin.controller.training.last
    assert result is not None, plugin.controller.training.last_error.message
    assert result.model_path == out
    assert any("resumed after epoch" in note for note in result.summary["notes"])
    assert [p.epoch for p in result.curve] == [1, 2, 3, 4]


def test_a_model_needs_a_name(plugin, labelled):
    raster, labels = labelled
    panel = plugin.dock.train_panel
    panel.rgb_combo.setLayer(raster)
    panel.labels_combo.setLayer(labels)
    panel.name_edit.setText("  ")
    QTest.mouseClick(panel.train_button, Qt.LeftButton)
    assert isinstance(plugin.controller.training.last_error, LayerError)
    assert "Name" in plugin.controller.training.last_error.message


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
    wait_until(lambda: plugin.controller.training.task is None, 300, "the training")
    result = plugin.controller.training.last
    assert result is not None, plugin.controller.training.last_error.message
    from ternaus_backend.models.model_file import describe_model

    meta = describe_model(result.model_path)["metadata"]
    assert meta["in_channels"] == 11 and len(meta["band_names"]) == 11


def test_adapt_to_this_imagery_without_labels_from_the_train_tab(plugin, labelled):
    """No labelled layer: the default model adapts to the imagery by self-training alone; the
    recipe chooses the epochs ("auto") and the plan with its time is shown before the steps."""
    raster, _ = labelled
    panel = plugin.dock.train_panel
    panel.rgb_combo.setLayer(raster)
    panel.labels_combo.setLayer(None)
    assert panel.self_training_check.isChecked(), "self-training is on by default"
    assert panel.epochs_spin.value() == 0 and panel.epochs_spin.text() == "auto"
    panel.epochs_spin.setValue(2)
    panel.steps_spin.setValue(2)
    panel.name_edit.setText("adapted")
    texts = record_texts(panel.stage_label)
    plugin.controller.training.options["crop_px"] = 64
    QTest.mouseClick(panel.train_button, Qt.LeftButton)
    wait_until(lambda: plugin.controller.training.task is None, 300, "the self-training")
    result = plugin.controller.training.last
    assert result is not None, plugin.controller.training.last_error.message
    assert result.model_path.name == "adapted.safetensors" and result.model_path.is_file()
    assert [p.epoch for p in result.curve] == [1, 2]
    assert all(p.val_f1 is None for p in result.curve)  # nothing to validate on
    notes = " ".join(result.summary.get("notes") or [])
    assert "self-training on" in notes and "0 labelled buildings" in notes
    # the plan and its time: before the first step, or (when no poll fell in that moment) in
    # every training line after it
    assert any("0 labelled buildings" in t and "about" in t for t in texts), texts


def test_self_training_can_be_switched_off_and_needs_labels_then(plugin, labelled):
    raster, _ = labelled
    panel = plugin.dock.train_panel
    panel.rgb_combo.setLayer(raster)
    panel.labels_combo.setLayer(None)
    panel.self_training_check.setChecked(False)
    panel.name_edit.setText("nothing to learn")
    QTest.mouseClick(panel.train_button, Qt.LeftButton)
    wait_until(lambda: plugin.controller.training.task is None, 120, "the refusal")
    error = plugin.controller.training.last_error
    assert error is not None and "No labels" in error.message, error
