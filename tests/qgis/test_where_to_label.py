"""Where to label next in headless QGIS against a real backend: the Train tab's *Propose cells
to label* (the image in view, the starting model) and ``ternaus:where_to_label``, on a synthetic
scene extracted by the default model."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRectangle, QgsRuleBasedRenderer, QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from ternaus_qgis import settings

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


def show(iface, layer, extent: QgsRectangle | None = None) -> None:
    canvas = iface.canvas
    canvas.resize(800, 800)
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(extent or layer.extent())
    canvas.refresh()


def propose(plugin, cell_m: float, top: int):
    """Choose the cell size and top, click the button, wait for the task; the result."""
    labelling = plugin.controller.labelling
    panel = plugin.dock.train_panel
    panel.cell_spin.setValue(cell_m)
    panel.top_spin.setValue(top)
    stages = record_texts(panel.propose_label)
    QTest.mouseClick(panel.propose_button, Qt.LeftButton)
    assert labelling.task is not None, labelling.last_error and labelling.last_error.message
    assert not panel.propose_button.isEnabled()
    wait_until(lambda: labelling.task is None, 300.0, "the where-to-label task")
    assert labelling.last is not None, labelling.last_error and labelling.last_error.message
    assert panel.propose_button.isEnabled()
    return labelling.last, stages


def test_train_tab_proposes_ranked_cells_over_the_image_in_view(plugin, iface, synthetic_scene):
    raster = add_raster(synthetic_scene)
    panel = plugin.dock.train_panel
    panel.rgb_combo.setLayer(raster)
    show(iface, raster)
    result, stages = propose(plugin, 50.0, 3)
    summary = result.summary
    assert summary["cells"] == 36 and summary["buildings"] > 5  # 256 m square, 50 m cells
    # progress was shown between the start and the summary (which backend stages a poll
    # catches depends on the machine's load)
    shown = ("Running", "Separating buildings", "Ranking the cells")
    assert stages[0].startswith("Looking where") and "cells of 50 m ranked" in stages[-1]
    assert any(any(words in s for words in shown) for s in stages[1:-1]), stages
    group = QgsProject.instance().layerTreeRoot().findGroup("where to label - scene")
    assert group is not None
    nodes = group.findLayers()
    assert [n.layer().name() for n in nodes] == [
        "cells to label (by rank)",
        "buildings (confidence)",
    ]
    assert nodes[0].isVisible() and not nodes[1].isVisible()
    cells = nodes[0].layer()
    assert cells.featureCount() == 36 and cells.crs() == raster.crs()
    ranked = sorted(cells.getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in ranked] == list(range(1, 37))
    assert [bool(f["top"]) for f in ranked] == [True] * 3 + [False] * 33
    scores = [f["score"] for f in ranked]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    assert [round(f["score"], 5) for f in ranked[:3]] == [c["score"] for c in summary["top"]]
    # styled: top cells highlighted by rule, every cell labelled with its rank
    renderer = cells.renderer()
    assert isinstance(renderer, QgsRuleBasedRenderer)
    rules = renderer.rootRule().children()
    assert [r.filterExpression() for r in rules] == ['"top"', 'NOT "top"']
    assert cells.labelsEnabled() and cells.labeling().settings().fieldName == "rank"
    text = panel.propose_label.text()
    assert "36 cells of 50 m ranked" in text and "Draw labels in the highlighted cells" in text
    # the top cells are selected and, with no training area chosen yet, become it
    assert sorted(f["rank"] for f in cells.selectedFeatures()) == [1, 2, 3]
    assert panel.area_layer() is cells and panel.area_selected_check.isChecked()
    assert "they are the training area" in text
    assert Path(result.path).parent.name == "ternaus_results"
    assert nodes[1].layer().featureCount() == summary["buildings"]
    # proposing again: the training area (the top cells) is labelled already and left out
    again, _ = propose(plugin, 50.0, 3)
    assert again.summary["cells"] == 33 and again.summary["excluded"] == 3
    first_top = {tuple(round(v) for v in c["bounds"]) for c in summary["top"]}
    next_top = {tuple(round(v) for v in c["bounds"]) for c in again.summary["top"]}
    assert not first_top & next_top
    assert "3 in the training area left out" in panel.propose_label.text()
    assert panel.area_layer() is cells  # the training area stays as it was


def test_only_the_part_of_the_image_in_view_is_ranked(plugin, iface, synthetic_scene):
    raster = add_raster(synthetic_scene)
    plugin.dock.train_panel.rgb_combo.setLayer(raster)
    whole = raster.extent()
    view = QgsRectangle(
        whole.xMinimum(), whole.yMaximum() - 100, whole.xMinimum() + 100, whole.yMaximum()
    )
    show(iface, raster, view)
    result, _ = propose(plugin, 50.0, 2)
    visible = iface.canvas.mapSettings().visibleExtent()  # the canvas's aspect may widen it
    cells = QgsVectorLayer(f"{result.path}|layername=cells", "cells", "ogr")
    assert 4 <= cells.featureCount() < 36
    for feature in cells.getFeatures():
        box = feature.geometry().boundingBox()
        assert visible.buffered(1.0).contains(box) and whole.buffered(1.0).contains(box)
    # a view beside the image: refused, saying what to do
    beside = QgsRectangle(
        whole.xMaximum() + 500, whole.yMinimum(), whole.xMaximum() + 600, whole.yMinimum() + 100
    )
    show(iface, raster, beside)
    QTest.mouseClick(plugin.dock.train_panel.propose_button, Qt.LeftButton)
    labelling = plugin.controller.labelling
    assert labelling.task is None and "zoom to the image" in labelling.last_error.message


def test_processing_where_to_label_loads_the_cells_styled(plugin, synthetic_scene, tmp_path):
    import processing

    raster = add_raster(synthetic_scene)
    out = tmp_path / "cells.gpkg"
    outputs = processing.runAndLoadResults(
        "ternaus:where_to_label", {"RGB": raster, "CELL_M": 100.0, "TOP": 2, "OUTPUT": str(out)}
    )
    assert outputs["CELLS"] == 9 and outputs["BUILDINGS"] > 5  # 256 m square, 100 m cells
    assert Path(outputs["OUTPUT"]) == out
    names = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    cells = names["cells to label - scene"]
    assert cells.featureCount() == 9 and cells.labelsEnabled()
    assert isinstance(cells.renderer(), QgsRuleBasedRenderer)
    assert sum(bool(f["top"]) for f in cells.getFeatures()) == 2
