"""The main job end to end: a sample scene, building extraction with the default model, a PNG of the
result and its F1 against the scene's labels.

    python scripts/demo.py [--out demo_out]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ternaus_backend.cli import TqdmProgress
from ternaus_backend.evaluation.spacenet import evaluate_files
from ternaus_backend.pipeline.extract import extract
from ternaus_backend.preview import render_overlay
from ternaus_backend.synthetic import make_scene

RIO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "spacenet1_rio"
RIO_HELD_OUT = "013022223130_Public_img56"


def run(rgb: Path, truth: Path, out_dir: Path, name: str) -> dict:
    started = time.perf_counter()
    bars = TqdmProgress()
    result = extract(rgb, out_dir / f"{name}.gpkg", progress=bars)
    bars.close()
    png = render_overlay(rgb, result.path, out_dir / f"{name}.png", truth=truth)
    scores = evaluate_files(result.path, truth)
    return {
        "scene": name,
        "buildings": result.count,
        "gpkg": str(result.path),
        "png": str(png),
        "seconds": round(time.perf_counter() - started, 1),
        **scores.to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder")
    args = parser.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = make_scene(out_dir, seed=2026, size_px=768, with_ms=False, name="sample")
    report = [run(scene.rgb, scene.labels, out_dir, "buildings")]
    rio_rgb = RIO / "images" / f"3band_{RIO_HELD_OUT}.tif"
    rio_truth = RIO / "derived_polygons" / f"{RIO_HELD_OUT}_mask_components.geojson"
    if rio_rgb.exists():  # a real tile the default model never saw in training
        report.append(run(rio_rgb, rio_truth, out_dir, "rio_img56"))
    for row in report:
        print(json.dumps(row))
    first = report[0]
    print(
        f"\nF1 on the sample scene: {first['f1']:.3f} ({first['buildings']} buildings) -> "
        f"{first['gpkg']}, {first['png']}"
    )


if __name__ == "__main__":
    main()
