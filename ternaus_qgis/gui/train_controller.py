"""TrainController: the Train tab's request as a task; epochs drawn as they arrive, the new model
listed when done, a stopped training used or resumed.

The layers are exported here (:meth:`TrainController.collect`); the work is
:func:`~ternaus_qgis.core.training.run_training`, the backend's ``train`` job.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from .. import settings
from ..core.jobs import format_seconds
from ..core.raster_inputs import raster_input
from ..core.training import (
    EpochPoint,
    TrainingRequest,
    TrainingResult,
    calibration_text,
    run_training,
)
from ..core.vector_inputs import export_vector_layer
from ..exceptions import LayerError, TernausPluginError, TrainingStoppedError
from .messages import push_error, push_success
from .workflow import Job, Workflow


class TrainController(Workflow):
    """Train: labelled buildings (or self-training) to a new model in the models folder.

    ``models_changed`` is called when a model is added to the models folder (the dock lists the
    models again).
    """

    def __init__(self, dock, message_bar, backend, models_changed: Callable[[], None]) -> None:
        super().__init__(dock, message_bar, backend)
        self.panel = dock.train_panel
        self.models_changed = models_changed
        #: Extra fields of the train request (e.g. crop_px, batch_size, lr).
        self.options: dict = {}

    def collect(self) -> TrainingRequest:
        """The training request from the Train tab (GUI thread: layers are exported here)."""
        panel = self.panel
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
            options=dict(self.options),
            extent=where.extent() if rgb.rendered else None,
            extent_crs=where.crs() if rgb.rendered else None,
        )

    def job(self, request: TrainingRequest) -> Job:
        return (
            f"Ternaus: training {request.name}",
            lambda progress: run_training(
                request, self.backend, progress, on_epoch=progress.partial
            ),
        )

    def show_running(self) -> None:
        self.panel.set_running(True)
        self.panel.stage_label.setText("Starting…")

    def show_progress(self, percent: float, stage: str) -> None:
        self.panel.progress_bar.setValue(int(round(percent)))
        self.panel.stage_label.setText(stage)

    def show_partial(self, point: EpochPoint) -> None:
        self.panel.curve.add(point)

    def show_cancelling(self) -> None:
        self.panel.stage_label.setText("Stopping; the best model so far is kept…")

    def show_result(self, result: TrainingResult) -> None:
        panel = self.panel
        panel.set_running(False)
        for point in result.curve:  # the job's own history: every epoch, in order
            panel.curve.add(point)
        f1 = result.result.best_val_f1
        f1_text = "n/a" if f1 is None else f"{f1:.3f}"
        how = "stopped early, best kept" if result.cancelled else "done"
        text = (
            f"Model {result.model_path.stem} {how}: best epoch {result.result.best_epoch}, "
            f"validation F1 {f1_text}, {format_seconds(result.seconds)}; saved in "
            f"{result.model_path}"
        )
        calibration = calibration_text(result.result.calibration)
        if calibration:
            text += f"; {calibration}"
        panel.stage_label.setText(text)
        panel.progress_bar.setValue(100)
        push_success(self.bar, text)
        settings.set("dock/model", str(result.model_path))
        self.models_changed()  # the new model appears in the model lists

    def show_error(self, error: TernausPluginError) -> None:
        self.panel.set_running(False)
        self.panel.stage_label.setText(error.message)
        actions = None
        if isinstance(error, TrainingStoppedError):  # a model and its checkpoint were kept
            actions = [
                ("Use this model", "ternausUseStoppedModel", lambda: self.use_stopped_model(error)),
                ("Resume training", "ternausResumeTraining", lambda: self.resume(error)),
            ]
        push_error(self.bar, error, actions=actions)

    def use_stopped_model(self, stopped: TrainingStoppedError) -> None:
        """Choose the best model of a stopped training for extraction (and list it)."""
        path = str(stopped.model_path)
        settings.set("dock/model", path)
        text = f"Using {stopped.model_path.stem}, the best model of the stopped training: {path}"
        self.panel.stage_label.setText(text)
        push_success(self.bar, text)
        self.models_changed()  # the model appears in the lists, selected

    def resume(self, stopped: TrainingStoppedError) -> None:
        """Continue a stopped training from its checkpoint (the same job, ``resume: true``)."""
        if self.task is not None or self.request is None:
            return
        self.start(dataclasses.replace(self.request, resume_payload=stopped.resume_payload))
