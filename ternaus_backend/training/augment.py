"""Augmentations for overhead imagery, applied identically to image, targets and pixel weights.

Overhead images have no "up": flips and 90-degree rotations are free, label-preserving variety.
Sensors, seasons and processing change brightness and contrast per band, so those are jittered
band by band (image only). Sources are read at the model's resolution already; a mild scale
change (0.8-1.25) around it covers the rest (imagery a little sharper or coarser than its nominal
pixel size); images are resampled bilinearly, targets and weights with nearest neighbour so they
stay binary.

Everything works on numpy arrays of one sample: image (C, H, W) float32 (already normalised),
target (K, H, W) and weight (H, W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Sample",
    "AugmentConfig",
    "flip_rotate",
    "jitter_bands",
    "resize_sample",
    "random_scale_factor",
    "augment",
]


@dataclass
class Sample:
    """One training crop: normalised image (C, H, W), targets (K, H, W), pixel weights (H, W)."""

    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray

    def __post_init__(self) -> None:
        shape = self.image.shape[-2:]
        if self.target.shape[-2:] != shape or self.weight.shape != shape:
            raise ValueError(
                f"image {self.image.shape}, target {self.target.shape} and weight "
                f"{self.weight.shape} must share H, W"
            )


@dataclass
class AugmentConfig:
    """Which augmentations run and how strong they are (0 disables a jitter)."""

    flips: bool = True
    rotations: bool = True
    brightness: float = 0.2  # additive shift on the normalised scale, per band
    contrast: float = 0.2  # multiplicative factor 1 +- contrast about the band mean, per band
    scale_min: float = 0.8
    scale_max: float = 1.25

    @property
    def scales(self) -> bool:
        return not (self.scale_min == 1.0 and self.scale_max == 1.0)


def flip_rotate(sample: Sample, k: int, flip: bool) -> Sample:
    """Rotate all arrays by ``k`` x 90 degrees, then mirror left-right when ``flip``."""

    def apply(array: np.ndarray) -> np.ndarray:
        out = np.rot90(array, k % 4, axes=(-2, -1))
        if flip:
            out = out[..., ::-1]
        return np.ascontiguousarray(out)

    return Sample(apply(sample.image), apply(sample.target), apply(sample.weight))


def jitter_bands(
    image: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float
) -> np.ndarray:
    """Per-band ``(x - m) * c + m + b`` with ``c ~ U(1 +- contrast)``, ``b ~ U(+-brightness)``."""
    bands = image.shape[0]
    gain = rng.uniform(1.0 - contrast, 1.0 + contrast, size=(bands, 1, 1)).astype(np.float32)
    shift = rng.uniform(-brightness, brightness, size=(bands, 1, 1)).astype(np.float32)
    mean = image.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32)
    return ((image - mean) * gain + mean + shift).astype(np.float32)


def random_scale_factor(rng: np.random.Generator, low: float, high: float) -> float:
    """A scale factor log-uniform in [low, high] (zooming in and out equally likely)."""
    if low <= 0 or high < low:
        raise ValueError(f"bad scale range [{low}, {high}]")
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def resize_sample(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resample to ``size`` (H, W): image bilinear, targets and weight nearest neighbour."""
    if sample.image.shape[-2:] == tuple(size):
        return sample
    image = torch.from_numpy(np.ascontiguousarray(sample.image, dtype=np.float32))[None]
    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)[0]
    masks = np.concatenate(
        [sample.target.astype(np.float32), sample.weight[None].astype(np.float32)]
    )
    masks_t = F.interpolate(torch.from_numpy(masks)[None], size=size, mode="nearest")[0].numpy()
    target = masks_t[:-1].astype(sample.target.dtype)
    weight = masks_t[-1].astype(sample.weight.dtype)
    return Sample(image.numpy(), target, weight)


def augment(sample: Sample, rng: np.random.Generator, config: AugmentConfig) -> Sample:
    """Random rotation/flip (all arrays) and band jitter (image only).

    Scaling is not done here: the dataset reads a window ``crop / scale`` px wide and resizes it
    to the crop with :func:`resize_sample`, so no pixel is invented at the crop edges.
    """
    k = int(rng.integers(0, 4)) if config.rotations else 0
    flip = bool(rng.integers(0, 2)) if config.flips else False
    out = flip_rotate(sample, k, flip)
    if config.brightness > 0 or config.contrast > 0:
        out.image = jitter_bands(out.image, rng, config.brightness, config.contrast)
    return out
