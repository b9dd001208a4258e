"""Instance thresholds tuned on the user's own labels after a fine-tune.

The thresholds that turn probabilities into buildings (body probability, minimum area) were
chosen for the data the starting model was trained on; on the user's imagery other values may
fit better (small houses in a dense town want a smaller minimum area). After training, the real
extraction runs over the labelled areas (training and validation) for a small grid of
thresholds, with the network's outputs remembered (:class:`MemoNetwork`: it runs once per
window), and the best pooled SpaceNet F1 is written into the model file when it beats the model's
own thresholds by at least :data:`MIN_GAIN`. Measured with ``benchmarks/bench_loop.py``: the
choice made on a block of ~50 labelled buildings carries over to the rest of the area.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Sequence

import torch
from torch import nn

from ternaus_backend.evaluation.spacenet import Scores
from ternaus_backend.models.metadata import ModelMetadata, Thresholds
from ternaus_backend.progress import CancelToken
from ternaus_backend.training.dataset import PreparedSource
from ternaus_backend.training.validation import region_scores

log = logging.getLogger(__name__)

__all__ = ["MemoNetwork", "BODY", "MIN_AREA_SHARES", "MIN_GAIN", "tune_on_labels"]

#: Body thresholds tried (with the model's own).
BODY = (0.6, 0.7, 0.8)
#: Minimum areas tried, as shares of the model's own.
MIN_AREA_SHARES = (1.0, 0.5, 0.25)
#: F1 the tuned thresholds must gain on the labels to replace the model's own.
MIN_GAIN = 0.01
#: Labelled buildings smaller than this (m²) are not scored, whatever minimum area is tried
#: (as ``scripts/eval_real.py`` scores): a labelled shed counts as missed by a larger minimum.
TRUTH_MIN_M2 = 1.0


class MemoNetwork(nn.Module):
    """``model`` with its logits remembered per input window (keyed by the window's bytes):
    every extraction after the first reuses them. Carries the model's ``metadata``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.metadata = model.metadata
        self._memo: dict[bytes, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = hashlib.blake2b(x.detach().cpu().numpy().tobytes(), digest_size=16).digest()
        if key not in self._memo:
            self._memo[key] = self.model(x)
        return self._memo[key]


def candidates(own: Thresholds) -> list[Thresholds]:
    """The model's own thresholds first, then the grid (extent kept below the body)."""
    bodies = sorted({*BODY, own.body})
    areas = sorted({max(1, int(round(own.min_area_px * share))) for share in MIN_AREA_SHARES})
    grid = [own]
    for body, area in itertools.product(bodies, areas):
        extent = own.extent if own.extent is not None and own.extent < body else None
        option = own.model_copy(update={"body": body, "min_area_px": area, "extent": extent})
        if option != own:
            grid.append(option)
    return grid


def tune_on_labels(
    model: nn.Module,
    sources: Sequence[PreparedSource],
    device: torch.device,
    cancel: CancelToken | None = None,
) -> tuple[Thresholds, str] | None:
    """The thresholds that score best on the labelled areas of ``sources`` and a note saying
    so, or ``None`` when the model's own are as good (within :data:`MIN_GAIN`) or nothing is
    labelled. ``model`` carries its metadata; it is not changed."""
    regions = [s.label_region if s.source.labels is not None else None for s in sources]
    if all(r is None for r in regions):
        return None
    meta: ModelMetadata = model.metadata
    truth_min_px = TRUTH_MIN_M2 / meta.resolution_m**2
    memo = MemoNetwork(model).eval()
    scored: list[tuple[Scores, Thresholds]] = []
    for option in candidates(meta.thresholds):
        memo.metadata = meta.model_copy(update={"thresholds": option})
        # every option is scored against the same labelled buildings (all above 1 m²)
        scores = region_scores(memo, sources, meta, device, cancel, regions, truth_min_px)
        scored.append((scores, option))
        log.info("thresholds %s: F1 %.4f", option.model_dump(), scores.f1)
    own_scores = scored[0][0]
    best_scores, best = max(scored, key=lambda item: item[0].f1)
    if best_scores.f1 < own_scores.f1 + MIN_GAIN:
        return None
    note = (
        f"thresholds tuned on the labelled areas: body {best.body:g}, minimum "
        f"{best.min_area_px} px (F1 there {own_scores.f1:.3f} -> {best_scores.f1:.3f})"
    )
    return best, note
