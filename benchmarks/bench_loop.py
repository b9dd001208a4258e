"""The user's loop on real imagery: label one block, fine-tune, is the *rest* of the area better?

For each OpenAerialMap area of ``../shared/data/hotosm_oam`` (zanzibar, kampala, banepa_east,
nairobi) a compact block holding about 50 buildings (at most 40 % of the area's buildings) is
"labelled": its OpenStreetMap buildings become the training labels and the block the training
area, as a user who corrected one neighbourhood in QGIS would give them. The block is a square
grown around the building nearest to the centre of the area outside its held-out validation
quarter (``resources/training/<area>_val.geojson``), clipped to the area. Then:

* ``finetune``: ``ternaus train --init default`` with the Train tab's defaults (the recipe of
  :func:`ternaus_backend.training.recipe.default_config`), the block as training area, the
  unlabelled raster around it as self-training context;
* ``adapt``: self-training alone, no labels ("Adapt to this imagery"), on the same raster;

and the default model and each result extract the whole area through the real pipeline. Scored
on the *rest* of the area (the AOI minus the block and a 10 m gap; the block's buildings are
never scored): building F1 (SpaceNet rules, IoU 0.5) and pixel IoU, as ``scripts/eval_real.py``
scores, and each model's change in rest F1 against the default model with a 95 % interval (a
paired bootstrap over 50 m squares: is the change more than the luck of which buildings the rest
holds?); also on the part of the rest that lies in the validation quarter (never trained on by
the default model either). The building-free Rio tiles img61/img62 check for false positives.

    .venv/bin/python benchmarks/bench_loop.py [--areas kampala nairobi] [--modes finetune adapt]
        [--json build/bench_loop.json] [--recipe classic] [--blends 0.25 0.5 1]
        [--work build/loop --reuse]

Prints one markdown table; seconds are wall-clock on this machine (fine-tune includes reading,
pseudo-labels and validation).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
import shapely
from shapely.geometry import box, mapping
from shapely.geometry.base import BaseGeometry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.eval_real import (  # noqa: E402
    DATA,
    DEFAULT_MODEL,
    OAM_AREAS,
    VAL_AREAS,
    Area,
    Counts,
    evaluate,
    match_layer,
    paired_interval,
    result_path,
    rio_areas,
)
from ternaus_backend.models.model_file import load_model  # noqa: E402
from ternaus_backend.progress import ProgressEvent  # noqa: E402
from ternaus_backend.training.dataset import TrainingSource  # noqa: E402
from ternaus_backend.training.loop import train  # noqa: E402
from ternaus_backend.training.recipe import default_config  # noqa: E402
from ternaus_backend.vector_io import read_polygons  # noqa: E402

#: Buildings a user labels in the block, and at most this share of the area's buildings.
BLOCK_BUILDINGS = 50
BLOCK_SHARE = 0.4
#: Gap (m in EPSG:3857, ~ground metres near the equator) between the block and the scored rest.
GAP_M = 10.0


@dataclass
class LoopArea:
    """One OAM area cut into the labelled block and the rest."""

    name: str
    raster: Path
    crs: Any
    aoi: BaseGeometry
    val: BaseGeometry
    buildings: list[BaseGeometry]
    block: BaseGeometry
    block_buildings: list[BaseGeometry]

    @property
    def rest(self) -> BaseGeometry:
        return self.aoi.difference(self.block.buffer(GAP_M))

    def scored(self, region: BaseGeometry, label: str) -> Area:
        return Area(f"{self.name}:{label}", self.raster, self.buildings, region, self.crs)


def choose_block(
    aoi: BaseGeometry, val: BaseGeometry, buildings: Sequence[BaseGeometry], wanted: int
) -> BaseGeometry:
    """A square around the building nearest to the centre of ``aoi - val``, grown until it
    holds ``wanted`` whole buildings, clipped to ``aoi`` (one piece)."""
    allowed = aoi.difference(val)
    centre = allowed.centroid if not allowed.is_empty else aoi.centroid
    inside = [b for b in buildings if allowed.contains(b.centroid)] or list(buildings)
    seed = min(inside, key=lambda b: b.centroid.distance(centre)).centroid
    half = 5.0
    while True:
        square = box(seed.x - half, seed.y - half, seed.x + half, seed.y + half)
        block = square.intersection(aoi)
        if block.geom_type != "Polygon":  # one compact piece, as a user would draw it
            parts = [g for g in getattr(block, "geoms", []) if g.geom_type == "Polygon"]
            block = max(parts, key=lambda g: (g.buffer(1).contains(seed), g.area))
        held = [b for b in buildings if block.contains(b)]
        if len(held) >= wanted or half > 5000:
            return block
        half *= 1.1


def loop_areas(data: Path = DATA, names: Sequence[str] = OAM_AREAS) -> list[LoopArea]:
    """The OAM areas with their blocks (areas whose files are missing are left out)."""
    folder = data / "hotosm_oam"
    areas = []
    for name in names:
        raster = folder / f"{name}_rgb.tif"
        if not raster.exists():
            print(f"note: {raster} not found; {name} left out", file=sys.stderr)
            continue
        with rasterio.open(raster) as ds:
            crs, bounds = ds.crs, ds.bounds
        aoi = shapely.union_all(read_polygons(folder / f"{name}_aoi.geojson", dst_crs=crs))
        aoi = aoi.intersection(box(*bounds))
        val = shapely.union_all(read_polygons(VAL_AREAS / f"{name}_val.geojson", dst_crs=crs))
        buildings = read_polygons(folder / f"{name}_buildings.geojson", dst_crs=crs)
        in_aoi = [b for b in buildings if aoi.contains(b.centroid)]
        wanted = min(BLOCK_BUILDINGS, int(BLOCK_SHARE * len(in_aoi)))
        block = choose_block(aoi, val, in_aoi, wanted)
        block_buildings = [b for b in buildings if b.intersects(block)]
        areas.append(LoopArea(name, raster, crs, aoi, val, buildings, block, block_buildings))
    return areas


def write_layer(path: Path, geoms: Sequence[BaseGeometry], crs: Any) -> Path:
    """A GeoJSON layer of ``geoms`` in ``crs`` (named CRS member, as QGIS writes it)."""
    features = [{"type": "Feature", "properties": {}, "geometry": mapping(g)} for g in geoms]
    layer = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": str(crs)}},
        "features": features,
    }
    path.write_text(json.dumps(layer))
    return path


def retune(path: Path, source: TrainingSource) -> tuple[Path, dict]:
    """The recipe's last step (thresholds tuned on the labels) again on saved weights: for a
    run whose tuning step has since changed (``--reuse``)."""
    import torch

    from ternaus_backend.models.model_file import save_model
    from ternaus_backend.training.dataset import prepare_sources
    from ternaus_backend.training.thresholds import tune_on_labels

    model = load_model(path, device="cpu")
    meta = model.metadata
    sources = prepare_sources([source], meta.normalization, resolution_m=meta.resolution_m)
    tuned = tune_on_labels(model, sources, torch.device("cpu"))
    if tuned is None:
        return path, {"notes": ["thresholds kept (re-tuned on the saved weights)"]}
    meta = meta.model_copy(update={"thresholds": tuned[0]})
    out = save_model(model, meta, path.with_name(path.stem + "_retuned.safetensors"))
    return Path(out), {"notes": [tuned[1] + " (re-tuned on the saved weights)"]}


def loop_source(area: LoopArea, mode: str, work: Path) -> TrainingSource:
    """What the user gives the Train tab: the raster, and for ``finetune`` the block's buildings
    as labels and the block as the training area."""
    labels = block = None
    if mode == "finetune":
        labels = write_layer(work / f"{area.name}_labels.geojson", area.block_buildings, area.crs)
        block = write_layer(work / f"{area.name}_block.geojson", [area.block], area.crs)
    return TrainingSource(rgb=area.raster, labels=labels, aoi=block)


def blended(trained: Path, share: float, source: TrainingSource, base: Any) -> Any:
    """The recipe's last steps on a fine-tune trained unblended (``--set blend=1``): ``share``
    of its weights blended with the default model's (:mod:`ternaus_backend.training.blend`),
    then, with labels, the thresholds tuned on them starting from the default model's, as
    ``train()`` does with ``blend=share``; one training run gives every share."""
    import torch

    from ternaus_backend.training.blend import blend_states, starting_state
    from ternaus_backend.training.dataset import prepare_sources
    from ternaus_backend.training.thresholds import tune_on_labels

    model = load_model(trained, device="cpu")
    meta = model.metadata.model_copy(update={"thresholds": base.metadata.thresholds})
    model.load_state_dict(blend_states(starting_state(base), model.state_dict(), share))
    model.metadata = meta
    if source.labels is not None:
        sources = prepare_sources([source], meta.normalization, resolution_m=meta.resolution_m)
        tuned = tune_on_labels(model, sources, torch.device("cpu"))
        if tuned is not None:
            model.metadata = meta.model_copy(update={"thresholds": tuned[0]})
    return model.eval()


def fine_tune(
    area: LoopArea, mode: str, work: Path, recipe: str, reuse: bool = False, **overrides: Any
) -> tuple[Path, float, dict]:
    """Fine-tune the default model as the plugin would; returns (model, seconds, summary)."""
    source = loop_source(area, mode, work)
    saved = work / f"{area.name}_{mode}.safetensors"
    if reuse and saved.exists():
        if mode != "finetune" or overrides.get("blend") == 1.0:  # blends: tuned by blended()
            return saved, 0.0, {"notes": ["reused"]}
        path, summary = retune(saved, source)
        return path, 0.0, summary
    config = default_config(
        [source],
        work / f"{area.name}_{mode}.safetensors",
        init="default",
        recipe=recipe,
        **overrides,
    )
    started = time.perf_counter()
    result = train(config, progress=_print_epochs(f"{area.name} {mode}", started))
    seconds = time.perf_counter() - started
    summary = {
        "best_epoch": result.best_epoch,
        "best_val_f1": result.best_val_f1,
        "epochs": result.epochs_completed,
        "notes": [n for n in result.notes if "labelled buildings" in n or "thresholds" in n],
    }
    return result.model_path, seconds, summary


def _print_epochs(label: str, started: float):
    """A progress callback that prints each validated epoch (to stderr)."""

    def report(event: ProgressEvent) -> None:
        info = event.info or {}
        if info.get("phase") == "validated":
            f1 = info.get("val_f1")
            print(
                f"{label}: epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.3f} "
                f"val F1 {'n/a' if f1 is None else f'{f1:.3f}'} "
                f"({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
            )

    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--areas", nargs="+", choices=OAM_AREAS, default=list(OAM_AREAS))
    parser.add_argument(
        "--modes", nargs="+", choices=("finetune", "adapt"), default=["finetune", "adapt"]
    )
    parser.add_argument(
        "--recipe",
        choices=("local", "classic"),
        default="local",
        help="local: the default recipe; classic: the former one (10 x 100 steps, lr 1e-3)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override a training setting (JSON value), e.g. --set lr=1e-4 --set l2sp_weight=0.01",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the models of an earlier run in --work (fine-tunes get the recipe's "
        "threshold step again); times then read 0",
    )
    parser.add_argument(
        "--blends",
        nargs="+",
        type=float,
        metavar="SHARE",
        help="train unblended (blend=1) once and score each share of the fine-tuned weights "
        "blended with the default model's (the recipe's last steps, see blended()); columns "
        "MODE@SHARE",
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--work", type=Path, help="keep models and layers here")
    args = parser.parse_args(argv)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    areas = loop_areas(args.data, args.areas)
    if not areas:
        print(f"no OAM areas under {args.data}; nothing to measure", file=sys.stderr)
        return 0
    rio_empty = [a for a in rio_areas(args.data) if a.name in ("rio:img61", "rio:img62")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        base = load_model(DEFAULT_MODEL, device="cpu")
        for area in areas:
            regions = {"rest": area.rest, "rest_val": area.rest.intersection(area.val)}
            row: dict[str, Any] = {
                "area": area.name,
                "block_buildings": len([b for b in area.buildings if area.block.contains(b)]),
                "results": {},
            }
            models: dict[str, Any] = {"before": base}
            if args.blends:
                overrides["blend"] = 1.0
            for mode in args.modes:
                path, seconds, summary = fine_tune(
                    area, mode, work, args.recipe, args.reuse, **overrides
                )
                row[f"{mode}_seconds"] = round(seconds, 1)
                row[f"{mode}_train"] = summary
                if not args.blends:
                    models[mode] = load_model(path, device="cpu")
                for share in args.blends or ():
                    source = loop_source(area, mode, work)
                    models[f"{mode}@{share:g}"] = blended(path, share, source, base)
            for label, model in models.items():
                folder = work / area.name / label
                folder.mkdir(parents=True, exist_ok=True)
                scores: dict[str, Any] = {}
                for region_name, region in regions.items():
                    counts = evaluate(area.scored(region, region_name), model, False, folder, None)
                    scores[region_name] = counts.as_dict()
                empty = Counts()
                for tile in rio_empty:
                    empty = empty + evaluate(tile, model, False, folder, None)
                scores["rio_empty_fp"] = empty.predicted if rio_empty else None
                row["results"][label] = scores
                rest = scores["rest"]
                print(
                    f"{area.name} {label}: rest F1 {rest['f1']:.3f} IoU {rest['pixel_iou']:.3f} "
                    f"({rest['predicted']}/{rest['true']}), Rio FP {scores['rio_empty_fp']}",
                    file=sys.stderr,
                )
            row["rest_vs_before"] = rest_intervals(area, work, list(models))
            rows.append(row)
    columns = [f"{m}@{b:g}" for m in args.modes for b in args.blends] if args.blends else args.modes
    print(markdown(rows, ["before", *columns]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"recipe": args.recipe, "rows": rows}, indent=2))
    return 0


def rest_intervals(area: LoopArea, work: Path, labels: Sequence[str]) -> dict[str, dict]:
    """Each model's rest F1 minus the default model's, with its 95 % interval (a paired spatial
    bootstrap over 50 m squares, :func:`scripts.eval_real.paired_interval`), from the
    extractions written in ``work/<area>/<label>/``."""
    scored = area.scored(area.rest, "rest")
    matched = {k: match_layer(scored, result_path(scored, work / area.name / k)) for k in labels}
    return {
        k: paired_interval(matched["before"], matched[k]).as_dict() for k in labels if k != "before"
    }


def markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rest-of-area F1 / pixel IoU per area and model, with the fine-tunes' times."""
    head = "| area (block) | metric | " + " | ".join(columns) + " |"
    lines = [head, "|---|---|" + "---:|" * len(columns)]
    for row in rows:
        res = row["results"]

        def cell(column: str, key: str, region: str = "rest", res: dict = res) -> str:
            value = res.get(column, {}).get(region, {}).get(key)
            return "n/a" if value is None else f"{value:.3f}"

        label = f"{row['area']} ({row['block_buildings']} labelled)"
        lines.append(f"| {label} | rest F1 | " + " | ".join(cell(c, "f1") for c in columns) + " |")
        lines.append(
            "| | rest F1 change, 95 % interval | "
            + " | ".join(change(row.get("rest_vs_before", {}).get(c)) for c in columns)
            + " |"
        )
        lines.append(
            "| | rest pixel IoU | " + " | ".join(cell(c, "pixel_iou") for c in columns) + " |"
        )
        lines.append(
            "| | F1 in the validation quarter | "
            + " | ".join(cell(c, "f1", "rest_val") for c in columns)
            + " |"
        )
        lines.append(
            "| | Rio building-free FP | "
            + " | ".join(str(res.get(c, {}).get("rio_empty_fp", "n/a")) for c in columns)
            + " |"
        )
        modes = [c.partition("@")[0] for c in columns[1:]]  # finetune@0.25: finetune's run
        times = ["-"] + [f"{row.get(f'{m}_seconds', 0):.0f} s" for m in modes]
        lines.append("| | seconds | " + " | ".join(times) + " |")
    return "\n".join(lines)


def change(interval: dict[str, float] | None) -> str:
    """``+0.036 [-0.010, +0.083]``, or ``-`` for none."""
    if not interval:
        return "-"
    return f"{interval['delta']:+.3f} [{interval['low']:+.3f}, {interval['high']:+.3f}]"


if __name__ == "__main__":
    sys.exit(main())
