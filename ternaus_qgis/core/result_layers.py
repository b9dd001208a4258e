"""Result GeoPackages as styled, editable layers of the project (GUI thread only).

Results are kept next to the project file (``<project folder>/ternaus_results/``), or in the
folder set in the plugin settings, or, for a project never saved, in ``~/ternaus_results``: never
a temporary folder that vanishes. A layer remembers the raster layer and model it came from, so a
second run on the same layer can replace it.
"""

from __future__ import annotations

import re
from pathlib import Path

from qgis.core import (
    QgsGeometry,
    QgsMapLayer,
    QgsProject,
    QgsVectorLayer,
)

from .. import settings

_PLUGIN_DIR = Path(__file__).resolve().parent.parent
#: The packaged plugin carries ``styles/``; run from a checkout, the styles are in ``resources/``.
STYLE_DIRS = (_PLUGIN_DIR / "styles", _PLUGIN_DIR.parent / "resources" / "styles")


def style_file(name: str) -> Path | None:
    """The QML file ``name`` from the plugin's styles, or None when it is missing."""
    for folder in STYLE_DIRS:
        if (folder / name).is_file():
            return folder / name
    return None


PROP_SOURCE = "ternaus/source_layer"
PROP_MODEL = "ternaus/model"
RESULTS_SUBFOLDER = "ternaus_results"


def results_folder(project: QgsProject | None = None) -> Path:
    """Where result GeoPackages are written (see the module docstring)."""
    chosen = settings.get("output/folder")
    if chosen:
        return Path(chosen).expanduser()
    project = project or QgsProject.instance()
    home = project.absolutePath()
    if home:
        return Path(home) / RESULTS_SUBFOLDER
    return Path.home() / RESULTS_SUBFOLDER


def layer_title(raster_name: str, model_name: str) -> str:
    """The layer name of a result: ``"buildings - <raster> - <model>"``."""
    return f"buildings - {raster_name} - {model_name}"


def output_path(folder: Path, raster_name: str, model_name: str, replace: bool) -> Path:
    """A GeoPackage path for a new result: the plain name, or (adding) the first free ``_N``."""
    stem = re.sub(r"[^\w.-]+", "_", f"{raster_name}_{model_name}_buildings").strip("_")
    path = folder / f"{stem}.gpkg"
    if replace:
        return path
    n = 2
    while path.exists() or _used_by_layer(path):
        path = folder / f"{stem}_{n}.gpkg"
        n += 1
    return path


def _used_by_layer(path: Path) -> bool:
    for layer in QgsProject.instance().mapLayers().values():
        if layer.source().split("|")[0] == str(path):
            return True
    return False


def previous_results(source_layer_id: str, model_name: str) -> list[QgsMapLayer]:
    """Result layers of the project made from this raster layer with this model."""
    return [
        layer
        for layer in QgsProject.instance().mapLayers().values()
        if layer.customProperty(PROP_SOURCE) == source_layer_id
        and layer.customProperty(PROP_MODEL) == model_name
    ]


def remove_layers(layers: list[QgsMapLayer]) -> None:
    QgsProject.instance().removeMapLayers([layer.id() for layer in layers])


def add_result_layer(
    path: Path,
    layer_name: str,
    title: str,
    source_layer_id: str,
    model_name: str,
    aoi: QgsGeometry | None = None,
) -> QgsVectorLayer:
    """Open the result as an editable layer, styled (outline, confidence), added to the project.

    With ``aoi`` (in the layer's CRS), buildings that do not touch it are deleted from the file.
    """
    layer = QgsVectorLayer(f"{path}|layername={layer_name}", title, "ogr")
    if not layer.isValid():
        raise RuntimeError(f"the result {path} could not be opened")
    if aoi is not None and not aoi.isEmpty():
        outside = [f.id() for f in layer.getFeatures() if not f.geometry().intersects(aoi)]
        if outside:
            layer.dataProvider().deleteFeatures(outside)
            layer.updateExtents()
    style = style_file("buildings.qml")
    if style is not None:
        layer.loadNamedStyle(str(style))
    layer.setCustomProperty(PROP_SOURCE, source_layer_id)
    layer.setCustomProperty(PROP_MODEL, model_name)
    QgsProject.instance().addMapLayer(layer)
    return layer


def add_evaluation_layers(path: Path, result_name: str) -> list[QgsVectorLayer]:
    """The error layers of an evaluation (``result`` by match, ``missed``), styled, in a group."""
    root = QgsProject.instance().layerTreeRoot()
    group = root.insertGroup(0, f"evaluation - {result_name}")
    layers = []
    for layer_name, title, style in (
        ("result", f"{result_name} (true / false positives)", "evaluation_result.qml"),
        ("missed", "missed reference buildings", "evaluation_missed.qml"),
    ):
        layer = QgsVectorLayer(f"{path}|layername={layer_name}", title, "ogr")
        if not layer.isValid():
            raise RuntimeError(f"the evaluation layers in {path} could not be opened")
        qml = style_file(style)
        if qml is not None:
            layer.loadNamedStyle(str(qml))
        QgsProject.instance().addMapLayer(layer, False)
        group.addLayer(layer)
        layers.append(layer)
    return layers


