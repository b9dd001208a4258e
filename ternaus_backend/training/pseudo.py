"""Self-training targets: what the starting model is sure of on the user's unlabelled imagery.

Fine-tuning on one corrected neighbourhood alone teaches the network that patch and makes it
forget the rest of the scene. The imagery around the labels (the scene the user will extract)
is unlabelled data of exactly the right domain: the starting model's *confident* answers there
become extra targets, mixed into every batch beside the user's labels. They anchor the network to
what it already did well on this imagery (no forgetting), and as a teacher whose answers were
averaged over flips, trained into a student that sees scaled, flipped and recoloured crops, they
sharpen it on this imagery (self-training) even without any labels.

Two kinds of targets (``kind``), chosen by the recipe from what was measured (benchmarks):

``buildings`` (self-training alone, "Adapt to this imagery"): the teacher's flip-averaged maps
become instances by the model's own extraction rule (seeds, watershed, minimum area: what a user
would get), and those instances are turned into body and touching-border targets by the same rule
as drawn labels (:func:`~.targets.touching_borders`). So the gap between two touching buildings
keeps its border target (a pixel-wise rule would teach the gap as plain background and merge
terraces), and a blob the extraction drops is not taught as a building. A pixel counts (weight > 0)
when the teacher is sure of it: inside a building with body probability at least
:data:`CONFIDENT_BUILDING`, outside every building at most :data:`CONFIDENT_BACKGROUND`, or on a
touching border between its buildings; pixels in between are left out (weight 0), as are the user's
training area (their labels win), the validation area with its gap, and nodata.

``pixels`` (the former rule, on request): a pixel is a building when its body probability is at
least :data:`CONFIDENT_BUILDING`, background at most :data:`CONFIDENT_BACKGROUND` (border target
where it is a building and the border map says so); the user's labels teach the touching borders.
Measured on the four OpenAerialMap areas (``benchmarks/bench_loop.py``), building targets raised
self-training alone on three areas where pixel targets raised it on one; the recipe uses them
with labels too, where its blend with the starting model was measured (:mod:`.blend`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from ternaus_backend.models.metadata import Thresholds
from ternaus_backend.pipeline.engine import inference_network, plan_device
from ternaus_backend.pipeline.inference import run_network_tta
from ternaus_backend.pipeline.instances import label_instances
from ternaus_backend.pipeline.windows import blend_weights
from ternaus_backend.progress import CancelToken
from ternaus_backend.training.dataset import PreparedSource
from ternaus_backend.training.targets import touching_borders

log = logging.getLogger(__name__)

__all__ = [
    "CONFIDENT_BUILDING",
    "CONFIDENT_BACKGROUND",
    "probabilities",
    "instance_targets",
    "pixel_targets",
    "add_pseudo_labels",
]

#: Flip-averaged body probability from which a pixel is a building pseudo-label.
CONFIDENT_BUILDING = 0.7
#: ... and up to which it is a background pseudo-label.
CONFIDENT_BACKGROUND = 0.2
#: Windows of the teacher's pass over the in-memory image, and their blended overlap.
_TILE_PX = 768
_OVERLAP_PX = 128


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def probabilities(
    model: nn.Module,
    image: np.ndarray,
    device: torch.device,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """(2, H, W) float32 flip-averaged probabilities of ``model`` over a normalised image.

    Overlapping windows are blended as extraction blends them; a raster smaller than a window
    is reflect-padded to a multiple of 32.
    """
    channels, height, width = image.shape
    tile_h = min(_TILE_PX, -(-height // 32) * 32)
    tile_w = min(_TILE_PX, -(-width // 32) * 32)
    padded = image
    if height < tile_h or width < tile_w:
        pad = ((0, 0), (0, max(0, tile_h - height)), (0, max(0, tile_w - width)))
        padded = np.pad(image, pad, mode="reflect" if min(height, width) > 1 else "edge")
    ph, pw = padded.shape[1:]
    overlap = min(_OVERLAP_PX, tile_h // 4, tile_w // 4)
    weights = blend_weights(tile_h, tile_w, overlap)
    total = np.zeros((2, ph, pw), np.float32)
    norm = np.zeros((ph, pw), np.float32)
    plan = plan_device(device, getattr(model.metadata, "encoder", ""), tile_h, batch_size=1)
    was_training = model.training
    model.eval()
    try:
        with inference_network(model, plan) as net:
            for y0 in _starts(ph, tile_h, tile_h - overlap):
                for x0 in _starts(pw, tile_w, tile_w - overlap):
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    window = padded[None, :, y0 : y0 + tile_h, x0 : x0 + tile_w]
                    logits = run_network_tta(net, np.ascontiguousarray(window), device, plan)
                    total[:, y0 : y0 + tile_h, x0 : x0 + tile_w] += expit(logits[0, :2]) * weights
                    norm[y0 : y0 + tile_h, x0 : x0 + tile_w] += weights
    finally:
        model.train(was_training)
    return (total / np.maximum(norm, 1e-6))[:, :height, :width]


def instance_targets(
    prob: np.ndarray, thresholds: Thresholds, border_width_px: int, area: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's answer as targets: ``(instances, border, building, confident)``.

    ``prob``: (2, H, W) body and border probabilities; ``instances``: its buildings by the
    extraction rule at ``thresholds``; ``building`` and ``border``: their body and touching-border
    masks (as :func:`~.targets.make_targets` makes them from drawn polygons); ``confident``: the
    pixels of ``area`` the teacher is sure of (module docstring).
    """
    instances = label_instances(prob[0], prob[1], thresholds)
    building = instances > 0
    border = touching_borders(instances, border_width_px).astype(bool)
    sure = (building & (prob[0] >= CONFIDENT_BUILDING)) | (
        ~building & (prob[0] <= CONFIDENT_BACKGROUND)
    )
    return instances, border, building, (sure | border) & area


