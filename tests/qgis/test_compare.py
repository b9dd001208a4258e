"""``ternaus:compare_with_map`` and ``ternaus:detect_changes`` in headless QGIS against a real
backend, on Kampala's real buildings edited by known rules (tests/evaluation/edited_layers.py
says how: the "result" is the map moved 2.0 m east and 1.0 m north with 10 buildings deleted and 5
added; the later date has 8 removed, 6 added and 4 enlarged by 40 % in width and length)."""

from __future__ import annotations

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer

from ternaus_qgis import settings
from tests.evaluation.edited_layers import map_and_result, second_date


@pytest.fixture
def plugin(iface, project, backend_command):
    from ternaus_qgis.plugin import TernausPlugin

    settings.set("backend/mode", "local")
    instance = TernausPlugin(iface)
    instance.initGui()
    yield instance
    instance.unload()


def vector(path, name: str) -> QgsVectorLayer:
    layer = QgsVectorLayer(str(path), name, "ogr")
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


def gpkg_layer(path, name: str) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"{path}|layername={name}", name, "ogr")
    assert layer.isValid(), (path, name)
    return layer


def test_processing_compare_with_map(qgis_app, plugin, tmp_path):
    import processing

    case = map_and_result(tmp_path)
    result = vector(case.result, "result")
    osm = vector(case.reference, "osm buildings")
    assert QgsApplication.processingRegistry().algorithmById("ternaus:compare_with_map")
    outputs = processing.run(
        "ternaus:compare_with_map",
        {
            "PREDICTED": result,
            "REFERENCE": osm,
            "IOU": 0.3,
            "OUTPUT": str(tmp_path / "gaps.gpkg"),
        },
    )
    assert (outputs["UNMAPPED"], outputs["UNSEEN"], outputs["MATCHED"]) == (5, 10, 196)
    assert outputs["DX_M"] == pytest.approx(2.0, abs=0.2)
    assert outputs["DY_M"] == pytest.approx(1.0, abs=0.2)
    assert outputs["PAIRS"] == 196
    unmapped = gpkg_layer(outputs["OUTPUT"], "unmapped")
    features = sorted(unmapped.getFeatures(), key=lambda f: f["rank"])
    assert [f["id"] for f in features] == case.added_ids
    unseen = gpkg_layer(outputs["OUTPUT"], "unseen")
    assert sorted(f["id"] for f in unseen.getFeatures()) == sorted(case.removed_ids)
    offsets = gpkg_layer(outputs["OUTPUT"], "offsets")
    assert offsets.featureCount() >= 3
    assert {f["scope"] for f in offsets.getFeatures()} == {"overall", "cell"}


def test_processing_compare_inside_an_area(qgis_app, plugin, tmp_path):
    """The area: a selection-free polygon layer around the first added building only."""
    import processing

    case = map_and_result(tmp_path)
    result = vector(case.result, "result")
    osm = vector(case.reference, "osm buildings")
    (first_added,) = [f for f in result.getFeatures() if f["id"] == case.added_ids[0]]
    area = QgsVectorLayer(f"Polygon?crs={result.crs().authid()}", "area", "memory")
    from qgis.core import QgsFeature

    feature = QgsFeature()
    feature.setGeometry(first_added.geometry().buffer(30, 4))
    area.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(area)
    outputs = processing.run(
        "ternaus:compare_with_map",
        {"PREDICTED": result, "REFERENCE": osm, "AREA": area, "OUTPUT": str(tmp_path / "a.gpkg")},
    )
    assert outputs["UNMAPPED"] == 1 and outputs["MATCHED"] < 196


def test_processing_detect_changes(qgis_app, plugin, tmp_path):
    import processing

    case = second_date(tmp_path)
    before = vector(case.before, "2019")
    after = vector(case.after, "2024")
    assert QgsApplication.processingRegistry().algorithmById("ternaus:detect_changes")
    outputs = processing.run(
        "ternaus:detect_changes",
        {"BEFORE": before, "AFTER": after, "IOU": 0.7, "OUTPUT": str(tmp_path / "changes.gpkg")},
    )
    counts = [outputs[k] for k in ("NEW", "DEMOLISHED", "CHANGED", "UNCHANGED")]
    assert counts == [6, 8, 4, 194]
    changed = gpkg_layer(outputs["OUTPUT"], "changed")
    assert sorted(f["id"] for f in changed.getFeatures()) == sorted(case.enlarged_ids)
    assert gpkg_layer(outputs["OUTPUT"], "new").featureCount() == 6
    assert gpkg_layer(outputs["OUTPUT"], "demolished").featureCount() == 8


