"""``ternaus:extract_buildings`` through ``processing.run`` and ``qgis_process``; the plugin zip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsVectorLayer

from tests.helpers import REPO

from .conftest import add_raster, deploy_plugin


@pytest.fixture
def provider(qgis_app, backend_command):
    from ternaus_qgis import backend_process, settings
    from ternaus_qgis.processing.provider import TernausProvider

    settings.set("backend/mode", "local")
    registry = QgsApplication.processingRegistry()
    instance = TernausProvider()
    registry.addProvider(instance)
    yield instance
    registry.removeProvider(instance)
    backend_process.shutdown()


def test_processing_run_extracts_buildings(provider, project, synthetic_scene, tmp_path):
    import processing

    raster = add_raster(synthetic_scene)
    out = tmp_path / "processing.gpkg"
    result = processing.run("ternaus:extract_buildings", {"RGB": raster, "OUTPUT": str(out)})
    layer = QgsVectorLayer(result["OUTPUT"], "result", "ogr")
    assert layer.isValid() and layer.featureCount() > 5
    assert layer.crs() == raster.crs()
    assert {"confidence", "area_m2"} <= set(layer.fields().names())


def test_processing_reports_a_clear_error(provider, project, tmp_path):
    import numpy as np
    import processing
    from qgis.core import QgsProcessingException

    from tests.helpers import write_raster

    two_bands = add_raster(write_raster(tmp_path / "two.tif", np.zeros((2, 64, 64), np.uint8)))
    with pytest.raises(QgsProcessingException, match="band"):
        processing.run(
            "ternaus:extract_buildings", {"RGB": two_bands, "OUTPUT": str(tmp_path / "x.gpkg")}
        )


def test_processing_options_reach_the_backend(provider, project, synthetic_scene, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    raster = add_raster(synthetic_scene)
    parameters = {"RGB": raster, "OUTPUT": str(tmp_path / "x.gpkg"), "TILE_SIZE_PX": 100}
    with pytest.raises(QgsProcessingException, match="multiple of 32"):
        processing.run("ternaus:extract_buildings", parameters)


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        ["python3", str(REPO / "scripts" / "package_plugin.py"), "package", "--out", str(out)],
        check=True,
    )
    (zip_path,) = out.glob("ternaus_qgis-*.zip")
    return zip_path


def test_package_holds_one_plugin_folder(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as archive:
        names = archive.namelist()
    assert all(name.startswith("ternaus_qgis/") for name in names)
    for needed in ("metadata.txt", "__init__.py", "icon.svg", "styles/buildings.qml"):
        assert f"ternaus_qgis/{needed}" in names
    assert not any("__pycache__" in name or name.endswith("backend_path.txt") for name in names)


@pytest.mark.skipif(shutil.which("qgis_process") is None, reason="Debian package qgis missing")
def test_qgis_process_runs_the_algorithm(plugin_zip, synthetic_scene, tmp_path, backend_command):
    profiles = deploy_plugin(tmp_path, backend_command)
    plugins = profiles / "profiles" / "default" / "python" / "plugins"
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        QGIS_PLUGINPATH=str(plugins),
        QGIS_CUSTOM_CONFIG_PATH=str(profiles),
    )
    out = tmp_path / "qp.gpkg"
    done = subprocess.run(
        [
            # Debian's qgis_process wrapper adds --noversioncheck from /etc/default/qgis, which
            # qgis_process itself rejects: run the binary behind it.
            shutil.which("qgis_process.bin") or "qgis_process",
            "--json",
            "run",
            "ternaus:extract_buildings",
            "--",
            f"RGB={synthetic_scene}",
            f"OUTPUT={out}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = done.stdout[done.stdout.index("{") :]
    results = json.loads(text)["results"]
    layer = QgsVectorLayer(results["OUTPUT"], "qp", "ogr")
    assert layer.isValid() and layer.featureCount() > 5
