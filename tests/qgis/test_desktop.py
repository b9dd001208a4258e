"""The real QGIS desktop under Xvfb, with the plugin zip installed in a fresh profile: the dock
shows, an extraction runs on a sample scene, a screenshot is saved (docs/ shows one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import deploy_plugin

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("qgis") is None or shutil.which("xvfb-run") is None,
        reason="Debian packages qgis and xvfb are needed (make setup installs them)",
    ),
]

DRIVER = Path(__file__).resolve().parent / "desktop" / "drive_qgis.py"


def run_desktop(scene: Path, out_dir: Path, backend: Path) -> dict:
    """Install the packaged plugin into a fresh profile, run QGIS with the driver script."""
    profiles = deploy_plugin(out_dir, backend)
    report, shot = out_dir / "report.json", out_dir / "qgis-desktop.png"
    (out_dir / "home").mkdir(exist_ok=True)
    env = dict(
        os.environ,
        TERNAUS_SCENE=str(scene),
        TERNAUS_REPORT=str(report),
        TERNAUS_SCREENSHOT=str(shot),
        QT_QPA_PLATFORM="xcb",
        HOME=str(out_dir / "home"),  # results of the unsaved project, backend jobs: not the user's
    )
    done = subprocess.run(
        [
            "xvfb-run",
            "-a",
            "-s",
            "-screen 0 1600x1000x24",
            "qgis",
            "--profiles-path",
            str(profiles),
            "--profile",
            "default",
            "--nologo",
            "--noversioncheck",
            "--code",
            str(DRIVER),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.is_file(), (
        f"QGIS ended without a report:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    data = json.loads(report.read_text())
    data["screenshot"] = str(shot)
    return data


def test_desktop_qgis_runs_an_extraction_with_the_packaged_plugin(
    synthetic_scene, tmp_path, backend_command
):
    scene = Path(os.environ.get("TERNAUS_DESKTOP_SCENE") or synthetic_scene)
    report = run_desktop(scene, tmp_path, backend_command)
    assert report["error"] is None, report["error"]
    assert report["dock_title"] == "Ternaus Building Extraction"
    assert report["features"] > 5
    assert report["layer_crs"] == report["raster_crs"]
    shot = Path(report["screenshot"])
    assert shot.is_file() and shot.stat().st_size > 20_000
    steps = [s["step"] for s in report["steps"]]
    assert steps[-1] == "screenshot saved"
    print(json.dumps(report["steps"]))
    out = os.environ.get("TERNAUS_DESKTOP_SHOT")
    if out:
        shutil.copy(shot, out)
