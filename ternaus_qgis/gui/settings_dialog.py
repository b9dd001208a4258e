"""SettingsDialog: how the plugin reaches its backend, and where results are kept.

A remote URL + token is checked as it is typed: a token an HTTP header cannot carry (non-ASCII,
spaces) is refused on OK; a token that would travel over plain http to another machine is shown
as a warning, and saving such a URL asks first.
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.gui import QgsFileWidget, QgsPasswordLineEdit
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
)

from .. import settings
from ..client import plain_http_warning, token_problem


def ask_save_plain_http(parent, warning: str) -> bool:
    """Asks whether to save a URL over which the token travels unencrypted."""
    answer = QMessageBox.warning(
        parent,
        "Ternaus",
        f"{warning}\n\nSave this URL anyway?",
        QMessageBox.Save | QMessageBox.Cancel,
        QMessageBox.Cancel,
    )
    return answer == QMessageBox.Save


class SettingsDialog(QDialog):
    """Local backend (default; optional path of ``ternaus``) or a remote URL + token; output
    folder. Saved to QgsSettings on OK."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Ternaus settings")
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.local_radio = QRadioButton("Start a local backend (this computer)", self)
        self.remote_radio = QRadioButton("Use a backend at a URL (e.g. a GPU machine)", self)
        group = QButtonGroup(self)
        group.addButton(self.local_radio)
        group.addButton(self.remote_radio)
        self.command_edit = QgsFileWidget(self)
        self.command_edit.setToolTip(
            "The 'ternaus' executable of the backend (empty: TERNAUS_BACKEND, then the path "
            "'make deploy' recorded, then the backend 'Install backend…' installed)"
        )
        self.url_edit = QLineEdit(self)
        self.token_edit = QgsPasswordLineEdit(self)
        self.same_machine_check = QCheckBox("It reads this computer's files (no uploads)", self)
        self.same_machine_check.setToolTip(
            "Leave off for a backend on another machine: inputs are uploaded and results "
            "downloaded. Turn on when it runs here or shares this computer's disks."
        )
        self.folder_edit = QgsFileWidget(self)
        self.folder_edit.setStorageMode(QgsFileWidget.GetDirectory)
        self.folder_edit.setToolTip("Empty: a ternaus_results folder next to the project file")
        form.addRow(self.local_radio)
        form.addRow("ternaus executable", self.command_edit)
        form.addRow(self.remote_radio)
        form.addRow("URL", self.url_edit)
        form.addRow("Token", self.token_edit)
        self.security_label = QLabel(self)
        self.security_label.setObjectName("ternausSecurityLabel")
        self.security_label.setWordWrap(True)
        self.security_label.setStyleSheet("color: #b35900;")
        self.security_label.hide()
        form.addRow("", self.security_label)
        form.addRow("", self.same_machine_check)
        form.addRow("Results folder", self.folder_edit)
        layout.addLayout(form)
        note = QLabel(
            "The backend runs in its own Python environment; nothing is installed into QGIS.", self
        )
        note.setWordWrap(True)
        layout.addWidget(note)
        self.install_button = QPushButton("Install backend…", self)
        self.install_button.setToolTip(
            "Install the backend into a Python environment of its own in the QGIS profile "
            "(closes these settings without saving)"
        )
        self.install_button.clicked.connect(self._request_install)
        layout.addWidget(self.install_button)
        #: True when the dialog was closed by "Install backend…" (the controller then asks).
        self.install_requested = False
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        #: Asked on OK when the token would travel over plain http; tests replace it.
        self.confirm_plain_http: Callable[[object, str], bool] = ask_save_plain_http
        self.local_radio.toggled.connect(self._update_enabled)
        self.url_edit.textChanged.connect(self._update_security)
        self.token_edit.textChanged.connect(self._update_security)
        self._load()

    def _load(self) -> None:
        remote = settings.get("backend/mode") == "remote"
        self.remote_radio.setChecked(remote)
        self.local_radio.setChecked(not remote)
        self.command_edit.setFilePath(settings.get("backend/command"))
        self.url_edit.setText(settings.get("backend/url"))
        self.token_edit.setText(settings.get("backend/token"))
        self.same_machine_check.setChecked(settings.get("backend/same_machine"))
        self.folder_edit.setFilePath(settings.get("output/folder"))
        self._update_enabled()

    def _update_enabled(self) -> None:
        local = self.local_radio.isChecked()
        self.command_edit.setEnabled(local)
        self.url_edit.setEnabled(not local)
        self.token_edit.setEnabled(not local)
        self.same_machine_check.setEnabled(not local)
        self._update_security()

    def security_problem(self) -> tuple[str | None, str | None]:
        """``(refusal, warning)`` for the remote URL and token as typed (both None in local mode):
        a token that cannot be sent, a token that would travel unencrypted."""
        if self.local_radio.isChecked():
            return None, None
        token = self.token_edit.text().strip()
        return token_problem(token), plain_http_warning(self.url_edit.text().strip(), token)

    def _update_security(self) -> None:
        refusal, warning = self.security_problem()
        text = refusal or warning or ""
        self.security_label.setText(text)
        self.security_label.setVisible(bool(text))

    def _request_install(self) -> None:
        self.install_requested = True
        self.reject()

    def accept(self) -> None:
        refusal, warning = self.security_problem()
        if refusal:  # stays open: the label says what to change
            self._update_security()
            self.token_edit.setFocus()
            return
        if warning and not self.confirm_plain_http(self, warning):
            return
        settings.set("backend/mode", "local" if self.local_radio.isChecked() else "remote")
        settings.set("backend/command", self.command_edit.filePath())
        settings.set("backend/url", self.url_edit.text().strip())
        settings.set("backend/token", self.token_edit.text().strip())
        settings.set("backend/same_machine", self.same_machine_check.isChecked())
        settings.set("output/folder", self.folder_edit.filePath())
        super().accept()
