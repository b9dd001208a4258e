"""Run inside the real QGIS desktop (``qgis --code drive_qgis.py``): use the installed plugin as a
user would, save a screenshot and a JSON report, then quit.

Environment: TERNAUS_SCENE (an RGB GeoTIFF), TERNAUS_REPORT (JSON path), TERNAUS_SCREENSHOT (PNG).
Steps: find the plugin's dock, add the scene, choose it in the dock, click Extract, wait for the
result layer, zoom to it, screenshot the main window, quit. Every step is timed.
"""

import json
import os
import time
import traceback

from qgis.core import QgsProject, QgsRasterLayer
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
    controller = plugin.controller
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
    result = controller.last_result
    layers = QgsProject.instance().mapLayersByName(result.request.title)
    state["layer_name"] = result.request.title
    state["features"] = layers[0].featureCount() if layers else 0
    state["layer_crs"] = layers[0].crs().authid() if layers else None
    state["stage_text"] = plugin.dock.stage_label.text()
    QTimer.singleShot(1500, screenshot)


@guarded
def screenshot():
    iface.mainWindow().grab().save(os.environ["TERNAUS_SCREENSHOT"])
    step("screenshot saved")
    finish()


QTimer.singleShot(1000, start)
