"""``ternaus:detect_changes``: what changed between two dates, as a Processing algorithm.

Parameters ``BEFORE``, ``AFTER`` (the earlier and the later date: building polygons, e.g. two
extractions, or an image, extracted first with ``MODEL`` over the part both dates cover, where
the changes are then counted unless ``AREA`` is given), ``AREA`` (optional polygons), ``IOU``
(matched buildings below it count as changed, default 0.7), ``MATCH_IOU`` (advanced: the same
building above it, default 0.3), ``MODEL`` (optional) and ``OUTPUT`` (a GeoPackage with the layers
``new``, ``demolished`` and ``changed``); outputs ``NEW``, ``DEMOLISHED``, ``CHANGED`` and
``UNCHANGED``. Same code as the Changes tab (:mod:`~ternaus_qgis.core.change_inputs`) and
``ternaus changes`` (:func:`~ternaus_qgis.core.comparison.run_changes_of_images`).
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
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorLayer,
    QgsProcessingUtils,
)

from ..backend_process import connection
from ..core import result_layers
from ..core.change_inputs import ChangesSettings, changes_inputs
from ..core.comparison import run_changes_of_images
from ..core.extract_options import ExtractionOptions
from ..core.extraction import ExtractionRequest
from ..core.raster_inputs import raster_input
from .common import feedback_progress, load_comparison_layers, model_parameter, user_errors

COUNTS = ("NEW", "DEMOLISHED", "CHANGED", "UNCHANGED")


class DetectChangesAlgorithm(QgsProcessingAlgorithm):
    """New, demolished, changed and unchanged buildings between two dates."""

    BEFORE, AFTER, AREA, IOU, MATCH_IOU, MODEL, OUTPUT = (
        "BEFORE",
        "AFTER",
        "AREA",
        "IOU",
        "MATCH_IOU",
        "MODEL",
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
            "earlier layer by their estimated offset. A date given as an image is extracted "
            "first (with the model chosen, else the default) over the part both dates cover, "
            "and the changes are counted there. Writes 'new' (in the later layer only), "
            "'demolished' (in the earlier layer only) and 'changed' (matched, but with an IoU "
            "below the threshold: extended or rebuilt), and counts the unchanged ones."
        )

    def createInstance(self) -> DetectChangesAlgorithm:  # noqa: N802
        return DetectChangesAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        polygons = [QgsProcessing.TypeVectorPolygon]
        dates = [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeRaster]
        for name, words in ((self.BEFORE, "before"), (self.AFTER, "after")):
            self.addParameter(
                QgsProcessingParameterMapLayer(name, f"Buildings or image {words}", types=dates)
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
        self.addParameter(model_parameter(self.MODEL))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT, "Change layers", "GeoPackage (*.gpkg)"
            )
        )
        for name in COUNTS:
            self.addOutput(QgsProcessingOutputNumber(name, name.capitalize()))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        before = self.parameterAsLayer(parameters, self.BEFORE, context)
        after = self.parameterAsLayer(parameters, self.AFTER, context)
        area = self.parameterAsVectorLayer(parameters, self.AREA, context)
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        change_iou = self.parameterAsDouble(parameters, self.IOU, context)
        match_iou = self.parameterAsDouble(parameters, self.MATCH_IOU, context)
        model = self.parameterAsFile(parameters, self.MODEL, context) or None
        if change_iou < match_iou:
            raise QgsProcessingException(
                f"The change IoU ({change_iou}) must not be below the matching IoU ({match_iou}): "
                "raise it, or lower the matching IoU."
            )

        def extraction(layer, extent, crs) -> ExtractionRequest:
            rgb = raster_input(layer, "RGB", 3)
            folder = Path(QgsProcessingUtils.tempFolder())
            model_name = Path(model).stem if model else "default"
            return ExtractionRequest(
                rgb=rgb,
                extent=extent,
                extent_crs=crs,
                out_path=result_layers.free_path(folder, f"{layer.name()}_{model_name}"),
                model=model,
                options=ExtractionOptions(),
                title=result_layers.layer_title(rgb.name, model_name),
                model_name=model_name,
            )

        with user_errors(feedback):
            settings = ChangesSettings(Path(out), change_iou, match_iou, area)
            inputs = changes_inputs(before, after, settings, extraction)
            detection, extracted = run_changes_of_images(
                inputs.request, inputs.extractions, connection(), feedback_progress(feedback)
            )
        for side, result in extracted.items():
            feedback.pushInfo(f"{side}: {result.count} buildings extracted ({result.path})")
        if inputs.note:
            feedback.pushInfo(inputs.note)
        feedback.pushInfo(detection.text)
        outputs = {name: getattr(detection.result, name.lower()) for name in COUNTS}
        outputs[self.OUTPUT] = str(detection.path)
        load_comparison_layers(context, detection.path, "changes", after.name(), self.OUTPUT)
        return outputs
