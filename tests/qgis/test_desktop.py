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


def run_desktop(scene: Path, labels: Path, out_dir: Path, backend: Path) -> dict:
    """Install the packaged plugin into a fresh profile, run QGIS with the driver script."""
    profiles = deploy_plugin(out_dir, backend)
    report, shot = out_dir / "report.json", out_dir / "qgis-desktop.png"
    (out_dir / "home").mkdir(exist_ok=True)
    env = dict(
        os.environ,
        TERNAUS_SCENE=str(scene),
        TERNAUS_LABELS=str(labels),
        TERNAUS_TRAIN_SHOT=str(out_dir / "qgis-training.png"),
        TERNAUS_EVAL_SHOT=str(out_dir / "qgis-evaluation.png"),
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
        timeout=1200,
    )
    assert report.is_file(), (
        f"QGIS ended without a report:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    data = json.loads(report.read_text())
    data["screenshot"] = str(shot)
    return data


def test_desktop_qgis_runs_the_loop_with_the_packaged_plugin(
    synthetic_scene, tmp_path, backend_command
):
    """Extract, train on the reference buildings, evaluate: three screenshots, as a user sees."""
    scene = Path(os.environ.get("TERNAUS_DESKTOP_SCENE") or synthetic_scene)
    labels = Path(
        os.environ.get("TERNAUS_DESKTOP_LABELS")
        or synthetic_scene.parent / "scene_labels.geojson"
    )
    report = run_desktop(scene, labels, tmp_path, backend_command)
    assert report["error"] is None, report["error"]
    assert report["dock_title"] == "Ternaus Building Extraction"
    assert report["features"] > 5
    assert report["layer_crs"] == report["raster_crs"]
    shot = Path(report["screenshot"])
    assert shot.is_file() and shot.stat().st_size > 20_000
    steps = [s["step"] for s in report["steps"]]
    assert "screenshot saved" in steps
    # Training: the chart had epochs drawn while it ran; the model was kept.
    assert report["train_shot"]["epochs_drawn"] >= 2
    assert "my_area" in report["training"]
    # Evaluation: scores on the panel, the error layers drawn.
    assert "F1" in report["scores_text"]
    assert report["evaluation"]["tp"] + report["evaluation"]["fn"] > 0
    assert steps[-1] == "evaluation screenshot saved"
    for name in ("qgis-training.png", "qgis-evaluation.png"):
        assert (tmp_path / name).stat().st_size > 20_000
    print(json.dumps(report["steps"]))
    for variable, name in (
        ("TERNAUS_DESKTOP_SHOT", "qgis-desktop.png"),
        ("TERNAUS_DESKTOP_TRAIN_SHOT", "qgis-training.png"),
        ("TERNAUS_DESKTOP_EVAL_SHOT", "qgis-evaluation.png"),
    ):
        if os.environ.get(variable):
            shutil.copy(tmp_path / name, os.environ[variable])
