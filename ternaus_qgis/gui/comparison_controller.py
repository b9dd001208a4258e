"""MapCheckController and ChangesController: the "Map check" and "Changes" tabs' requests as
tasks, their results as styled layers in a group (GUI thread).

Layers are read and exported here (:func:`~ternaus_qgis.core.vector_inputs.export_vector_layer`,
:func:`~ternaus_qgis.core.raster_inputs.raster_input`); the work is
:func:`~ternaus_qgis.tasks.comparison_task.run_comparison`, the backend's ``compare`` and
``changes`` jobs (and its ``predict`` job for a date given as an image), the code behind
``ternaus compare`` / ``ternaus changes`` and the Processing algorithms.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from ..core import result_layers
from ..core.change_inputs import ChangesSettings, changes_inputs, rectangle_layer
from ..core.comparison import ChangesRequest, CompareRequest
from ..core.extraction import ExtractionRequest
from ..core.jobs import format_seconds
from ..core.models import model_problem
from ..core.raster_inputs import raster_input
from ..core.vector_inputs import export_vector_layer
from ..exceptions import LayerError, TernausPluginError
from ..tasks.comparison_task import ComparisonOutcome, describe, run_comparison
from .comparison_panels import ChangesPanel, MapCheckPanel, _ComparisonPanel
from .messages import push_error, push_success
from .workflow import Job, Workflow

#: A comparison's request, and the extractions of the dates given as images (by side).
ComparisonJob = tuple[CompareRequest | ChangesRequest, dict[str, ExtractionRequest]]


class ComparisonController(Workflow):
    """One comparison tab: runs its request, adds the result's layers in a group."""

    #: The kind of comparison (``"compare"``: Map check, ``"changes"``: Changes).
    kind = ""

    def __init__(self, dock, message_bar, backend, panel: _ComparisonPanel) -> None:
        super().__init__(dock, message_bar, backend)
        self.panel = panel
        #: Where the latest run counted (shown under its summary), e.g. "Inside ...".
        self.note = ""
        panel.run_requested.connect(self.run)
        panel.cancel_requested.connect(self.cancel)

    def group_name(self, request: CompareRequest | ChangesRequest) -> str:
        """The layer tree group of a result."""
        raise NotImplementedError

    def job(self, job: ComparisonJob) -> Job:
        request, extractions = job
        return (
            describe(request),
            lambda progress: run_comparison(request, extractions, self.backend, progress),
        )

    def show_running(self) -> None:
        self.panel.set_running(True)

    def show_progress(self, percent: float, stage: str) -> None:
        self.panel.set_progress(percent, stage)

    def show_cancelling(self) -> None:
        self.panel.set_progress(self.panel.progress_bar.value(), "Cancelling…")

    def show_result(self, outcome: ComparisonOutcome) -> None:
        panel = self.panel
        panel.set_running(False)
        comparison = outcome.comparison
        group = self.group_name(outcome.request)
        extracted = [
            (result.path, result.layer_name, result.request.title)
            for result in outcome.extracted.values()
        ]
        try:
            result_layers.add_comparison_layers(comparison.path, self.kind, group, extracted)
        except RuntimeError as error:
            self.fail(TernausPluginError(f"The layers could not be opened: {error}.", str(error)))
            return
        panel.show_summary(comparison.result, format_seconds(comparison.seconds), self.note)
        push_success(self.bar, f"{group}: {comparison.text}; saved in {comparison.path}")

    def show_error(self, error: TernausPluginError) -> None:
        self.panel.set_running(False)
        self.panel.set_progress(0, error.message)
        push_error(self.bar, error)

    def show_refusal(self, error: TernausPluginError) -> None:
        self.panel.show_error(error.message)
        push_error(self.bar, error)

    def _area_path(self) -> Path | None:
        area = self.panel.area_layer()
        if area is None:
            return None
        return export_vector_layer(area, "area", self.panel.area_selected_check.isChecked())


class MapCheckController(ComparisonController):
    """The Map check tab: our buildings against a map's (e.g. OpenStreetMap)."""

    kind = "compare"

    def collect(self) -> ComparisonJob:
        return self.collect_request(), {}

    def group_name(self, request: CompareRequest) -> str:
        return f"map check - {request.reference_name} vs {request.result_name}"

    def collect_request(self) -> CompareRequest:
        """The request of the Map check tab (GUI thread: layers are exported here)."""
        panel: MapCheckPanel = self.panel
        result, reference = panel.result_layer(), panel.map_layer()
        if result is not None and reference is not None and result.id() == reference.id():
            raise LayerError("Our buildings and the map's are the same layer: choose two.")
        result_path = export_vector_layer(result, "result")
        reference_path = export_vector_layer(reference, "map buildings")
        area_path = self._area_path()
        self.note = ""
        image = source_image(result)
        if area_path is None and image is not None:  # the map beyond the image was not seen
            area_path = export_vector_layer(
                rectangle_layer(image.extent(), image.crs()), "imaged area"
            )
            self.note = f"Inside the extent of '{image.name()}', where they come from"
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


class ChangesController(ComparisonController):
    """The Changes tab: buildings new, demolished or changed between two dates (layers or
    images)."""

    kind = "changes"

    def group_name(self, request: ChangesRequest) -> str:
        return f"changes - {request.before_name} to {request.after_name}"

    def collect(self) -> ComparisonJob:
        """The request of the Changes tab (:func:`~ternaus_qgis.core.change_inputs.changes_inputs`:
        a date given as an image is extracted with the Extract tab's model and options)."""
        panel: ChangesPanel = self.panel
        before, after = panel.before_layer(), panel.after_layer()
        names = (before.name() if before else "before", after.name() if after else "after")
        settings = ChangesSettings(
            out_path=result_layers.free_path(
                result_layers.results_folder(), f"{names[0]}_to_{names[1]}_changes"
            ),
            change_iou=panel.change_spin.value(),
            match_iou=panel.match_spin.value(),
            area=panel.area_layer(),
            area_selected=panel.area_selected_check.isChecked(),
        )
        inputs = changes_inputs(before, after, settings, self._extraction)
        self.note = inputs.note
        return inputs.request, inputs.extractions

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
