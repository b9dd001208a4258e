"""``ternaus:where_to_label``: where to label next, as a Processing algorithm.

Parameters ``RGB``, ``MS`` (optional), ``EXTENT`` (optional), ``AREA`` (optional polygons: rank only
cells inside), ``EXCLUDE`` (optional polygons already labelled: cells half inside left out),
``MODEL`` (optional model file), ``CELL_M`` (cell side, default 100 m), ``TOP``
(cells marked top, default 3) and ``OUTPUT`` (a GeoPackage with the layers ``cells`` and
``buildings``); outputs ``CELLS`` (cells ranked) and ``BUILDINGS``. Same code as the Train tab's
*Propose cells to label* and ``ternaus where-to-label``:
:func:`~ternaus_qgis.core.labelling.run_label_cells`; the ranked cells are loaded styled (top cells
highlighted, every cell labelled with its rank).
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorLayer,
    QgsVectorLayer,
)

from ..backend_process import connection
from ..core.labelling import LabelCellsRequest, run_label_cells
from ..core.raster_inputs import raster_input
from ..core.result_layers import style_label_cells
from ..core.vector_inputs import export_vector_layer
from .common import feedback_progress, image_parameters, model_parameter, user_errors


class _CellsStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles the cells layer Processing loads once the algorithm has finished."""

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802
        style_label_cells(layer)
        layer.triggerRepaint()


#: Post-processors must outlive the algorithm run that registered them.
_STYLERS: list[_CellsStyler] = []


class WhereToLabelAlgorithm(QgsProcessingAlgorithm):
    """Square cells over an image, ranked by how unsure the model is there."""

    RGB, MS, EXTENT, AREA, MODEL = "RGB", "MS", "EXTENT", "AREA", "MODEL"
    EXCLUDE = "EXCLUDE"
    CELL_M, TOP, OUTPUT = "CELL_M", "TOP", "OUTPUT"

    def name(self) -> str:
        return "where_to_label"

    def displayName(self) -> str:  # noqa: N802
        return "Where to label next"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Proposes where to draw training labels. The model runs over the image (four flips) "
            "and square cells are ranked by how unsure it is there: score = share of the cell "
            "whose building probability is near the model's threshold + share where the flipped "
            "images disagree + share covered by buildings of low calibrated confidence (< 0.5). "
            "Rank 1 is the most uncertain cell; the TOP cells are highlighted. Label those, then "
            "fine-tune (Train model)."
        )

    def createInstance(self) -> WhereToLabelAlgorithm:  # noqa: N802
        return WhereToLabelAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        for parameter in image_parameters():
            self.addParameter(parameter)
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.AREA,
                "Area (optional): rank only cells inside",
                [QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.EXCLUDE,
                "Already labelled (optional): cells at least half inside are left out",
                [QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.addParameter(model_parameter(self.MODEL))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.CELL_M,
                "Cell side (m)",
                QgsProcessingParameterNumber.Double,
                100.0,
                minValue=1.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TOP, "Cells to highlight", QgsProcessingParameterNumber.Integer, 3, minValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(self.OUTPUT, "Cells", "GeoPackage (*.gpkg)")
        )
        self.addOutput(QgsProcessingOutputNumber("CELLS", "Cells ranked"))
        self.addOutput(QgsProcessingOutputNumber("BUILDINGS", "Buildings found"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        rgb_layer = self.parameterAsRasterLayer(parameters, self.RGB, context)
        ms_layer = self.parameterAsRasterLayer(parameters, self.MS, context)
        area = self.parameterAsVectorLayer(parameters, self.AREA, context)
        done = self.parameterAsVectorLayer(parameters, self.EXCLUDE, context)
        model = self.parameterAsFile(parameters, self.MODEL, context) or None
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if not out.lower().endswith(".gpkg"):
            out = str(Path(out).with_suffix(".gpkg"))
        Path(out).unlink(missing_ok=True)  # Processing replaces its OUTPUT
        with user_errors(feedback):
            rgb = raster_input(rgb_layer, "RGB", 3)
            ms = raster_input(ms_layer, "multispectral", 1) if ms_layer is not None else None
            extent, extent_crs = None, rgb.crs
            if parameters.get(self.EXTENT):
                extent_crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
                extent = self.parameterAsExtent(parameters, self.EXTENT, context, extent_crs)
                if not extent_crs.isValid():
                    extent_crs = context.project().crs() if context.project() else rgb.crs
            request = LabelCellsRequest(
                rgb=rgb,
                ms=ms,
                extent=extent,
                extent_crs=extent_crs,
                out_path=Path(out),
                model=model,
                aoi_path=export_vector_layer(area, "area") if area is not None else None,
                exclude_path=(
                    export_vector_layer(done, "labelled area") if done is not None else None
                ),
                cell_m=self.parameterAsDouble(parameters, self.CELL_M, context),
                top=self.parameterAsInt(parameters, self.TOP, context),
            )
            result = run_label_cells(request, connection(), feedback_progress(feedback))
        feedback.pushInfo(result.text)
        self._load_cells(context, result.path, rgb.name)
        return {
            self.OUTPUT: str(result.path),
            "CELLS": result.result.cells,
            "BUILDINGS": result.result.buildings,
        }

    def _load_cells(self, context: QgsProcessingContext, path: Path, image: str) -> None:
        """Ask Processing to add the ranked cells to the project when the run ends, styled."""
        layer = QgsVectorLayer(f"{path}|layername=cells", f"cells to label - {image}", "ogr")
        if not layer.isValid():
            return
        context.temporaryLayerStore().addMapLayer(layer)
        details = QgsProcessingContext.LayerDetails(layer.name(), context.project(), self.OUTPUT)
        styler = _CellsStyler()
        _STYLERS.append(styler)
        details.setPostProcessor(styler)
        context.addLayerToLoadOnCompletion(layer.id(), details)
