"""The learning curve of a staged training run, from its resumable checkpoints.

Each stage of ``scripts/train_default.sh`` keeps ``build/train-default/stageN.safetensors.ckpt.pt``
with the per-epoch history (training loss, validation loss, body pixel IoU and SpaceNet F1 on the
validation areas). This prints one markdown table over the stages, in order, with the cumulative
number of optimiser steps, so a curve that has levelled off is plain to see.

    .venv/bin/python scripts/learning_curve.py build/train-default/stage4.safetensors.ckpt.pt \\
        build/train-default/stage5.safetensors.ckpt.pt [--every 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def stage_history(path: Path) -> tuple[list[dict], int]:
    """The epoch records of one checkpoint and its steps per epoch."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own training files
    config = json.loads(ckpt.get("config") or "{}")
    return list(ckpt["history"]), int(config.get("steps_per_epoch", 0))


def rows(paths: list[Path], every: int = 1) -> list[str]:
    """Markdown rows: stage, epoch, cumulative steps, losses, validation IoU and F1."""
    out = [
        "| stage | epoch | steps so far | train loss | val loss | val pixel IoU | val F1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    steps = 0
    for path in paths:
        history, per_epoch = stage_history(path)
        stage = path.name.split(".")[0]
        for record in history:
            steps += per_epoch
            epoch = int(record["epoch"])
            if epoch % every and epoch != len(history):
                continue
            f1 = record.get("val_f1")
            mark = " (best)" if record.get("best") else ""
            out.append(
                f"| {stage} | {epoch} | {steps} | {record['train_loss']:.3f} | "
                f"{record['val_loss']:.3f} | {record['val_iou']:.3f} | "
                f"{'-' if f1 is None else f'{f1:.3f}'}{mark} |"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="OUT.ckpt.pt files, in order")
    parser.add_argument("--every", type=int, default=1, help="print every Nth epoch (and the last)")
    args = parser.parse_args()
    print("\n".join(rows(args.checkpoints, args.every)))


if __name__ == "__main__":
    main()
