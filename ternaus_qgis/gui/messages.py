"""Errors and results as message-bar entries, with a Details action (never a traceback dialog)."""

from __future__ import annotations

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QMessageBox, QPushButton

from ..exceptions import CancelledByUser, TernausPluginError
from ..tasks.base import log

TITLE = "Ternaus"


def show_details(parent, message: str, details: str) -> None:
    box = QMessageBox(QMessageBox.Warning, TITLE, message, QMessageBox.Close, parent)
    box.setDetailedText(details)
    box.open()


def push_error(bar, error: TernausPluginError) -> None:
    """An error on the message bar (info level for a cancel), logged with its details."""
    if isinstance(error, CancelledByUser):
        bar.pushMessage(TITLE, error.message, Qgis.Info, 5)
        log(error.message)
        return
    log(f"{error.message}\n{error.details or ''}", Qgis.Critical)
    widget = bar.createMessage(TITLE, error.message)
    if error.details:
        button = QPushButton("Details", widget)
        button.setObjectName("ternausDetailsButton")
        button.clicked.connect(lambda: show_details(widget, error.message, error.details))
        widget.layout().addWidget(button)
    bar.pushWidget(widget, Qgis.Critical, 0)


def push_success(bar, text: str) -> None:
    log(text)
    bar.pushMessage(TITLE, text, Qgis.Success, 8)
