"""What the Processing algorithms share: progress from their feedback, errors as Processing's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsVectorLayer,
)

from ..core.jobs import Progress
from ..core.result_layers import COMPARISON_LAYERS, style_file
from ..exceptions import TernausPluginError


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
