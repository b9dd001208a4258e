"""The dock's "Map check" and "Changes" tabs driven as a user would (layers chosen, Run clicked,
the task awaited) against a real backend, on layers whose differences are known: Kampala's real
buildings edited by rules (tests/evaluation/edited_layers.py), and a synthetic scene extracted
twice for a date given as an image."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from ternaus_qgis import settings
from ternaus_qgis.core.comparison import STAGE_TEXT
from tests.evaluation.edited_layers import map_and_result, second_date

from .conftest import add_raster, record_texts, wait_until


@pytest.fixture
def plugin(iface, project, backend_command):
    from ternaus_qgis.plugin import TernausPlugin

    settings.set("backend/mode", "local")
    settings.set("output/folder", "")
    instance = TernausPlugin(iface)
    instance.initGui()
    yield instance
    instance.unload()


def vector(path, name: str) -> QgsVectorLayer:
    layer = QgsVectorLayer(str(path), name, "ogr")
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


def comparison_of(plugin, kind: str):
    """The controller of the Map check (``"compare"``) or Changes (``"changes"``) tab."""
    return plugin.controller.map_check if kind == "compare" else plugin.controller.changes


def run_tab(plugin, kind: str, timeout_s: float = 300.0):
    """Click the tab's Run button, record the stages shown, wait for the task; the outcome."""
    comparison = comparison_of(plugin, kind)
    panel = comparison.panel
    stages = record_texts(panel.stage_label)
    QTest.mouseClick(panel.run_button, Qt.LeftButton)
    assert comparison.task is not None, comparison.last_error
    assert not panel.run_button.isEnabled() and panel.cancel_button.isEnabled()
    wait_until(lambda: comparison.task is None, timeout_s, f"the {kind} task")
    outcome = comparison.last
    assert outcome is not None, comparison.last_error and comparison.last_error.message
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    return outcome, stages


def group_layers(name: str) -> dict[str, QgsVectorLayer]:
    group = QgsProject.instance().layerTreeRoot().findGroup(name)
    assert group is not None, name
    return {node.layer().name(): node.layer() for node in group.findLayers()}


def test_map_check_tab_finds_the_gaps_and_the_offset(plugin, tmp_path):
    case = map_and_result(tmp_path)
    result = vector(case.result, "result")
    osm = vector(case.reference, "osm")
    panel = plugin.dock.map_check_panel
    panel.result_combo.setLayer(result)
    panel.map_combo.setLayer(osm)
    outcome, stages = run_tab(plugin, "compare")
    summary = outcome.comparison.summary
    assert (summary["unmapped"], summary["unseen"], summary["matched"]) == (5, 10, 196)
    layers = group_layers("map check - osm vs result")
    assert list(layers) == [
        "seen, not on the map (by rank)",
        "on the map, not seen",
        "map offset (dx, dy)",
    ]
    unmapped = layers["seen, not on the map (by rank)"]
    assert unmapped.featureCount() == 5 and unmapped.labelsEnabled()
    ranked = sorted(unmapped.getFeatures(), key=lambda f: f["rank"])
    assert [f["id"] for f in ranked] == case.added_ids  # by confidence
    assert layers["on the map, not seen"].featureCount() == 10
    offsets = layers["map offset (dx, dy)"]
    assert offsets.featureCount() >= 3
    assert offsets.renderer().symbol().symbolLayerCount() == 3  # the arrow style
    text = panel.summary_label.text()
    assert "<b>5</b> seen, not on the map" in text and "<b>10</b> on the map, not seen" in text
    assert "+2.0" in text and "+1.0" in text and "196 pairs" in text  # 2 m east, 1 m north
    # progress between the start and the end: every stage reported is shown; which backend
    # stage a poll catches depends on the machine's load (a 2 s job may be polled only while
    # "running")
    assert stages[0] == "Starting…" and stages[-1].startswith("Done in"), stages
    polled = set(stages[1:-1]) - {"Done", "Connecting to the backend"}
    assert polled and polled <= {"Running", "Waiting for the backend", STAGE_TEXT["compare"]}
    assert panel.progress_bar.value() == 100
    assert Path(outcome.comparison.path).parent.name == "ternaus_results"


