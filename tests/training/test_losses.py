"""BCE + soft Jaccard loss: pixel weights, reduction to plain BCE, degenerate batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ternaus_backend.training.losses import BceJaccardLoss, soft_jaccard, weighted_bce


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 2, 16, 16, generator=g)
    target = (torch.rand(2, 2, 16, 16, generator=g) > 0.7).float()
    weight = torch.ones(2, 16, 16)
    weight[:, :, 8:] = 0.0  # right half ignored
    return logits, target, weight


def test_weight_zero_pixels_have_no_influence() -> None:
    logits, target, weight = _batch()
    loss_fn = BceJaccardLoss(jaccard_weight=0.7)
    base = loss_fn(logits, target, weight)

    changed_logits, changed_target = logits.clone(), target.clone()
    changed_logits[..., 8:] = 25.0 * torch.randn_like(changed_logits[..., 8:])
    changed_target[..., 8:] = 1.0 - changed_target[..., 8:]
    changed_logits.requires_grad_(True)
    changed = loss_fn(changed_logits, changed_target, weight)
    changed.backward()

    assert torch.allclose(base, changed.detach(), atol=1e-6)
    assert torch.all(changed_logits.grad[..., 8:] == 0)
    assert changed_logits.grad[..., :8].abs().sum() > 0


def test_without_jaccard_it_is_the_weighted_mean_bce_per_head() -> None:
    logits, target, weight = _batch(1)
    loss = BceJaccardLoss(jaccard_weight=0.0)(logits, target, weight)
    left = (slice(None), slice(None), slice(None), slice(0, 8))
    per_head = [
        F.binary_cross_entropy_with_logits(logits[left][:, k], target[left][:, k]) for k in range(2)
    ]
    assert torch.allclose(loss, sum(per_head), atol=1e-6)
    assert torch.allclose(weighted_bce(logits, target, weight), torch.stack(per_head), atol=1e-6)


def test_loss_is_bce_minus_weighted_log_jaccard_per_head() -> None:
    logits, target, weight = _batch(2)
    w = 0.4
    expected = (
        weighted_bce(logits, target, weight) - w * torch.log(soft_jaccard(logits, target, weight))
    ).sum()
    assert torch.allclose(BceJaccardLoss(w)(logits, target, weight), expected)


def test_good_predictions_cost_less_and_empty_maps_are_fine() -> None:
    _, target, weight = _batch(3)
    loss_fn = BceJaccardLoss(0.5)
    good = loss_fn((target * 2 - 1) * 8, target, weight)
    bad = loss_fn((1 - target * 2) * 8, target, weight)
    assert good < 0.01 < bad

    empty = torch.zeros(1, 2, 8, 8)
    no_building = soft_jaccard(torch.full_like(empty, -20.0), empty)
    assert torch.allclose(no_building, torch.ones(2), atol=1e-6)
    all_ignored = loss_fn(torch.randn(1, 2, 8, 8), empty, torch.zeros(1, 8, 8))
    assert torch.isfinite(all_ignored) and float(all_ignored) == 0.0
