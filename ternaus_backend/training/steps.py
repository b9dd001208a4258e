"""One optimiser step: AdamW, the warm-up/cosine schedule, mixed precision, L2-SP.

Mixed precision (``amp``, the default): on CUDA the forward pass runs under ``torch.autocast``
(float16) with a ``GradScaler``; on a CPU with native bf16 units (AVX512-BF16, AMX) under bf16
autocast, about 2x faster; elsewhere, and with ``amp=False``, in float32
(:func:`training_autocast_dtype`). On a CPU, In-Place ABN is swapped for the pure version (faster
there, and it runs under autocast; see :func:`~ternaus_backend.training.loop.train`); the saved
weights are the same either way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ternaus_backend.errors import TernausError
from ternaus_backend.pipeline.engine import cpu_has_native_bf16
from ternaus_backend.training import ddp
from ternaus_backend.training.losses import BceJaccardLoss

if TYPE_CHECKING:
    from ternaus_backend.training.config import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["WarmupCosine", "training_autocast_dtype", "resumed_scheduler", "Steps"]


def training_autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast type of the training forward pass: float16 on CUDA, bf16 on a CPU with native
    bf16 units (emulated bf16 would be slower than float32), ``None`` (float32) otherwise."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


class WarmupCosine:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine down to ``floor``."""

    def __init__(self, warmup: int, total: int, floor: float = 0.01) -> None:
        self.warmup = warmup
        self.total = max(total, 1)
        self.floor = floor

    def __call__(self, step: int) -> float:
        """The LR factor at optimizer step ``step`` (from 0)."""
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


def resumed_scheduler(
    optimizer: torch.optim.Optimizer, schedule: WarmupCosine, step: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR at optimizer step ``step`` of ``schedule`` (this run's total, not the old one).

    The checkpoint's scheduler state is not loaded: it would restore the old run's schedule
    (``WarmupCosine.total`` from its ``--epochs``). Building the scheduler with
    ``last_epoch=step - 1`` makes its initial step land on ``step`` with the new schedule's LR.
    """
    if step < 1:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule, last_epoch=step - 1)


@dataclass
class Steps:
    """One optimiser step: loss, AdamW, warm-up/cosine schedule, gradient scaler, autocast."""

    loss_fn: BceJaccardLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    #: L2-SP: the starting weights and the pull toward them (none when the weight is 0)
    anchor: list[tuple[nn.Parameter, torch.Tensor]] = field(default_factory=list)
    l2sp_weight: float = 0.0

    @classmethod
    def create(
        cls,
        config: TrainConfig,
        model: nn.Module,
        device: torch.device,
        ckpt: dict[str, Any] | None,
    ) -> Steps:
        """Fresh, or restored from the checkpoint (the schedule is this run's, see
        :func:`resumed_scheduler`)."""
        autocast_dtype = training_autocast_dtype(device, config.amp)
        if autocast_dtype is not None:
            log.info("mixed precision: %s autocast on %s", autocast_dtype, device.type)
        scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        total_steps = config.epochs * config.steps_per_epoch
        schedule = WarmupCosine(int(config.warmup_fraction * total_steps), total_steps)
        if ckpt is None:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        else:
            optimizer.load_state_dict(ckpt["optimizer"])  # holds each group's initial_lr
            last = int(ckpt["scheduler"]["last_epoch"])
            scheduler = resumed_scheduler(optimizer, schedule, last)
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
        loss_fn = BceJaccardLoss(config.jaccard_weight)
        anchor = []
        if config.l2sp_weight and config.init is not None:
            anchor = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]
        return cls(
            loss_fn, optimizer, scheduler, scaler, autocast_dtype, anchor, config.l2sp_weight or 0
        )

    def l2sp(self) -> torch.Tensor | float:
        """``l2sp_weight / 2 * sum |w - w0|^2`` over the starting weights (0 without)."""
        if not self.anchor:
            return 0.0
        total = sum(((p - a) ** 2).sum() for p, a in self.anchor)
        return 0.5 * self.l2sp_weight * total

    def take(
        self,
        net: nn.Module,
        model: nn.Module,
        batch: dict[str, torch.Tensor],
        device: torch.device,
        ranks: ddp.Ranks,
        where: str,
    ) -> float:
        """One step on ``batch``; returns the global batch's loss (the same on every rank)."""
        image = batch["image"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        weight = batch["weight"].to(device, non_blocking=True)
        dtype = self.autocast_dtype
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = net(image)
        loss = self.loss_fn(logits, target, weight)
        loss_value = ddp.mean(loss, ranks)
        loss = loss + self.l2sp()
        if not math.isfinite(loss_value):
            raise TernausError(
                "Training diverged (the loss is not finite); lower the learning rate (--lr) and "
                "train again.",
                details=where,
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss_value
