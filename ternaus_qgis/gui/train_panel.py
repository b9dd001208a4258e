"""TrainPanel: the dock's "Train" tab: labelled layers in, a named model out."""

from __future__ import annotations

from qgis.core import QgsMapLayerProxyModel, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.models import ModelChoice
from .curve import LearningCurve
from .widgets import current_layer, layer_combo


class TrainPanel(QWidget):
    """Collects what to train on; shows epochs, loss and validation F1 as they arrive."""

    train_requested = pyqtSignal()
    cancel_requested = pyqtSignal()
    #: "Propose cells to label": where the model is unsure on the RGB layer (in view).
    propose_requested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        polygons = QgsMapLayerProxyModel.PolygonLayer
        self.rgb_combo = layer_combo(self, QgsMapLayerProxyModel.RasterLayer)
        self.ms_combo = layer_combo(
            self,
            QgsMapLayerProxyModel.RasterLayer,
            "Multispectral layer of the same scene (8 bands), for an 11-band model",
            True,
        )
        self.labels_combo = layer_combo(
            self,
            polygons,
            "Building polygons: e.g. an extraction result you corrected, or a layer you drew "
            "(empty: no labels, adapt the model to this imagery by self-training)",
            optional=True,
        )
        self.area_combo = layer_combo(
            self,
            polygons,
            "Where the labels are complete; pixels outside are ignored (empty: the whole raster)",
            optional=True,
        )
        self.area_selected_check = QCheckBox("Only its selected polygons", self)
        self.val_area_combo = layer_combo(
            self, polygons, "Kept out of training to measure F1 (empty: a band of it)", True
        )
        self.base_combo = QComboBox(self)
        self.base_combo.setToolTip("Fine-tune this model, or train a new one")
        self.self_training_check = QCheckBox("Also learn from the surrounding imagery", self)
        self.self_training_check.setToolTip(
            "Self-training: the starting model's confident answers on the imagery around your "
            "labels are trained on too, so the model adapts to this imagery without forgetting "
            "what it did well there (fine-tuning only)"
        )
        self.self_training_check.setChecked(True)
        self.epochs_spin = QSpinBox(self)
        self.epochs_spin.setRange(0, 500)
        self.epochs_spin.setSpecialValueText("auto")
        self.epochs_spin.setToolTip("auto: chosen from the number of labelled buildings")
        self.epochs_spin.setValue(0)
        self.steps_spin = QSpinBox(self)
        self.steps_spin.setRange(0, 10000)
        self.steps_spin.setSpecialValueText("auto")
        self.steps_spin.setToolTip("auto: chosen from the number of labelled buildings")
        self.steps_spin.setValue(0)
        self.name_edit = QLineEdit(self)
        self.name_edit.setPlaceholderText("e.g. my_town_2026")
        form.addRow("RGB layer", self.rgb_combo)
        form.addRow("Multispectral", self.ms_combo)
        form.addRow("Labelled buildings", self.labels_combo)
        form.addRow("Training area", self.area_combo)
        form.addRow("", self.area_selected_check)
        form.addRow("Validation area", self.val_area_combo)
        form.addRow("Start from", self.base_combo)
        form.addRow("", self.self_training_check)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Steps per epoch", self.steps_spin)
        form.addRow("New model name", self.name_edit)
        layout.addLayout(form)
        layout.addLayout(self._propose_row())
        self.propose_label = QLabel("", self)
        self.propose_label.setWordWrap(True)
        layout.addWidget(self.propose_label)
        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train", self)
        self.cancel_button = QPushButton("Stop (keep best)", self)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.train_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 100)
        self.stage_label = QLabel("", self)
        self.stage_label.setWordWrap(True)
        # room for two lines: the plan (epochs x steps, buildings) follows the time left
        self.stage_label.setMinimumHeight(2 * self.stage_label.fontMetrics().lineSpacing() + 4)
        self.curve = LearningCurve(self)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.curve)
        layout.addStretch(1)
        self.train_button.clicked.connect(self.train_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.set_models([])

    def _propose_row(self) -> QHBoxLayout:
        """Cell size, how many to highlight, and the *Propose cells to label* button."""
        row = QHBoxLayout()
        self.cell_spin = QDoubleSpinBox(self)
        self.cell_spin.setRange(10.0, 2000.0)
        self.cell_spin.setDecimals(0)
        self.cell_spin.setSingleStep(10.0)
        self.cell_spin.setValue(100.0)
        self.cell_spin.setSuffix(" m")
        self.cell_spin.setToolTip("Side of a cell on the ground")
        self.top_spin = QSpinBox(self)
        self.top_spin.setRange(1, 50)
        self.top_spin.setValue(3)
        self.top_spin.setPrefix("top ")
        self.top_spin.setToolTip("Cells highlighted to label first")
        self.propose_button = QPushButton("Propose cells to label", self)
        self.propose_button.setToolTip(
            "Where to label next: the model ('Start from', or the default) runs over the RGB "
            "layer (the part in view) and ranks square cells by how unsure it is there: body "
            "probability near the threshold, flips that disagree, buildings of low confidence. "
            "Draw your labels in the highlighted cells, then Train."
        )
        self.propose_button.clicked.connect(self.propose_requested)
        row.addWidget(self.cell_spin)
        row.addWidget(self.top_spin)
        row.addWidget(self.propose_button, 1)
        return row

    def set_proposing(self, proposing: bool) -> None:
        self.propose_button.setEnabled(not proposing)
        if proposing:
            self.propose_label.setText("Looking where the model is unsure…")

    def set_models(self, models: list[ModelChoice]) -> None:
        """The models to fine-tune (the default first), after "a new model"."""
        current = self.base_combo.currentData()
        self.base_combo.clear()
        self.base_combo.addItem("a new model", "")
        for choice in models:
            if not choice.uses_multispectral:
                self.base_combo.addItem(choice.label, choice.path)
        index = self.base_combo.findData(current) if current else 1
        self.base_combo.setCurrentIndex(index if index >= 0 else 0)

    def rgb_layer(self) -> QgsRasterLayer | None:
        return current_layer(self.rgb_combo, QgsRasterLayer)

    def ms_layer(self) -> QgsRasterLayer | None:
        return current_layer(self.ms_combo, QgsRasterLayer)

    def labels_layer(self) -> QgsVectorLayer | None:
        return current_layer(self.labels_combo, QgsVectorLayer)

    def area_layer(self) -> QgsVectorLayer | None:
        return current_layer(self.area_combo, QgsVectorLayer)

    def val_area_layer(self) -> QgsVectorLayer | None:
        return current_layer(self.val_area_combo, QgsVectorLayer)

    def set_running(self, running: bool) -> None:
        self.train_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.progress_bar.setValue(0)
            self.curve.reset(self.epochs_spin.value() or 1)  # grows as epochs arrive
