"""Where to label next, measured: labelling the 3 most uncertain cells vs 3 random cells.

For each OpenAerialMap area of ``../shared/data/hotosm_oam`` (the areas of
``benchmarks/bench_loop.py``), the default model ranks square cells of ``--cell-m`` metres over the
area (:func:`ternaus_backend.evaluation.where_to_label.propose_cells`, as ``ternaus
where-to-label`` and the Train tab's *Propose cells to label*). The candidates are the cells
outside the held-out validation quarter (``resources/training/<area>_val.geojson``) with at least
half their square inside the area. Two users then "label" three cells each: their OpenStreetMap
buildings become the labels and the cells the training area:

* ``guided``: the three best-ranked candidates;
* ``random``: three candidates drawn at random (``--seed``; the mean of ``--draws`` draws when
  more than one).

Each set fine-tunes the default model with the Train tab's defaults (bench_loop's
:func:`fine_tune`: :func:`ternaus_backend.training.recipe.default_config`, self-training on the
imagery around), and the default model and both fine-tunes extract the area through the real
pipeline. Scored on the *rest*: the area minus both cell sets (and a 10 m gap), building F1
(SpaceNet rules, IoU 0.5) and pixel IoU as ``scripts/eval_real.py`` scores, and the guided
fine-tune's F1 minus each random one's with a 95 % interval (paired spatial bootstrap over 50 m
squares).

    .venv/bin/python benchmarks/bench_where_to_label.py [--areas kampala nairobi] [--cell-m 30]
        [--json build/bench_where_to_label.json] [--work build/wtl_work]
        [--choices guided|random] [--reuse] [--merge A.json B.json]

One process per cell set (``--choices guided`` and ``--choices random`` with their own
``--work``) halves the wall-clock time on a machine with cores to spare; ``--merge`` joins their
JSON files into one table.

Prints one markdown table; seconds are wall-clock on this machine.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import shapely
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_loop import (  # noqa: E402
    GAP_M,
    LoopArea,
    change,
    fine_tune,
    loop_areas,
    write_layer,
)
from scripts.eval_real import (  # noqa: E402
    DATA,
    DEFAULT_MODEL,
    OAM_AREAS,
    evaluate,
    match_layer,
    paired_interval,
    result_path,
)
from ternaus_backend.evaluation.where_to_label import Cell, propose_cells  # noqa: E402
from ternaus_backend.models.model_file import load_model  # noqa: E402
from ternaus_backend.vector_io import read_polygons  # noqa: E402

#: Cells a user labels, and the share of a candidate's square that must lie inside the area.
CELLS = 3
MIN_INSIDE = 0.5


def candidates(area: LoopArea, cells: Sequence[Cell]) -> list[Cell]:
    """Cells (best-ranked first) outside the validation quarter, at least half inside the
    area."""
    return [
        c
        for c in cells
        if not c.geometry.intersects(area.val)
        and c.geometry.intersection(area.aoi).area >= MIN_INSIDE * c.geometry.area
    ]


def cell_errors(area: LoopArea, cells: Sequence[Cell], buildings: Sequence) -> list[int]:
    """The default model's errors per cell: false positives + false negatives (SpaceNet rules,
    IoU 0.5) of its buildings against the OpenStreetMap buildings whose centroid is in the cell,
    both clipped to it."""
    from ternaus_backend.evaluation.spacenet import score

    errors = []
    for cell in cells:
        square = cell.geometry
        found = [b.intersection(square) for b in buildings if b.centroid.within(square)]
        truth = [b.intersection(square) for b in area.buildings if b.centroid.within(square)]
        result = score(found, truth)
        errors.append(result.fp + result.fn)
    return errors


def labelled(area: LoopArea, cells: Sequence[Cell], name: str) -> LoopArea:
    """``area`` with ``cells`` as its labelled block (their buildings as labels)."""
    block = shapely.union_all([c.geometry for c in cells])
    held = [b for b in area.buildings if b.intersects(block)]
    return replace(area, name=f"{area.name}_{name}", block=block, block_buildings=held)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--areas", nargs="+", choices=OAM_AREAS, default=list(OAM_AREAS))
    parser.add_argument("--cell-m", type=float, default=30.0, help="cell side, metres (30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random cells")
    parser.add_argument("--draws", type=int, default=1, help="random draws per area (1)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--work", type=Path, help="keep models and layers here")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the fine-tuned models of an earlier --work"
    )
    parser.add_argument(
        "--choices",
        nargs="+",
        choices=("guided", "random"),
        default=["guided", "random"],
        help="the cell sets to fine-tune (e.g. one per process, then --reuse in one --work)",
    )
    parser.add_argument(
        "--errors-only",
        action="store_true",
        help="no fine-tune: only the default model's errors in the guided and random cells and "
        "their rank correlation with the score (a few minutes for the four areas)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="no run: merge the --json files of runs with different --choices (same areas, "
        "--cell-m and --seed) into one table (and --json)",
    )
    args = parser.parse_args(argv)
    if args.merge:
        rows = merge([json.loads(path.read_text()) for path in args.merge])
        print(markdown(rows))
        if args.json:
            write_json(args.json, args, rows)
        return 0
    areas = loop_areas(args.data, args.areas)
    if not areas:
        print(f"no OAM areas under {args.data}; nothing to measure", file=sys.stderr)
        return 0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-wtl-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        base = load_model(DEFAULT_MODEL, device="cpu")
        for area in areas:
            rows.append(run_area(area, base, work, args))
            if args.json:  # after each area: a long run keeps what it measured
                write_json(args.json, args, rows)
    print(markdown(rows))
    if args.json:
        write_json(args.json, args, rows)
    return 0


def merge(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of several runs of one setting (each fine-tuned some cell sets), per area: the
    cells, results and times of each set joined, and who wins worked out again."""
    merged: dict[str, dict[str, Any]] = {}
    for run in runs:
        for row in run["rows"]:
            into = merged.setdefault(row["area"], {**row, "cells": {}, "results": {}})
            into["cells"].update(row.get("cells", {}))
            into["results"].update(row.get("results", {}))
            into.update({k: v for k, v in row.items() if k.endswith(("_seconds", "_train"))})
    for row in merged.values():
        if row.get("skipped"):
            continue
        f1 = {k: v.get("f1") for k, v in row["results"].items()}
        randoms = [f1[k] for k in f1 if k.startswith("random") and f1[k] is not None]
        row["random_mean_f1"] = sum(randoms) / len(randoms) if randoms else None
        row["guided_wins"] = (
            f1.get("guided") is not None
            and row["random_mean_f1"] is not None
            and f1["guided"] > row["random_mean_f1"]
        )
    return list(merged.values())


