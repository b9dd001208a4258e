"""Run inside the real QGIS desktop (``qgis --code drive_comparison.py``): the Map check and
Changes tabs used as a user would, on real imagery and a real map; two screenshots and a JSON
report, then quit.

Environment: TERNAUS_IMAGE (an RGB GeoTIFF), TERNAUS_MAP (the map's buildings of that place),
TERNAUS_ZOOM (optional: "xmin,ymin,xmax,ymax" in WGS 84, the part of the map shown),
TERNAUS_REPORT (JSON path), TERNAUS_MAP_CHECK_SHOT, TERNAUS_CHANGES_SHOT and (optional)
TERNAUS_WHERE_TO_LABEL_SHOT (PNG paths).
Steps: extract the image's buildings (Extract tab); Map check: those buildings against the map
(screenshot of the unmapped, unseen and offset layers over the image); Changes: the map as the
earlier date, the image as the later one (its buildings extracted again inside the job), the
new, demolished and changed buildings over the image (screenshot); where to label (with the
third path): the Train tab proposes 40 m cells over the image in view (screenshot of the ranked
cells and the model's buildings by confidence over the image). Every step is timed.
"""

import json
import os
import time
import traceback

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtTest import QTest
from qgis.utils import iface, plugins

REPORT = os.environ["TERNAUS_REPORT"]
state = {"steps": [], "t0": time.monotonic(), "error": None}
TIMEOUT_S = 900


def step(name):
    state["steps"].append({"step": name, "at_s": round(time.monotonic() - state["t0"], 2)})


def finish():
    with open(REPORT, "w") as handle:
        json.dump(state, handle, indent=1, default=str)
    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().setDirty(False)
    iface.actionExit().trigger()


def guarded(function):
    def run():
        try:
            if time.monotonic() - state["t0"] > TIMEOUT_S:
                raise RuntimeError(f"not done after {TIMEOUT_S} s")
            function()
        except Exception:  # report, then quit: never leave the desktop hanging
            state["error"] = traceback.format_exc()
            finish()

    return run


def plugin():
    return plugins["ternaus_qgis"]


def set_visible(layer_or_group, visible):
    root = QgsProject.instance().layerTreeRoot()
    node = layer_or_group if not hasattr(layer_or_group, "id") else root.findLayer(layer_or_group)
    if node is not None:
        node.setItemVisibilityChecked(visible)


def tidy_layer_tree(prefix):
    """The newest group (named ``prefix`` ...) expanded, every other node folded."""
    root = QgsProject.instance().layerTreeRoot()
    for node in root.children():
        node.setExpanded(node.name().startswith(prefix))
    view = iface.layerTreeView()
    for group in root.findGroups():
        if group.name().startswith(prefix):
            for child in group.children():
                child.setExpanded(False)
            index = view.layerTreeModel().node2index(group)
            if hasattr(view, "proxyModel"):  # QGIS 3.18+: the view shows a proxy
                index = view.proxyModel().mapFromSource(index)
            view.setExpanded(index, True)


def zoom():
    """The canvas in the image's CRS, on TERNAUS_ZOOM (else the whole image)."""
    project = QgsProject.instance()
    image = project.mapLayer(state["image_id"])
    canvas = iface.mapCanvas()
    project.setCrs(image.crs())
    canvas.setDestinationCrs(image.crs())
    extent = image.extent()
    if os.environ.get("TERNAUS_ZOOM"):
        box = QgsRectangle(*map(float, os.environ["TERNAUS_ZOOM"].split(",")))
        wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
        extent = QgsCoordinateTransform(wgs84, image.crs(), project).transformBoundingBox(box)
    canvas.setExtent(extent)
    canvas.refresh()


@guarded
def start():
    iface.mainWindow().resize(1600, 1000)
    if plugins.get("ternaus_qgis") is None:
        raise RuntimeError(f"the plugin is not loaded: {sorted(plugins)}")
    step("plugin loaded")
    project = QgsProject.instance()
    image = QgsRasterLayer(os.environ["TERNAUS_IMAGE"], "imagery 2024 (OpenAerialMap)")
    osm = QgsVectorLayer(os.environ["TERNAUS_MAP"], "map (OpenStreetMap)", "ogr")
    if not (image.isValid() and osm.isValid()):
        raise RuntimeError("the image or the map cannot be read")
    project.addMapLayer(image)
    project.addMapLayer(osm)
    state["image_id"], state["map_id"] = image.id(), osm.id()
    zoom()
    plugin().dock.rgb_combo.setLayer(image)
    QTimer.singleShot(200, wait_backend)


@guarded
def wait_backend():
    text = plugin().dock.backend_label.text()
    if text.startswith("ready"):
        state["backend"] = text
        step("backend ready")
        QTest.mouseClick(plugin().dock.extract_button, Qt.LeftButton)
        step("extract clicked")
        QTimer.singleShot(300, wait_extraction)
    elif text.startswith(("not available", "not installed")):
        raise RuntimeError(f"backend: {text}")
    else:
        QTimer.singleShot(200, wait_backend)


