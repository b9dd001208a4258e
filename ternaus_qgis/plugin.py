"""TernausPlugin: what QGIS loads. ``initGui`` builds the dock and the Processing provider;
``unload`` removes exactly what ``initGui`` added and stops the local backend."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import backend_process
from .gui.controller import DockController
from .gui.dock import PLUGIN_TITLE, TernausDockWidget
from .processing.provider import TernausProvider

ICON = Path(__file__).resolve().parent / "icon.svg"


class TernausPlugin:
    """The plugin object of one QGIS window."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: TernausProvider | None = None
        self.dock: TernausDockWidget | None = None
        self.controller: DockController | None = None
        self.action: QAction | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS's name)
        """Register the Processing provider (also called by qgis_process, without a GUI)."""
        if self.provider is None:
            self.provider = TernausProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS's name)
        self.initProcessing()
        canvas = self.iface.mapCanvas()
        self.dock = TernausDockWidget(canvas, self.iface.mainWindow())
        self.controller = DockController(
            self.dock, self.iface.messageBar(), backend_process.connection(), canvas
        )
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.action = QAction(QIcon(str(ICON)), PLUGIN_TITLE, self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.setChecked(True)
        self.action.toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(self.action.setChecked)
        self.iface.addPluginToRasterMenu(PLUGIN_TITLE, self.action)
        self.iface.addToolBarIcon(self.action)
        QgsApplication.instance().aboutToQuit.connect(backend_process.shutdown)
        self.controller.refresh_backend()

    def unload(self) -> None:
        if self.controller is not None:
            self.controller.shutdown()
        if self.action is not None:
            self.iface.removePluginRasterMenu(PLUGIN_TITLE, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        self.controller = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        try:
            QgsApplication.instance().aboutToQuit.disconnect(backend_process.shutdown)
        except (TypeError, RuntimeError):
            pass
        backend_process.shutdown()
