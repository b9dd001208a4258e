"""``ternaus train``: the command-line front door of :func:`~ternaus_backend.training.loop.train`.

Errors are ``TernausError``s, printed by ``cli.main`` as one line (exit 2). Ctrl-C asks the loop to
stop cleanly at the next step (the best model so far is kept, exit 130); a second Ctrl-C aborts.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ternaus_backend.errors import CancelledError, InputError
from ternaus_backend.progress import CancelToken, ProgressEvent
from ternaus_backend.training import ddp
from ternaus_backend.training.dataset import TrainingSource
from ternaus_backend.training.loop import TrainConfig, TrainResult, train

__all__ = ["add_train_parser", "config_from_args", "run_train"]

log = logging.getLogger(__name__)


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` on an ``argparse`` subparsers object; returns the new parser."""
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a building model on labelled imagery",
        description=(
            "Train (or fine-tune with --init) a building model on RGB (+ multispectral) rasters "
            "and building footprint layers. The best epoch by validation F1 is saved to --out; "
            "a checkpoint OUT.ckpt.pt allows --resume."
        ),
    )
    p.add_argument(
        "--rgb",
        action="append",
        required=True,
        type=Path,
        metavar="PATH",
        help="RGB raster (repeat for several scenes)",
    )
    p.add_argument(
        "--ms",
        action="append",
        type=Path,
        metavar="PATH",
        help="multispectral raster of the same scene, one per --rgb (optional)",
    )
    p.add_argument(
        "--labels",
        action="append",
        type=Path,
        metavar="PATH",
        help="building footprints (GeoJSON/GeoPackage/Shapefile): one for all rasters "
        "or one per --rgb; without labels, --init MODEL adapts to the imagery by "
        "self-training alone",
    )
    p.add_argument(
        "--aoi",
        action="append",
        type=Path,
        metavar="PATH",
        help="training area polygons where the labels are complete (default: the "
        "whole raster); one for all rasters or one per --rgb",
    )
    p.add_argument(
        "--val-aoi",
        action="append",
        type=Path,
        metavar="PATH",
        help="validation area polygons (default: an automatic split by area); one for "
        "all rasters or one per --rgb",
    )
    p.add_argument(
        "--assume-crs",
        metavar="CRS",
        help="CRS of rasters that have a geotransform but no CRS, e.g. EPSG:32636",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="MODEL",
        help="where to save the best model (.safetensors)",
    )
    p.add_argument(
        "--init",
        type=Path,
        metavar="MODEL",
        help="model to fine-tune: 'default' (the embedded model) or any model file, also the "
        "authors' checkpoint",
    )
    p.add_argument(
        "--recipe",
        choices=("local", "classic"),
        default="local",
        help="local (default with --init): a few local labels plus self-training on the "
        "imagery around them, steps from the number of labelled buildings, lr 3e-4, L2-SP; "
        "classic: 10 x 100 steps at lr 1e-3 on the labels only (always for new models)",
    )
    p.add_argument(
        "--self-training",
        dest="self_training",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also learn from the starting model's confident answers on the imagery around the "
        "labels (default: on with the local recipe)",
    )
    p.add_argument(
        "--context-px",
        type=int,
        default=2048,
        metavar="PX",
        help="side of the unlabelled imagery read around the labels for self-training",
    )
    p.add_argument(
        "--pseudo-targets",
        choices=["buildings", "pixels"],
        help="self-training targets: the starting model's buildings (with touching borders) or "
        "its confident pixels (default: buildings)",
    )
    p.add_argument(
        "--l2sp",
        dest="l2sp_weight",
        type=float,
        metavar="W",
        help="pull toward the starting model's weights (default: the recipe's, 1e-3 local)",
    )
    p.add_argument(
        "--blend",
        type=float,
        metavar="SHARE",
        help="share of the fine-tuned weights in the saved model, the rest the starting "
        "model's, so it keeps what it knew beyond the labels (default: the recipe's, 0.25 "
        "local; 1: no blend)",
    )
    p.add_argument(
        "--encoder",
        help="encoder of a new model (default resnet_light; with --init the init model's "
        "encoder is used, or resnet_light_deep grown from a resnet_light init model)",
    )
    p.add_argument(
        "--resolution-m",
        type=float,
        metavar="M",
        help="ground resolution (metres per pixel) the model works at; every raster is read "
        "resampled to it (default: the init model's with --init, else the median pixel size "
        "of the rasters)",
    )
    p.add_argument(
        "--scaling",
        choices=("auto", "percentile"),
        help="how raw pixel values are scaled before the network: auto (8-bit rasters / 255, "
        "others by their percentiles) or percentile (every raster by its own percentiles); "
        "default: the init model's, auto for a new model",
    )
    p.add_argument("--epochs", type=int, help="default: the recipe's (local 6, classic 10)")
    p.add_argument(
        "--steps-per-epoch",
        type=int,
        help="default: the recipe's (local: from the number of labelled buildings; classic 100)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--crop",
        type=int,
        default=256,
        metavar="PX",
        help="training crop size in pixels, a multiple of 32",
    )
    p.add_argument("--lr", type=float, help="default: the recipe's (local 3e-4, classic 1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument(
        "--jaccard-weight",
        type=float,
        default=0.5,
        help="weight w in loss = BCE - w * log(soft Jaccard)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of each raster held out for validation when --val-aoi is absent",
    )
    p.add_argument(
        "--allow-empty-labels",
        action="store_true",
        help="accept rasters without buildings in their training area as negative "
        "examples (otherwise an error)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument(
        "--no-amp",
        dest="amp",
        action="store_false",
        help="train in float32 (the default is mixed precision: float16 on CUDA, bf16 on a CPU "
        "with native bf16 units)",
    )
    p.add_argument("--num-workers", type=int, default=0, help="data loading worker processes")
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt.pt")
    p.add_argument(
        "--gpus",
        type=int,
        metavar="N",
        help="train on N processes of this machine with DistributedDataParallel (one per GPU; "
        "gloo on a CPU), through torchrun; the batch size is the global one",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it exists (default: refuse; --resume continues its own OUT)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_train)
    return p


