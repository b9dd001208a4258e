"""The real QGIS desktop under Xvfb, with the packaged plugin: the Map check and Changes tabs
on real imagery and its OpenStreetMap buildings (Nairobi, ../shared/data, read where it lies),
then the Train tab's *Propose cells to label*; three screenshots
(``TERNAUS_DESKTOP_MAP_CHECK_SHOT``, ``TERNAUS_DESKTOP_CHANGES_SHOT``,
``TERNAUS_DESKTOP_WHERE_TO_LABEL_SHOT``: copied there, e.g. docs/qgis-map-check.png,
docs/qgis-changes.png and docs/qgis-where-to-label.png)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA

from .conftest import deploy_plugin

#: The place (a HOT OpenAerialMap area of ../shared/data): Nairobi, whose map is offset.
PLACE = os.environ.get("TERNAUS_DESKTOP_PLACE", "nairobi")
IMAGE = SHARED_DATA / "hotosm_oam" / f"{PLACE}_rgb.tif"
MAP = IMAGE.with_name(f"{PLACE}_buildings.geojson")
AOI = IMAGE.with_name(f"{PLACE}_aoi.geojson")
DRIVER = Path(__file__).resolve().parent / "desktop" / "drive_comparison.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("qgis") is None or shutil.which("xvfb-run") is None,
        reason="Debian packages qgis and xvfb are needed (make setup installs them)",
    ),
    pytest.mark.skipif(not IMAGE.is_file(), reason=f"shared data not found: {IMAGE}"),
]


def zoom_box() -> str:
    """The largest part of the place's area (WGS 84), a little grown: what the screenshots show."""
    import shapely

    from ternaus_backend.vector_io import read_polygons

    parts = [p for g in read_polygons(AOI) for p in getattr(g, "geoms", [g])]
    largest = max(parts, key=lambda p: p.area)
    return ",".join(f"{v:.6f}" for v in shapely.buffer(largest, 0.00005).bounds)


def test_desktop_map_check_and_changes_on_real_imagery(tmp_path, backend_command):
    profiles = deploy_plugin(tmp_path, backend_command)
    report = tmp_path / "report.json"
    shots = {
        "map": tmp_path / "qgis-map-check.png",
        "changes": tmp_path / "qgis-changes.png",
        "cells": tmp_path / "qgis-where-to-label.png",
    }
    (tmp_path / "home").mkdir()
    env = dict(
        os.environ,
        TERNAUS_IMAGE=str(IMAGE),
        TERNAUS_MAP=str(MAP),
        TERNAUS_ZOOM=zoom_box(),
        TERNAUS_REPORT=str(report),
        TERNAUS_MAP_CHECK_SHOT=str(shots["map"]),
        TERNAUS_CHANGES_SHOT=str(shots["changes"]),
        TERNAUS_WHERE_TO_LABEL_SHOT=str(shots["cells"]),
        QT_QPA_PLATFORM="xcb",
        HOME=str(tmp_path / "home"),  # results of the unsaved project: not the user's home
    )
    done = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--profiles-path"]
        + [str(profiles), "--profile", "default", "--nologo", "--noversioncheck"]
        + ["--code", str(DRIVER)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert report.is_file(), f"QGIS ended without a report:\n{output}"
    data = json.loads(report.read_text())
    print(json.dumps({k: v for k, v in data.items() if k != "t0"}, indent=1))
    assert data["error"] is None, data["error"]
    check = data["map_check"]
    assert check["matched"] > 50 and check["offset"] is not None
    assert check["unmapped"] + check["matched"] == data["extracted"]
    assert "Median offset" in data["map_check_text"]
    changes = data["changes"]
    assert data["changes_extracted"]["after"] > 50
    assert changes["unchanged"] + changes["changed"] > 50
    assert any(s.startswith("Later image: ") for s in data["changes_stages"])
    cells = data["where_to_label"]
    assert cells["cells"] >= 3 and len(cells["top"]) == 3, cells
    assert "cells of 40 m ranked" in data["where_to_label_text"]
    assert data["where_to_label_area"]  # the top cells became the training area
    for shot in shots.values():
        assert shot.stat().st_size > 50_000
    for variable, key in (
        ("TERNAUS_DESKTOP_MAP_CHECK_SHOT", "map"),
        ("TERNAUS_DESKTOP_CHANGES_SHOT", "changes"),
        ("TERNAUS_DESKTOP_WHERE_TO_LABEL_SHOT", "cells"),
    ):
        if os.environ.get(variable):
            shutil.copy(shots[key], os.environ[variable])
