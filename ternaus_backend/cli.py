"""The ``ternaus`` command line: predict, evaluate, compare, changes, where-to-label, train, serve,
synth, info.

Every command prints a one-line error and exits non-zero on bad input (never a traceback); long
commands show tqdm progress bars. All work is done by the same functions the HTTP API and the QGIS
plugin call.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ternaus_backend.distributed.mosaic import mosaic
from ternaus_backend.errors import InputError, TernausError
from ternaus_backend.evaluation.options import (
    ChangesOptions,
    CompareOptions,
    EvaluateOptions,
    WhereToLabelOptions,
)
from ternaus_backend.options import add_option_arguments, options_from_args
from ternaus_backend.progress import ProgressEvent
from ternaus_backend.scratch import scratch_dir

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwinds like Ctrl-C, so temporary files are removed on the way out."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def install_sigterm_handler() -> None:
    """SIGTERM (``kill``, a job scheduler, a closing terminal) becomes :class:`Terminated`: the
    ``finally`` blocks and context managers of the running command remove their temporary files
    (probability map, mosaic VRTs, a partial GeoPackage) instead of the process just ending."""
    import signal
    import threading

    if hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


class TqdmProgress:
    """Shows ProgressEvents as one tqdm bar per stage."""

    LABELS = {"infer": "network", "instances": "buildings", "train": "training"}

    def __init__(self) -> None:
        self._bars: dict[str, tqdm] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage not in self.LABELS:
            return
        bar = self._bars.get(event.stage)
        if bar is None or bar.total != event.total:
            if bar is not None:
                bar.close()
            bar = self._bars[event.stage] = tqdm(
                total=event.total,
                desc=self.LABELS[event.stage],
                unit="step",
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
            )
        bar.update(event.done - bar.n)
        if event.info:
            bar.set_postfix(
                {k: v for k, v in event.info.items() if isinstance(v, (int, float, str))},
                refresh=False,
            )

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(
            f"--bbox needs four numbers XMIN,YMIN,XMAX,YMAX separated by commas, got {text!r}"
        )
    return values  # type: ignore[return-value]


def cmd_predict(args: argparse.Namespace) -> int:
    from ternaus_backend.pipeline.options import ExtractOptions

    options = options_from_args(ExtractOptions, args)
    if args.cluster:
        return _predict_on_cluster(args, options)
    if args.resume:
        raise InputError("--resume continues a run on a cluster: use it with --cluster.")
    bars = TqdmProgress()
    try:
        with scratch_dir("ternaus-mosaic-") as folder:
            rgb = mosaic(args.rgb, Path(folder), "RGB")
            ms = mosaic(args.ms, Path(folder), "multispectral") if args.ms else None
            result = _extract_once(args, options, bars, rgb, ms)
    finally:
        bars.close()
    print(
        json.dumps(
            {
                "out": str(result.path),
                "buildings": result.count,
                "width_px": result.width_px,
                "height_px": result.height_px,
                "area_km2": round(result.area_km2, 4),
                "resolution_m": round(result.resolution_m, 4),
                "resampled": result.resampled,
                "seconds": round(result.seconds, 2),
                "warnings": result.warnings,
            }
        )
    )
    return 0


def _extract_once(args: argparse.Namespace, options, bars, rgb, ms):
    from ternaus_backend.pipeline.extract import extract

    return extract(
        rgb,
        args.out,
        ms=ms,
        model=args.model,
        bbox=args.bbox,
        bbox_crs=args.bbox_crs,
        options=options,
        progress=bars,
        overwrite=args.overwrite,
        assume_crs=args.assume_crs,
    )


def _predict_on_cluster(args: argparse.Namespace, options) -> int:
    """``predict --cluster``: blocks on Dask workers, a bar of finished blocks with km²/h."""
    from ternaus_backend.distributed.cluster import extract_on_cluster

    if args.bbox is not None or args.assume_crs:
        raise InputError(
            "--bbox and --assume-crs are not used with --cluster: crop or georeference the "
            "mosaic first (e.g. gdalbuildvrt -te ... or gdal_translate -a_srs ...)."
        )
    bar = tqdm(desc="blocks", unit="block", dynamic_ncols=True, file=sys.stderr)
    started = time.perf_counter()
    km2 = 0.0

    def on_block(done, finished: int, total: int) -> None:
        nonlocal km2
        bar.total = total
        km2 += done.km2
        hours = (time.perf_counter() - started) / 3600
        bar.set_postfix({"km2/h": round(km2 / hours, 1) if hours > 0 else 0.0}, refresh=False)
        bar.update(finished - bar.n)

    try:
        result = extract_on_cluster(
            args.rgb,
            args.out,
            args.cluster,
            ms=args.ms,
            model=args.model,
            options=options,
            block_px=args.block_px,
            resume=args.resume,
            overwrite=args.overwrite,
            on_block=on_block,
        )
    finally:
        bar.close()
    print(
        json.dumps(
            {
                "out": str(result.path),
                "buildings": result.count,
                "blocks": result.blocks,
                "blocks_skipped": result.skipped,
                "area_km2": round(result.area_km2, 4),
                "tile_px": result.tile_px,
                "overlap_px": result.overlap_px,
                "seconds": round(result.seconds, 2),
            }
        )
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ternaus_backend.evaluation.error_layers import evaluate_layers

    options = options_from_args(EvaluateOptions, args)
    evaluation = evaluate_layers(args.pred, args.truth, **options.model_dump())
    print(json.dumps(evaluation.to_dict()))
    return 0


def _layers_out(args: argparse.Namespace) -> Path | None:
    """The output GeoPackage of compare/changes, checked before any work (None: no layers)."""
    from ternaus_backend.outputs import check_output

    if args.out is None:
        return None
    return check_output(args.out, suffix=".gpkg", kind="GeoPackage", overwrite=args.overwrite)


def cmd_compare(args: argparse.Namespace) -> int:
    from ternaus_backend.evaluation.map_gaps import compare_with_map

    comparison = compare_with_map(
        args.pred,
        args.reference,
        _layers_out(args),
        area_path=args.area,
        **options_from_args(CompareOptions, args).model_dump(),
    )
    print(json.dumps(comparison.to_dict()))
    return 0


def cmd_changes(args: argparse.Namespace) -> int:
    from ternaus_backend.evaluation.changes import detect_changes

    detection = detect_changes(
        args.before,
        args.after,
        _layers_out(args),
        area_path=args.area,
        **options_from_args(ChangesOptions, args).model_dump(),
    )
    print(json.dumps(detection.to_dict()))
    return 0


def cmd_where_to_label(args: argparse.Namespace) -> int:
    from ternaus_backend.evaluation.where_to_label import propose_cells
    from ternaus_backend.pipeline.options import ExtractOptions

    out = _layers_out(args)
    bars = TqdmProgress()
    try:
        proposal = propose_cells(
            args.rgb,
            out,
            ms=args.ms,
            model=args.model,
            aoi=args.aoi,
            bbox=args.bbox,
            bbox_crs=args.bbox_crs,
            exclude=args.exclude,
            options=ExtractOptions(device=args.device),
            **options_from_args(WhereToLabelOptions, args).model_dump(),
            progress=bars,
        )
    finally:
        bars.close()
    print(json.dumps(proposal.to_dict()))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from ternaus_backend.synthetic import make_scene

    for i in range(args.count):
        scene = make_scene(
            args.out,
            seed=args.seed + i,
            size_px=args.size,
            with_ms=args.ms,
            name=f"{args.name}{i}" if args.count > 1 else args.name,
        )
        print(json.dumps({k: str(v) for k, v in vars(scene).items()}))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ternaus_backend.models.model_file import describe_model

    print(json.dumps(describe_model(args.model), indent=2, default=str))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ternaus_backend.api.server import serve

    serve(
        host=args.host,
        port=args.port,
        token=args.token,
        parent_pid=args.parent_pid,
        allow_network_files=args.allow_network_files or None,
        allowed_dirs=args.allow_dir,
        dask_scheduler=args.dask_scheduler or None,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ternaus_backend.pipeline.options import ExtractOptions

    parser = argparse.ArgumentParser(
        prog="ternaus", description="Building footprints from imagery."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="extract building polygons into a GeoPackage")
    p.add_argument(
        "--rgb",
        required=True,
        nargs="+",
        help="RGB raster (GeoTIFF, COG or VRT), or several tiles / a quoted glob ('tiles/*.tif') "
        "read as one mosaic",
    )
    p.add_argument(
        "--ms",
        nargs="+",
        help="multispectral raster(s) of the same scene (for 11-band models)",
    )
    p.add_argument("--model", help="model file (default: the embedded default model)")
    p.add_argument("--bbox", type=parse_bbox, help="XMIN,YMIN,XMAX,YMAX (in the RGB raster's CRS)")
    p.add_argument("--bbox-crs", help="CRS of --bbox if not the raster's, e.g. EPSG:4326")
    p.add_argument(
        "--assume-crs",
        metavar="CRS",
        help="CRS of rasters that have a geotransform but no CRS, e.g. EPSG:32636",
    )
    p.add_argument("--out", required=True, help="output GeoPackage (*.gpkg)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out if it exists (default: refuse)"
    )
    add_option_arguments(p, ExtractOptions, "extraction options")  # --tile, --threshold, ...
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run block by block on Dask: tcp://SCHEDULER:8786, or local:N for N local workers; "
        "--out may then also be a folder *.parquet (GeoParquet, one file per block)",
    )
    p.add_argument(
        "--block-px",
        type=int,
        default=8192,
        help="with --cluster: the side of a block in px of the processing grid (default 8192)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --cluster: keep the blocks an interrupted run finished, do the rest",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="SpaceNet building F1 of predictions against ground truth")
    p.add_argument("--pred", required=True, help="predicted polygons (GeoPackage or GeoJSON)")
    p.add_argument("--truth", required=True, help="ground-truth polygons (GeoPackage or GeoJSON)")
    add_option_arguments(p, EvaluateOptions, "evaluation options")  # --iou, --min-area
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "compare",
        help="what a map is missing: our result against a building layer (OSM or any); prints "
        "counts and the map's median offset as JSON",
    )
    p.add_argument("--pred", required=True, help="our result (with its confidence field)")
    p.add_argument("--reference", required=True, help="the map's building polygons")
    p.add_argument("--area", help="compare only buildings that intersect these polygons")
    add_option_arguments(p, CompareOptions, "comparison options")  # --iou, --cell-m, ...
    p.add_argument(
        "--out",
        help="GeoPackage for the layers unmapped (ranked by confidence), unseen and offsets",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "changes",
        help="what changed between two dates' building layers: new, demolished, changed, "
        "unchanged (JSON counts)",
    )
    p.add_argument("--before", required=True, help="buildings of the earlier date")
    p.add_argument("--after", required=True, help="buildings of the later date")
    p.add_argument("--area", help="compare only buildings that intersect these polygons")
    add_option_arguments(p, ChangesOptions, "change options")  # --match-iou, --iou
    p.add_argument("--out", help="GeoPackage for the layers new, demolished and changed")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_changes)

    p = sub.add_parser(
        "where-to-label",
        help="where to label next: a grid of cells over the image ranked by how unsure the "
        "model is there (body probability near the threshold, flips that disagree, buildings "
        "of low confidence); prints the top cells as JSON",
    )
    p.add_argument("--rgb", required=True, help="RGB raster (GeoTIFF, COG or VRT)")
    p.add_argument("--ms", help="multispectral raster of the same scene (for 11-band models)")
    p.add_argument("--model", help="model file (default: the embedded default model)")
    p.add_argument("--aoi", help="rank only cells inside these polygons (pixels outside ignored)")
    p.add_argument("--bbox", type=parse_bbox, help="XMIN,YMIN,XMAX,YMAX (in the RGB raster's CRS)")
    p.add_argument("--bbox-crs", help="CRS of --bbox if not the raster's, e.g. EPSG:4326")
    p.add_argument(
        "--exclude", help="polygons already labelled: cells at least half inside are left out"
    )
    add_option_arguments(p, WhereToLabelOptions, "ranking options")  # --cell-m, --top
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU if there is one)")
    p.add_argument("--out", help="GeoPackage for the layers cells (ranked) and buildings")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_where_to_label)

    from ternaus_backend.training.command import add_train_parser

    add_train_parser(sub)

    p = sub.add_parser("synth", help="make synthetic scenes (RGB, multispectral, building labels)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=512, help="side in px")
    p.add_argument("--name", default="scene")
    p.add_argument("--no-ms", dest="ms", action="store_false", help="RGB only")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("serve", help="run the HTTP backend (JSON API under /v1)")
    p.add_argument("--host", help="default 127.0.0.1 (TERNAUS_HOST); other hosts need a token")
    p.add_argument("--port", type=int, help="default 8765 (TERNAUS_PORT)")
    p.add_argument(
        "--parent-pid",
        type=int,
        metavar="PID",
        help="stop when process PID ends (the QGIS plugin passes its own: no orphan backend)",
    )
    p.add_argument("--token", help="bearer token clients must send (TERNAUS_TOKEN)")
    p.add_argument(
        "--allow-dir",
        action="append",
        metavar="DIR",
        help="a folder whose files requests may name, besides the job and models folders; "
        "repeat for more (TERNAUS_ALLOWED_DIRS; default: your home and the temporary folder)",
    )
    p.add_argument(
        "--allow-network-files",
        action="store_true",
        help="let inputs read /vsicurl/, /vsis3/, http(s) and other network paths, also through "
        "VRTs (TERNAUS_ALLOW_NETWORK_FILES=1; default: refused)",
    )
    p.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="hand predict jobs of TERNAUS_DASK_MIN_MEGAPIXELS (default 100) or more to this Dask "
        "cluster: tcp://HOST:8786 or local:N (TERNAUS_DASK_SCHEDULER)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("info", help="show a model's metadata")
    p.add_argument("model")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if args.func is not cmd_serve:  # the server handles SIGTERM itself (a graceful shutdown)
        install_sigterm_handler()
    try:
        return int(args.func(args) or 0)
    except Terminated:
        print("ternaus: stopped (SIGTERM); temporary files were removed", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("ternaus: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except TernausError as exc:
        print(f"ternaus: error: {exc.message}", file=sys.stderr)
        if args.verbose and exc.details:
            print(exc.details, file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # a full disk, a read-only folder: the user's to fix
        from ternaus_backend.outputs import os_error

        error = os_error(exc)
        print(f"ternaus: error: {error.message}", file=sys.stderr)
        if args.verbose:
            print(error.details, file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # a bug or an unforeseen input: one line unless --verbose
        if args.verbose:
            raise
        print(
            f"ternaus: unexpected error: {type(exc).__name__}: {exc} (run with -v for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
