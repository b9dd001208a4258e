"""LearningCurve: a small chart of the training loss and the validation F1 per epoch."""

from __future__ import annotations

from qgis.PyQt.QtCore import QPointF, Qt
from qgis.PyQt.QtGui import QColor, QPainter, QPen, QPolygonF
from qgis.PyQt.QtWidgets import QWidget

from ..core.training import EpochPoint

LOSS_COLOUR = QColor(40, 90, 200)
F1_COLOUR = QColor(30, 150, 60)


class LearningCurve(QWidget):
    """Loss (blue, scaled to its own maximum) and validation F1 (green, 0-1) against epochs."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[EpochPoint] = []
        self.epochs = 1
        self.setMinimumHeight(110)

    def reset(self, epochs: int) -> None:
        self.points, self.epochs = [], max(1, epochs)
        self.update()

    def add(self, point: EpochPoint) -> None:
        self.epochs = max(self.epochs, point.epoch)
        self.points = sorted(
            [p for p in self.points if p.epoch != point.epoch] + [point], key=lambda p: p.epoch
        )
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        rect = self.rect().adjusted(30, 8, -8, -18)
        painter.fillRect(self.rect(), QColor(250, 250, 250))
        painter.setPen(QPen(QColor(160, 160, 160), 1))
        painter.drawRect(rect)
        painter.drawText(2, rect.top() + 10, "1")
        painter.drawText(2, rect.bottom(), "0")
        painter.drawText(rect.left(), self.height() - 4, "epoch 1")
        painter.drawText(rect.right() - 50, self.height() - 4, f"epoch {self.epochs}")
        if not self.points:
            painter.drawText(rect, Qt.AlignCenter, "loss and validation F1 appear per epoch")
            return

        def x(epoch: int) -> float:
            span = max(1, self.epochs - 1)
            return rect.left() + rect.width() * (epoch - 1) / span

        def y(value: float) -> float:
            return rect.bottom() - rect.height() * max(0.0, min(1.0, value))

        top_loss = max(p.loss for p in self.points) or 1.0
        for colour, values in (
            (LOSS_COLOUR, [(p.epoch, p.loss / top_loss) for p in self.points]),
            (F1_COLOUR, [(p.epoch, p.val_f1) for p in self.points if p.val_f1 is not None]),
        ):
            painter.setPen(QPen(colour, 2))
            line = QPolygonF([QPointF(x(e), y(v)) for e, v in values])
            painter.drawPolyline(line)
            for e, v in values:
                painter.drawEllipse(QPointF(x(e), y(v)), 2.5, 2.5)
        painter.setPen(LOSS_COLOUR)
        painter.drawText(rect.left() + 4, rect.top() + 12, "loss")
        painter.setPen(F1_COLOUR)
        painter.drawText(rect.left() + 40, rect.top() + 12, "validation F1")
