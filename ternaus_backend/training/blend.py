"""Blending a fine-tuned model back toward the model it started from.

A fine-tune on one neighbourhood moves the weights toward what that neighbourhood shows and
away from what the starting model knew of everything else. Averaging the two sets of weights
(weight-space ensembling, as in WiSE-FT) keeps part of the local gain and most of the rest:
measured on the OpenAerialMap areas (``benchmarks/bench_loop.py``), a quarter of the fine-tuned
weights kept the surroundings at or above the starting model where the fine-tune alone fell
below it (docs/benchmarks.md).
"""

from __future__ import annotations

import torch

__all__ = ["StateDict", "starting_state", "blend_states"]

StateDict = dict[str, torch.Tensor]


def starting_state(model: torch.nn.Module) -> StateDict:
    """A copy of ``model``'s weights and buffers on the CPU (the blend's other end)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def blend_states(start: StateDict, tuned: StateDict, share: float) -> StateDict:
    """``share`` of ``tuned`` plus ``1 - share`` of ``start``, tensor by tensor.

    Floating tensors (weights, biases, batch-norm running statistics) are averaged in float32
    and returned in ``tuned``'s dtype and device; counters (``num_batches_tracked``) are taken
    from ``tuned``. Both must hold the same keys and shapes (the same network).
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"the share of the fine-tuned weights must be in (0, 1], got {share}")
    if start.keys() != tuned.keys():
        missing = sorted(set(start) ^ set(tuned))[:5]
        raise ValueError(f"the two models differ in their tensors, e.g. {missing}")
    blended: StateDict = {}
    for key, value in tuned.items():
        base = start[key]
        if base.shape != value.shape:
            raise ValueError(f"{key}: shape {tuple(base.shape)} vs {tuple(value.shape)}")
        if not value.is_floating_point():
            blended[key] = value
            continue
        mix = base.float().to(value.device) * (1.0 - share) + value.float() * share
        blended[key] = mix.to(value.dtype)
    return blended
