"""What the Processing algorithms share: progress from their feedback, errors as Processing's,
parameters made from an options class (:func:`option_parameters`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsVectorLayer,
)

from ..core.extract_options import option_fields
from ..core.jobs import Progress
from ..core.result_layers import COMPARISON_LAYERS, style_file
from ..exceptions import TernausPluginError


def image_parameters(extent: bool = True) -> list[QgsProcessingParameterDefinition]:
    """The image a job reads: RGB, optional multispectral partner and (``extent``) an extent."""
    params: list[QgsProcessingParameterDefinition] = [
        QgsProcessingParameterRasterLayer("RGB", "RGB raster layer"),
        QgsProcessingParameterRasterLayer(
            "MS", "Multispectral raster layer (for 11-band models)", optional=True
        ),
    ]
    if extent:
        params.append(
            QgsProcessingParameterExtent(
                "EXTENT", "Extent (default: the whole RGB layer)", optional=True
            )
        )
    return params


def model_parameter(name: str = "MODEL") -> QgsProcessingParameterFile:
    """An optional model file; left empty, the backend's default model."""
    return QgsProcessingParameterFile(
        name,
        "Model file (default: the backend's default model)",
        extension="",
        optional=True,
        fileFilter="Models (*.safetensors *.pt *.pth)",
    )


def feedback_progress(feedback: QgsProcessingFeedback) -> Progress:
    """A :class:`Progress` that reports to (and is cancelled by) Processing's feedback."""

    def report(percent: float, text: str) -> None:
        feedback.setProgress(percent)
        feedback.setProgressText(text)

    return Progress(report=report, cancelled=feedback.isCanceled, log=feedback.pushInfo)


@contextmanager
def user_errors(feedback: QgsProcessingFeedback) -> Iterator[None]:
    """Plugin errors become QgsProcessingException (the message), details go to the log."""
    try:
        yield
    except TernausPluginError as error:
        if error.details:
            feedback.reportError(error.details)
        raise QgsProcessingException(error.message) from None


class _Styler(QgsProcessingLayerPostProcessorInterface):
    """Applies a QML style to a layer Processing loads once the algorithm has finished."""

    def __init__(self, qml: Path) -> None:
        super().__init__()
        self.qml = qml

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802
        layer.loadNamedStyle(str(self.qml))
        layer.triggerRepaint()


#: Post-processors must outlive the algorithm run that registered them.
_STYLERS: list[_Styler] = []


def load_comparison_layers(
    context: QgsProcessingContext, path: Path, kind: str, title: str, output_name: str
) -> None:
    """Ask Processing to add the layers of a ``compare``/``changes`` GeoPackage to the project
    when the run ends (as the Processing dialog and ``runAndLoadResults`` do), styled."""
    for layer_name, name, style in COMPARISON_LAYERS[kind]:
        layer = QgsVectorLayer(f"{path}|layername={layer_name}", f"{name} - {title}", "ogr")
        if not layer.isValid():
            continue
        context.temporaryLayerStore().addMapLayer(layer)
        details = QgsProcessingContext.LayerDetails(layer.name(), context.project(), output_name)
        qml = style_file(style)
        if qml is not None:
            styler = _Styler(qml)
            _STYLERS.append(styler)
            details.setPostProcessor(styler)
        context.addLayerToLoadOnCompletion(layer.id(), details)


def parameter_name(option: str) -> str:
    """The Processing parameter of an option: ``body_threshold`` -> ``BODY_THRESHOLD``."""
    return option.upper()


def option_parameters(options: type) -> list[QgsProcessingParameterDefinition]:
    """One advanced parameter per field of an options class (e.g.
    :class:`~ternaus_qgis.core.extract_options.ExtractionOptions`), from its label, help, range
    and default; an option whose default is ``None`` is optional (left empty: the backend's
    choice)."""
    parameters = []
    for name, default, spec in option_fields(options):
        key = parameter_name(name)
        if spec.kind == "bool":
            parameter = QgsProcessingParameterBoolean(key, spec.label, defaultValue=bool(default))
        elif spec.kind == "choice":
            parameter = QgsProcessingParameterEnum(
                key, spec.label, options=[text for text, _ in spec.choices], defaultValue=0
            )
        elif spec.kind in ("int", "float"):
            number_type = (
                QgsProcessingParameterNumber.Integer
                if spec.kind == "int"
                else QgsProcessingParameterNumber.Double
            )
            parameter = QgsProcessingParameterNumber(
                key, spec.label, number_type, defaultValue=default, optional=default is None
            )
            if spec.minimum is not None:
                parameter.setMinimum(spec.minimum)
            if spec.maximum is not None:
                parameter.setMaximum(spec.maximum)
        else:
            raise ValueError(f"{options.__name__}.{name}: unknown option kind {spec.kind!r}")
        parameter.setHelp(spec.help)
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        parameters.append(parameter)
    return parameters


def _unset(value: Any) -> bool:
    return value is None or value == "" or (hasattr(value, "isNull") and value.isNull())


def options_from_parameters(
    algorithm: QgsProcessingAlgorithm, options: type, parameters: dict, context
) -> Any:
    """The options class filled from the parameters of :func:`option_parameters` (an empty
    optional number, an unchecked box of an option without default, the first choice: the
    option's default)."""
    values: dict[str, Any] = {}
    for name, default, spec in option_fields(options):
        key = parameter_name(name)
        if spec.kind == "bool":
            values[name] = True if algorithm.parameterAsBool(parameters, key, context) else default
        elif spec.kind == "choice":
            index = algorithm.parameterAsEnum(parameters, key, context)
            values[name] = spec.choices[index][1] if 0 <= index < len(spec.choices) else default
        elif default is None and _unset(parameters.get(key)):
            values[name] = None
        elif spec.kind == "int":
            values[name] = algorithm.parameterAsInt(parameters, key, context)
        else:
            values[name] = algorithm.parameterAsDouble(parameters, key, context)
    return options(**values)
