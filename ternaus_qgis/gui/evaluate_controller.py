"""EvaluateController: the Evaluate tab's request as a task, its scores and layers as the result.

The layers are exported here (:meth:`EvaluateController.collect`); the work is
:func:`~ternaus_qgis.core.evaluation.run_evaluation`, the backend's ``evaluate`` job.
"""

from __future__ import annotations

import re

from ..core import result_layers
from ..core.evaluation import EvaluationRequest, EvaluationResult, run_evaluation
from ..core.vector_inputs import export_vector_layer
from ..exceptions import LayerError, TernausPluginError
from .messages import push_error, push_success
from .workflow import Job, Workflow


class EvaluateController(Workflow):
    """Evaluate: a result layer against a reference, inside an optional area."""

    def collect(self) -> EvaluationRequest:
        """The evaluation request from the Evaluate tab (GUI thread: layers are exported here)."""
        panel = self.dock.evaluate_panel
        result, reference = panel.result_layer(), panel.reference_layer()
        if result is not None and reference is not None and result.id() == reference.id():
            raise LayerError("The result and the reference are the same layer: choose two.")
        result_path = export_vector_layer(result, "result")
        reference_path = export_vector_layer(reference, "reference")
        area = panel.area_layer()
        area_path = None
        if area is not None:
            area_path = export_vector_layer(area, "area", panel.area_selected_check.isChecked())
        folder = result_layers.results_folder()
        stem = re.sub(r"[^\w.-]+", "_", f"{result.name()}_vs_{reference.name()}")
        out = folder / f"{stem}_evaluation.gpkg"
        n = 2
        while out.exists():
            out = folder / f"{stem}_evaluation_{n}.gpkg"
            n += 1
        return EvaluationRequest(
            result_path=result_path,
            reference_path=reference_path,
            out_path=out,
            area_path=area_path,
            iou_threshold=panel.iou_spin.value(),
            result_name=result.name(),
            reference_name=reference.name(),
        )

    def job(self, request: EvaluationRequest) -> Job:
        return (
            f"Ternaus: evaluating {request.result_name} against {request.reference_name}",
            lambda progress: run_evaluation(request, self.backend, progress),
        )

    def show_running(self) -> None:
        self.dock.evaluate_panel.set_running(True)

    def show_progress(self, percent: float, stage: str) -> None:
        self.dock.evaluate_panel.progress_bar.setValue(int(round(percent)))

    def show_result(self, evaluation: EvaluationResult) -> None:
        panel = self.dock.evaluate_panel
        panel.set_running(False)
        panel.show_scores(evaluation.result)
        result_layers.add_evaluation_layers(evaluation.path, evaluation.request.result_name)
        push_success(
            self.bar,
            f"{evaluation.request.result_name} vs {evaluation.request.reference_name}: "
            f"{evaluation.summary}",
        )

    def show_error(self, error: TernausPluginError) -> None:
        self.dock.evaluate_panel.set_running(False)
        self.dock.evaluate_panel.scores_label.setText(error.message)
        push_error(self.bar, error)
