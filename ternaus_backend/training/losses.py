"""Training loss of the two-head network: binary cross-entropy + soft Jaccard, per head.

In the authors' line (TernausNet, TernausNetV2) each output map ``k`` (0: building body,
1: touching border) gets

    loss_k = BCE_k - jaccard_weight * log(soft_jaccard_k)

and the total is the weighted sum over heads. Both terms respect per-pixel weights: a pixel of
weight 0 (outside the training area, in the validation area, padding, nodata) has no influence at
all, whatever its logit or target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["soft_jaccard", "weighted_bce", "BceJaccardLoss"]


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> None:
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    if weight is not None and weight.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"weight must be (N, H, W) = {(logits.shape[0], *logits.shape[2:])}, "
            f"got {tuple(weight.shape)}"
        )


def _pixel_weight(logits: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Weights broadcast to (N, 1, H, W) in float32."""
    if weight is None:
        return torch.ones_like(logits[:, :1], dtype=torch.float32)
    return weight.to(torch.float32).unsqueeze(1)


def weighted_bce(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-channel weighted mean BCE over batch and pixels: (C,) float32."""
    _check_shapes(logits, target, weight)
    w = _pixel_weight(logits, weight)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    total = (bce * w).sum(dim=(0, 2, 3))
    return total / w.sum(dim=(0, 2, 3)).clamp_min(1e-6)


def soft_jaccard(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Per-channel soft Jaccard index of sigmoid(logits) and target over the batch: (C,) in (0, 1].

    ``smooth`` keeps it defined (and equal to 1) for maps with neither target nor prediction.
    """
    _check_shapes(logits, target, weight)
    w = _pixel_weight(logits, weight)
    prob = torch.sigmoid(logits.float()) * w
    truth = target.float() * w
    intersection = (prob * truth).sum(dim=(0, 2, 3))
    union = prob.sum(dim=(0, 2, 3)) + truth.sum(dim=(0, 2, 3)) - intersection
    return (intersection + smooth) / (union + smooth)


class BceJaccardLoss(nn.Module):
    """``sum_k head_weights[k] * (BCE_k - jaccard_weight * log(soft_jaccard_k))``.

    Args:
        jaccard_weight: weight ``w`` of the ``-log(soft Jaccard)`` term (0 gives plain BCE).
        head_weights: weight of each output map (default 1 for every head).
        smooth: additive smoothing of the soft Jaccard.

    ``forward(logits, target, weight)`` takes logits and binary targets (N, C, H, W) and optional
    pixel weights (N, H, W); it returns a scalar float32 loss. ``last_terms`` keeps the per-head
    BCE and Jaccard values of the last call for logging.
    """

    def __init__(
        self,
        jaccard_weight: float = 0.5,
        head_weights: Sequence[float] | None = None,
        smooth: float = 1.0,
    ) -> None:
        super().__init__()
        if jaccard_weight < 0:
            raise ValueError("jaccard_weight must be 0 or more")
        self.jaccard_weight = float(jaccard_weight)
        self.head_weights = None if head_weights is None else [float(v) for v in head_weights]
        self.smooth = float(smooth)
        self.last_terms: dict[str, list[float]] = {}

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        bce = weighted_bce(logits, target, weight)
        per_head = bce
        jaccard = None
        if self.jaccard_weight > 0:
            jaccard = soft_jaccard(logits, target, weight, self.smooth)
            per_head = bce - self.jaccard_weight * torch.log(jaccard)
        if self.head_weights is not None:
            if len(self.head_weights) != per_head.numel():
                raise ValueError(
                    f"{len(self.head_weights)} head weights for {per_head.numel()} output maps"
                )
            per_head = per_head * per_head.new_tensor(self.head_weights)
        self.last_terms = {"bce": bce.detach().tolist()}
        if jaccard is not None:
            self.last_terms["jaccard"] = jaccard.detach().tolist()
        return per_head.sum()
