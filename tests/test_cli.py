"""The ``ternaus`` command line as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ternaus_backend.models.model_file import save_model
from ternaus_backend.models.registry import create_model, metadata_for
from tests.helpers import SHARED_DATA, rectangles_image, write_raster


def ternaus(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ternaus_backend.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def light_model(tmp_path_factory):
    """A real resnet_light network (random weights) saved as a model file, 64 px tiles."""
    path = tmp_path_factory.mktemp("model") / "light.safetensors"
    model = create_model("resnet_light", in_channels=3)
    save_model(model, metadata_for(model, tile_size_px=64, overlap_px=16, resolution_m=0.5), path)
    return path


def test_predict_runs_the_real_network_and_writes_a_geopackage(tmp_path, light_model):
    rgb = write_raster(tmp_path / "rgb.tif", rectangles_image(150, 130, [(20, 20, 60, 60)]))
    out = tmp_path / "out.gpkg"
    done = ternaus("predict", "--rgb", str(rgb), "--model", str(light_model), "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["out"] == str(out) and out.exists()
    assert summary["width_px"] == 130 and summary["height_px"] == 150
    assert "network" in done.stderr  # the progress bar


def test_predict_resamples_to_the_models_resolution_unless_told_not_to(tmp_path, light_model):
    img = rectangles_image(120, 160, [(20, 20, 60, 60)]).repeat(2, axis=1).repeat(2, axis=2)
    rgb = write_raster(tmp_path / "rgb.tif", img, origin=(683000.0, 7450000.0), pixel=0.25)
    runs = {"default": [], "native": ["--native-resolution", "--tta"]}
    summaries = {}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.gpkg"
        argv = ["predict", "--rgb", str(rgb), "--model", str(light_model), "--out", str(out)]
        done = ternaus(*argv, *extra)
        assert done.returncode == 0, done.stderr
        summaries[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert summaries["default"]["resampled"] is True  # the model's metadata says 0.5 m
    assert (summaries["default"]["width_px"], summaries["default"]["height_px"]) == (160, 120)
    assert summaries["default"]["resolution_m"] == pytest.approx(0.5, abs=1e-3)
    assert summaries["native"]["resampled"] is False
    assert (summaries["native"]["width_px"], summaries["native"]["height_px"]) == (320, 240)


@pytest.mark.parametrize(
    "args,message",
    [
        (["predict", "--rgb", "missing.tif", "--out", "x.gpkg"], "does not exist"),
        (["predict", "--rgb", "RGB", "--out", "x.gpkg", "--bbox", "1,2,3"], "four numbers"),
        (["predict", "--rgb", "RGB", "--out", "x.shp", "--model", "MODEL"], "GeoPackage"),
        (
            ["predict", "--rgb", "RGB", "--out", "x.gpkg", "--model", "nothere.safetensors"],
            "nothere",
        ),
        (["evaluate", "--pred", "nothere.geojson", "--truth", "nothere.geojson"], "not found"),
    ],
)
def test_bad_input_gives_one_line_and_non_zero_exit(tmp_path, light_model, args, message):
    rgb = write_raster(tmp_path / "rgb.tif", rectangles_image(64, 64, []))
    args = [
        str(rgb)
        if a == "RGB"
        else str(light_model)
        if a == "MODEL"
        else str(tmp_path / a)
        if a.endswith((".gpkg", ".shp"))
        else a
        for a in args
    ]
    done = ternaus(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert message in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr


def test_evaluate_prints_the_scores_as_json_on_its_last_line():
    folder = SHARED_DATA / "spacenet_metric_reference"
    if not folder.exists():
        pytest.skip("shared SpaceNet metric data not present")
    done = ternaus(
        "evaluate", "--pred", str(folder / "pred.geojson"), "--truth", str(folder / "gt.geojson")
    )
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout.strip().splitlines()[-1])
    assert (scores["tp"], scores["fp"], scores["fn"]) == (8, 20, 20)
    assert scores["f1"] == pytest.approx(0.2857142857142857, abs=1e-12)


def test_sigterm_during_predict_leaves_no_temporary_files(tmp_path, light_model):
    """Issue 18, item 14: SIGTERM mid-run unwinds like Ctrl-C: the probability map, the mosaic
    VRT folder and the partial GeoPackage are removed; exit 143."""
    import os
    import signal
    import time

    data = tmp_path / "data"
    temp = tmp_path / "temp"
    data.mkdir()
    temp.mkdir()
    boxes = [(r, c, r + 30, c + 40) for r in range(20, 2900, 120) for c in range(20, 2900, 150)]
    rgb = write_raster(data / "rgb.tif", rectangles_image(3000, 3000, boxes))
    out = data / "out.gpkg"
    process = subprocess.Popen(
        [sys.executable, "-m", "ternaus_backend.cli", "predict", "--rgb", str(rgb),
         "--model", str(light_model), "--out", str(out)],
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(temp.glob("ternaus-*/probabilities.u8")):  # the network is running
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the prediction did not get under way"
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "stopped (SIGTERM)" in stderr and "Traceback" not in stderr
    assert list(temp.iterdir()) == []
    assert sorted(p.name for p in data.iterdir()) == ["rgb.tif"]


def test_what_a_predict_killed_with_sigkill_left_is_removed_by_the_next_run(tmp_path, light_model):
    """Issue 18: kill -9 runs no handler; the next extraction removes the probability map,
    mosaic folder and partial GeoPackage of the dead process (named after its pid)."""
    import os
    import signal
    import time

    data = tmp_path / "data"
    temp = tmp_path / "temp"
    data.mkdir()
    temp.mkdir()
    boxes = [(r, c, r + 30, c + 40) for r in range(20, 2900, 120) for c in range(20, 2900, 150)]
    rgb = write_raster(data / "rgb.tif", rectangles_image(3000, 3000, boxes))
    env = {**os.environ, "TMPDIR": str(temp)}
    command = [sys.executable, "-m", "ternaus_backend.cli", "predict", "--rgb", str(rgb),
               "--model", str(light_model), "--overwrite"]  # fmt: skip
    process = subprocess.Popen(
        [*command, "--out", str(data / "a.gpkg")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not list(temp.glob("ternaus-*/probabilities.u8")):  # the network is running
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the prediction did not get under way"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    left = sorted(p.name for p in temp.iterdir())
    assert left and all(name.startswith("ternaus-") and str(process.pid) in name for name in left)
    assert any(p.name.endswith(".partial.gpkg") for p in data.iterdir())

    small = write_raster(data / "small.tif", rectangles_image(256, 256, [(20, 20, 60, 70)]))
    done = subprocess.run(
        [sys.executable, "-m", "ternaus_backend.cli", "predict", "--rgb", str(small), "--model",
         str(light_model), "--out", str(data / "a.gpkg")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert list(temp.iterdir()) == []
    assert sorted(p.name for p in data.iterdir()) == ["a.gpkg", "rgb.tif", "small.tif"]
