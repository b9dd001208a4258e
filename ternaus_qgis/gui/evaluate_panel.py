"""EvaluatePanel: the dock's "Evaluate" tab: a result layer against a reference layer."""

from __future__ import annotations

from qgis.core import QgsMapLayerProxyModel, QgsVectorLayer
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.results import EvaluateResult
from .widgets import current_layer, layer_combo


class EvaluatePanel(QWidget):
    """Collects what to compare; shows the scores. SpaceNet rules, as ``ternaus evaluate``."""

    evaluate_requested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        polygons = QgsMapLayerProxyModel.PolygonLayer
        self.result_combo = layer_combo(
            self, polygons, "The buildings to score, e.g. an extraction result"
        )
        self.reference_combo = layer_combo(
            self, polygons, "The true buildings, e.g. a layer you digitised"
        )
        self.area_combo = layer_combo(
            self, polygons, "Score only buildings touching these polygons (empty: all)", True
        )
        self.area_selected_check = QCheckBox("Only its selected polygons", self)
        self.iou_spin = QDoubleSpinBox(self)
        self.iou_spin.setRange(0.05, 0.95)
        self.iou_spin.setSingleStep(0.05)
        self.iou_spin.setValue(0.5)
        self.iou_spin.setToolTip("A result matches a reference building above this IoU")
        form.addRow("Result layer", self.result_combo)
        form.addRow("Reference layer", self.reference_combo)
        form.addRow("Area (optional)", self.area_combo)
        form.addRow("", self.area_selected_check)
        form.addRow("IoU threshold", self.iou_spin)
        layout.addLayout(form)
        self.evaluate_button = QPushButton("Evaluate", self)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 100)
        self.scores_label = QLabel("", self)
        self.scores_label.setWordWrap(True)
        layout.addWidget(self.evaluate_button)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.scores_label)
        layout.addStretch(1)
        self.evaluate_button.clicked.connect(self.evaluate_requested)

    def result_layer(self) -> QgsVectorLayer | None:
        return current_layer(self.result_combo, QgsVectorLayer)

    def reference_layer(self) -> QgsVectorLayer | None:
        return current_layer(self.reference_combo, QgsVectorLayer)

    def area_layer(self) -> QgsVectorLayer | None:
        return current_layer(self.area_combo, QgsVectorLayer)

    def set_running(self, running: bool) -> None:
        self.evaluate_button.setEnabled(not running)
        if running:
            self.progress_bar.setValue(0)
            self.scores_label.setText("")

    def show_scores(self, scores: EvaluateResult) -> None:
        self.progress_bar.setValue(100)
        self.scores_label.setText(
            f"<b>F1 {scores.f1:.3f}</b> &nbsp; precision {scores.precision:.3f}, "
            f"recall {scores.recall:.3f}<br>{scores.tp} matched, {scores.fp} false "
            f"positives, {scores.fn} missed (IoU > {scores.iou_threshold})"
        )
