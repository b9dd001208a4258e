"""Validation after each epoch: loss and body IoU of the network, F1 through the real pipeline.

* ``val_loss`` and ``val_iou`` (pixel IoU of the body map at the model's body threshold): the
  network over the validation pixels, with sums accumulated over tiles so both are exact for the
  whole validation area;
* ``val_f1``: SpaceNet F1 (IoU 0.5) of the polygons that
  :func:`~ternaus_backend.pipeline.extract.extract` writes for the bounding box of each source's
  validation area, against the labels, both clipped to the validation area. Extraction takes its
  normalisation statistics from the whole raster (``RasterInputs.read_overview``), not from that
  bounding box, exactly as training does, so the network sees the same values in both. Both read
  the raster at the model's resolution (``metadata.resolution_m``) on the same resampled grid, and
  the minimum building area is taken in pixels of that grid.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ternaus_backend.evaluation.spacenet import Scores, score
from ternaus_backend.models.metadata import ModelMetadata
from ternaus_backend.pipeline.extract import ExtractOptions, extract
from ternaus_backend.progress import CancelToken
from ternaus_backend.training.dataset import PreparedSource, val_tiles
from ternaus_backend.training.losses import BceJaccardLoss
from ternaus_backend.vector_io import read_polygons_with_properties

log = logging.getLogger(__name__)

__all__ = ["validate", "region_scores"]


@dataclass
class _Sums:
    """Running sums over validation tiles for an exact loss and IoU over the whole area."""

    weight: float = 0.0
    bce: np.ndarray | None = None
    inter: np.ndarray | None = None
    union: np.ndarray | None = None
    hard_inter: float = 0.0
    hard_union: float = 0.0

    def add(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, threshold: float
    ) -> None:
        logits = logits.float()
        w = weight.unsqueeze(1)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        prob = torch.sigmoid(logits) * w
        truth = target * w
        inter = (prob * truth).sum(dim=(0, 2, 3))
        union = prob.sum(dim=(0, 2, 3)) + truth.sum(dim=(0, 2, 3)) - inter
        arrays = [(bce * w).sum(dim=(0, 2, 3)), inter, union]
        arrays = [a.double().cpu().numpy() for a in arrays]
        if self.bce is None:
            self.bce, self.inter, self.union = arrays
        else:
            self.bce += arrays[0]
            self.inter += arrays[1]
            self.union += arrays[2]
        self.weight += float(weight.sum())
        pred = (torch.sigmoid(logits[:, 0]) > threshold) & (weight > 0)
        body = (target[:, 0] > 0.5) & (weight > 0)
        self.hard_inter += float((pred & body).sum())
        self.hard_union += float((pred | body).sum())

    def loss(self, jaccard_weight: float, smooth: float = 1.0) -> float:
        if self.bce is None or self.weight == 0:
            return float("nan")
        bce = self.bce / self.weight
        jaccard = (self.inter + smooth) / (self.union + smooth)
        return float(np.sum(bce - jaccard_weight * np.log(jaccard)))

    def iou(self) -> float:
        return self.hard_inter / self.hard_union if self.hard_union else 1.0


def clip_to(polygons: Sequence[Any], region: Any, min_area: float) -> tuple[list[Any], list[int]]:
    """Parts of ``polygons`` inside ``region`` with an area of at least ``min_area``."""
    kept, index = [], []
    for i, poly in enumerate(polygons):
        if not poly.intersects(region):
            continue
        part = poly.intersection(region)
        if part.area >= min_area and part.area > 0:
            kept.append(part)
            index.append(i)
    return kept, index


def region_scores(
    model: nn.Module,
    sources: Sequence[PreparedSource],
    meta: ModelMetadata,
    device: torch.device,
    cancel: CancelToken | None,
    regions: Sequence[Any | None],
    min_area_px: float | None = None,
) -> Scores:
    """Pooled SpaceNet scores of ``extract`` against the labels inside each source's region
    (``regions[i]``, raster CRS; ``None`` skips the source), both clipped to it; parts smaller
    than ``min_area_px`` (default: the model's minimum building area) are left out."""
    total = Scores()
    with tempfile.TemporaryDirectory(prefix="ternaus-val-") as tmp:
        for i, (src, region) in enumerate(zip(sources, regions, strict=True)):
            if region is None or region.is_empty:
                continue
            out = Path(tmp) / f"val_{i}.gpkg"
            result = extract(
                src.source.rgb,
                out,
                ms=src.source.ms,
                model=model,
                bbox=region.bounds,
                assume_crs=src.source.assume_crs,
                options=ExtractOptions(device=str(device)),
                cancel=cancel,
            )
            pixel_area = abs(src.grid.transform.a * src.grid.transform.e)
            min_px = meta.thresholds.min_area_px if min_area_px is None else min_area_px
            min_area = min_px * pixel_area
            if result.count:
                polys, props = read_polygons_with_properties(result.path)
            else:
                polys, props = [], []
            proposals, kept = clip_to(polys, region, min_area)
            confidences = [float(props[k].get("confidence") or 0.0) for k in kept]
            truths, _ = clip_to(src.label_polygons, region, min_area)
            total = total + score(proposals, truths, confidences=confidences)
    return total


def _val_f1(
    model: nn.Module,
    sources: Sequence[PreparedSource],
    meta: ModelMetadata,
    device: torch.device,
    cancel: CancelToken | None,
) -> tuple[float, int, int, int]:
    """SpaceNet F1 (with TP, FP, FN) of ``extract`` on the validation areas."""
    regions = [src.val_region if src.has_validation else None for src in sources]
    total = region_scores(model, sources, meta, device, cancel, regions)
    return total.f1, total.tp, total.fp, total.fn


def validate(
    model: nn.Module,
    sources: Sequence[PreparedSource],
    meta: ModelMetadata,
    loss_fn: BceJaccardLoss,
    device: torch.device,
    tile_px: int,
    batch_size: int,
    cancel: CancelToken | None = None,
    with_f1: bool = True,
) -> dict[str, Any]:
    """Validation loss, body pixel IoU and (``with_f1``) SpaceNet F1 on the validation areas."""
    was_training = model.training
    model.eval()
    sums = _Sums()
    use_amp = device.type == "cuda"
    try:
        with torch.no_grad():
            for src in sources:
                tiles = list(val_tiles(src, tile_px))
                for start in range(0, len(tiles), batch_size):
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    chunk = [t.sample for t in tiles[start : start + batch_size]]
                    image = torch.from_numpy(np.stack([s.image for s in chunk])).to(device)
                    target = torch.from_numpy(
                        np.stack([s.target for s in chunk]).astype(np.float32)
                    ).to(device)
                    weight = torch.from_numpy(np.stack([s.weight for s in chunk])).to(device)
                    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                        logits = model(image)
                    sums.add(logits, target, weight, meta.thresholds.body)
        stats: dict[str, Any] = {
            "val_loss": sums.loss(loss_fn.jaccard_weight, loss_fn.smooth),
            "val_iou": sums.iou(),
        }
        f1, tp, fp, fn = (None, 0, 0, 0)
        if with_f1:
            model.metadata = meta  # extract reads everything from the model's metadata
            f1, tp, fp, fn = _val_f1(model, sources, meta, device, cancel)
        stats.update(val_f1=f1, val_tp=tp, val_fp=fp, val_fn=fn)
        return stats
    finally:
        model.train(was_training)
