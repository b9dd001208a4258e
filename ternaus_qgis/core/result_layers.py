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
