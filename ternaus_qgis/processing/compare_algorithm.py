"""``ternaus:compare_with_map``: what a map is missing, as a Processing algorithm.

Parameters ``PREDICTED`` (our result, with its ``confidence``), ``REFERENCE`` (the map's building
polygons, OpenStreetMap or any), ``AREA`` (optional polygons), ``IOU`` (matching threshold,
default 0.3), ``CELL_M`` (grid of the offsets, default 250 m) and ``OUTPUT`` (a GeoPackage with the
layers ``unmapped``, ``unseen`` and ``offsets``); outputs ``UNMAPPED``, ``UNSEEN``, ``MATCHED``,
``DX_M``, ``DY_M`` (the median offset, metres east and north; None when nothing matched) and
``PAIRS``. Same code as ``ternaus compare``: :func:`~ternaus_qgis.core.comparison.run_compare`.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorLayer,
)

from ..backend_process import connection
from ..core.comparison import CompareRequest, run_compare
from ..core.vector_inputs import export_vector_layer
from .common import feedback_progress, load_comparison_layers, user_errors

COUNTS = ("UNMAPPED", "UNSEEN", "MATCHED")


class CompareWithMapAlgorithm(QgsProcessingAlgorithm):
    """Buildings seen and not mapped, mapped and not seen, and the map's offset."""

    RESULT, REFERENCE, AREA, IOU, CELL_M, OUTPUT = (
        "PREDICTED",
        "REFERENCE",
        "AREA",
        "IOU",
        "CELL_M",
        "OUTPUT",
    )

    def name(self) -> str:
        return "compare_with_map"

    def displayName(self) -> str:  # noqa: N802
        return "Compare with a map's buildings"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "What the map is missing. Matches an extraction result with an existing building "
            "layer (OpenStreetMap or any) one to one, at a low IoU and after moving the map by "
            "its estimated offset. Writes 'unmapped' (buildings seen in the imagery and absent "
            "from the map, ranked by confidence), 'unseen' (buildings of the map not seen: "
            "demolished? mis-drawn?) and 'offsets' (the median offset of matched buildings, "
            "overall and per grid cell with at least 3 pairs, as lines from the map toward the "
            "imagery with dx_m, dy_m and pairs: shift the map by them)."
        )

    def createInstance(self) -> CompareWithMapAlgorithm:  # noqa: N802
        return CompareWithMapAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        polygons = [QgsProcessing.TypeVectorPolygon]
        self.addParameter(
            QgsProcessingParameterVectorLayer(self.RESULT, "Extraction result", polygons)
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(self.REFERENCE, "Map's buildings", polygons)
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(self.AREA, "Area (optional)", polygons, optional=True)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.IOU,
                "IoU threshold of a match",
                QgsProcessingParameterNumber.Double,
                0.3,
                minValue=0.05,
                maxValue=0.95,
            )
        )
        cell = QgsProcessingParameterNumber(
            self.CELL_M,
            "Grid cell of the offsets (m)",
            QgsProcessingParameterNumber.Double,
            250.0,
            minValue=10.0,
        )
        cell.setFlags(cell.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(cell)
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT, "Comparison layers", "GeoPackage (*.gpkg)"
            )
        )
        for name in COUNTS:
            self.addOutput(QgsProcessingOutputNumber(name, name.capitalize()))
        self.addOutput(QgsProcessingOutputNumber("DX_M", "Offset east (m)"))
        self.addOutput(QgsProcessingOutputNumber("DY_M", "Offset north (m)"))
        self.addOutput(QgsProcessingOutputNumber("PAIRS", "Matched pairs behind the offset"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        result = self.parameterAsVectorLayer(parameters, self.RESULT, context)
        reference = self.parameterAsVectorLayer(parameters, self.REFERENCE, context)
        area = self.parameterAsVectorLayer(parameters, self.AREA, context)
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        with user_errors(feedback):
            request = CompareRequest(
                result_path=export_vector_layer(result, "result"),
                reference_path=export_vector_layer(reference, "map buildings"),
                area_path=export_vector_layer(area, "area") if area is not None else None,
                out_path=Path(out),
                iou_threshold=self.parameterAsDouble(parameters, self.IOU, context),
                cell_m=self.parameterAsDouble(parameters, self.CELL_M, context),
                result_name=result.name(),
                reference_name=reference.name(),
            )
            comparison = run_compare(request, connection(), feedback_progress(feedback))
        feedback.pushInfo(comparison.text)
        found = comparison.result
        offset = getattr(found, "offset", None)
        outputs = {name: getattr(found, name.lower()) for name in COUNTS}
        outputs.update(
            DX_M=offset.dx_m if offset else None,
            DY_M=offset.dy_m if offset else None,
            PAIRS=offset.pairs if offset else 0,
        )
        outputs[self.OUTPUT] = str(comparison.path)
        load_comparison_layers(context, comparison.path, "compare", result.name(), self.OUTPUT)
        return outputs