def small_image(path: Path, around, margin_m: float = 30.0) -> Path:
    """A 3-band GeoTIFF in UTM 36N covering ``around`` (a QgsRectangle) and ``margin_m``."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    x0, y1 = around.xMinimum() - margin_m, around.yMaximum() + margin_m
    width = int((around.width() + 2 * margin_m) / 0.5)
    height = int((around.height() + 2 * margin_m) / 0.5)
    profile = dict(
        driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs="EPSG:32636"
    )
    with rasterio.open(path, "w", transform=from_origin(x0, y1, 0.5, 0.5), **profile) as dst:
        dst.write(np.full((3, height, width), 120, dtype="uint8"))
    return path


def test_map_check_of_an_extraction_counts_only_inside_its_image(plugin, tmp_path):
    """A result made by the dock from an image: the map beyond that image was not looked at, so
    its buildings there are not 'not seen' (the image: 30 m around the first added building)."""
    from ternaus_qgis.core.result_layers import PROP_SOURCE

    case = map_and_result(tmp_path)
    result = vector(case.result, "result")
    (first,) = [f for f in result.getFeatures() if f["id"] == case.added_ids[0]]
    image = add_raster(small_image(tmp_path / "image.tif", first.geometry().boundingBox()), "img")
    result.setCustomProperty(PROP_SOURCE, image.id())
    panel = plugin.dock.map_check_panel
    panel.result_combo.setLayer(result)
    panel.map_combo.setLayer(vector(case.reference, "osm"))
    outcome, _stages = run_tab(plugin, "compare")
    summary = outcome.comparison.summary
    assert summary["unmapped"] == 1 and summary["matched"] < 196 and summary["unseen"] < 10
    assert "Inside the extent of 'img'" in panel.summary_label.text()


def test_changes_tab_between_two_building_layers(plugin, tmp_path):
    case = second_date(tmp_path)
    before = vector(case.before, "2019")
    after = vector(case.after, "2024")
    panel = plugin.dock.changes_panel
    panel.before_combo.setLayer(before)
    panel.after_combo.setLayer(after)
    assert not panel.note_label.isVisibleTo(panel)  # no image: nothing is extracted
    outcome, _stages = run_tab(plugin, "changes")
    summary = outcome.comparison.summary
    counts = [summary[k] for k in ("new", "demolished", "changed", "unchanged")]
    assert counts == [6, 8, 4, 194]
    assert outcome.extracted == {}
    layers = group_layers("changes - 2019 to 2024")
    assert list(layers) == ["new buildings", "demolished buildings", "changed buildings"]
    assert layers["new buildings"].featureCount() == 6
    assert layers["demolished buildings"].featureCount() == 8
    changed = layers["changed buildings"]
    assert sorted(f["id"] for f in changed.getFeatures()) == sorted(case.enlarged_ids)
    assert changed.labelsEnabled()
    assert "<b>6</b> new" in panel.summary_label.text()
    assert "194 unchanged" in panel.summary_label.text()


def test_changes_tab_extracts_an_image_first(plugin, synthetic_scene):
    """Before: the scene's true buildings; after: the scene's image, extracted first (the
    default model) over the part both cover. Every true building is reported once (demolished,
    changed or unchanged); every extracted one inside once (new, changed or unchanged)."""
    labels = vector(synthetic_scene.parent / "scene_labels.geojson", "surveyed")
    image = add_raster(synthetic_scene, "image 2024")
    panel = plugin.dock.changes_panel
    panel.before_combo.setLayer(labels)
    panel.after_combo.setLayer(image)
    assert panel.note_label.isVisibleTo(panel) and "after image" in panel.note_label.text()
    outcome, stages = run_tab(plugin, "changes")
    assert set(outcome.extracted) == {"after"}
    extracted = outcome.extracted["after"]
    assert extracted.count > 5
    assert any(s.startswith("Later image: ") for s in stages), stages
    s = outcome.comparison.summary
    assert s["demolished"] + s["changed"] + s["unchanged"] == labels.featureCount()
    assert 0 < s["new"] + s["changed"] + s["unchanged"] <= extracted.count
    assert s["unchanged"] + s["changed"] > labels.featureCount() // 2  # the model sees most
    assert "Inside the part both dates cover" in panel.summary_label.text()
    layers = group_layers("changes - surveyed to image 2024")
    assert layers["new buildings"].featureCount() == s["new"]
    assert layers["demolished buildings"].featureCount() == s["demolished"]
    buildings = layers[extracted.request.title]  # the extraction, hidden under the changes
    assert buildings.featureCount() == extracted.count
    root = QgsProject.instance().layerTreeRoot()
    assert not root.findLayer(buildings.id()).itemVisibilityChecked()


def test_changes_tab_with_two_images_of_the_same_date_finds_no_change(plugin, synthetic_scene):
    image = add_raster(synthetic_scene, "image A")
    again = add_raster(synthetic_scene, "image B")
    panel = plugin.dock.changes_panel
    panel.before_combo.setLayer(image)
    panel.after_combo.setLayer(again)
    outcome, stages = run_tab(plugin, "changes")
    assert set(outcome.extracted) == {"before", "after"}
    counts = {side: result.count for side, result in outcome.extracted.items()}
    assert counts["before"] == counts["after"] > 5
    s = outcome.comparison.summary
    assert (s["new"], s["demolished"], s["changed"]) == (0, 0, 0)
    assert s["unchanged"] == counts["before"]
    assert any(x.startswith("Earlier image: ") for x in stages), stages
    layers = group_layers("changes - image A to image B")
    assert len(layers) == 5  # new, demolished, changed + the two extractions


def test_comparison_tabs_refuse_the_same_layer_twice(plugin, tmp_path):
    case = second_date(tmp_path)
    before = vector(case.before, "before")
    changes = plugin.controller.changes
    panel = plugin.dock.changes_panel
    panel.before_combo.setLayer(before)
    panel.after_combo.setLayer(before)
    QTest.mouseClick(panel.run_button, Qt.LeftButton)
    assert changes.task is None
    assert "same layer" in changes.last_error.message
    assert "same layer" in panel.stage_label.text()
    check = plugin.dock.map_check_panel
    check.result_combo.setLayer(before)
    check.map_combo.setLayer(before)
    QTest.mouseClick(check.run_button, Qt.LeftButton)
    assert plugin.controller.map_check.task is None and "same layer" in check.stage_label.text()


def test_map_check_can_be_cancelled(plugin, tmp_path):
    case = map_and_result(tmp_path)
    panel = plugin.dock.map_check_panel
    panel.result_combo.setLayer(vector(case.result, "result"))
    panel.map_combo.setLayer(vector(case.reference, "osm"))
    comparison = plugin.controller.map_check
    QTest.mouseClick(panel.run_button, Qt.LeftButton)
    QTest.mouseClick(panel.cancel_button, Qt.LeftButton)
    wait_until(lambda: comparison.task is None, 120, "the cancel")
    assert comparison.last is None
    assert "ancel" in comparison.last_error.message
    assert panel.run_button.isEnabled()
    assert QgsProject.instance().layerTreeRoot().findGroup("map check - osm vs result") is None


def test_changes_of_images_can_be_cancelled_during_the_extraction(plugin, synthetic_scene):
    panel = plugin.dock.changes_panel
    panel.before_combo.setLayer(add_raster(synthetic_scene, "image A"))
    panel.after_combo.setLayer(add_raster(synthetic_scene, "image B"))
    comparison = plugin.controller.changes
    QTest.mouseClick(panel.run_button, Qt.LeftButton)
    wait_until(
        lambda: panel.stage_label.text().startswith("Earlier image: "), 120, "the extraction"
    )
    QTest.mouseClick(panel.cancel_button, Qt.LeftButton)
    wait_until(lambda: comparison.task is None, 120, "the cancel")
    assert comparison.last is None
    assert "ancel" in comparison.last_error.message
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    root = QgsProject.instance().layerTreeRoot()
    assert root.findGroup("changes - image A to image B") is None
