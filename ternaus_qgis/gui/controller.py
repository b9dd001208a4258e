"""DockController: owns one controller per workflow and wires the dock's buttons to them.

Each workflow is a :class:`~.workflow.Workflow` (GUI thread): it collects a request from its
widgets, runs it as a task in QGIS's task manager, and turns the result into layers and messages.
"""

from __future__ import annotations

from qgis.PyQt.QtCore import QObject
from qgis.PyQt.QtWidgets import QFileDialog

from .. import settings
from ..backend_process import BackendConnection
from .backend_controller import BackendStatusController, InstallController
from .comparison_controller import ChangesController, MapCheckController
from .dock import TernausDockWidget
from .evaluate_controller import EvaluateController
from .extract_controller import ExtractController
from .labelling_controller import LabellingController
from .train_controller import TrainController


class DockController(QObject):
    """Connects a :class:`TernausDockWidget` to its workflows: the backend check and install,
    Extract, Evaluate, Train (and *Propose cells to label*), Map check and Changes."""

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
        #: The backend check (device, version, models) and "Install backend…".
        self.backend_status = BackendStatusController(dock, message_bar, backend)
        self.installer = InstallController(dock, message_bar, backend, self.refresh_backend)
        #: The Extract, Evaluate and Train tabs.
        self.extraction = ExtractController(dock, message_bar, backend)
        self.evaluation = EvaluateController(dock, message_bar, backend)
        self.training = TrainController(dock, message_bar, backend, self.refresh_backend)
        #: The Map check and Changes tabs.
        self.map_check = MapCheckController(dock, message_bar, backend, dock.map_check_panel)
        self.changes = ChangesController(dock, message_bar, backend, dock.changes_panel)
        #: The Train tab's "Propose cells to label".
        self.labelling = LabellingController(dock, message_bar, backend, canvas)
        dock.extract_requested.connect(self.extraction.run)
        dock.cancel_requested.connect(self.extraction.cancel)
        dock.reconnect_requested.connect(self.refresh_backend)
        dock.add_model_requested.connect(self.add_model)
        dock.settings_requested.connect(self.open_settings)
        dock.install_requested.connect(self.installer.run)
        dock.install_cancel_requested.connect(self.installer.cancel)
        dock.evaluate_panel.evaluate_requested.connect(self.evaluation.run)
        dock.train_panel.train_requested.connect(self.training.run)
        dock.train_panel.cancel_requested.connect(self.training.cancel)

    def refresh_backend(self) -> None:
        """Connect (start the local backend if needed), then show the device and list models."""
        self.backend_status.run()

    def add_model(self) -> None:
        """Add a model file to the lists (asked with a file dialog)."""
        path, _ = QFileDialog.getOpenFileName(
            self.dock, "Add a model file", "", "Models (*.safetensors *.pt *.pth)"
        )
        if path:
            settings.add_extra_model(path)
            self.refresh_backend()

    def open_settings(self) -> None:
        """The settings dialog; reconnect when they changed, or install the backend."""
        from .settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.dock)
        accepted = dialog.exec_()
        if dialog.install_requested:
            self.installer.run()
        elif accepted:
            self.backend.stop()  # the next call connects as the new settings say
            self.refresh_backend()

    def shutdown(self) -> None:
        """Cancel running work and forget its callbacks (plugin unload)."""
        for workflow in (
            self.extraction,
            self.backend_status,
            self.evaluation,
            self.training,
            self.installer,
            self.map_check,
            self.changes,
            self.labelling,
        ):
            workflow.shutdown()
