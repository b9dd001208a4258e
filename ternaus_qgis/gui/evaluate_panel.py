"""EvaluatePanel: the dock's "Evaluate" tab: a result layer against a reference layer."""

from __future__ import annotations

from qgis.core import QgsMapLayerProxyModel, QgsVectorLayer
from qgis.gui import QgsMapLayerComboBox
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


class EvaluatePanel(QWidget):
    """Collects what to compare; shows the scores. SpaceNet rules, as ``ternaus evaluate``."""

    evaluate_requested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.result_combo = QgsMapLayerComboBox(self)
        self.result_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.result_combo.setToolTip("The buildings to score, e.g. an extraction result")
        self.reference_combo = QgsMapLayerComboBox(self)
        self.reference_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.reference_combo.setToolTip("The true buildings, e.g. a layer you digitised")
        self.area_combo = QgsMapLayerComboBox(self)
        self.area_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.area_combo.setAllowEmptyLayer(True)
        self.area_combo.setLayer(None)
        self.area_combo.setToolTip("Score only buildings touching these polygons (empty: all)")
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
        layer = self.result_combo.currentLayer()
        return layer if isinstance(layer, QgsVectorLayer) else None

    def reference_layer(self) -> QgsVectorLayer | None:
        layer = self.reference_combo.currentLayer()
        return layer if isinstance(layer, QgsVectorLayer) else None

    def area_layer(self) -> QgsVectorLayer | None:
        layer = self.area_combo.currentLayer()
        return layer if isinstance(layer, QgsVectorLayer) else None

    def set_running(self, running: bool) -> None:
        self.evaluate_button.setEnabled(not running)
        if running:
            self.progress_bar.setValue(0)
            self.scores_label.setText("")

    def show_scores(self, scores: dict) -> None:
        self.progress_bar.setValue(100)
        self.scores_label.setText(
            f"<b>F1 {scores['f1']:.3f}</b> &nbsp; precision {scores['precision']:.3f}, "
            f"recall {scores['recall']:.3f}<br>{scores['tp']} matched, {scores['fp']} false "
            f"positives, {scores['fn']} missed (IoU > {scores.get('iou_threshold', 0.5)})"
        )
