"""The two dates of a changes request, read on the GUI thread: each a building layer or an image.

A date given as an image gets an extraction request (made by the caller: the dock uses the
Extract tab's model and options, Processing its own parameters) over the part both dates cover,
and the changes are then counted inside that part only (unless an area is given). Shared by the
Changes tab (:mod:`ternaus_qgis.gui.comparison_controller`) and ``ternaus:detect_changes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from ..exceptions import LayerError
from .comparison import ChangesRequest
from .extraction import ExtractionRequest
from .vector_inputs import export_vector_layer

SIDE_WORDS = {"before": "earlier", "after": "later"}
OVERLAP_NOTE = "Inside the part both dates cover"

#: Makes the extraction request of a date given as an image, over an extent (in a CRS).
ExtractionMaker = Callable[
    [QgsRasterLayer, QgsRectangle, QgsCoordinateReferenceSystem], ExtractionRequest
]


@dataclass
class ChangesSettings:
    """What a changes request takes besides its two dates."""

    out_path: Path
    change_iou: float = 0.7
    match_iou: float = 0.3
    area: QgsVectorLayer | None = None
    area_selected: bool = False


@dataclass
class ChangesInputs:
    """The request, the extractions of the dates given as images (by side), and where the
    changes are counted when the caller gave no area (shown under the result)."""

    request: ChangesRequest
    extractions: dict[str, ExtractionRequest] = field(default_factory=dict)
    note: str = ""


def changes_inputs(
    before: QgsMapLayer | None,
    after: QgsMapLayer | None,
    settings: ChangesSettings,
    make_extraction: ExtractionMaker,
) -> ChangesInputs:
    """The changes request of two dates (layers exported here); LayerError names what to fix."""
    layers = {"before": before, "after": after}
    for side, layer in layers.items():
        if layer is None or not layer.isValid():
            raise LayerError(f"Choose the {SIDE_WORDS[side]} date: a building layer or an image.")
    if before.id() == after.id():
        raise LayerError("Before and after are the same layer: choose two dates.")
    images = {s: lyr for s, lyr in layers.items() if isinstance(lyr, QgsRasterLayer)}
    area = settings.area
    area_path = (
        export_vector_layer(area, "area", settings.area_selected) if area is not None else None
    )
    note = ""
    paths: dict[str, Path] = {}
    extractions: dict[str, ExtractionRequest] = {}
    if images:
        extent, crs = common_extent(list(layers.values()), area, settings.area_selected)
        if area_path is None:  # count changes only where both dates are known
            area_path = export_vector_layer(rectangle_layer(extent, crs), "overlap")
            note = OVERLAP_NOTE
    for side, layer in layers.items():
        if side in images:
            extractions[side] = make_extraction(layer, extent, crs)
            paths[side] = extractions[side].out_path  # replaced by the extraction's
        elif isinstance(layer, QgsVectorLayer):
            paths[side] = export_vector_layer(layer, f"{SIDE_WORDS[side]} buildings")
        else:
            raise LayerError(
                f"The {SIDE_WORDS[side]} layer '{layer.name()}' is neither polygons nor an "
                "image: choose another layer."
            )
    request = ChangesRequest(
        before_path=paths["before"],
        after_path=paths["after"],
        out_path=settings.out_path,
        area_path=area_path,
        change_iou=settings.change_iou,
        match_iou=settings.match_iou,
        before_name=before.name(),
        after_name=after.name(),
    )
    return ChangesInputs(request, extractions, note)


def common_extent(
    layers: list[QgsMapLayer], area: QgsVectorLayer | None = None, selected: bool = False
) -> tuple[QgsRectangle, QgsCoordinateReferenceSystem]:
    """The part every layer (and the area, or its selection) covers, in the first image's CRS."""
    crs = next(lyr for lyr in layers if isinstance(lyr, QgsRasterLayer)).crs()
    project = QgsProject.instance()
    extent: QgsRectangle | None = None
    sources = list(layers) + ([area] if area is not None else [])
    for layer in sources:
        box = layer.boundingBoxOfSelected() if layer is area and selected else layer.extent()
        if layer.crs() != crs:
            box = QgsCoordinateTransform(layer.crs(), crs, project).transformBoundingBox(box)
        extent = box if extent is None else extent.intersect(box)
    if extent is None or extent.isEmpty():
        names = ", ".join(f"'{layer.name()}'" for layer in sources)
        raise LayerError(f"The layers {names} do not overlap: choose dates of the same place.")
    return extent, crs


def rectangle_layer(extent: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> QgsVectorLayer:
    """A memory layer of one rectangle (to be exported; it is never added to the project)."""
    layer = QgsVectorLayer("Polygon", "overlap", "memory")
    layer.setCrs(crs)
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(extent))
    layer.dataProvider().addFeatures([feature])
    return layer
