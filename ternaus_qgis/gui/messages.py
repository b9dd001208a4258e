"""Errors and results as message-bar entries, with a Details action (never a traceback dialog)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qgis.core import Qgis
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QMessageBox, QPushButton

from ..exceptions import CancelledByUser, TernausPluginError
from ..tasks.base import log

TITLE = "Ternaus"


def show_details(parent, message: str, details: str) -> None:
    box = QMessageBox(QMessageBox.Warning, TITLE, message, QMessageBox.Close, parent)
    box.setDetailedText(details)
    box.open()


def add_open_log_button(widget, path: Path) -> None:
    """An "Open log" button on a message-bar entry: the file in the system's text viewer."""
    button = QPushButton("Open log", widget)
    button.setObjectName("ternausOpenLogButton")
    button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))))
    widget.layout().addWidget(button)


def push_error(
    bar,
    error: TernausPluginError,
    log_path: Path | None = None,
    actions: list[tuple[str, str, Callable[[], None]]] | None = None,
) -> None:
    """An error on the message bar (info level for a cancel), logged with its details; with an
    "Open log" button when ``log_path`` is given, and a button per ``(text, object name,
    callback)`` of ``actions`` (a button closes the entry)."""
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
    if log_path is not None:
        add_open_log_button(widget, log_path)
    for text, name, callback in actions or []:
        button = QPushButton(text, widget)
        button.setObjectName(name)
        button.clicked.connect(lambda _checked=False, run=callback: (bar.popWidget(item), run()))
        widget.layout().addWidget(button)
    item = bar.pushWidget(widget, Qgis.Critical, 0)


def push_warning(bar, text: str) -> None:
    """A warning on the message bar that stays until closed (already in the log)."""
    bar.pushMessage(TITLE, text, Qgis.Warning, 0)


def push_success(bar, text: str, log_path: Path | None = None) -> None:
    log(text)
    if log_path is None:
        bar.pushMessage(TITLE, text, Qgis.Success, 8)
        return
    widget = bar.createMessage(TITLE, text)
    add_open_log_button(widget, log_path)
    bar.pushWidget(widget, Qgis.Success, 15)