@guarded
def wait_extraction():
    controller = plugin().controller.extraction
    if controller.task is not None:
        QTimer.singleShot(300, wait_extraction)
        return
    if controller.last is None:
        raise RuntimeError(f"extraction: {controller.last_error.message}")
    step("extraction finished")
    result = controller.last
    layer = QgsProject.instance().mapLayersByName(result.request.title)[0]
    state["extracted"] = layer.featureCount()
    state["result_id"] = layer.id()
    dock = plugin().dock
    panel = dock.map_check_panel
    dock.tabs.setCurrentWidget(panel)
    project = QgsProject.instance()
    panel.result_combo.setLayer(layer)
    panel.map_combo.setLayer(project.mapLayer(state["map_id"]))
    QTimer.singleShot(300, lambda: click(panel.run_button, "map check clicked", wait_map_check))


def click(button, name, then):
    QTest.mouseClick(button, Qt.LeftButton)
    step(name)
    QTimer.singleShot(300, then)


@guarded
def wait_map_check():
    comparison = plugin().controller.map_check
    if comparison.task is not None:
        QTimer.singleShot(300, wait_map_check)
        return
    outcome = comparison.last
    if outcome is None:
        raise RuntimeError(f"map check: {comparison.last_error.message}")
    step("map check finished")
    state["map_check"] = outcome.comparison.summary
    state["map_check_text"] = plugin().dock.map_check_panel.summary_label.text()
    for layer_id in (state["result_id"], state["map_id"]):
        set_visible(QgsProject.instance().mapLayer(layer_id), False)
    tidy_layer_tree("map check")
    zoom()
    QTimer.singleShot(2000, map_check_screenshot)


@guarded
def map_check_screenshot():
    iface.mainWindow().grab().save(os.environ["TERNAUS_MAP_CHECK_SHOT"])
    step("map check screenshot saved")
    root = QgsProject.instance().layerTreeRoot()
    for group in root.findGroups():
        if group.name().startswith("map check"):
            group.setItemVisibilityChecked(False)
            group.setExpanded(False)
    dock = plugin().dock
    panel = dock.changes_panel
    dock.tabs.setCurrentWidget(panel)
    project = QgsProject.instance()
    panel.before_combo.setLayer(project.mapLayer(state["map_id"]))
    panel.after_combo.setLayer(project.mapLayer(state["image_id"]))
    state["changes_note"] = panel.note_label.text()
    QTimer.singleShot(300, lambda: click(panel.run_button, "changes clicked", wait_changes))


@guarded
def wait_changes():
    comparison = plugin().controller.changes
    if comparison.task is not None:
        stages = state.setdefault("changes_stages", [])
        text = plugin().dock.changes_panel.stage_label.text()
        if text and (not stages or stages[-1] != text):
            stages.append(text)
        QTimer.singleShot(300, wait_changes)
        return
    outcome = comparison.last
    if outcome is None:
        raise RuntimeError(f"changes: {comparison.last_error.message}")
    step("changes finished")
    state["changes"] = outcome.comparison.summary
    state["changes_extracted"] = {k: v.count for k, v in outcome.extracted.items()}
    state["changes_text"] = plugin().dock.changes_panel.summary_label.text()
    tidy_layer_tree("changes")
    zoom()
    QTimer.singleShot(2000, changes_screenshot)


@guarded
def changes_screenshot():
    iface.mainWindow().grab().save(os.environ["TERNAUS_CHANGES_SHOT"])
    step("changes screenshot saved")
    if not os.environ.get("TERNAUS_WHERE_TO_LABEL_SHOT"):
        finish()
        return
    root = QgsProject.instance().layerTreeRoot()
    for group in root.findGroups():
        if group.name().startswith("changes"):
            group.setItemVisibilityChecked(False)
            group.setExpanded(False)
    dock = plugin().dock
    panel = dock.train_panel
    dock.tabs.setCurrentWidget(panel)
    panel.rgb_combo.setLayer(QgsProject.instance().mapLayer(state["image_id"]))
    panel.cell_spin.setValue(40.0)
    panel.top_spin.setValue(3)
    QTimer.singleShot(
        300, lambda: click(panel.propose_button, "propose cells clicked", wait_where_to_label)
    )


@guarded
def wait_where_to_label():
    labelling = plugin().controller.labelling
    if labelling.task is not None:
        QTimer.singleShot(300, wait_where_to_label)
        return
    if labelling.last is None:
        raise RuntimeError(f"where to label: {labelling.last_error.message}")
    step("where to label finished")
    state["where_to_label"] = labelling.last.summary
    state["where_to_label_text"] = plugin().dock.train_panel.propose_label.text()
    state["where_to_label_area"] = plugin().dock.train_panel.area_selected_check.isChecked()
    for layer in labelling.layers:  # the ranked cells and the model's buildings (confidence)
        set_visible(layer, True)
    tidy_layer_tree("where to label")
    zoom()
    QTimer.singleShot(2000, where_to_label_screenshot)


@guarded
def where_to_label_screenshot():
    iface.mainWindow().grab().save(os.environ["TERNAUS_WHERE_TO_LABEL_SHOT"])
    step("where to label screenshot saved")
    finish()


QTimer.singleShot(1000, start)
