"""ComparisonController: the "Map check" and "Changes" tabs' requests as tasks, their results as
styled layers in a group (GUI thread).

Layers are read and exported here (:func:`~ternaus_qgis.core.vector_inputs.export_vector_layer`,
:func:`~ternaus_qgis.core.raster_inputs.raster_input`); the work is a
:class:`~ternaus_qgis.tasks.comparison_task.ComparisonTask`, the backend's ``compare`` and
``changes`` jobs (and its ``predict`` job for a date given as an image), the code behind
``ternaus compare`` / ``ternaus changes`` and the Processing algorithms.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QObject

from ..backend_process import BackendConnection
from ..core import result_layers
from ..core.comparison import ChangesRequest, CompareRequest
from ..core.extraction import ExtractionRequest
from ..core.jobs import format_seconds
from ..core.models import model_problem
from ..core.raster_inputs import raster_input
from ..core.vector_inputs import export_vector_layer
from ..exceptions import LayerError, TernausPluginError
from ..tasks.comparison_task import ComparisonOutcome, ComparisonTask
from .comparison_panels import ChangesPanel, MapCheckPanel, _ComparisonPanel
from .messages import push_error, push_success

SIDE_WORDS = {"before": "earlier", "after": "later"}


class ComparisonController(QObject):
    """Connects the dock's Map check and Changes tabs to tasks and the project."""

    def __init__(self, dock, message_bar, backend: BackendConnection) -> None:
        super().__init__(dock)
        self.dock = dock
        self.bar = message_bar
        self.backend = backend
        self.tasks: dict[str, ComparisonTask | None] = {"compare": None, "changes": None}
        #: The latest outcome of each kind (``ComparisonOutcome``), and the latest error.
        self.last: dict[str, ComparisonOutcome | None] = {"compare": None, "changes": None}
        self.last_error: TernausPluginError | None = None
        #: Where each kind's latest run counted (shown under its summary), e.g. "inside ...".
        self.notes: dict[str, str] = {"compare": "", "changes": ""}
        self.panels: dict[str, _ComparisonPanel] = {
            "compare": dock.map_check_panel,
            "changes": dock.changes_panel,
        }
        for kind, panel in self.panels.items():
            panel.run_requested.connect(lambda kind=kind: self.run(kind))
            panel.cancel_requested.connect(lambda kind=kind: self.cancel(kind))

    # ------------------------------------------------------------------ running
    def run(self, kind: str) -> None:
        """Collect the tab's choices (layers exported here) and start a ComparisonTask."""
        if self.tasks[kind] is not None:
            return
        panel = self.panels[kind]
        try:
            if kind == "compare":
                request, extractions = self.collect_compare(panel), {}
            else:
                request, extractions = self.collect_changes(panel)
        except TernausPluginError as error:
            self.last_error = error
            panel.show_error(error.message)
            push_error(self.bar, error)
            return
        task = ComparisonTask(
            request,
            self.backend,
            lambda outcome, kind=kind: self._done(kind, outcome),
            lambda error, kind=kind: self._failed(kind, error),
            extractions,
        )
        task.progressChanged.connect(lambda percent, kind=kind: self._progress(kind, percent))
        self.tasks[kind] = task
        panel.set_running(True)
        QgsApplication.taskManager().addTask(task)

    def cancel(self, kind: str) -> None:
        task = self.tasks[kind]
        if task is not None:
            panel = self.panels[kind]
            panel.set_progress(panel.progress_bar.value(), "Cancelling…")
            task.cancel()

    def _progress(self, kind: str, percent: float) -> None:
        task = self.tasks[kind]
        if task is not None:
            self.panels[kind].set_progress(percent, task.stage)

    def _done(self, kind: str, outcome: ComparisonOutcome) -> None:
        self.tasks[kind] = None
        self.last[kind] = outcome
        panel = self.panels[kind]
        panel.set_running(False)
        comparison = outcome.comparison
        request = outcome.request
        if kind == "compare":
            group = f"map check - {request.reference_name} vs {request.result_name}"
        else:
            group = f"changes - {request.before_name} to {request.after_name}"
        extracted = [
            (result.path, result.layer_name, result.request.title)
            for result in outcome.extracted.values()
        ]
        try:
            result_layers.add_comparison_layers(comparison.path, kind, group, extracted)
        except RuntimeError as error:
            self._failed(
                kind, TernausPluginError(f"The layers could not be opened: {error}.", str(error))
            )
            return
        panel.show_summary(comparison.summary, format_seconds(comparison.seconds), self.notes[kind])
        push_success(self.bar, f"{group}: {comparison.text}; saved in {comparison.path}")

    def _failed(self, kind: str, error: TernausPluginError) -> None:
        self.tasks[kind] = None
        self.last_error = error
        panel = self.panels[kind]
        panel.set_running(False)
        panel.set_progress(0, error.message)
        push_error(self.bar, error)

    def shutdown(self) -> None:
        """Cancel running work and forget its callbacks (plugin unload)."""
        for kind, task in self.tasks.items():
            if task is not None:
                task.detach()
            self.tasks[kind] = None

    # ------------------------------------------------------------------ collecting requests
    def collect_compare(self, panel: MapCheckPanel) -> CompareRequest:
        """The request of the Map check tab (GUI thread: layers are exported here)."""
        result, reference = panel.result_layer(), panel.map_layer()
        if result is not None and reference is not None and result.id() == reference.id():
            raise LayerError("Our buildings and the map's are the same layer: choose two.")
        result_path = export_vector_layer(result, "result")
        reference_path = export_vector_layer(reference, "map buildings")
        area_path = self._area_path(panel)
        self.notes["compare"] = ""
        image = source_image(result)
        if area_path is None and image is not None:  # the map beyond the image was not seen
            area_path = export_vector_layer(
                _rectangle_layer(image.extent(), image.crs()), "imaged area"
            )
            self.notes["compare"] = f"Inside the extent of '{image.name()}', where they come from"
        stem = f"{reference.name()}_vs_{result.name()}_map_check"
        return CompareRequest(
            result_path=result_path,
            reference_path=reference_path,
            out_path=result_layers.free_path(result_layers.results_folder(), stem),
            area_path=area_path,
            iou_threshold=panel.iou_spin.value(),
            cell_m=panel.cell_spin.value(),
            result_name=result.name(),
            reference_name=reference.name(),
        )

    def collect_changes(
        self, panel: ChangesPanel
    ) -> tuple[ChangesRequest, dict[str, ExtractionRequest]]:
        """The request of the Changes tab; a date given as an image gets an extraction request
        (the Extract tab's model and options) over the part both dates cover, and the changes
        are then counted inside that part only."""
        layers = {"before": panel.before_layer(), "after": panel.after_layer()}
        for side, layer in layers.items():
            if layer is None or not layer.isValid():
                raise LayerError(
                    f"Choose the {SIDE_WORDS[side]} date: a building layer or an image."
                )
        if layers["before"].id() == layers["after"].id():
            raise LayerError("Before and after are the same layer: choose two dates.")
        images = {s: lyr for s, lyr in layers.items() if isinstance(lyr, QgsRasterLayer)}
        area = panel.area_layer()
        selected = panel.area_selected_check.isChecked()
        area_path = self._area_path(panel)
        paths: dict[str, Path] = {}
        extractions: dict[str, ExtractionRequest] = {}
        self.notes["changes"] = ""
        if images:
            extent, crs = self._common_extent(layers, area, selected)
            if area_path is None:  # count changes only where both dates are known
                area_path = export_vector_layer(_rectangle_layer(extent, crs), "overlap")
                self.notes["changes"] = "Inside the part both dates cover"
        for side, layer in layers.items():
            if side in images:
                extractions[side] = self._extraction(layer, extent, crs)
                paths[side] = extractions[side].out_path  # replaced by the extraction's
            elif isinstance(layer, QgsVectorLayer):
                paths[side] = export_vector_layer(layer, f"{SIDE_WORDS[side]} buildings")
            else:
                raise LayerError(
                    f"The {SIDE_WORDS[side]} layer '{layer.name()}' is neither polygons nor an "
                    "image: choose another layer."
                )
        before, after = layers["before"].name(), layers["after"].name()
        request = ChangesRequest(
            before_path=paths["before"],
            after_path=paths["after"],
            out_path=result_layers.free_path(
                result_layers.results_folder(), f"{before}_to_{after}_changes"
            ),
            area_path=area_path,
            change_iou=panel.change_spin.value(),
            match_iou=panel.match_spin.value(),
            before_name=before,
            after_name=after,
        )
        return request, extractions

    def _area_path(self, panel: _ComparisonPanel) -> Path | None:
        area = panel.area_layer()
        if area is None:
            return None
        return export_vector_layer(area, "area", panel.area_selected_check.isChecked())

    def _common_extent(self, layers: dict[str, QgsMapLayer], area, selected: bool):
        """The part both dates (and the area, when chosen) cover, in the first image's CRS."""
        crs = next(lyr for lyr in layers.values() if isinstance(lyr, QgsRasterLayer)).crs()
        project = QgsProject.instance()
        extent: QgsRectangle | None = None
        sources = list(layers.values())
        if area is not None:
            sources.append(area)
        for layer in sources:
            box = layer.extent()
            if layer is area and selected:
                box = layer.boundingBoxOfSelected()
            if layer.crs() != crs:
                box = QgsCoordinateTransform(layer.crs(), crs, project).transformBoundingBox(box)
            extent = box if extent is None else extent.intersect(box)
        if extent is None or extent.isEmpty():
            names = ", ".join(f"'{layer.name()}'" for layer in sources)
            raise LayerError(f"The layers {names} do not overlap: choose dates of the same place.")
        return extent, crs

    def _extraction(self, layer: QgsRasterLayer, extent, crs) -> ExtractionRequest:
        """An extraction of ``layer`` over ``extent`` with the Extract tab's model and options."""
        dock = self.dock
        rgb = raster_input(layer, "RGB", 3, dock.render_resolution())
        choice = dock.current_model()
        if choice is not None:
            problem = model_problem(choice, layer, None)
            if problem:
                raise LayerError(f"The model {choice.name} cannot be used: {problem}.")
        model_name = choice.name if choice else "default"
        folder = result_layers.results_folder()
        return ExtractionRequest(
            rgb=rgb,
            extent=extent,
            extent_crs=crs,
            out_path=result_layers.output_path(folder, rgb.name, model_name, False),
            model=choice.path if choice and not choice.is_default else None,
            options=dock.options(),
            title=result_layers.layer_title(rgb.name, model_name),
            source_layer_id=layer.id(),
            model_name=model_name,
        )


def source_image(layer: QgsVectorLayer) -> QgsRasterLayer | None:
    """The project's raster layer an extraction result was made from (None: not a result of the
    dock, or that layer is gone)."""
    source = QgsProject.instance().mapLayer(layer.customProperty(result_layers.PROP_SOURCE) or "")
    return source if isinstance(source, QgsRasterLayer) else None


def _rectangle_layer(extent: QgsRectangle, crs) -> QgsVectorLayer:
    """A memory layer of one rectangle (to be exported; it is never added to the project)."""
    layer = QgsVectorLayer("Polygon", "overlap", "memory")
    layer.setCrs(crs)
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(extent))
    layer.dataProvider().addFeatures([feature])
    return layer