def test_processing_detect_changes_refuses_thresholds_in_the_wrong_order(
    qgis_app, plugin, tmp_path
):
    import processing
    from qgis.core import QgsProcessingException

    case = second_date(tmp_path)
    before = vector(case.before, "before")
    after = vector(case.after, "after")
    with pytest.raises(QgsProcessingException, match="must not be below"):
        processing.run(
            "ternaus:detect_changes",
            {
                "BEFORE": before,
                "AFTER": after,
                "IOU": 0.3,
                "MATCH_IOU": 0.5,
                "OUTPUT": str(tmp_path / "c.gpkg"),
            },
        )


def test_processing_loads_the_layers_styled(qgis_app, plugin, tmp_path):
    """As the Processing dialog does (runAndLoadResults): the three layers of each algorithm
    are added to the project with the plugin's styles."""
    import processing

    (tmp_path / "map").mkdir()
    (tmp_path / "dates").mkdir()
    case = map_and_result(tmp_path / "map")
    dates = second_date(tmp_path / "dates")
    processing.runAndLoadResults(
        "ternaus:compare_with_map",
        {
            "PREDICTED": vector(case.result, "result"),
            "REFERENCE": vector(case.reference, "osm"),
            "OUTPUT": str(tmp_path / "gaps.gpkg"),
        },
    )
    processing.runAndLoadResults(
        "ternaus:detect_changes",
        {
            "BEFORE": vector(dates.before, "before"),
            "AFTER": vector(dates.after, "after"),
            "OUTPUT": str(tmp_path / "changes.gpkg"),
        },
    )
    project = QgsProject.instance()
    names = {layer.name(): layer for layer in project.mapLayers().values()}
    unmapped = names["seen, not on the map (by rank) - result"]
    assert unmapped.featureCount() == 5 and unmapped.labelsEnabled()
    offsets = names["map offset (dx, dy) - result"]
    assert offsets.renderer().symbol().symbolLayerCount() == 3  # line, arrow head, start dot
    assert names["on the map, not seen - result"].featureCount() == 10
    assert names["new buildings - after"].featureCount() == 6
    assert names["demolished buildings - after"].featureCount() == 8
    changed = names["changed buildings - after"]
    assert changed.featureCount() == 4 and changed.labelsEnabled()


def test_processing_detect_changes_extracts_an_image_first(qgis_app, plugin, synthetic_scene):
    """Before: the scene's image (extracted first with the default model); after: its true
    buildings. Counted inside the part both cover: every true building once (new, changed or
    unchanged), every extracted one once (demolished, changed or unchanged)."""
    import processing

    image = QgsRasterLayer(str(synthetic_scene), "image 2019")
    assert image.isValid()
    QgsProject.instance().addMapLayer(image)
    labels = vector(synthetic_scene.parent / "scene_labels.geojson", "surveyed 2024")
    out = synthetic_scene.parent / "changes_of_image.gpkg"
    outputs = processing.run(
        "ternaus:detect_changes", {"BEFORE": image, "AFTER": labels, "OUTPUT": str(out)}
    )
    new, demolished, changed, unchanged = (
        outputs[k] for k in ("NEW", "DEMOLISHED", "CHANGED", "UNCHANGED")
    )
    assert new + changed + unchanged == labels.featureCount()
    assert unchanged + changed > labels.featureCount() // 2  # the model sees most of them
    assert demolished < labels.featureCount() // 2
    assert gpkg_layer(outputs["OUTPUT"], "new").featureCount() == new


def test_processing_detect_changes_refuses_the_same_layer_twice(qgis_app, plugin, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    case = second_date(tmp_path)
    before = vector(case.before, "before")
    with pytest.raises(QgsProcessingException, match="same layer"):
        processing.run(
            "ternaus:detect_changes",
            {"BEFORE": before, "AFTER": before, "OUTPUT": str(tmp_path / "c.gpkg")},
        )
