"""Vector layers as backend inputs: exported to a GeoPackage as QGIS shows them.

Exported on the GUI thread (the thread that owns the layer) with ``QgsVectorFileWriter``, so
unsaved edits, filters (subset strings) and layers that are not files (memory, web) all reach the
backend as the user sees them; building layers are small enough for that to be quick.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from qgis.core import (
    QgsCoordinateTransformContext,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

from ..exceptions import LayerError
from .raster_inputs import export_folder


def export_vector_layer(
    layer: QgsVectorLayer | None, role: str, selected_only: bool = False
) -> Path:
    """The layer's (selected) polygons in a new GeoPackage; ``LayerError`` says what is wrong."""
    if layer is None or not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        raise LayerError(f"Choose a valid polygon layer as the {role}.")
    if layer.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise LayerError(
            f"The {role} layer '{layer.name()}' has no polygons: choose a polygon layer."
        )
    if selected_only and layer.selectedFeatureCount() == 0:
        raise LayerError(
            f"No polygons are selected in '{layer.name()}': select the {role}, or choose "
            "another layer."
        )
    folder = export_folder()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{role.replace(' ', '_')}-{uuid.uuid4().hex[:8]}.gpkg"
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "features"
    options.onlySelectedFeatures = selected_only
    error, message, _path, _layer = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, str(out), QgsCoordinateTransformContext(), options
    )
    if error != QgsVectorFileWriter.NoError:
        raise LayerError(
            f"The {role} layer '{layer.name()}' could not be exported: {message}",
            details=f"export to {out}",
        )
    return out
