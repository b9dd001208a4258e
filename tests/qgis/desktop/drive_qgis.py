"""Run inside the real QGIS desktop (``qgis --code drive_qgis.py``): use the installed plugin as a
user would, save a screenshot and a JSON report, then quit.

Environment: TERNAUS_SCENE (an RGB GeoTIFF), TERNAUS_REPORT (JSON path), TERNAUS_SCREENSHOT (PNG).
Steps: find the plugin's dock, add the scene, choose it in the dock, click Extract, wait for the
result layer, zoom to it, screenshot the main window, quit. Every step is timed.

With TERNAUS_LABELS (reference buildings of the scene), TERNAUS_TRAIN_SHOT and TERNAUS_EVAL_SHOT,
the loop goes on before quitting: the Train tab fine-tunes the default model on the labels
(screenshot while it runs, once two epochs are drawn), then the Evaluate tab compares the
extraction with the labels (screenshot of the error layers).
"""

import json
import os
import time
import traceback

from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtTest import QTest
from qgis.utils import iface, plugins

REPORT = os.environ["TERNAUS_REPORT"]
state = {"steps": [], "t0": time.monotonic(), "error": None}


def step(name):
    state["steps"].append({"step": name, "at_s": round(time.monotonic() - state["t0"], 2)})


def finish():
    with open(REPORT, "w") as handle:
        json.dump(state, handle, indent=1, default=str)
    # No "save the project?" / "temporary layers will be lost" question on quitting (layers in the
    # system's temporary folder count as temporary).
    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().setDirty(False)
    iface.actionExit().trigger()


def guarded(function):
    def run():
        try:
            function()
        except Exception:  # report, then quit: never leave the desktop hanging
            state["error"] = traceback.format_exc()
            finish()

    return run


@guarded
def start():
    iface.mainWindow().resize(1600, 1000)
    plugin = plugins.get("ternaus_qgis")
    if plugin is None or plugin.dock is None:
        raise RuntimeError(f"the plugin is not loaded: {sorted(plugins)}")
    state["dock_title"] = plugin.dock.windowTitle()
    step("plugin loaded")
    layer = QgsRasterLayer(os.environ["TERNAUS_SCENE"], "sample scene")
    QgsProject.instance().addMapLayer(layer)
    iface.mapCanvas().setExtent(layer.extent())
    plugin.dock.rgb_combo.setLayer(layer)
    state["raster_crs"] = layer.crs().authid()
    QTimer.singleShot(200, wait_backend)


FAILED_BACKEND = ("not available", "not installed")


@guarded
def wait_backend():
    plugin = plugins["ternaus_qgis"]
    text = plugin.dock.backend_label.text()
    if text.startswith("ready"):
        state["backend"] = text
        step("backend ready")
        QTest.mouseClick(plugin.dock.extract_button, Qt.LeftButton)
        step("extract clicked")
        QTimer.singleShot(200, wait_result)
    elif text.startswith(FAILED_BACKEND) or time.monotonic() - state["t0"] > 180:
        raise RuntimeError(f"backend: {text}")
    else:
        QTimer.singleShot(200, wait_backend)


@guarded
def wait_result():
    plugin = plugins["ternaus_qgis"]
    controller = plugin.controller.extraction
    if controller.task is not None:
        seen = state.setdefault("progress_seen", [])
        value = (plugin.dock.progress_bar.value(), plugin.dock.stage_label.text())
        if not seen or seen[-1] != value:
            seen.append(value)
        if time.monotonic() - state["t0"] > 400:
            raise RuntimeError("the extraction did not finish in time")
        QTimer.singleShot(200, wait_result)
        return
    step("extraction finished")
    if controller.last_error is not None:
        raise RuntimeError(controller.last_error.message)
    result = controller.last
    layers = QgsProject.instance().mapLayersByName(result.request.title)
    state["layer_name"] = result.request.title
    state["features"] = layers[0].featureCount() if layers else 0
    state["layer_crs"] = layers[0].crs().authid() if layers else None
    state["stage_text"] = plugin.dock.stage_label.text()
    state["result_layer_id"] = layers[0].id() if layers else None
    QTimer.singleShot(1500, screenshot)