def _per_raster(values: Sequence[Path] | None, n: int, flag: str, one_for_all: bool) -> list:
    if not values:
        return [None] * n
    if len(values) == n:
        return list(values)
    if one_for_all and len(values) == 1:
        return list(values) * n
    allowed = f"one for all or one per --rgb ({n})" if one_for_all else f"one per --rgb ({n})"
    raise InputError(f"Got {len(values)} {flag} paths for {n} --rgb rasters; give {allowed}.")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed arguments (``InputError`` for inconsistent ones)."""
    n = len(args.rgb)
    ms = _per_raster(args.ms, n, "--ms", one_for_all=False)
    labels = _per_raster(args.labels, n, "--labels", one_for_all=True)
    aoi = _per_raster(args.aoi, n, "--aoi", one_for_all=True)
    val_aoi = _per_raster(args.val_aoi, n, "--val-aoi", one_for_all=True)
    try:
        sources = [
            TrainingSource(rgb=r, ms=m, labels=lab, aoi=a, val_aoi=v, assume_crs=args.assume_crs)
            for r, m, lab, a, v in zip(args.rgb, ms, labels, aoi, val_aoi, strict=True)
        ]
        return TrainConfig(
            sources=sources,
            out=args.out,
            init=args.init,
            encoder=args.encoder,
            resolution_m=args.resolution_m,
            scaling=args.scaling,
            recipe=args.recipe,
            self_training=args.self_training,
            context_px=args.context_px,
            pseudo_targets=args.pseudo_targets,
            l2sp_weight=args.l2sp_weight,
            blend=args.blend,
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            batch_size=args.batch_size,
            crop_px=args.crop,
            lr=args.lr,
            weight_decay=args.weight_decay,
            jaccard_weight=args.jaccard_weight,
            val_fraction=args.val_fraction,
            allow_empty_labels=args.allow_empty_labels,
            device=args.device,
            amp=args.amp,
            num_workers=args.num_workers,
            resume=args.resume,
            overwrite=args.overwrite,
            seed=args.seed,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InputError(
            f"Invalid training option {where}: {first.get('msg')}.", details=str(exc)
        ) from exc


class _Bar:
    """Maps training progress events onto one tqdm bar over all steps."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event: ProgressEvent) -> None:
        from tqdm import tqdm

        if event.stage == "prepare":
            if event.done < event.total:
                print(
                    f"reading {event.info.get('source', '')} ({event.done + 1}/{event.total})",
                    file=sys.stderr,
                )
            return
        if event.stage == "plan":
            minutes = event.info["eta_s"] / 60
            print(f"plan: {event.info['plan']}; about {minutes:.0f} min", file=sys.stderr)
            return
        if event.stage != "train":
            return
        if self.bar is None:
            self.bar = tqdm(
                total=event.total,
                unit="step",
                desc="train",
                file=sys.stderr,
                dynamic_ncols=True,
                initial=max(0, event.done - 1),
            )
        info = event.info
        self.bar.update(max(0, event.done - self.bar.n))
        postfix = {
            "epoch": f"{info.get('epoch')}/{info.get('epochs')}",
            "loss": f"{info.get('loss', float('nan')):.4f}",
        }
        if info.get("phase") == "validated":
            f1 = info.get("val_f1")
            best = "  (best, saved)" if info.get("best") else ""
            self.bar.write(
                f"epoch {info['epoch']}: loss {info['loss']:.4f}  val loss {info['val_loss']:.4f}"
                f"  val IoU {info['val_iou']:.3f}  val F1 "
                f"{'n/a' if f1 is None else f'{f1:.3f}'}{best}"
            )
        else:
            postfix["crops/s"] = f"{info.get('crops_per_s', 0):.1f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _summary(result: TrainResult) -> str:
    f1 = "n/a" if result.best_val_f1 is None else f"{result.best_val_f1:.3f}"
    return (
        f"best model (epoch {result.best_epoch}, val F1 {f1}) saved to {result.model_path}; "
        f"{result.epochs_completed} epoch(s) in {result.seconds:.0f} s, "
        f"{result.crops_per_s:.1f} crops/s"
    )


