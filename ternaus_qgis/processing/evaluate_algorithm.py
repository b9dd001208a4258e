"""``ternaus:evaluate_buildings``: the dock's evaluation as a Processing algorithm.

Parameters ``PREDICTED``, ``REFERENCE`` (polygon layers), ``AREA`` (optional polygons), ``IOU``
(threshold, default 0.5) and ``OUTPUT`` (a GeoPackage with the error layers ``result`` and
``missed``); outputs ``F1``, ``PRECISION``, ``RECALL``, ``TP``, ``FP``, ``FN``. Same code as the
dock: :func:`~ternaus_qgis.core.evaluation.run_evaluation`.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorLayer,
)

from ..backend_process import connection
from ..core.evaluation import EvaluationRequest, run_evaluation
from ..core.vector_inputs import export_vector_layer
from .common import feedback_progress, user_errors

SCORES = ("F1", "PRECISION", "RECALL", "TP", "FP", "FN")


class EvaluateBuildingsAlgorithm(QgsProcessingAlgorithm):
    """SpaceNet precision, recall and F1 of a result layer against a reference layer."""

    RESULT, REFERENCE, AREA, IOU, OUTPUT = "PREDICTED", "REFERENCE", "AREA", "IOU", "OUTPUT"

    def name(self) -> str:
        return "evaluate_buildings"

    def displayName(self) -> str:  # noqa: N802
        return "Evaluate buildings"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Scores building polygons against reference polygons by the SpaceNet rules (one-to-one "
            "matches above an IoU threshold): precision, recall, F1. Writes the result with a "
            "'match' field (true/false positive) and its IoU, and the missed reference buildings."
        )

    def createInstance(self) -> EvaluateBuildingsAlgorithm:  # noqa: N802
        return EvaluateBuildingsAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        polygons = [QgsProcessing.TypeVectorPolygon]
        self.addParameter(QgsProcessingParameterVectorLayer(self.RESULT, "Result", polygons))
        self.addParameter(QgsProcessingParameterVectorLayer(self.REFERENCE, "Reference", polygons))
        self.addParameter(
            QgsProcessingParameterVectorLayer(self.AREA, "Area (optional)", polygons, optional=True)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.IOU,
                "IoU threshold",
                QgsProcessingParameterNumber.Double,
                0.5,
                minValue=0.05,
                maxValue=0.95,
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT, "Error layers", "GeoPackage (*.gpkg)"
            )
        )
        for name in SCORES:
            self.addOutput(QgsProcessingOutputNumber(name, name.capitalize()))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        result = self.parameterAsVectorLayer(parameters, self.RESULT, context)
        reference = self.parameterAsVectorLayer(parameters, self.REFERENCE, context)
        area = self.parameterAsVectorLayer(parameters, self.AREA, context)
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        with user_errors(feedback):
            request = EvaluationRequest(
                result_path=export_vector_layer(result, "result"),
                reference_path=export_vector_layer(reference, "reference"),
                area_path=export_vector_layer(area, "area") if area is not None else None,
                out_path=Path(out),
                iou_threshold=self.parameterAsDouble(parameters, self.IOU, context),
                result_name=result.name(),
                reference_name=reference.name(),
            )
            evaluation = run_evaluation(
                request,
                connection(),
                feedback_progress(feedback),
            )
        feedback.pushInfo(evaluation.summary)
        outputs = {name: getattr(evaluation.result, name.lower()) for name in SCORES}
        outputs[self.OUTPUT] = str(evaluation.path)
        return outputs
