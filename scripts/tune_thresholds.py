"""Tune a model's instance thresholds (body probability, minimum area) on labelled rasters.

Sweeps the thresholds, runs the real extraction on every raster, pools SpaceNet TP/FP/FN and writes
the best pair into the model file's metadata (the network weights are unchanged). Use rasters that
are not your held-out test set.

    python scripts/tune_thresholds.py --model M.safetensors --rgb A.tif --labels A.geojson \
        [--rgb B.tif --labels B.geojson ...] [--out TUNED.safetensors]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

from ternaus_backend.evaluation.spacenet import Scores, evaluate_files
from ternaus_backend.models.model_file import load_model, save_model
from ternaus_backend.pipeline.extract import extract

BODY = (0.4, 0.5, 0.6)
MIN_AREA_PX = (20, 40, 60, 80, 120, 160)


def pooled_scores(model, pairs: list[tuple[Path, Path]], work: Path) -> Scores:
    total = Scores()
    for i, (rgb, labels) in enumerate(pairs):
        result = extract(rgb, work / f"t{i}.gpkg", model=model)
        total = total + evaluate_files(result.path, labels)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--rgb", action="append", required=True)
    parser.add_argument("--labels", action="append", required=True)
    parser.add_argument("--out", help="where to write the tuned model (default: --model)")
    parser.add_argument("--body", type=float, nargs="+", default=BODY, help="thresholds tried")
    parser.add_argument(
        "--min-area", type=int, nargs="+", default=MIN_AREA_PX, help="minimum areas (px) tried"
    )
    parser.add_argument(
        "--provenance",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also record this in the model's provenance (e.g. the data's attribution)",
    )
    args = parser.parse_args()
    if len(args.rgb) != len(args.labels):
        parser.error("give one --labels per --rgb")
    model = load_model(args.model)
    meta = model.metadata
    pairs = [(Path(r), Path(lab)) for r, lab in zip(args.rgb, args.labels, strict=True)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for body, min_area in itertools.product(args.body, args.min_area):
            model.metadata = meta.model_copy(
                update={"thresholds": meta.thresholds.model_copy(
                    update={"body": body, "min_area_px": min_area})}
            )
            scores = pooled_scores(model, pairs, Path(tmp))
            results.append((scores.f1, body, min_area))
            print(json.dumps({"body": body, "min_area_px": min_area, **scores.to_dict()}))
    f1, body, min_area = max(results)
    tuned = meta.model_copy(
        update={
            "thresholds": meta.thresholds.model_copy(
                update={"body": body, "min_area_px": min_area}
            ),
            "provenance": {
                **meta.provenance,
                "thresholds_tuned_on": json.dumps(args.rgb),
                "thresholds_tuned_f1": f"{f1:.4f}",
                **dict(item.split("=", 1) for item in args.provenance),
            },
        }
    )
    model.metadata = tuned
    out = save_model(model, tuned, args.out or args.model)
    print(f"best: body {body}, min_area_px {min_area}, pooled F1 {f1:.4f} -> {out}")


if __name__ == "__main__":
    main()
