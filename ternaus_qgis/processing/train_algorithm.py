"""``ternaus:train_model``: the dock's Train tab as a Processing algorithm.

Parameters ``RGB``, ``MS`` (optional multispectral raster), ``LABELS`` (optional: without
labels the model adapts to the imagery by self-training), ``AREAS`` and ``VALIDATION_AREA``
(optional polygons), ``BASE_MODEL`` (``default``: the embedded model; a model file; empty: a new
model), ``SELF_TRAINING`` (default true), ``EPOCHS`` and ``STEPS`` (0: the backend's recipe
chooses from the labels), ``NAME``; outputs ``OUTPUT`` (the model file in the models folder) and
``F1`` (best validation F1). Same code as the dock:
:func:`~ternaus_qgis.core.training.run_training`.
"""

from __future__ import annotations

import re

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from .. import settings
from ..backend_process import connection
from ..core.raster_inputs import raster_input
from ..core.training import TrainingRequest, calibration_text, run_training
from ..core.vector_inputs import export_vector_layer
from .common import feedback_progress, image_parameters, user_errors


class TrainModelAlgorithm(QgsProcessingAlgorithm):
    """Train or fine-tune a building model on a labelled polygon layer."""

    RGB, MS, LABELS, AREAS, VAL_AREA = "RGB", "MS", "LABELS", "AREAS", "VALIDATION_AREA"
    INIT, EPOCHS, STEPS, NAME, MODEL, F1 = "BASE_MODEL", "EPOCHS", "STEPS", "NAME", "OUTPUT", "F1"
    SELF_TRAINING = "SELF_TRAINING"

    def name(self) -> str:
        return "train_model"

    def displayName(self) -> str:  # noqa: N802
        return "Train a building model"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Trains a building model (or fine-tunes one) on building polygons drawn or corrected "
            "over an RGB raster, inside an optional training area. The best epoch by validation "
            "F1 is saved in the models folder and appears in the dock's model list."
        )

    def createInstance(self) -> TrainModelAlgorithm:  # noqa: N802
        return TrainModelAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        polygons = [QgsProcessing.TypeVectorPolygon]
        for parameter in image_parameters(extent=False):
            self.addParameter(parameter)
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.LABELS,
                "Labelled buildings (none: adapt the model to this imagery by self-training)",
                polygons,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.AREAS, "Training areas (optional)", polygons, optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.VAL_AREA, "Validation area (optional)", polygons, optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.INIT,
                "Model to fine-tune: 'default' (the embedded model), a model file, or empty for "
                "a new model",
                defaultValue="default",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.SELF_TRAINING, "Also learn from the surrounding imagery", defaultValue=True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.EPOCHS, "Epochs (0: chosen from the labels)", defaultValue=0, minValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.STEPS,
                "Steps per epoch (0: chosen from the labels)",
                defaultValue=0,
                minValue=0,
            )
        )
        self.addParameter(QgsProcessingParameterString(self.NAME, "New model name"))
        self.addOutput(QgsProcessingOutputFile(self.MODEL, "Model file"))
        self.addOutput(QgsProcessingOutputNumber(self.F1, "Best validation F1"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        name = re.sub(r"[^\w.-]+", "_", self.parameterAsString(parameters, self.NAME, context))
        name = name.strip("._")
        if not name:
            raise QgsProcessingException("Name the new model (e.g. my_town_2026).")
        area = self.parameterAsVectorLayer(parameters, self.AREAS, context)
        ms_layer = self.parameterAsRasterLayer(parameters, self.MS, context)
        val_area = self.parameterAsVectorLayer(parameters, self.VAL_AREA, context)
        labels = self.parameterAsVectorLayer(parameters, self.LABELS, context)
        with user_errors(feedback):
            request = TrainingRequest(
                rgb=raster_input(
                    self.parameterAsRasterLayer(parameters, self.RGB, context), "RGB", 3
                ),
                ms=raster_input(ms_layer, "multispectral", 1) if ms_layer is not None else None,
                labels_path=export_vector_layer(labels, "labelled buildings") if labels else None,
                out_path=settings.models_folder() / f"{name}.safetensors",
                name=name,
                area_path=export_vector_layer(area, "training area") if area else None,
                val_area_path=(
                    export_vector_layer(val_area, "validation area") if val_area else None
                ),
                init_model=self.parameterAsString(parameters, self.INIT, context).strip() or None,
                epochs=self.parameterAsInt(parameters, self.EPOCHS, context) or None,
                steps_per_epoch=self.parameterAsInt(parameters, self.STEPS, context) or None,
                self_training=self.parameterAsBool(parameters, self.SELF_TRAINING, context),
            )
            result = run_training(
                request,
                connection(),
                feedback_progress(feedback),
                on_epoch=lambda p: feedback.pushInfo(
                    f"epoch {p.epoch}: loss {p.loss:.4f}, validation F1 {p.val_f1}"
                ),
            )
        f1 = result.result.best_val_f1
        feedback.pushInfo(f"model saved: {result.model_path} (best validation F1 {f1})")
        calibration = calibration_text(result.result.calibration)
        if calibration:
            feedback.pushInfo(calibration)
        return {self.MODEL: str(result.model_path), self.F1: f1}
