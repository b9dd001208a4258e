"""InstallBackendDialog: what "Install backend…" installs, and where. It only collects choices; a
task running :func:`~ternaus_qgis.tasks.install_task.install_backend` does the work."""

from __future__ import annotations

from pathlib import Path

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
)

from .. import settings
from ..backend_process import PLUGIN_DIR, installed_venv_dir
from ..core import installer
from ..exceptions import InstallError

CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def bundled_wheels() -> list[Path]:
    """Backend wheels that came with the plugin (``wheels/``), or a checkout's ``dist/``."""
    return installer.find_wheels(PLUGIN_DIR / "wheels", PLUGIN_DIR.parent / "dist")


def log_path_for(venv_dir: Path) -> Path:
    """The install log: beside the environment (a failed fresh install removes the folder)."""
    return venv_dir.parent / f"{venv_dir.name}-install.log"


class InstallBackendDialog(QDialog):
    """The backend wheel (default: the one bundled with the plugin), the Python that creates the
    environment (default: the one QGIS runs), the folder (default: in the QGIS profile) and an
    optional package index for PyTorch."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Install the Ternaus backend")
        layout = QVBoxLayout(self)
        intro = QLabel(
            "The backend (PyTorch, rasterio, the network) is installed into a Python environment "
            "of its own; QGIS's Python is not changed. pip downloads about 1 GB (more with a "
            "CUDA build of PyTorch) and the install takes a few minutes; it runs in the "
            "background, and the log can be opened afterwards.",
            self,
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.wheel_edit = QgsFileWidget(self)
        self.wheel_edit.setFilter("Backend wheel (ternaus_backend-*.whl)")
        self.wheel_edit.setToolTip("ternaus_backend-<version>-py3-none-any.whl ('make wheel')")
        self.python_edit = QgsFileWidget(self)
        self.python_edit.setToolTip("Python 3.10 or later with the venv module")
        self.folder_edit = QgsFileWidget(self)
        self.folder_edit.setStorageMode(QgsFileWidget.GetDirectory)
        self.folder_edit.setToolTip("A new or empty folder, or the one of an earlier install")
        self.torch_index_edit = QLineEdit(self)
        self.torch_index_edit.setPlaceholderText("PyPI (default)")
        self.torch_index_edit.setToolTip(
            f"An extra package index for PyTorch, e.g. {CPU_TORCH_INDEX} for a CPU-only build "
            "(a much smaller download on Linux without an NVIDIA GPU)"
        )
        form.addRow("Backend wheel", self.wheel_edit)
        form.addRow("Python", self.python_edit)
        form.addRow("Install into", self.folder_edit)
        form.addRow("PyTorch index", self.torch_index_edit)
        layout.addLayout(form)
        self.error_label = QLabel("", self)
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #b00020")
        layout.addWidget(self.error_label)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        buttons.button(QDialogButtonBox.Ok).setText("Install")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.plan: installer.InstallPlan | None = None
        self._load()

    def _load(self) -> None:
        wheels = bundled_wheels()
        self.wheel_edit.setFilePath(str(wheels[0]) if wheels else "")
        python = installer.find_python()
        self.python_edit.setFilePath(str(python) if python else "")
        self.folder_edit.setFilePath(str(installed_venv_dir()))
        self.torch_index_edit.setText(settings.get("backend/torch_index"))

    def collect(self) -> installer.InstallPlan:
        """The plan from the fields (``InstallError`` names a missing or wrong one)."""
        wheel = self.wheel_edit.filePath().strip()
        if not wheel:
            raise InstallError(
                "Choose the backend wheel (ternaus_backend-*.whl): it comes with the full plugin "
                "zip, or 'make wheel' builds it in a Ternaus checkout."
            )
        installer.wheel_requirements(Path(wheel))  # a readable backend wheel
        folder = self.folder_edit.filePath().strip()
        if not folder:
            raise InstallError("Choose the folder to install into.")
        venv_dir = Path(folder).expanduser()
        python = self.python_edit.filePath().strip()
        if not python and not installer.is_our_venv(venv_dir):
            raise InstallError("Choose a Python 3 interpreter (python3) to create the environment.")
        return installer.InstallPlan(
            python=Path(python).expanduser(),
            venv_dir=venv_dir,
            wheel=Path(wheel).expanduser(),
            log_path=log_path_for(venv_dir),
            torch_index_url=self.torch_index_edit.text().strip(),
        )

    def accept(self) -> None:
        try:
            self.plan = self.collect()
        except InstallError as error:
            self.error_label.setText(error.message)
            return
        default = installer.default_venv_dir(_settings_dir())
        venv_setting = "" if self.plan.venv_dir == default else str(self.plan.venv_dir)
        settings.set("backend/venv", venv_setting)
        settings.set("backend/torch_index", self.plan.torch_index_url)
        super().accept()


def _settings_dir() -> str:
    from qgis.core import QgsApplication

    return QgsApplication.qgisSettingsDirPath()