def _reliability_lines(report: dict[str, Any] | None) -> list[str]:
    """The calibration's reliability diagram, before and after, as a few lines (bins holding
    buildings only)."""
    if not report or "reliability_after" not in report:
        return []
    lines = ["reliability on the validation areas (confidence bin: buildings, true positives):"]
    for key, label in (
        ("reliability_before", "mean probability"),
        ("reliability_after", "calibrated"),
    ):
        cells = [
            f"{b['low']:.1f}-{b['high']:.1f}: {b['count']}, {b['tp_rate']:.2f}"
            for b in report[key]
            if b["count"]
        ]
        lines.append(f"  {label}: " + "; ".join(cells))
    return lines


def run_train(args: argparse.Namespace) -> int:
    """Run ``ternaus train``; returns the exit code (0 done, 130 cancelled by Ctrl-C)."""
    ranks = ddp.Ranks.from_env()
    if args.gpus and args.gpus > 1 and not ranks.active:
        return _run_torchrun(args.gpus)
    config = config_from_args(args)
    cancel = CancelToken()
    bar = _Bar()

    def on_sigint(signum: int, frame: Any) -> None:
        print("\nstopping after this step (Ctrl-C again to abort)...", file=sys.stderr)
        cancel.cancel()
        signal.signal(signal.SIGINT, previous)

    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread
        previous = None
    try:
        result = train(config, progress=bar, cancel=cancel)
    except CancelledError as exc:
        bar.close()
        print(exc.message, file=sys.stderr)
        return 130
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        ddp.stop(ranks)
    if not ranks.main:
        return 0  # rank 0 reports
    for note in result.notes:
        print(note, file=sys.stderr)
    for line in _reliability_lines(result.calibration):
        print(line, file=sys.stderr)
    print(_summary(result))
    return 0


def _run_torchrun(processes: int) -> int:
    """``--gpus N``: this same command on N processes of this machine, through torchrun."""
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True
        elif not arg.startswith("--gpus="):
            argv.append(arg)
    return subprocess.call(ddp.torchrun_command(processes, argv))