#: Layers of a ``compare``/``changes`` GeoPackage: (layer name, title, style) per kind.
COMPARISON_LAYERS = {
    "compare": (
        ("unmapped", "seen, not on the map (by rank)", "map_unmapped.qml"),
        ("unseen", "on the map, not seen", "map_unseen.qml"),
        ("offsets", "map offset (dx, dy)", "map_offsets.qml"),
    ),
    "changes": (
        ("new", "new buildings", "changes_new.qml"),
        ("demolished", "demolished buildings", "changes_demolished.qml"),
        ("changed", "changed buildings", "changes_changed.qml"),
    ),
}


def free_path(folder: Path, stem: str) -> Path:
    """``folder/<stem>.gpkg``, or the first free ``<stem>_N.gpkg`` (earlier results are kept)."""
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("_")
    path = folder / f"{stem}.gpkg"
    n = 2
    while path.exists() or _used_by_layer(path):
        path = folder / f"{stem}_{n}.gpkg"
        n += 1
    return path


def add_comparison_layers(
    path: Path, kind: str, group_name: str, extracted: list[tuple[Path, str, str]] = ()
) -> list[QgsVectorLayer]:
    """The layers of a ``compare``/``changes`` GeoPackage, styled, in a new group on top;
    ``extracted``: building layers made on the way (path, layer name, title), added to the
    group below them, hidden. Returns the comparison layers (in :data:`COMPARISON_LAYERS`
    order), then the extracted ones."""
    project = QgsProject.instance()
    group = project.layerTreeRoot().insertGroup(0, group_name)
    layers = []
    for layer_name, title, style in COMPARISON_LAYERS[kind]:
        layer = QgsVectorLayer(f"{path}|layername={layer_name}", title, "ogr")
        if not layer.isValid():
            raise RuntimeError(f"the layer {layer_name} of {path} could not be opened")
        qml = style_file(style)
        if qml is not None:
            layer.loadNamedStyle(str(qml))
        project.addMapLayer(layer, False)
        group.addLayer(layer)
        layers.append(layer)
    for source, layer_name, title in extracted:
        layer = QgsVectorLayer(f"{source}|layername={layer_name}", title, "ogr")
        if not layer.isValid():
            raise RuntimeError(f"the buildings {source} could not be opened")
        qml = style_file("buildings.qml")
        if qml is not None:
            layer.loadNamedStyle(str(qml))
        project.addMapLayer(layer, False)
        group.addLayer(layer).setItemVisibilityChecked(False)
        layers.append(layer)
    return layers


#: Colours of the cells to label: the top cells' fill and outline, the other cells' outline.
TOP_FILL, TOP_OUTLINE, OTHER_OUTLINE = "255,140,0,70", "230,90,0,255", "110,110,110,220"


def style_label_cells(layer: QgsVectorLayer) -> None:
    """The cells of ``where_to_label``: the top cells filled orange with a thick outline, the
    others a thin dashed grey outline; every cell labelled with its rank (1: label it first)."""
    from qgis.core import (
        QgsFillSymbol,
        QgsPalLayerSettings,
        QgsRuleBasedRenderer,
        QgsTextBufferSettings,
        QgsTextFormat,
        QgsVectorLayerSimpleLabeling,
    )
    from qgis.PyQt.QtGui import QColor, QFont

    top = QgsFillSymbol.createSimple(
        {"color": TOP_FILL, "outline_color": TOP_OUTLINE, "outline_width": "0.9"}
    )
    other = QgsFillSymbol.createSimple(
        {
            "color": "0,0,0,0",
            "outline_color": OTHER_OUTLINE,
            "outline_width": "0.3",
            "outline_style": "dash",
        }
    )
    root = QgsRuleBasedRenderer.Rule(None)
    root.appendChild(QgsRuleBasedRenderer.Rule(top, 0, 0, '"top"', "label these first"))
    root.appendChild(QgsRuleBasedRenderer.Rule(other, 0, 0, 'NOT "top"', "other cells, by rank"))
    layer.setRenderer(QgsRuleBasedRenderer(root))
    text = QgsTextFormat()
    font = QFont()
    font.setBold(True)
    text.setFont(font)
    text.setSize(12)
    text.setColor(QColor(*(int(v) for v in TOP_OUTLINE.split(",")[:3])))
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(1.0)
    buffer.setColor(QColor("white"))
    text.setBuffer(buffer)
    labels = QgsPalLayerSettings()
    labels.fieldName = "rank"
    labels.placement = QgsPalLayerSettings.OverPoint
    labels.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)


def add_label_cells_layers(path: Path, image_name: str) -> list[QgsVectorLayer]:
    """The ``cells`` (styled, ranked) and ``buildings`` (hidden) layers of a ``where_to_label``
    GeoPackage, in a new group on top; returns [cells, buildings]."""
    project = QgsProject.instance()
    group = project.layerTreeRoot().insertGroup(0, f"where to label - {image_name}")
    layers = []
    for layer_name, title in (
        ("cells", "cells to label (by rank)"),
        ("buildings", "buildings (confidence)"),
    ):
        layer = QgsVectorLayer(f"{path}|layername={layer_name}", title, "ogr")
        if not layer.isValid():
            raise RuntimeError(f"the layer {layer_name} of {path} could not be opened")
        if layer_name == "cells":
            style_label_cells(layer)
        else:
            qml = style_file("buildings.qml")
            if qml is not None:
                layer.loadNamedStyle(str(qml))
        project.addMapLayer(layer, False)
        node = group.addLayer(layer)
        if layer_name == "buildings":
            node.setItemVisibilityChecked(False)
        layers.append(layer)
    return layers