def write_json(path: Path, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {"cell_m": args.cell_m, "seed": args.seed, "draws": args.draws, "cells": CELLS}
    path.write_text(json.dumps({**settings, "rows": rows}, indent=2))


def run_area(area: LoopArea, base, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Propose, choose, fine-tune twice (or more with ``--draws``), score the rest."""
    aoi = write_layer(work / f"{area.name}_aoi.geojson", [area.aoi], area.crs)
    started = time.perf_counter()
    cells_path = work / f"{area.name}_cells.gpkg"
    proposal = propose_cells(
        area.raster, cells_path, model=DEFAULT_MODEL, aoi=aoi, cell_m=args.cell_m
    )
    propose_s = time.perf_counter() - started
    pool = candidates(area, proposal.cells)
    if len(pool) < 2 * CELLS:
        print(f"{area.name}: only {len(pool)} candidate cells; left out", file=sys.stderr)
        return {"area": area.name, "candidates": len(pool), "skipped": True}
    rng = random.Random(args.seed)
    choices = {"guided": pool[:CELLS]}
    for draw in range(args.draws):
        key = "random" if args.draws == 1 else f"random{draw + 1}"
        choices[key] = rng.sample(pool, CELLS)
    errors = cell_errors(area, pool, read_polygons(cells_path, layer="buildings"))
    first_draw = next(v for k, v in choices.items() if k.startswith("random"))
    drawn = [pool.index(c) for c in first_draw]
    rho = spearmanr([c.score for c in pool], errors).correlation
    error_row = {
        "score_errors_spearman": None if rho != rho else round(float(rho), 3),
        "guided_errors": sum(errors[:CELLS]),
        "random_errors": sum(errors[k] for k in drawn),
        "mean_errors_per_cell": round(sum(errors) / len(errors), 2),
    }
    print(f"{area.name}: {error_row}", file=sys.stderr)
    if args.errors_only:
        return {"area": area.name, "candidates": len(pool), "errors_only": True, **error_row}
    chosen = shapely.union_all([c.geometry for cells in choices.values() for c in cells])
    rest = area.aoi.difference(chosen.buffer(GAP_M))
    row: dict[str, Any] = {
        "area": area.name,
        "candidates": len(pool),
        "propose_seconds": round(propose_s, 1),
        "cells": {},
        "results": {},
        "rest_m2": round(rest.area),
        **error_row,
    }
    models = {"before": base}
    for name, cells in choices.items():
        if name.rstrip("0123456789") not in args.choices:
            continue
        setting = labelled(area, cells, name)
        row["cells"][name] = [
            {
                "rank": c.rank,
                "score": round(c.score, 4),
                "buildings_labelled": sum(1 for b in area.buildings if b.intersects(c.geometry)),
                "bounds": [round(v, 2) for v in c.geometry.bounds],
            }
            for c in cells
        ]
        try:
            path, seconds, summary = fine_tune(setting, "finetune", work, "local", args.reuse)
        except Exception as error:  # a set the trainer refuses (e.g. no building): say so
            print(f"{setting.name}: fine-tune failed: {error}", file=sys.stderr)
            row["results"][name] = {"error": str(error)}
            continue
        row[f"{name}_seconds"] = round(seconds, 1)
        row[f"{name}_train"] = summary
        models[name] = load_model(path, device="cpu")
    scored = area.scored(rest, "rest")
    for name, model in models.items():
        folder = work / area.name / name
        folder.mkdir(parents=True, exist_ok=True)
        counts = evaluate(scored, model, False, folder, None)
        row["results"][name] = counts.as_dict()
        print(
            f"{area.name} {name}: rest F1 {counts.scores.f1:.3f} IoU {counts.pixel_iou:.3f}",
            file=sys.stderr,
        )
    randoms = [k for k in choices if k.startswith("random")]
    matched = {k: match_layer(scored, result_path(scored, work / area.name / k)) for k in models}
    if "guided" in matched:  # guided minus each random draw, 95 % interval
        row["guided_vs"] = {
            k: paired_interval(matched[k], matched["guided"]).as_dict()
            for k in randoms
            if k in matched
        }
    f1 = {k: row["results"].get(k, {}).get("f1") for k in ["before", "guided", *randoms]}
    mean_random = [f1[k] for k in randoms if f1[k] is not None]
    row["random_mean_f1"] = sum(mean_random) / len(mean_random) if mean_random else None
    row["guided_wins"] = (
        f1["guided"] is not None
        and row["random_mean_f1"] is not None
        and f1["guided"] > row["random_mean_f1"]
    )
    return row


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Rest-of-area F1 per area: before, guided, random; the buildings each set labelled; then
    the default model's errors in the guided and random cells."""
    lines = [
        "| area (candidate cells) | buildings labelled guided / random | rest F1 before | "
        "guided | random | guided wins | guided - random, 95 % interval | "
        "fine-tune s guided / random |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    if all(row.get("errors_only") for row in rows):
        lines = []
    wins = ran = 0
    for row in rows:
        if row.get("skipped"):
            lines.append(f"| {row['area']} ({row['candidates']}) | too few cells | | | | | | |")
            continue
        if row.get("errors_only"):
            continue
        res = row["results"]

        def f1(key: str, res: dict = res) -> str:
            value = res.get(key, {}).get("f1")
            return "n/a" if value is None else f"{value:.3f}"

        def held(key: str, row: dict = row) -> int:
            return sum(c["buildings_labelled"] for c in row["cells"].get(key, []))

        randoms = [k for k in row["cells"] if k.startswith("random")]
        random_f1 = row.get("random_mean_f1")
        ran += 1
        wins += bool(row.get("guided_wins"))
        lines.append(
            f"| {row['area']} ({row['candidates']}) | {held('guided')} / "
            + " + ".join(str(held(k)) for k in randoms)
            + f" | {f1('before')} | {f1('guided')} | "
            + ("n/a" if random_f1 is None else f"{random_f1:.3f}")
            + f" | {'yes' if row.get('guided_wins') else 'no'} | "
            + "; ".join(change(v) for v in row.get("guided_vs", {}).values())
            + f" | {row.get('guided_seconds', 0):.0f} / "
            + " + ".join(f"{row.get(f'{k}_seconds', 0):.0f}" for k in randoms)
            + " |"
        )
    if ran:
        lines.append(f"\nGuided wins on {wins} of {ran} areas run.")
    measured = [r for r in rows if "guided_errors" in r]
    if measured:
        lines += [
            *([""] if lines else []),
            "| area (candidate cells) | default model's errors (FP + FN) in the guided / random "
            "cells | mean per cell | Spearman score vs errors |",
            "|---|---|---:|---:|",
        ]
        lines += [
            f"| {r['area']} ({r['candidates']}) | {r['guided_errors']} / {r['random_errors']} | "
            f"{r['mean_errors_per_cell']:.2f} | {r['score_errors_spearman']} |"
            for r in measured
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
