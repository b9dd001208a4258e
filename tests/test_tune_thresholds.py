"""scripts/tune_thresholds.py: the sweep runs the network once per window and writes the best
thresholds (extent included) into the model file."""

from __future__ import annotations

import sys

import pytest

from scripts import tune_thresholds
from ternaus_backend import load_model
from ternaus_backend.pipeline.extract import DEFAULT_MODEL, extract
from ternaus_backend.synthetic import make_scene


def test_the_memo_network_runs_the_model_once_per_window(tmp_path) -> None:
    scene = make_scene(tmp_path, seed=3, size_px=256, with_ms=False)
    model = load_model(DEFAULT_MODEL)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    memo = tune_thresholds.MemoNetwork(model).eval()
    first = extract(scene.rgb, tmp_path / "a.gpkg", model=memo)
    windows = len(calls)
    second = extract(scene.rgb, tmp_path / "b.gpkg", model=memo)
    assert windows >= 1 and len(calls) == windows  # the second run reused every window
    assert second.count == first.count


def test_the_sweep_writes_the_best_thresholds(tmp_path, monkeypatch, capsys) -> None:
    scene = make_scene(tmp_path, seed=4, size_px=256, with_ms=False)
    out = tmp_path / "tuned.safetensors"
    argv = ["tune_thresholds.py", "--model", str(DEFAULT_MODEL), "--rgb", str(scene.rgb)]
    argv += ["--labels", str(scene.labels), "--body", "0.5", "0.8", "--extent", "none", "0.6"]
    argv += ["--min-area", "40", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    tune_thresholds.main()
    lines = capsys.readouterr().out.strip().splitlines()
    tried = [line for line in lines if line.startswith("{")]
    assert len(tried) == 3  # (0.5, none), (0.8, none), (0.8, 0.6); 0.6 >= 0.5 is skipped
    thresholds = load_model(out).metadata.thresholds
    assert thresholds.body in (0.5, 0.8) and thresholds.min_area_px == 40
    assert thresholds.extent in (None, 0.6)
    assert float(load_model(out).metadata.provenance["thresholds_tuned_f1"]) == pytest.approx(
        float(lines[-1].rsplit("pooled F1 ", 1)[1].split()[0]), abs=1e-4
    )
