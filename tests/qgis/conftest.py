"""Fixtures of the plugin tests: a real QgsApplication (offscreen), a stand-in QGIS window, a real
backend subprocess (the checkout's ``.venv/bin/ternaus``), small GeoTIFF scenes.

The stand-in window (:class:`RecordingIface`) holds a real QMainWindow, map canvas and message bar;
only the parts of QGIS's desktop ``iface`` the plugin calls exist, and it records what was added.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer  # noqa: E402
from qgis.gui import QgsMapCanvas, QgsMessageBar  # noqa: E402
from qgis.PyQt.QtWidgets import QMainWindow  # noqa: E402

from tests.helpers import REPO  # noqa: E402

QGIS_PLUGINS = "/usr/share/qgis/python/plugins"


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QgsApplication]:
    """One QgsApplication with a GUI (offscreen) and Processing, settings in a temporary profile."""
    profile = tmp_path_factory.mktemp("qgis-profile")
    # Backends started by the plugin keep their job folders here, not in the user's cache.
    os.environ["TERNAUS_WORK_DIR"] = str(tmp_path_factory.mktemp("backend-jobs"))
    app = QgsApplication([], True, str(profile))
    app.initQgis()
    if QGIS_PLUGINS not in sys.path:
        sys.path.append(QGIS_PLUGINS)
    from processing.core.Processing import Processing

    Processing.initialize()
    yield app
    QgsProject.instance().clear()


class RecordingIface:
    """The parts of QGIS's ``iface`` the plugin uses, on real widgets; it records what it gets."""

    def __init__(self) -> None:
        self.window = QMainWindow()
        self.canvas = QgsMapCanvas(self.window)
        self.window.setCentralWidget(self.canvas)
        self.bar = QgsMessageBar(self.window)
        self.docks: list = []
        self.menu_actions: list = []
        self.toolbar_actions: list = []

    def mainWindow(self):  # noqa: N802
        return self.window

    def mapCanvas(self):  # noqa: N802
        return self.canvas

    def messageBar(self):  # noqa: N802
        return self.bar

    def addDockWidget(self, area, dock) -> None:  # noqa: N802
        self.window.addDockWidget(area, dock)
        self.docks.append(dock)

    def removeDockWidget(self, dock) -> None:  # noqa: N802
        self.window.removeDockWidget(dock)
        self.docks.remove(dock)

    def addPluginToRasterMenu(self, name, action) -> None:  # noqa: N802
        self.menu_actions.append(action)

    def removePluginRasterMenu(self, name, action) -> None:  # noqa: N802
        self.menu_actions.remove(action)

    def addToolBarIcon(self, action) -> None:  # noqa: N802
        self.toolbar_actions.append(action)

    def removeToolBarIcon(self, action) -> None:  # noqa: N802
        self.toolbar_actions.remove(action)


@pytest.fixture
def iface(qgis_app) -> Iterator[RecordingIface]:
    stand_in = RecordingIface()
    yield stand_in
    stand_in.bar.clearWidgets()


@pytest.fixture
def project(qgis_app, tmp_path: Path) -> Iterator[QgsProject]:
    """An empty project saved in ``tmp_path`` (results go to ``tmp_path/ternaus_results``)."""
    instance = QgsProject.instance()
    instance.clear()
    instance.setFileName(str(tmp_path / "project.qgz"))
    yield instance
    instance.clear()


@pytest.fixture(scope="session")
def backend_command() -> Path:
    """The checkout's backend executable (the plugin finds it the same way)."""
    command = REPO / ".venv" / "bin" / "ternaus"
    if not command.is_file():
        pytest.fail(f"{command} is missing: run make setup")
    return command


@pytest.fixture(scope="session")
def synthetic_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 512 x 512 px synthetic RGB scene at 0.5 m with buildings (RGB GeoTIFF)."""
    from ternaus_backend.synthetic import make_scene

    folder = tmp_path_factory.mktemp("scene")
    return make_scene(folder, seed=3, size_px=512, with_ms=True).rgb


def deploy_plugin(out_dir: Path, backend: Path) -> Path:
    """``make deploy`` into a fresh profiles folder under ``out_dir``; returns the profiles folder
    (the plugin is in ``profiles/default/python/plugins/ternaus_qgis``)."""
    import subprocess

    profiles = out_dir / "profiles"
    script = REPO / "scripts" / "package_plugin.py"
    subprocess.run(
        [
            "python3",
            str(script),
            "deploy",
            "--out",
            str(out_dir / "dist"),
            "--profiles-path",
            str(profiles),
            "--backend",
            str(backend),
        ],
        check=True,
    )
    return profiles


def add_raster(path: Path, name: str = "scene") -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


def record_texts(label) -> list[str]:
    """Every text ``label`` is given from now on, in order (polling its text misses stages that
    last a few milliseconds when the machine is loaded)."""
    texts: list[str] = []
    show = label.setText
    label.setText = lambda text: texts.append(text) or show(text)
    return texts


def wait_until(condition, timeout_s: float = 120.0, what: str = "condition") -> None:
    """Process Qt events until ``condition()`` holds; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        QgsApplication.processEvents()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)