def pixel_targets(
    prob: np.ndarray, area: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's confident pixels as targets: ``(border, building, confident)`` (module
    docstring, ``pixels``)."""
    building = prob[0] >= CONFIDENT_BUILDING
    confident = (building | (prob[0] <= CONFIDENT_BACKGROUND)) & area
    return building & (prob[1] >= 0.5), building, confident


def add_pseudo_labels(
    model: nn.Module,
    sources: Sequence[PreparedSource],
    device: torch.device,
    weight: float = 1.0,
    cancel: CancelToken | None = None,
    border_width_px: int = 3,
    kind: Literal["buildings", "pixels"] = "buildings",
) -> list[str]:
    """Turn each source's context pixels (``PreparedSource.context_mask``) into confident
    pseudo-labels of ``model`` (:func:`instance_targets` or :func:`pixel_targets` by ``kind``),
    in place (targets, ``train_weight`` times ``weight``, ``pseudo_mask``); returns one note per
    source for the model's provenance."""
    notes = []
    thresholds = getattr(getattr(model, "metadata", None), "thresholds", None) or Thresholds()
    for source in sources:
        if not source.context_mask.any():
            continue
        prob = probabilities(model, source.image, device, cancel)
        if kind == "buildings":
            _, border, building, confident = instance_targets(
                prob, thresholds, border_width_px, source.context_mask
            )
        else:
            border, building, confident = pixel_targets(prob, source.context_mask)
        source.target[0][confident] = building[confident]
        source.target[1][confident] = border[confident]
        source.train_weight[confident] = weight
        source.pseudo_mask = confident
        share = confident.sum() / max(1, source.context_mask.sum())
        notes.append(
            f"self-training on {source.name}: {int(confident.sum())} px of the starting model's "
            f"confident {kind} ({share:.0%} of the unlabelled context, "
            f"{int((building & confident).sum())} px building, "
            f"{int((border & confident).sum())} px touching border)"
        )
        log.info(notes[-1])
    return notes
