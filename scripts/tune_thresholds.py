"""Tune a model's instance thresholds (body probability, extent, minimum area) on labelled rasters.

Sweeps the thresholds, runs the real extraction on every raster, pools SpaceNet TP/FP/FN and writes
the best combination into the model file's metadata (the network weights are unchanged). The
network runs once per window: its outputs are remembered across the sweep (:class:`MemoNetwork`),
so only instances and polygons are redone per combination. Use rasters that are not your
held-out test set.

    python scripts/tune_thresholds.py --model M.safetensors --rgb A.tif --labels A.geojson \
        [--rgb B.tif --labels B.geojson ...] [--body 0.6 0.8] [--extent 0.4 0.5 none] \
        [--out TUNED.safetensors]

``--training-areas`` (the default model's recipe) scores on where the default model was trained
instead (:func:`eval_real.training_areas`: the OAM mosaics outside their validation areas, the
Banepa training chips, Rio img50-55), clipped to each area as ``scripts/eval_real.py`` scores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval_real

from ternaus_backend.evaluation.spacenet import Scores, evaluate_files
from ternaus_backend.models.model_file import load_model, save_model
from ternaus_backend.pipeline.extract import extract
from ternaus_backend.training.thresholds import MemoNetwork

BODY = (0.4, 0.5, 0.6)
MIN_AREA_PX = (20, 40, 60, 80, 120, 160)


def extent_value(text: str) -> float | None:
    """An ``--extent`` value: a probability, or ``none`` (the body threshold)."""
    return None if text.lower() == "none" else float(text)


def pooled_scores(
    model, pairs: list[tuple[Path, Path]], areas: list[eval_real.Area], work: Path
) -> tuple[Scores, float | None]:
    """Pooled SpaceNet scores over the rasters and the areas, and the areas' pooled pixel IoU."""
    total = Scores()
    for i, (rgb, labels) in enumerate(pairs):
        result = extract(rgb, work / f"t{i}.gpkg", model=model)
        total = total + evaluate_files(result.path, labels)
    counts = eval_real.Counts()
    for area in areas:
        counts = counts + eval_real.evaluate(area, model, tta=False, work=work, device=None)
    return total + counts.scores, (counts.pixel_iou if areas else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--rgb", action="append", default=[])
    parser.add_argument("--labels", action="append", default=[])
    parser.add_argument(
        "--training-areas",
        action="store_true",
        help="also score on the default model's training areas (see the module docstring)",
    )
    parser.add_argument("--out", help="where to write the tuned model (default: --model)")
    parser.add_argument("--body", type=float, nargs="+", default=BODY, help="thresholds tried")
    parser.add_argument(
        "--extent",
        type=extent_value,
        nargs="+",
        default=[None],
        help="extent thresholds tried ('none': the body threshold; values above it are skipped)",
    )
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
    if not args.rgb and not args.training_areas:
        parser.error("give --rgb/--labels pairs or --training-areas")
    model = load_model(args.model)
    meta = model.metadata
    memo = MemoNetwork(model).eval()
    pairs = [(Path(r), Path(lab)) for r, lab in zip(args.rgb, args.labels, strict=True)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        areas = eval_real.training_areas(Path(tmp)) if args.training_areas else []
        for body, extent, min_area in itertools.product(args.body, args.extent, args.min_area):
            if extent is not None and extent >= body:
                continue
            update = {"body": body, "extent": extent, "min_area_px": min_area}
            memo.metadata = meta.model_copy(
                update={"thresholds": meta.thresholds.model_copy(update=update)}
            )
            scores, pixel_iou = pooled_scores(memo, pairs, areas, Path(tmp))
            results.append((scores.f1, update))
            print(json.dumps({**update, **scores.to_dict(), "areas_pixel_iou": pixel_iou}))
    f1, best = max(results, key=lambda item: item[0])
    tuned = meta.model_copy(
        update={
            "thresholds": meta.thresholds.model_copy(update=best),
            "provenance": {
                **meta.provenance,
                "thresholds_tuned_on": json.dumps(
                    args.rgb + [a.name for a in areas] if args.training_areas else args.rgb
                ),
                "thresholds_tuned_f1": f"{f1:.4f}",
                **dict(item.split("=", 1) for item in args.provenance),
            },
        }
    )
    model.metadata = tuned
    out = save_model(model, tuned, args.out or args.model)
    print(f"best: {json.dumps(best)}, pooled F1 {f1:.4f} -> {out}")


if __name__ == "__main__":
    main()