@guarded
def screenshot():
    iface.mainWindow().grab().save(os.environ["TERNAUS_SCREENSHOT"])
    step("screenshot saved")
    if os.environ.get("TERNAUS_LABELS"):
        QTimer.singleShot(200, start_training)
    else:
        finish()


@guarded
def start_training():
    plugin = plugins["ternaus_qgis"]
    labels = QgsVectorLayer(os.environ["TERNAUS_LABELS"], "reference buildings", "ogr")
    if not labels.isValid():
        raise RuntimeError(f"labels: {os.environ['TERNAUS_LABELS']}")
    QgsProject.instance().addMapLayer(labels)
    state["labels_layer_id"] = labels.id()
    dock = plugin.dock
    dock.tabs.setCurrentWidget(dock.train_panel)
    panel = dock.train_panel
    panel.rgb_combo.setLayer(QgsProject.instance().mapLayersByName("sample scene")[0])
    panel.labels_combo.setLayer(labels)
    panel.epochs_spin.setValue(6)  # epochs of well under a second each with bf16 steps
    panel.steps_spin.setValue(8)
    panel.name_edit.setText("my area")
    plugin.controller.training.options = {"batch_size": 4, "crop_px": 128}
    QTest.mouseClick(panel.train_button, Qt.LeftButton)
    step("train clicked")
    QTimer.singleShot(500, wait_training)


@guarded
def wait_training():
    plugin = plugins["ternaus_qgis"]
    panel = plugin.dock.train_panel
    running = plugin.controller.training.task is not None
    if running and len(panel.curve.points) >= 2 and "train_shot" not in state:
        iface.mainWindow().grab().save(os.environ["TERNAUS_TRAIN_SHOT"])
        state["train_shot"] = {
            "epochs_drawn": len(panel.curve.points),
            "stage": panel.stage_label.text(),
        }
        step("training screenshot saved")
    if running:
        if time.monotonic() - state["t0"] > 900:
            raise RuntimeError("the training did not finish in time")
        QTimer.singleShot(300, wait_training)
        return
    if plugin.controller.training.last is None:
        raise RuntimeError(f"training: {plugin.controller.training.last_error.message}")
    state["training"] = panel.stage_label.text()
    step("training finished")
    dock = plugin.dock
    dock.tabs.setCurrentWidget(dock.evaluate_panel)
    project = QgsProject.instance()
    dock.evaluate_panel.result_combo.setLayer(project.mapLayer(state["result_layer_id"]))
    dock.evaluate_panel.reference_combo.setLayer(project.mapLayer(state["labels_layer_id"]))
    QTest.mouseClick(dock.evaluate_panel.evaluate_button, Qt.LeftButton)
    step("evaluate clicked")
    QTimer.singleShot(300, wait_evaluation)


@guarded
def wait_evaluation():
    plugin = plugins["ternaus_qgis"]
    if plugin.controller.evaluation.task is not None:
        QTimer.singleShot(300, wait_evaluation)
        return
    evaluation = plugin.controller.evaluation.last
    if evaluation is None:
        raise RuntimeError(f"evaluation: {plugin.controller.evaluation.last_error.message}")
    state["evaluation"] = {k: evaluation.scores.get(k) for k in ("f1", "tp", "fp", "fn")}
    state["scores_text"] = plugin.dock.evaluate_panel.scores_label.text()
    project = QgsProject.instance()
    root = project.layerTreeRoot()
    for layer_id in (state["result_layer_id"], state["labels_layer_id"]):
        node = root.findLayer(layer_id)
        if node is not None:
            node.setItemVisibilityChecked(False)  # the error layers speak for themselves
    step("evaluation finished")
    QTimer.singleShot(1500, evaluation_screenshot)


@guarded
def evaluation_screenshot():
    iface.mainWindow().grab().save(os.environ["TERNAUS_EVAL_SHOT"])
    step("evaluation screenshot saved")
    finish()


QTimer.singleShot(1000, start)
