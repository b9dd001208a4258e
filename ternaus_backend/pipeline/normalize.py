"""Normalisation of raw raster values as a model's metadata prescribes.

Each raster (RGB, multispectral) is first scaled to about [0, 1], either by per-band percentiles of
the whole input extent (low=0, high=100 is the authors' per-tile min-max for SpaceNet-2 RGB, exact
for one SpaceNet tile), by a fixed divisor (the authors' MUL / 2047), or ``auto``: / 255 for 8-bit
rasters, percentiles otherwise; then ``(x - mean) / std``.
Statistics are taken once per input, never per window, so windows join without seams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ternaus_backend.errors import InputError
from ternaus_backend.models.metadata import BandScaling, Normalization
from ternaus_backend.pipeline.raster import RasterInputs

NO_VALID_PIXELS = (
    "The input holds no valid pixels (all nodata, masked, NaN or infinite); give a raster "
    "that holds imagery, or another extent."
)


def _scale_terms(
    scaling: BandScaling, values: np.ndarray, valid: np.ndarray, dtype: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (low, span) so that scaled = (x - low) / span (``dtype``: the raster's)."""
    bands = values.shape[0]
    if scaling.method == "divide":
        return np.zeros(bands), np.full(bands, float(scaling.divisor))
    if scaling.method == "auto" and dtype == "uint8":
        return np.zeros(bands), np.full(bands, 255.0)
    pixels = values[:, valid]
    if pixels.shape[1] == 0:
        raise InputError(NO_VALID_PIXELS)
    low, high = np.percentile(pixels, [scaling.low, scaling.high], axis=1)
    span = np.where(high - low > 0, high - low, 1.0)
    return low, span


@dataclass
class Normalizer:
    """``x -> x * gain + offset`` per channel (float32), optionally clipped to the [0, 1] scale."""

    gain: np.ndarray
    offset: np.ndarray
    clip_low: np.ndarray
    clip_high: np.ndarray

    @classmethod
    def from_statistics(
        cls,
        normalization: Normalization,
        values: np.ndarray,
        valid: np.ndarray,
        rgb_bands: int = 3,
        dtypes: tuple[str | None, str | None] = (None, None),
    ) -> Normalizer:
        """Build from sample ``values`` (C, h, w) and ``valid`` (h, w) of the whole input;
        ``dtypes``: the RGB and multispectral rasters' data types (for ``auto`` scaling)."""
        channels = values.shape[0]
        if len(normalization.mean) != channels or len(normalization.std) != channels:
            raise InputError(
                f"The model's normalisation describes {len(normalization.mean)} channels but the "
                f"input has {channels}; give the bands the model was made for (see `ternaus info "
                "MODEL`) or use another model."
            )
        if not valid.any():  # all nodata, masked, NaN or infinite
            raise InputError(NO_VALID_PIXELS)
        low_rgb, span_rgb = _scale_terms(normalization.rgb, values[:rgb_bands], valid, dtypes[0])
        lows, spans, clips = [low_rgb], [span_rgb], [normalization.rgb.clip] * rgb_bands
        if channels > rgb_bands:
            ms_scaling = normalization.ms or BandScaling(method="percentile", low=0, high=100)
            low_ms, span_ms = _scale_terms(ms_scaling, values[rgb_bands:], valid, dtypes[1])
            lows.append(low_ms)
            spans.append(span_ms)
            clips += [ms_scaling.clip] * (channels - rgb_bands)
        low, span = np.concatenate(lows), np.concatenate(spans)
        mean = np.asarray(normalization.mean, dtype=np.float64)
        std = np.asarray(normalization.std, dtype=np.float64)
        gain = 1.0 / (span * std)
        offset = -low / (span * std) - mean / std
        # Clipping happens on the [0, 1] scale; expressed on the normalised scale here.
        clip_low = np.where(clips, (0.0 - mean) / std, -np.inf)
        clip_high = np.where(clips, (1.0 - mean) / std, np.inf)
        return cls(
            gain.astype(np.float32),
            offset.astype(np.float32),
            clip_low.astype(np.float32),
            clip_high.astype(np.float32),
        )

    @classmethod
    def fit(cls, normalization: Normalization, inputs: RasterInputs) -> Normalizer:
        """Statistics from the whole input extent (decimated when large)."""
        values, valid = inputs.read_overview()
        return cls.from_statistics(normalization, values, valid, dtypes=inputs.dtypes)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Normalise raw values (C, h, w) or (N, C, h, w) to float32 (a new array)."""
        return self.apply_(raw.astype(np.float32, copy=True))

    def apply_(self, values: np.ndarray) -> np.ndarray:
        """Normalise float32 ``values`` (C, h, w) or (N, C, h, w) in place; returns them."""
        shape = (-1, 1, 1)
        values *= self.gain.reshape(shape)
        values += self.offset.reshape(shape)
        if np.isfinite(self.clip_low).any():
            np.clip(values, self.clip_low.reshape(shape), self.clip_high.reshape(shape), out=values)
        return values
