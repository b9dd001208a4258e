"""``ternaus:detect_changes``: what changed between two dates, as a Processing algorithm.

Parameters ``BEFORE``, ``AFTER`` (building polygons of the earlier and the later date, e.g. two
extractions), ``AREA`` (optional polygons), ``IOU`` (matched buildings below it count as changed,
default 0.7), ``MATCH_IOU`` (advanced: the same building above it, default 0.3) and ``OUTPUT`` (a
GeoPackage with the layers ``new``, ``demolished`` and ``changed``); outputs ``NEW``,
``DEMOLISHED``, ``CHANGED`` and ``UNCHANGED``. Same code as ``ternaus changes``:
:func:`~ternaus_qgis.core.comparison.run_changes`.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorLayer,
)

from ..backend_process import connection
from ..core.comparison import ChangesRequest, run_changes
from ..core.vector_inputs import export_vector_layer
from .common import feedback_progress, load_comparison_layers, user_errors

COUNTS = ("NEW", "DEMOLISHED", "CHANGED", "UNCHANGED")


class DetectChangesAlgorithm(QgsProcessingAlgorithm):
    """New, demolished, changed and unchanged buildings between two dates."""

    BEFORE, AFTER, AREA, IOU, MATCH_IOU, OUTPUT = (
        "BEFORE",
        "AFTER",
        "AREA",
        "IOU",
        "MATCH_IOU",
        "OUTPUT",
    )

    def name(self) -> str:
        return "detect_changes"

    def displayName(self) -> str:  # noqa: N802
        return "Detect building changes"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "What changed between two dates: matches the buildings of two layers of one place "
            "(e.g. extractions of images taken before and after) one to one, after moving the "
            "earlier layer by their estimated offset. Writes 'new' (in the later layer only), "
            "'demolished' (in the earlier layer only) and 'changed' (matched, but with an IoU "
            "below the threshold: extended or rebuilt), and counts the unchanged ones."
        )

    def createInstance(self) -> DetectChangesAlgorithm:  # noqa: N802
        return DetectChangesAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        polygons = [QgsProcessing.TypeVectorPolygon]
        self.addParameter(
            QgsProcessingParameterVectorLayer(self.BEFORE, "Buildings before", polygons)
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(self.AFTER, "Buildings after", polygons)
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(self.AREA, "Area (optional)", polygons, optional=True)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.IOU,
                "Changed below this IoU",
                QgsProcessingParameterNumber.Double,
                0.7,
                minValue=0.05,
                maxValue=0.95,
            )
        )
        match = QgsProcessingParameterNumber(
            self.MATCH_IOU,
            "Same building above this IoU",
            QgsProcessingParameterNumber.Double,
            0.3,
            minValue=0.05,
            maxValue=0.95,
        )
        match.setFlags(match.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(match)
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT, "Change layers", "GeoPackage (*.gpkg)"
            )
        )
        for name in COUNTS:
            self.addOutput(QgsProcessingOutputNumber(name, name.capitalize()))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        before = self.parameterAsVectorLayer(parameters, self.BEFORE, context)
        after = self.parameterAsVectorLayer(parameters, self.AFTER, context)
        area = self.parameterAsVectorLayer(parameters, self.AREA, context)
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        change_iou = self.parameterAsDouble(parameters, self.IOU, context)
        match_iou = self.parameterAsDouble(parameters, self.MATCH_IOU, context)
        if change_iou < match_iou:
            raise QgsProcessingException(
                f"The change IoU ({change_iou}) must not be below the matching IoU ({match_iou}): "
                "raise it, or lower the matching IoU."
            )
        with user_errors(feedback):
            request = ChangesRequest(
                before_path=export_vector_layer(before, "before"),
                after_path=export_vector_layer(after, "after"),
                area_path=export_vector_layer(area, "area") if area is not None else None,
                out_path=Path(out),
                change_iou=change_iou,
                match_iou=match_iou,
                before_name=before.name(),
                after_name=after.name(),
            )
            detection = run_changes(request, connection(), feedback_progress(feedback))
        feedback.pushInfo(detection.text)
        outputs = {name: detection.summary[name.lower()] for name in COUNTS}
        outputs[self.OUTPUT] = str(detection.path)
        load_comparison_layers(context, detection.path, "changes", after.name(), self.OUTPUT)
        return outputs
