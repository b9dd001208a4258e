"""DockController: turns the dock's requests into tasks, and task results into layers and messages.

Runs on the GUI thread. It reads layers and the extent there (:func:`collect_request`), starts an
:class:`~ternaus_qgis.tasks.extract_task.ExtractTask` in QGIS's task manager, and adds the result
layer when the task has finished.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from qgis.core import (
    QgsApplication,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsProject,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QObject
from qgis.PyQt.QtWidgets import QFileDialog, QMessageBox

from .. import settings
from ..backend_process import INSTALLED_ORIGIN, BackendConnection, find_backend_command
from ..core import result_layers
from ..core.evaluation import EvaluationRequest, EvaluationResult
from ..core.extraction import ExtractionRequest, ExtractionResult
from ..core.installer import InstallPlan, InstallResult
from ..core.jobs import format_seconds
from ..core.models import choices_from_infos, model_problem
from ..core.raster_inputs import raster_input
from ..core.training import TrainingRequest, TrainingResult, calibration_text
from ..core.vector_inputs import export_vector_layer
from ..exceptions import (
    BackendMissingError,
    BackendUnreachableError,
    LayerError,
    TernausPluginError,
    TrainingStoppedError,
)
from ..tasks.backend_task import BackendStatus, BackendStatusTask
from ..tasks.evaluate_task import EvaluateTask
from ..tasks.extract_task import ExtractTask
from ..tasks.install_task import InstallBackendTask
from ..tasks.train_task import TrainTask
from .comparison_controller import ComparisonController
from .dock import TernausDockWidget
from .labelling_controller import LabellingController
from .messages import push_error, push_success, push_warning

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


class DockController(QObject):
    """Connects a :class:`TernausDockWidget` to the backend, the task manager and the project."""

    def __init__(
        self,
        dock: TernausDockWidget,
        message_bar,
        backend: BackendConnection,
        canvas=None,
    ) -> None:
        super().__init__(dock)
        self.dock = dock
        self.bar = message_bar
        self.backend = backend
        self.canvas = canvas
        self.task: ExtractTask | None = None
        self._aoi: tuple | None = None
        self.status_task: BackendStatusTask | None = None
        self.last_result: ExtractionResult | None = None
        self.last_error: TernausPluginError | None = None
        #: Asked when a result of the same layer and model exists; tests replace it.
        self.ask_replace: Callable[[object, str], str | None] = ask_replace_or_add
        dock.extract_requested.connect(self.extract)
        dock.cancel_requested.connect(self.cancel)
        dock.reconnect_requested.connect(self.refresh_backend)
        dock.add_model_requested.connect(self.add_model)
        dock.settings_requested.connect(self.open_settings)
        dock.install_requested.connect(self.install_backend)
        dock.install_cancel_requested.connect(self.cancel_install)
        dock.evaluate_panel.evaluate_requested.connect(self.evaluate)
        dock.train_panel.train_requested.connect(self.train)
        dock.train_panel.cancel_requested.connect(self.cancel_training)
        self.train_task: TrainTask | None = None
        #: The request of the latest training (resumed from when it stopped).
        self.train_request: TrainingRequest | None = None
        self.last_training: TrainingResult | None = None
        #: Extra fields of the train request (e.g. crop_px, batch_size, lr).
        self.training_options: dict = {}
        self.evaluate_task: EvaluateTask | None = None
        self.last_evaluation: EvaluationResult | None = None
        self.install_task: InstallBackendTask | None = None
        self.last_install: InstallResult | None = None
        #: Shows the install dialog and returns its plan (None: cancelled); tests replace it.
        self.ask_install_plan: Callable[[object], InstallPlan | None] = ask_install_plan
        #: The Map check and Changes tabs.
        self.comparison = ComparisonController(dock, message_bar, backend)
        #: The Train tab's "Propose cells to label".
        self.labelling = LabellingController(dock, message_bar, backend, canvas)

    # ------------------------------------------------------------------ backend state
    def refresh_backend(self) -> None:
        """Connect (start the local backend if needed), then show the device and list models."""
        if self.status_task is not None:
            return
        self.dock.set_backend_text("connecting…")
        self.status_task = BackendStatusTask(self.backend, self._status_done, self._status_failed)
        QgsApplication.taskManager().addTask(self.status_task)

    def _status_done(self, status: BackendStatus) -> None:
        self.status_task = None
        self.dock.set_install_offered(False)
        health = status.info.health
        where = "local" if status.info.local else status.info.url
        self.dock.set_backend_text(
            f"ready ({where}): {status.info.device_text}, ternaus {health.get('version', '?')}"
        )
        self.dock.set_models(choices_from_infos(status.models))
        for warning in status.info.warnings:  # once per URL (e.g. a token over plain http)
            push_warning(self.bar, warning)
        for problem in status.problems:
            push_error(self.bar, LayerError(f"A model file cannot be used: {problem}"))

    def _status_failed(self, error: TernausPluginError) -> None:
        self.status_task = None
        self.last_error = error
        missing = isinstance(error, BackendMissingError)
        self.dock.set_install_offered(missing)
        if missing:
            self.dock.set_backend_text("not installed: press Install backend…")
        else:
            self.dock.set_backend_text(f"not available: {error.message}")
        push_error(self.bar, error)

    def add_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.dock, "Add a model file", "", "Models (*.safetensors *.pt *.pth)"
        )
        if path:
            settings.add_extra_model(path)
            self.refresh_backend()

    def open_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.dock)
        accepted = dialog.exec_()
        if dialog.install_requested:
            self.install_backend()
        elif accepted:
            self.backend.stop()  # the next call connects as the new settings say
            self.refresh_backend()

    # ------------------------------------------------------------------ installing the backend
    def install_backend(self) -> None:
        """Ask what to install where, then run an InstallBackendTask (venv + pip) with progress."""
        if self.install_task is not None:
            return
        plan = self.ask_install_plan(self.dock)
        if plan is None:
            return
        self.install_task = InstallBackendTask(plan, self._install_done, self._install_failed)
        self.install_task.progressChanged.connect(self._on_install_progress)
        self.dock.set_installing(True)
        self.dock.set_install_progress(0, "Installing the backend…")
        QgsApplication.taskManager().addTask(self.install_task)

    def cancel_install(self) -> None:
        if self.install_task is not None:
            self.dock.set_backend_text("Cancelling the installation…")
            self.install_task.cancel()

    def _on_install_progress(self, percent: float) -> None:
        if self.install_task is not None:
            self.dock.set_install_progress(percent, self.install_task.stage)

    def _install_done(self, result: InstallResult) -> None:
        self.install_task = None
        self.last_install = result
        self.dock.set_installing(False)
        self.dock.set_install_offered(False)
        text = (
            f"Backend installed in {format_seconds(result.seconds)} ({result.version_text}) "
            f"in {result.venv_dir}."
        )
        try:
            command, origin = find_backend_command()
        except TernausPluginError:
            command, origin = None, ""
        if command is not None and origin != INSTALLED_ORIGIN:
            text += (
                f" Note: the plugin uses {command} from {origin} first; clear that to use the "
                "new one."
            )
        push_success(self.bar, text, result.log_path)
        self.backend.stop()  # the next call starts the backend that is found now
        self.refresh_backend()

    def _install_failed(self, error: TernausPluginError) -> None:
        task, self.install_task = self.install_task, None
        self.last_error = error
        self.dock.set_installing(False)
        self.dock.set_backend_text(f"not installed: {error.message}")
        log_path = task.plan.log_path if task is not None else None
        if log_path is not None and not log_path.is_file():
            log_path = None
        push_error(self.bar, error, log_path)

    # ------------------------------------------------------------------ extraction
    def extract(self) -> None:
        """Collect the dock's choices, ask about an earlier result, start an ExtractTask."""
        if self.task is not None:
            return
        try:
            request, aoi = self.collect_request()
        except TernausPluginError as error:
            self.last_error = error
            push_error(self.bar, error)
            return
        if request is None:  # the user cancelled the replace/add question
            return
        self.dock.save_choices()
        self._aoi = aoi
        self.task = ExtractTask(request, self.backend, self._extract_done, self._extract_failed)
        self.task.progressChanged.connect(self._on_progress)
        self.dock.set_running(True)
        self.dock.set_progress(0, "Starting…")
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.dock.set_progress(self.dock.progress_bar.value(), "Cancelling…")
            self.task.cancel()

    def _on_progress(self, percent: float) -> None:
        if self.task is not None:
            self.dock.set_progress(percent, self.task.stage)

    def collect_request(self) -> tuple[ExtractionRequest | None, QgsGeometry | None]:
        """The request from the dock's widgets (GUI thread); ``(None, None)`` when the user
        declined to replace or add."""
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

    def _extract_done(self, result: ExtractionResult) -> None:
        self.task = None
        self.last_result = result
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
            self._extract_failed(
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

    def _extract_failed(self, error: TernausPluginError) -> None:
        self.task = None
        self.last_error = error
        self.dock.set_running(False)
        self.dock.set_progress(0, error.message)
        if isinstance(error, BackendUnreachableError):
            self.dock.set_backend_text("stopped: the next Extract starts it again")
        push_error(self.bar, error)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> None:
        """Export the chosen layers, start an EvaluateTask."""
        if self.evaluate_task is not None:
            return
        panel = self.dock.evaluate_panel
        try:
            request = self.collect_evaluation()
        except TernausPluginError as error:
            self.last_error = error
            push_error(self.bar, error)
            return
        self.evaluate_task = EvaluateTask(
            request, self.backend, self._evaluate_done, self._evaluate_failed
        )
        self.evaluate_task.progressChanged.connect(self._on_evaluate_progress)
        panel.set_running(True)
        QgsApplication.taskManager().addTask(self.evaluate_task)

    def _on_evaluate_progress(self, percent: float) -> None:
        self.dock.evaluate_panel.progress_bar.setValue(int(round(percent)))

    def collect_evaluation(self) -> EvaluationRequest:
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

    def _evaluate_done(self, evaluation: EvaluationResult) -> None:
        self.evaluate_task = None
        self.last_evaluation = evaluation
        panel = self.dock.evaluate_panel
        panel.set_running(False)
        panel.show_scores(evaluation.scores)
        result_layers.add_evaluation_layers(evaluation.path, evaluation.request.result_name)
        push_success(
            self.bar,
            f"{evaluation.request.result_name} vs {evaluation.request.reference_name}: "
            f"{evaluation.summary}",
        )

    def _evaluate_failed(self, error: TernausPluginError) -> None:
        self.evaluate_task = None
        self.last_error = error
        self.dock.evaluate_panel.set_running(False)
        self.dock.evaluate_panel.scores_label.setText(error.message)
        push_error(self.bar, error)

    # ------------------------------------------------------------------ training
    def train(self) -> None:
        """Export the labelled layers, start a TrainTask."""
        if self.train_task is not None:
            return
        try:
            request = self.collect_training()
        except TernausPluginError as error:
            self.last_error = error
            push_error(self.bar, error)
            return
        self._start_training(request)

    def _start_training(self, request: TrainingRequest) -> None:
        panel = self.dock.train_panel
        self.train_request = request
        self.train_task = TrainTask(request, self.backend, self._train_done, self._train_failed)
        self.train_task.progressChanged.connect(self._on_train_progress)
        self.train_task.epoch_done.connect(self._on_epoch)
        panel.set_running(True)
        panel.stage_label.setText("Starting…")
        QgsApplication.taskManager().addTask(self.train_task)

    def cancel_training(self) -> None:
        if self.train_task is not None:
            self.dock.train_panel.stage_label.setText("Stopping; the best model so far is kept…")
            self.train_task.cancel()

    def collect_training(self) -> TrainingRequest:
        """The training request from the Train tab (GUI thread: layers are exported here)."""
        panel = self.dock.train_panel
        name = re.sub(r"[^\w.-]+", "_", panel.name_edit.text().strip()).strip("._")
        if not name:
            raise LayerError("Name the new model (e.g. my_town_2026).")
        rgb = raster_input(panel.rgb_layer(), "RGB", 3)
        ms_layer = panel.ms_layer()
        ms = raster_input(ms_layer, "multispectral", 1) if ms_layer is not None else None
        labels = panel.labels_layer()
        labels_path = export_vector_layer(labels, "labelled buildings") if labels else None
        area, val_area = panel.area_layer(), panel.val_area_layer()
        area_path = (
            export_vector_layer(area, "training area", panel.area_selected_check.isChecked())
            if area is not None
            else None
        )
        val_path = export_vector_layer(val_area, "validation area") if val_area else None
        where = area if area is not None else labels
        if where is None and rgb.rendered:
            raise LayerError(
                "A web layer has no extent of its own: choose labelled buildings or a training "
                "area to say where to train."
            )
        return TrainingRequest(
            rgb=rgb,
            ms=ms,
            labels_path=labels_path,
            out_path=settings.models_folder() / f"{name}.safetensors",
            name=name,
            area_path=area_path,
            val_area_path=val_path,
            init_model=panel.base_combo.currentData() or None,
            epochs=panel.epochs_spin.value() or None,  # 0 shows "auto": the recipe's
            steps_per_epoch=panel.steps_spin.value() or None,
            self_training=panel.self_training_check.isChecked(),
            options=dict(self.training_options),
            extent=where.extent() if rgb.rendered else None,
            extent_crs=where.crs() if rgb.rendered else None,
        )

    def _on_train_progress(self, percent: float) -> None:
        if self.train_task is not None:
            panel = self.dock.train_panel
            panel.progress_bar.setValue(int(round(percent)))
            panel.stage_label.setText(self.train_task.stage)

    def _on_epoch(self, point) -> None:
        self.dock.train_panel.curve.add(point)

    def _train_done(self, result: TrainingResult) -> None:
        self.train_task = None
        self.last_training = result
        panel = self.dock.train_panel
        panel.set_running(False)
        for point in result.curve:  # the job's own history: every epoch, in order
            panel.curve.add(point)
        summary = result.summary
        f1 = summary.get("best_val_f1")
        f1_text = "n/a" if f1 is None else f"{f1:.3f}"
        how = "stopped early, best kept" if result.cancelled else "done"
        text = (
            f"Model {result.model_path.stem} {how}: best epoch {summary.get('best_epoch')}, "
            f"validation F1 {f1_text}, {format_seconds(result.seconds)}; saved in "
            f"{result.model_path}"
        )
        calibration = calibration_text(summary)
        if calibration:
            text += f"; {calibration}"
        panel.stage_label.setText(text)
        panel.progress_bar.setValue(100)
        push_success(self.bar, text)
        settings.set("dock/model", str(result.model_path))
        self.refresh_backend()  # the new model appears in the model lists

    def _train_failed(self, error: TernausPluginError) -> None:
        self.train_task = None
        self.last_error = error
        self.dock.train_panel.set_running(False)
        self.dock.train_panel.stage_label.setText(error.message)
        actions = None
        if isinstance(error, TrainingStoppedError):  # a model and its checkpoint were kept
            actions = [
                ("Use this model", "ternausUseStoppedModel", lambda: self.use_stopped_model(error)),
                ("Resume training", "ternausResumeTraining", lambda: self.resume_training(error)),
            ]
        push_error(self.bar, error, actions=actions)

    def use_stopped_model(self, stopped: TrainingStoppedError) -> None:
        """Choose the best model of a stopped training for extraction (and list it)."""
        path = str(stopped.model_path)
        settings.set("dock/model", path)
        text = f"Using {stopped.model_path.stem}, the best model of the stopped training: {path}"
        self.dock.train_panel.stage_label.setText(text)
        push_success(self.bar, text)
        self.refresh_backend()  # the model appears in the lists, selected

    def resume_training(self, stopped: TrainingStoppedError) -> None:
        """Continue a stopped training from its checkpoint (the same job, ``resume: true``)."""
        if self.train_task is not None or self.train_request is None:
            return
        request = dataclasses.replace(self.train_request, resume_payload=stopped.resume_payload)
        self._start_training(request)

    def shutdown(self) -> None:
        """Cancel running work and forget its callbacks (plugin unload)."""
        tasks = (self.task, self.status_task, self.evaluate_task, self.train_task)
        tasks += (self.install_task,)
        for task in tasks:
            if task is not None:
                task.detach()
        self.task = self.status_task = self.evaluate_task = self.train_task = None
        self.install_task = None
        self.comparison.shutdown()
        self.labelling.shutdown()


def ask_install_plan(parent) -> InstallPlan | None:
    """The install dialog; its plan, or ``None`` when the user cancelled."""
    from .install_dialog import InstallBackendDialog

    dialog = InstallBackendDialog(parent)
    return dialog.plan if dialog.exec_() else None


def selected_polygons(layer: QgsVectorLayer) -> QgsGeometry:
    """The union of the selected polygons of ``layer`` (``LayerError`` when none is selected)."""
    geometries = [f.geometry() for f in layer.selectedFeatures() if not f.geometry().isEmpty()]
    if not geometries:
        raise LayerError(
            f"No polygons are selected in '{layer.name()}': select the areas to extract, or "
            "clear 'Selected polygons of'."
        )
    return QgsGeometry.unaryUnion(geometries)
