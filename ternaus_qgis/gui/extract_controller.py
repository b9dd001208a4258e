"""ExtractController: the Extract tab's request as a task, its result as a styled layer.

The request is read here (:meth:`ExtractController.collect_request`: layers, model, extent, the
AOI's selected polygons); the work is :func:`~ternaus_qgis.core.extraction.run_extraction`, the
backend's ``predict`` job.
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import QgsCoordinateTransform, QgsGeometry, QgsProject, QgsVectorLayer
from qgis.PyQt.QtWidgets import QMessageBox

from ..core import result_layers
from ..core.extraction import ExtractionRequest, ExtractionResult, run_extraction
from ..core.jobs import format_seconds
from ..core.models import model_problem
from ..core.raster_inputs import raster_input
from ..exceptions import BackendUnreachableError, LayerError, TernausPluginError
from .messages import push_error, push_success
from .workflow import Job, Workflow

REPLACE, ADD = "replace", "add"


def ask_replace_or_add(parent, title: str) -> str | None:
    """Ask whether a new result replaces the earlier one or is added beside it (None: cancel)."""
    box = QMessageBox(parent)
    box.setWindowTitle("Ternaus")
    box.setText(f"The project already has '{title}'. Replace it, or add the new result beside it?")
    replace = box.addButton("Replace", QMessageBox.AcceptRole)
    add = box.addButton("Add", QMessageBox.ActionRole)
    box.addButton(QMessageBox.Cancel)
    box.exec_()
    clicked = box.clickedButton()
    return REPLACE if clicked is replace else ADD if clicked is add else None


class ExtractController(Workflow):
    """Extract: the dock's choices to an extraction, its result to a layer (clipped to the AOI)."""

    def __init__(self, dock, message_bar, backend) -> None:
        super().__init__(dock, message_bar, backend)
        #: The AOI's polygons and their CRS (``None``: no AOI), for the result layer.
        self._aoi: tuple | None = None
        #: Asked when a result of the same layer and model exists; tests replace it.
        self.ask_replace: Callable[[object, str], str | None] = ask_replace_or_add

    def collect(self) -> ExtractionRequest | None:
        request, self._aoi = self.collect_request()
        return request

    def collect_request(self) -> tuple[ExtractionRequest | None, tuple | None]:
        """The request from the dock's widgets (GUI thread) and the AOI (its polygons and CRS,
        or ``None``); ``(None, None)`` when the user declined to replace or add."""
        dock = self.dock
        rgb_layer = dock.rgb_layer()
        rgb = raster_input(rgb_layer, "RGB", 3, dock.render_resolution())
        ms_layer = dock.ms_layer()
        choice = dock.current_model()
        if choice is not None:
            problem = model_problem(choice, rgb_layer, ms_layer)
            if problem:
                raise LayerError(f"The model {choice.name} cannot be used: {problem}.")
        ms = None
        if ms_layer is not None and (choice is None or choice.uses_multispectral):
            ms = raster_input(ms_layer, "multispectral", 1)
        project_crs = QgsProject.instance().crs()
        extent, extent_crs = None, rgb.crs
        if dock.extent_widget.isValid():
            extent = dock.extent_widget.outputExtent()
            extent_crs = dock.extent_widget.outputCrs()
        aoi = None
        aoi_layer = dock.aoi_combo.currentLayer()
        if isinstance(aoi_layer, QgsVectorLayer):
            aoi, extent_crs = selected_polygons(aoi_layer), aoi_layer.crs()
            extent = aoi.boundingBox()
        if extent is not None and not extent_crs.isValid():
            extent_crs = project_crs
        model_name = choice.name if choice else "default"
        title = result_layers.layer_title(rgb.name, model_name)
        replace = False
        earlier = result_layers.previous_results(rgb_layer.id(), model_name)
        if earlier:
            answer = self.ask_replace(dock, earlier[0].name())
            if answer is None:
                return None, None
            replace = answer == REPLACE
            if replace:
                result_layers.remove_layers(earlier)
        folder = result_layers.results_folder()
        out = result_layers.output_path(folder, rgb.name, model_name, replace)
        request = ExtractionRequest(
            rgb=rgb,
            ms=ms,
            extent=extent,
            extent_crs=extent_crs,
            out_path=out,
            model=choice.path if choice and not choice.is_default else None,
            options=dock.options(),
            title=title,
            source_layer_id=rgb_layer.id(),
            model_name=model_name,
            overwrite=replace,
        )
        return request, (aoi, extent_crs) if aoi is not None else None

    def job(self, request: ExtractionRequest) -> Job:
        return (
            f"Ternaus: extracting buildings from {request.rgb.name}",
            lambda progress: run_extraction(request, self.backend, progress),
        )

    def show_running(self) -> None:
        self.dock.save_choices()
        self.dock.set_running(True)
        self.dock.set_progress(0, "Starting…")

    def show_progress(self, percent: float, stage: str) -> None:
        self.dock.set_progress(percent, stage)

    def show_cancelling(self) -> None:
        self.dock.set_progress(self.dock.progress_bar.value(), "Cancelling…")

    def show_result(self, result: ExtractionResult) -> None:
        self.dock.set_running(False)
        request = result.request
        aoi = None
        if self._aoi is not None:
            geometry, crs = self._aoi
            aoi = QgsGeometry(geometry)
            aoi.transform(QgsCoordinateTransform(crs, request.rgb.crs, QgsProject.instance()))
        try:
            layer = result_layers.add_result_layer(
                result.path,
                result.layer_name,
                request.title,
                request.source_layer_id,
                request.model_name,
                aoi,
            )
        except RuntimeError as error:
            self.fail(
                TernausPluginError(f"The result could not be opened: {error}.", str(result.path))
            )
            return
        took = format_seconds(result.seconds)
        self.dock.set_progress(100, f"{layer.featureCount()} buildings in {took}")
        push_success(
            self.bar,
            f"{layer.featureCount()} buildings extracted in {took} "
            f"on {result.device}; saved in {result.path}",
        )

    def show_error(self, error: TernausPluginError) -> None:
        self.dock.set_running(False)
        self.dock.set_progress(0, error.message)
        if isinstance(error, BackendUnreachableError):
            self.dock.set_backend_text("stopped: the next Extract starts it again")
        push_error(self.bar, error)


def selected_polygons(layer: QgsVectorLayer) -> QgsGeometry:
    """The union of the selected polygons of ``layer`` (``LayerError`` when none is selected)."""
    geometries = [f.geometry() for f in layer.selectedFeatures() if not f.geometry().isEmpty()]
    if not geometries:
        raise LayerError(
            f"No polygons are selected in '{layer.name()}': select the areas to extract, or "
            "clear 'Selected polygons of'."
        )
    return QgsGeometry.unaryUnion(geometries)
