"""TernausDockWidget: collects what to extract and shows where the work stands.

The dock only collects parameters and shows state; :class:`~.controller.DockController` turns a
press of Extract into a task. Choices persist between QGIS sessions (QgsSettings).
"""

from __future__ import annotations

from typing import Any

from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsCollapsibleGroupBox, QgsExtentWidget
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QStandardItem, QStandardItemModel
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .. import settings
from ..core.extract_options import ExtractionOptions, option_spec
from ..core.models import ModelChoice, model_problem
from .comparison_panels import ChangesPanel, MapCheckPanel
from .evaluate_panel import EvaluatePanel
from .train_panel import TrainPanel
from .widgets import current_layer, layer_combo

PLUGIN_TITLE = "Ternaus Building Extraction"
TILE_CHOICES = [("model's", 0), ("256 px", 256), ("512 px", 512), ("1024 px", 1024)]
DEVICE_CHOICES = [("auto (GPU when present)", "auto"), ("CPU", "cpu"), ("CUDA GPU", "cuda")]


class TernausDockWidget(QDockWidget):
    """The dock: the backend's state (with "Install backend…" when none is found), then tabs:
    Extract (layers, extent, model, options, Extract/Cancel, progress), Train (labelled layers in,
    a named model out), Evaluate (a result against a reference layer), Map check (what a map is
    missing, and its offset) and Changes (between two dates: building layers or images)."""

    extract_requested = pyqtSignal()
    cancel_requested = pyqtSignal()
    reconnect_requested = pyqtSignal()
    add_model_requested = pyqtSignal()
    settings_requested = pyqtSignal()
    install_requested = pyqtSignal()
    install_cancel_requested = pyqtSignal()

    def __init__(self, canvas: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(PLUGIN_TITLE, parent)
        self.setObjectName("TernausDockWidget")
        self.canvas = canvas
        self._models: list[ModelChoice] = []
        body = QWidget(self)
        outer = QVBoxLayout(body)
        outer.addWidget(self._backend_box())
        self.tabs = QTabWidget(body)
        extract_tab = QWidget(self.tabs)
        layout = QVBoxLayout(extract_tab)
        layout.addWidget(self._input_box())
        layout.addWidget(self._model_box())
        layout.addWidget(self._options_box())
        layout.addWidget(self._run_box())
        layout.addStretch(1)
        self.tabs.addTab(extract_tab, "Extract")
        self.train_panel = TrainPanel(self.tabs)
        self.tabs.addTab(self.train_panel, "Train")
        self.evaluate_panel = EvaluatePanel(self.tabs)
        self.tabs.addTab(self.evaluate_panel, "Evaluate")
        self.map_check_panel = MapCheckPanel(self.tabs)
        self.tabs.addTab(self.map_check_panel, "Map check")
        self.changes_panel = ChangesPanel(self.tabs)
        self.tabs.addTab(self.changes_panel, "Changes")
        outer.addWidget(self.tabs, 1)
        self.setWidget(body)
        self._restore()
        self.rgb_combo.layerChanged.connect(self.update_model_states)
        self.ms_combo.layerChanged.connect(self.update_model_states)

    # ------------------------------------------------------------------ building the widgets
    def _backend_box(self) -> QGroupBox:
        box = QGroupBox("Backend", self)
        outer = QVBoxLayout(box)
        row = QHBoxLayout()
        self.backend_label = QLabel("not connected", box)
        self.backend_label.setWordWrap(True)
        self.reconnect_button = QPushButton("Connect", box)
        self.reconnect_button.setToolTip("Start or reach the backend and read its models")
        self.settings_button = QPushButton("Settings…", box)
        row.addWidget(self.backend_label, 1)
        row.addWidget(self.reconnect_button)
        row.addWidget(self.settings_button)
        outer.addLayout(row)
        # Shown when no backend is found, and while one is being installed.
        self.install_row = QWidget(box)
        install = QHBoxLayout(self.install_row)
        install.setContentsMargins(0, 0, 0, 0)
        self.install_button = QPushButton("Install backend…", self.install_row)
        self.install_button.setToolTip(
            "Install the backend (PyTorch, rasterio, ...) into a Python environment of its own "
            "in the QGIS profile; QGIS's Python is not changed"
        )
        self.install_progress = QProgressBar(self.install_row)
        self.install_progress.setRange(0, 100)
        self.install_cancel_button = QPushButton("Cancel", self.install_row)
        install.addWidget(self.install_button)
        install.addWidget(self.install_progress, 1)
        install.addWidget(self.install_cancel_button)
        outer.addWidget(self.install_row)
        self._install_offered = self._installing = False
        self._update_install_row()
        self.reconnect_button.clicked.connect(self.reconnect_requested)
        self.settings_button.clicked.connect(self.settings_requested)
        self.install_button.clicked.connect(self.install_requested)
        self.install_cancel_button.clicked.connect(self.install_cancel_requested)
        return box

    def _input_box(self) -> QGroupBox:
        box = QGroupBox("Imagery and extent", self)
        form = QFormLayout(box)
        rasters = QgsMapLayerProxyModel.RasterLayer
        self.rgb_combo = layer_combo(
            box, rasters, "The RGB layer (3 or more bands; bands 1-3 are red, green, blue)"
        )
        self.ms_combo = layer_combo(
            box,
            rasters,
            "Multispectral layer of the same scene (8 bands), for 11-band models",
            True,
        )
        self.extent_widget = QgsExtentWidget(box)
        self.extent_widget.setNullValueAllowed(True, "whole RGB layer")
        if self.canvas is not None:
            self.extent_widget.setMapCanvas(self.canvas)
            self.extent_widget.setOriginalExtent(
                self.canvas.extent(), self.canvas.mapSettings().destinationCrs()
            )
        self.extent_widget.clear()
        self.aoi_combo = layer_combo(
            box,
            QgsMapLayerProxyModel.PolygonLayer,
            "Extract only inside the selected polygons of this layer (empty: the extent above)",
            optional=True,
        )
        form.addRow("RGB layer", self.rgb_combo)
        form.addRow("Multispectral", self.ms_combo)
        form.addRow("Extent", self.extent_widget)
        form.addRow("Selected polygons of", self.aoi_combo)
        return box

    def _model_box(self) -> QGroupBox:
        box = QGroupBox("Model", self)
        outer = QVBoxLayout(box)
        row = QHBoxLayout()
        self.model_combo = QComboBox(box)
        self.model_combo.setModel(QStandardItemModel(self.model_combo))
        self.model_combo.setMinimumContentsLength(18)
        self.add_model_button = QPushButton("Add…", box)
        self.add_model_button.setToolTip("Add a model file (.safetensors, or the authors' .pt)")
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.add_model_button)
        self.model_info = QLabel("", box)
        self.model_info.setWordWrap(True)
        outer.addLayout(row)
        outer.addWidget(self.model_info)
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        self.add_model_button.clicked.connect(self.add_model_requested)
        return box

    def _options_box(self) -> QgsCollapsibleGroupBox:
        box = QgsCollapsibleGroupBox("Options", self)
        box.setCollapsed(True)
        form = QFormLayout(box)
        self.threshold_spin = QDoubleSpinBox(box)
        self.threshold_spin.setRange(0.0, 0.99)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setSpecialValueText("model's")
        self.min_area_spin = QSpinBox(box)
        self.min_area_spin.setRange(0, 100000)
        self.min_area_spin.setSuffix(" px")
        self.min_area_spin.setSpecialValueText("model's")
        self.simplify_spin = QDoubleSpinBox(box)
        self.simplify_spin.setRange(0.0, 10.0)
        self.simplify_spin.setSingleStep(0.5)
        self.simplify_spin.setSuffix(" px")
        self.regularize_check = QCheckBox("Square the building corners", box)
        self.tile_combo = QComboBox(box)
        for text, value in TILE_CHOICES:
            self.tile_combo.addItem(text, value)
        self.batch_spin = QSpinBox(box)
        self.batch_spin.setRange(0, 64)
        self.batch_spin.setSpecialValueText("auto")
        self.device_combo = QComboBox(box)
        for text, value in DEVICE_CHOICES:
            self.device_combo.addItem(text, value)
        engine = option_spec("engine")
        self.engine_combo = QComboBox(box)
        for text, value in engine.choices:
            self.engine_combo.addItem(text, value or "")
        self.engine_combo.setToolTip(engine.help)
        self.render_spin = QDoubleSpinBox(box)
        self.render_spin.setRange(0.0, 50.0)
        self.render_spin.setDecimals(3)
        self.render_spin.setSingleStep(0.05)
        self.render_spin.setSuffix(" m")
        self.render_spin.setSpecialValueText("model's")
        self.render_spin.setToolTip(
            "Ground pixel at which web layers (XYZ, WMS/WMTS) are drawn for extraction"
        )
        form.addRow("Building threshold", self.threshold_spin)
        form.addRow("Minimum area", self.min_area_spin)
        form.addRow("Simplify", self.simplify_spin)
        form.addRow("", self.regularize_check)
        form.addRow("Tile size", self.tile_combo)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Device", self.device_combo)
        form.addRow("Engine", self.engine_combo)
        form.addRow("Web layer pixel", self.render_spin)
        return box

    def _run_box(self) -> QWidget:
        box = QWidget(self)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        buttons = QHBoxLayout()
        self.extract_button = QPushButton("Extract buildings", box)
        self.extract_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel", box)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.extract_button, 1)
        buttons.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar(box)
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.stage_label = QLabel("", box)
        self.stage_label.setWordWrap(True)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.stage_label)
        self.extract_button.clicked.connect(self.extract_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        return box

    # ------------------------------------------------------------------ state shown
    def set_backend_text(self, text: str) -> None:
        self.backend_label.setText(text)

    def set_install_offered(self, offered: bool) -> None:
        """Show "Install backend…" (no backend was found) or hide it."""
        self._install_offered = offered
        self._update_install_row()

    def set_installing(self, installing: bool) -> None:
        """While the backend installs: its progress and Cancel instead of the Install button."""
        self._installing = installing
        self.reconnect_button.setEnabled(not installing)
        self.install_cancel_button.setEnabled(installing)
        if installing:
            self.install_progress.setValue(0)
        self._update_install_row()

    def _update_install_row(self) -> None:
        self.install_row.setVisible(self._install_offered or self._installing)
        self.install_button.setVisible(not self._installing)
        self.install_progress.setVisible(self._installing)
        self.install_cancel_button.setVisible(self._installing)

    def set_install_progress(self, percent: float, text: str) -> None:
        """The install's bar and its stage (e.g. "Installing PyTorch: Downloading torch (…)")."""
        self.install_progress.setValue(int(round(percent)))
        self.backend_label.setText(text)

    def set_running(self, running: bool) -> None:
        """Extract is disabled and Cancel enabled while a task runs."""
        self.extract_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.progress_bar.setValue(0)

    def set_progress(self, percent: float, stage: str) -> None:
        self.progress_bar.setValue(int(round(percent)))
        self.stage_label.setText(stage)

    def set_models(self, models: list[ModelChoice]) -> None:
        """Fill the model list (the choice persists); incompatible models are disabled."""
        wanted = self.current_model_path() or settings.get("dock/model")
        self._models = list(models)
        model: QStandardItemModel = self.model_combo.model()
        self.model_combo.blockSignals(True)
        model.clear()
        for choice in self._models:
            item = QStandardItem(choice.label)
            item.setData(choice.path, Qt.UserRole)
            item.setToolTip(choice.description)
            model.appendRow(item)
        self.model_combo.blockSignals(False)
        index = next((i for i, c in enumerate(self._models) if c.path == wanted), 0)
        self.update_model_states()
        if self._models:
            self.model_combo.setCurrentIndex(index)
        self._model_changed()
        self.train_panel.set_models(self._models)

    def update_model_states(self, *_args: Any) -> None:
        """Disable the models the chosen layers cannot feed, with the reason as tooltip."""
        model: QStandardItemModel = self.model_combo.model()
        for row, choice in enumerate(self._models):
            item = model.item(row)
            problem = model_problem(choice, self.rgb_layer(), self.ms_layer())
            item.setEnabled(problem is None)
            item.setToolTip(choice.description + (f"\nNot usable: {problem}" if problem else ""))
            item.setText(choice.label + (" (unavailable)" if problem else ""))
        self._model_changed()

    def _model_changed(self, *_args: Any) -> None:
        choice = self.current_model()
        if choice is None:
            self.model_info.setText("Connect to the backend to list its models.")
            return
        problem = model_problem(choice, self.rgb_layer(), self.ms_layer())
        text = choice.summary
        if problem:
            text += f"<br><b>Not usable with these layers:</b> {problem}"
        self.model_info.setText(text)

    # ------------------------------------------------------------------ values collected
    def rgb_layer(self) -> QgsRasterLayer | None:
        return current_layer(self.rgb_combo, QgsRasterLayer)

    def ms_layer(self) -> QgsRasterLayer | None:
        return current_layer(self.ms_combo, QgsRasterLayer)

    def current_model(self) -> ModelChoice | None:
        index = self.model_combo.currentIndex()
        return self._models[index] if 0 <= index < len(self._models) else None

    def current_model_path(self) -> str:
        choice = self.current_model()
        return choice.path if choice else ""

    def options(self) -> ExtractionOptions:
        """The extraction options set here (``None``: the model's or the backend's choice)."""
        device = self.device_combo.currentData()
        return ExtractionOptions(
            body_threshold=self.threshold_spin.value() or None,
            min_area_px=self.min_area_spin.value() or None,
            simplify_px=self.simplify_spin.value(),
            regularize=self.regularize_check.isChecked(),
            tile_size_px=self.tile_combo.currentData() or None,
            batch_size=self.batch_spin.value() or None,
            device=None if device == "auto" else device,
            engine=self.engine_combo.currentData() or None,
        )

    def render_resolution(self) -> float | None:
        """The ground pixel (m) at which a web layer is drawn; None: the model's."""
        return self.render_spin.value() or None

    # ------------------------------------------------------------------ persistence
    def _restore(self) -> None:
        self.threshold_spin.setValue(settings.get("dock/threshold"))
        self.min_area_spin.setValue(settings.get("dock/min_area_px"))
        self.simplify_spin.setValue(settings.get("dock/simplify_px"))
        self.regularize_check.setChecked(settings.get("dock/regularize"))
        _select_data(self.tile_combo, settings.get("dock/tile_px"))
        _select_data(self.device_combo, settings.get("dock/device"))
        _select_data(self.engine_combo, settings.get("dock/engine"))
        self.batch_spin.setValue(settings.get("dock/batch_size"))
        self.render_spin.setValue(settings.get("dock/render_resolution_m"))
        project = QgsProject.instance()
        for combo, key in ((self.rgb_combo, "dock/rgb_layer"), (self.ms_combo, "dock/ms_layer")):
            layer = project.mapLayer(settings.get(key)) if settings.get(key) else None
            if layer is not None:
                combo.setLayer(layer)

    def save_choices(self) -> None:
        """Remember the choices for the next QGIS session."""
        settings.set("dock/threshold", self.threshold_spin.value())
        settings.set("dock/min_area_px", self.min_area_spin.value())
        settings.set("dock/simplify_px", self.simplify_spin.value())
        settings.set("dock/regularize", self.regularize_check.isChecked())
        settings.set("dock/tile_px", self.tile_combo.currentData())
        settings.set("dock/batch_size", self.batch_spin.value())
        settings.set("dock/device", self.device_combo.currentData())
        settings.set("dock/engine", self.engine_combo.currentData())
        settings.set("dock/render_resolution_m", self.render_spin.value())
        settings.set("dock/model", self.current_model_path())
        rgb, ms = self.rgb_layer(), self.ms_layer()
        settings.set("dock/rgb_layer", rgb.id() if rgb else "")
        settings.set("dock/ms_layer", ms.id() if ms else "")


def _select_data(combo: QComboBox, value: Any) -> None:
    index = combo.findData(value)
    if index >= 0:
        combo.setCurrentIndex(index)
