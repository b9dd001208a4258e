"""Held-out quality of a model on real SpaceNet-1 Rio tiles it was not trained on.

Pixel IoU of the building mask (predicted polygons rasterised on the tile grid vs the SpaceNet
mask, pooled over tiles) and SpaceNet building F1 (IoU 0.5, pooled TP/FP/FN) against the
connected-component polygons (touching buildings are merged in those labels, so F1 is indicative).

    python scripts/eval_rio.py [--model PATH] [--tiles 56 57 61 62]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import rasterize

from ternaus_backend.evaluation.spacenet import Scores, evaluate_files
from ternaus_backend.pipeline.extract import extract
from ternaus_backend.vector_io import read_polygons

RIO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "spacenet1_rio"
ID = "013022223130_Public_img"


def evaluate_tile(model: str | None, number: int, work: Path) -> dict:
    rgb = RIO / "images" / f"3band_{ID}{number}.tif"
    truth = RIO / "derived_polygons" / f"{ID}{number}_mask_components.geojson"
    result = extract(rgb, work / f"img{number}.gpkg", model=model)
    scores = evaluate_files(result.path, truth)
    with rasterio.open(RIO / "masks" / f"mask_{ID}{number}.tif") as src:
        mask = src.read(1) > 0
        polys = read_polygons(result.path, dst_crs=src.crs)
        pred = (
            rasterize(polys, out_shape=mask.shape, transform=src.transform).astype(bool)
            if polys
            else np.zeros_like(mask)
        )
    return {
        "tile": f"img{number}",
        "inter": int((mask & pred).sum()),
        "union": int((mask | pred).sum()),
        **scores.to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the embedded default model)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[56, 57, 61, 62])
    args = parser.parse_args()
    if not RIO.exists():
        raise SystemExit(f"{RIO} not found: the Rio tiles are needed for this evaluation")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [evaluate_tile(args.model, n, Path(tmp)) for n in args.tiles]
    for row in rows:
        print(json.dumps(row))
    pooled = Scores(
        sum(r["tp"] for r in rows), sum(r["fp"] for r in rows), sum(r["fn"] for r in rows)
    )
    union = sum(r["union"] for r in rows)
    iou = sum(r["inter"] for r in rows) / union if union else 1.0
    print(
        json.dumps(
            {"tiles": [r["tile"] for r in rows], "pixel_iou": round(iou, 4), **pooled.to_dict()}
        )
    )


if __name__ == "__main__":
    main()
