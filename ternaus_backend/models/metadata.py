"""The self-describing metadata stored in every model file (safetensors header).

The pipeline, the training loop and the QGIS plugin read everything they need about a model from
here: which network to build, which bands it expects in which order, how to normalise them, the
tile size and the thresholds that turn probabilities into buildings.
"""

from __future__ import annotations

import json
import math
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ternaus_backend.models.calibration import Calibration

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RGB_BANDS = ("red", "green", "blue")
# WorldView-2/3 multispectral band order of SpaceNet-2 MUL-PanSharpen.
MS_BANDS = ("coastal", "blue", "green", "yellow", "red", "red_edge", "nir1", "nir2")


class BandScaling(BaseModel):
    """How the raw values of one raster (RGB or multispectral) are brought to about [0, 1].

    ``percentile``: per band, values at the ``low``/``high`` percentiles of the whole input extent
    are mapped to 0/1 (low=0, high=100 is the authors' per-tile min-max for SpaceNet-2 RGB);
    ``divide``: values are divided by ``divisor`` (the authors' MUL scaling is 2047);
    ``auto``: 8-bit rasters (already stretched for display) are divided by 255, others get the
    ``low``/``high`` percentiles (a stretch of a flat scene, such as water or a mudflat, would
    blow its noise up into texture that looks like roofs).
    """

    method: Literal["percentile", "divide", "auto"] = "percentile"
    low: float = Field(0.0, ge=0, le=100)
    high: float = Field(100.0, ge=0, le=100)
    divisor: float = Field(255.0, gt=0)
    clip: bool = False

    @model_validator(mode="after")
    def _low_below_high(self) -> BandScaling:
        if self.low >= self.high:
            raise ValueError(f"the low percentile {self.low} must be below the high {self.high}")
        return self


class Normalization(BaseModel):
    """Scaling of each input raster, then ``(x - mean) / std`` over all channels in order."""

    rgb: BandScaling = Field(default_factory=BandScaling)
    ms: BandScaling | None = None
    mean: list[float] = Field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = Field(default_factory=lambda: list(IMAGENET_STD))

    @field_validator("mean")
    @classmethod
    def _finite_mean(cls, value: list[float]) -> list[float]:
        if not all(math.isfinite(v) for v in value):
            raise ValueError(f"every mean must be a finite number, got {value}")
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: list[float]) -> list[float]:
        bad = [v for v in value if not (math.isfinite(v) and v > 0)]
        if bad:
            raise ValueError(f"every std must be above 0 (it divides the values), got {value}")
        return value


class Thresholds(BaseModel):
    """Turning the two probability maps into building instances.

    A building is seeded where the body probability is above ``body`` and the touching-border
    probability below ``border``; it then extends over the connected pixels whose body
    probability is above ``extent`` (``None``: ``body``), split between seeds by a watershed.
    A lower ``extent`` keeps the confident seeds of a high ``body`` threshold (no false
    buildings from faint blobs) while outlines reach the roof edges, where the network is less
    sure.
    """

    body: float = Field(0.5, ge=0, le=1)
    border: float = Field(0.5, ge=0, le=1)
    min_area_px: int = Field(20, ge=0)
    extent: float | None = Field(None, ge=0, le=1)

    def extent_level(self) -> float:
        """The body probability above which a seeded building extends (at most ``body``)."""
        return self.body if self.extent is None else min(self.extent, self.body)


class ModelMetadata(BaseModel):
    """Everything needed to build, feed and interpret a model."""

    format_version: int = 1
    name: str = "ternausnetv2"
    architecture: Literal["ternausnetv2"] = "ternausnetv2"
    encoder: str = "wrn38"
    in_channels: int = Field(11, ge=1)
    num_classes: int = Field(2, ge=1)
    num_filters: int = Field(32, ge=1)
    band_names: list[str] = Field(default_factory=lambda: list(RGB_BANDS + MS_BANDS))
    class_names: list[str] = Field(default_factory=lambda: ["building", "touching_border"])
    normalization: Normalization = Field(default_factory=Normalization)
    #: > 0 in every model file (checked when one is loaded; 0 marks "not known yet" while a
    #: new model is being built)
    resolution_m: float = Field(0.3, ge=0, allow_inf_nan=False)
    tile_size_px: int = Field(512, ge=1)
    overlap_px: int = Field(64, ge=0)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    #: Maps each building's mean body probability and area to the probability that it is a
    #: true positive (:mod:`.calibration`), written as its ``confidence``; ``None``: the
    #: ``confidence`` is the mean body probability.
    calibration: Calibration | None = None
    provenance: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _resolution_known_in_files(self, info: ValidationInfo) -> ModelMetadata:
        if info.context and info.context.get("model_file") and self.resolution_m <= 0:
            raise ValueError(
                f"resolution_m: must be above 0 (the ground resolution in metres), got "
                f"{self.resolution_m}"
            )
        return self

    @property
    def uses_multispectral(self) -> bool:
        return self.in_channels > 3

    def to_header(self) -> dict[str, str]:
        """The safetensors header form: a flat str -> str mapping."""
        return {"ternaus_metadata": self.model_dump_json()}

    @classmethod
    def from_header(cls, header: dict[str, str]) -> ModelMetadata:
        """The metadata of a safetensors header; ValueError (a pydantic ValidationError for
        values out of range) when it is not valid."""
        return cls.model_validate(
            json.loads(header["ternaus_metadata"]), context={"model_file": True}
        )


def describe_problems(error: ValueError, limit: int = 3) -> str:
    """The problems of a metadata ValidationError in one line (``field: problem (got value)``);
    the error's text for other errors."""
    if not isinstance(error, ValidationError):
        return str(error).splitlines()[0]
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()))
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, (dict, list)) and "got" in message else f" (got {got!r})"
        problems.append(f"{where}: {message}{shown}" if where else message)
    more = f" and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def spacenet2_metadata(**overrides) -> ModelMetadata:
    """Metadata of the authors' released 11-band model (SpaceNet-2 RGB + MUL PanSharpen, 0.3 m)."""
    norm = Normalization(
        rgb=BandScaling(method="percentile", low=0.0, high=100.0),
        ms=BandScaling(method="divide", divisor=2047.0),
        mean=list(IMAGENET_MEAN) + [0.0] * 8,
        std=list(IMAGENET_STD) + [1.0] * 8,
    )
    base = dict(
        name="ternausnetv2-deepglobe-spacenet2",
        encoder="wrn38",
        in_channels=11,
        normalization=norm,
        resolution_m=0.3,
        tile_size_px=512,
        overlap_px=64,
        provenance={"source": "authors' released deepglobe_buildings.pt (Iglovikov et al. 2018)"},
    )
    base.update(overrides)
    return ModelMetadata(**base)
