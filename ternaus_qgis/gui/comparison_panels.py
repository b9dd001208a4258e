"""The dock's "Map check" and "Changes" tabs: two building layers compared by the backend.

Like the other tabs they only collect parameters and show state; the controller
(:class:`~.comparison_controller.ComparisonController`) turns a press of Run into a task.
"""

from __future__ import annotations

from typing import Any

from qgis.core import QgsMapLayer, QgsMapLayerProxyModel, QgsVectorLayer
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.results import ChangesResult, CompareResult
from .widgets import current_layer, layer_combo


def _spin(parent: QWidget, low: float, high: float, value: float, step: float, tip: str):
    spin = QDoubleSpinBox(parent)
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


class _ComparisonPanel(QWidget):
    """A form, then Run/Cancel, a progress bar, the stage and a summary of the result."""

    run_requested = pyqtSignal()
    cancel_requested = pyqtSignal()
    RUN_TEXT = "Run"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.form = QFormLayout()
        polygons = QgsMapLayerProxyModel.PolygonLayer
        self.area_combo = layer_combo(
            self, polygons, "Compare only buildings inside these polygons (empty: all)", True
        )
        self.area_selected_check = QCheckBox("Only its selected polygons", self)
        self._build_form(self.form)
        layout.addLayout(self.form)
        buttons = QHBoxLayout()
        self.run_button = QPushButton(self.RUN_TEXT, self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 100)
        self.stage_label = QLabel("", self)
        self.stage_label.setWordWrap(True)
        self.summary_label = QLabel("", self)
        self.summary_label.setWordWrap(True)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.summary_label)
        layout.addStretch(1)
        self.run_button.clicked.connect(self.run_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)

    def _build_form(self, form: QFormLayout) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def area_layer(self) -> QgsVectorLayer | None:
        return current_layer(self.area_combo, QgsVectorLayer)

    def set_running(self, running: bool) -> None:
        """Run is disabled and Cancel enabled while a task runs."""
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.progress_bar.setValue(0)
            self.stage_label.setText("Starting…")
            self.summary_label.setText("")

    def set_progress(self, percent: float, stage: str) -> None:
        self.progress_bar.setValue(int(round(percent)))
        self.stage_label.setText(stage)

    def show_summary(
        self, result: CompareResult | ChangesResult, took: str, note: str = ""
    ) -> None:
        """The counts; ``note`` says where they were counted (e.g. inside an image's extent)."""
        self.progress_bar.setValue(100)
        self.stage_label.setText(f"Done in {took}")
        text = self.summary_text(result)
        if note:
            text += f"<br><i>{note}</i>"
        self.summary_label.setText(text)

    def show_error(self, message: str) -> None:
        self.stage_label.setText(message)

    @staticmethod
    def summary_text(result: Any) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class MapCheckPanel(_ComparisonPanel):
    """What the map is missing: our buildings against the map's (OpenStreetMap or any)."""

    RUN_TEXT = "Check the map"

    def _build_form(self, form: QFormLayout) -> None:
        polygons = QgsMapLayerProxyModel.PolygonLayer
        self.result_combo = layer_combo(
            self, polygons, "Buildings seen in the imagery, e.g. an extraction result"
        )
        self.map_combo = layer_combo(
            self, polygons, "The map's buildings, e.g. OpenStreetMap's, to check"
        )
        self.iou_spin = _spin(
            self, 0.05, 0.95, 0.3, 0.05, "A building matches a map building above this IoU"
        )
        self.cell_spin = _spin(
            self, 10.0, 10000.0, 250.0, 50.0, "The map's offset is measured per cell of this size"
        )
        self.cell_spin.setDecimals(0)
        self.cell_spin.setSuffix(" m")
        form.addRow("Our buildings", self.result_combo)
        form.addRow("Map's buildings", self.map_combo)
        form.addRow("Area (optional)", self.area_combo)
        form.addRow("", self.area_selected_check)
        form.addRow("IoU of a match", self.iou_spin)
        form.addRow("Offset grid", self.cell_spin)

    def result_layer(self) -> QgsVectorLayer | None:
        return current_layer(self.result_combo, QgsVectorLayer)

    def map_layer(self) -> QgsVectorLayer | None:
        return current_layer(self.map_combo, QgsVectorLayer)

    @staticmethod
    def summary_text(result: CompareResult) -> str:
        text = (
            f"<b>{result.unmapped}</b> seen, not on the map<br>"
            f"<b>{result.unseen}</b> on the map, not seen<br>"
            f"{result.matched} matched"
        )
        offset = result.offset
        if offset:
            text += (
                f"<br>Median offset of the map: <b>{offset.dx_m:+.2f} m east, "
                f"{offset.dy_m:+.2f} m north</b> ({offset.pairs} pairs)"
            )
        else:
            text += "<br>No building matched: no offset"
        return text


class ChangesPanel(_ComparisonPanel):
    """New, demolished and changed buildings between two dates, each a building layer or an
    image (its buildings are extracted first with the Extract tab's model and options)."""

    RUN_TEXT = "Find changes"

    def _build_form(self, form: QFormLayout) -> None:
        either = QgsMapLayerProxyModel.PolygonLayer | QgsMapLayerProxyModel.RasterLayer
        tip = (
            "The {} date: its buildings, or an image of it (buildings are extracted first, "
            "with the model and options of the Extract tab)"
        )
        self.before_combo = layer_combo(self, either, tip.format("earlier"))
        self.after_combo = layer_combo(self, either, tip.format("later"))
        self.change_spin = _spin(
            self,
            0.05,
            0.99,
            0.7,
            0.05,
            "A building kept between the dates has changed when its IoU is below this",
        )
        self.match_spin = _spin(
            self, 0.05, 0.95, 0.3, 0.05, "Two buildings are the same building above this IoU"
        )
        self.note_label = QLabel("", self)
        self.note_label.setWordWrap(True)
        form.addRow("Before", self.before_combo)
        form.addRow("After", self.after_combo)
        form.addRow("", self.note_label)
        form.addRow("Area (optional)", self.area_combo)
        form.addRow("", self.area_selected_check)
        form.addRow("Changed below IoU", self.change_spin)
        form.addRow("Same building above", self.match_spin)
        self.before_combo.layerChanged.connect(self._update_note)
        self.after_combo.layerChanged.connect(self._update_note)
        self._update_note()

    def before_layer(self) -> QgsMapLayer | None:
        return self.before_combo.currentLayer()

    def after_layer(self) -> QgsMapLayer | None:
        return self.after_combo.currentLayer()

    def _update_note(self, *_args: Any) -> None:
        images = [
            name
            for name, layer in (("before", self.before_layer()), ("after", self.after_layer()))
            if layer is not None and layer.type() == QgsMapLayer.RasterLayer
        ]
        self.note_label.setText(
            f"Buildings are extracted from the {' and '.join(images)} image first (model of "
            "the Extract tab)."
            if images
            else ""
        )
        self.note_label.setVisible(bool(images))

    @staticmethod
    def summary_text(result: ChangesResult) -> str:
        return (
            f"<b>{result.new}</b> new<br><b>{result.demolished}</b> demolished<br>"
            f"<b>{result.changed}</b> changed<br>{result.unchanged} unchanged"
        )
