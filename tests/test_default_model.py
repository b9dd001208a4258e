"""The embedded default model: loads, is small, and finds buildings in scenes it never saw."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ternaus_backend import load_model
from ternaus_backend.evaluation.spacenet import evaluate_files
from ternaus_backend.pipeline.extract import DEFAULT_MODEL, extract
from ternaus_backend.synthetic import make_scene
from tests.helpers import SHARED_DATA

RIO = SHARED_DATA / "spacenet1_rio"
HELD_OUT = "013022223130_Public_img56"  # never used for training (see scripts/train_default.sh)


def test_default_model_is_small_light_and_self_describing():
    assert DEFAULT_MODEL.stat().st_size < 20 * 2**20
    model = load_model(DEFAULT_MODEL)
    meta = model.metadata
    assert meta.encoder == "resnet_light" and meta.in_channels == 3
    assert meta.band_names == ["red", "green", "blue"]
    assert meta.resolution_m == pytest.approx(0.5, abs=0.05)
    assert "val_f1" in json.dumps(meta.provenance)
    assert not model.training


def test_default_model_finds_buildings_in_an_unseen_synthetic_scene(tmp_path):
    scene = make_scene(tmp_path, seed=2026, size_px=512, with_ms=False)  # training used seeds 7..14
    result = extract(scene.rgb, tmp_path / "out.gpkg")
    scores = evaluate_files(result.path, scene.labels)
    assert scores.f1 > 0.7, scores.to_dict()


def test_default_model_on_a_held_out_real_rio_tile(tmp_path):
    rgb = RIO / "images" / f"3band_{HELD_OUT}.tif"
    if not rgb.exists():
        pytest.skip("shared Rio tiles not present")
    result = extract(rgb, tmp_path / "out.gpkg")
    scores = evaluate_files(
        result.path, RIO / "derived_polygons" / f"{HELD_OUT}_mask_components.geojson"
    )
    assert result.count > 10
    assert scores.tp > 5, scores.to_dict()


def test_predict_without_model_uses_the_default(tmp_path):
    scene = make_scene(tmp_path, seed=5, size_px=256, with_ms=False)
    out = tmp_path / "b.gpkg"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ternaus_backend.cli",
            "predict",
            "--rgb",
            str(scene.rgb),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["buildings"] > 0
