"""The epochs of a training run: steps on random augmented crops with progress reports, then,
after every epoch, validation on the validation area (:mod:`.validation`: loss, body pixel IoU,
SpaceNet F1 through the real extraction pipeline), the best model and the checkpoint
(:class:`~.run.Run`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ternaus_backend.models.abn import activated_norms
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent
from ternaus_backend.training import ddp
from ternaus_backend.training.config import EpochStats, TrainConfig
from ternaus_backend.training.dataset import CropDataset
from ternaus_backend.training.run import Run
from ternaus_backend.training.steps import Steps
from ternaus_backend.training.validation import validate

__all__ = ["Epochs"]


def _mean_step(seconds: Sequence[float]) -> float:
    """The mean of the last 20 step times (0 before the first)."""
    recent = list(seconds[-20:])
    return sum(recent) / len(recent) if recent else 0.0


class Epochs:
    """The epochs of a run: training steps with progress, then validation and a checkpoint."""

    def __init__(
        self,
        config: TrainConfig,
        run: Run,
        steps: Steps,
        net: nn.Module,
        dataset: CropDataset,
        loader: DataLoader,
        ranks: ddp.Ranks,
        device: torch.device,
    ) -> None:
        self.config, self.run, self.steps, self.net = config, run, steps, net
        self.dataset, self.loader, self.ranks, self.device = dataset, loader, ranks, device
        self.total_steps = config.epochs * config.steps_per_epoch
        self.step_seconds: list[float] = []
        self.val_seconds = 0.0
        self.crops_per_s = 0.0
        history = run.history
        self.last_f1 = history[-1].get("val_f1") if history else None
        #: The last validated epoch's report, repeated in every step's report: a client that
        #: polls only the latest report still sees every epoch it did not miss entirely.
        self.last_validated: dict[str, Any] | None = None

    def train_all(self, progress: ProgressCallback, cancel: CancelToken) -> None:
        """The epochs left, from the checkpoint's (or the first)."""
        for epoch in range(self.run.epochs_done, self.config.epochs):
            self.dataset.set_epoch(epoch)
            train_loss, train_seconds = self._train(epoch, progress, cancel)
            cancel.raise_if_cancelled()
            if self.ranks.main:
                self._validate(epoch, train_loss, train_seconds, progress, cancel)
            ddp.barrier(self.ranks)

    def _train(
        self, epoch: int, progress: ProgressCallback, cancel: CancelToken
    ) -> tuple[float, float]:
        """One epoch of steps; returns the mean loss and the seconds it took."""
        config, model = self.config, self.run.model
        model.train()
        if config.freeze_norms:
            for _, _, norm in activated_norms(model):
                norm.eval()
        epoch_loss, epoch_start = 0.0, time.perf_counter()
        tick = epoch_start
        for step, batch in enumerate(self.loader):
            cancel.raise_if_cancelled()
            where = f"epoch {epoch + 1}, step {step + 1}"
            epoch_loss += self.steps.take(self.net, model, batch, self.device, self.ranks, where)
            now = time.perf_counter()
            self.step_seconds.append(now - tick)
            tick = now
            per_step = _mean_step(self.step_seconds)
            self.crops_per_s = config.batch_size / per_step if per_step > 0 else 0.0
            done = epoch * config.steps_per_epoch + step + 1
            eta = per_step * (self.total_steps - done) + self.val_seconds * (config.epochs - epoch)
            info = {
                "phase": "step",
                "epoch": epoch + 1,
                "epochs": config.epochs,
                "step": step + 1,
                "steps": config.steps_per_epoch,
                "loss": epoch_loss / (step + 1),
                "lr": self.steps.scheduler.get_last_lr()[0],
                "crops_per_s": self.crops_per_s,
                "eta_s": eta,
                "val_f1": self.last_f1,
                "last_validated": self.last_validated,
                "plan": self.run.plan,
            }
            progress(ProgressEvent("train", done, self.total_steps, info))
        return epoch_loss / config.steps_per_epoch, time.perf_counter() - epoch_start

    def _validate(
        self,
        epoch: int,
        train_loss: float,
        train_seconds: float,
        progress: ProgressCallback,
        cancel: CancelToken,
    ) -> None:
        """Validation, the best model and the checkpoint after an epoch (rank 0)."""
        config, run = self.config, self.run
        t0 = time.perf_counter()
        if any(source.has_validation for source in run.sources):
            stats = validate(
                run.model,
                run.sources,
                run.meta,
                self.steps.loss_fn,
                self.device,
                config.crop_px,
                config.batch_size,
                cancel,
            )
        else:  # self-training alone: nothing to validate on, the last epoch is kept
            stats = {"val_loss": None, "val_iou": None, "val_f1": None}
            stats.update(val_tp=0, val_fp=0, val_fn=0)
        self.val_seconds = time.perf_counter() - t0
        epoch_stats = EpochStats(
            epoch=epoch + 1,
            train_loss=train_loss,
            val_loss=stats["val_loss"],
            val_iou=stats["val_iou"],
            val_f1=stats["val_f1"],
            val_tp=stats["val_tp"],
            val_fp=stats["val_fp"],
            val_fn=stats["val_fn"],
            seconds=train_seconds + self.val_seconds,
            crops_per_s=config.steps_per_epoch * config.batch_size / train_seconds,
        )
        self.last_f1 = epoch_stats.val_f1
        run.end_epoch(epoch_stats)
        run.save_checkpoint(self.steps.optimizer, self.steps.scheduler, self.steps.scaler)
        done = (epoch + 1) * config.steps_per_epoch
        eta = _mean_step(self.step_seconds) * (self.total_steps - done) + self.val_seconds * (
            config.epochs - epoch - 1
        )
        info = {
            "phase": "validated",
            "epoch": epoch + 1,
            "epochs": config.epochs,
            "loss": epoch_stats.train_loss,
            "val_loss": epoch_stats.val_loss,
            "val_iou": epoch_stats.val_iou,
            "val_f1": epoch_stats.val_f1,
            "best": epoch_stats.best,
            "crops_per_s": epoch_stats.crops_per_s,
            "eta_s": eta,
            "plan": self.run.plan,
        }
        self.last_validated = info
        progress(ProgressEvent("train", done, self.total_steps, info))
