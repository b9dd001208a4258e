"""The options of one extraction, declared once.

:class:`ExtractOptions` is what :func:`~ternaus_backend.pipeline.extract.extract` takes, what
``ternaus predict`` makes its flags from (:func:`~ternaus_backend.options.add_option_arguments`:
``--threshold``/``--body-threshold``, ...), what the HTTP API's predict request carries under
``options`` (its JSON schema is the OpenAPI one), and what the QGIS plugin's ``ExtractionOptions``
mirrors for its dock and Processing algorithm. A new option is added here, with its title, range
and description; the plugin's table gets the same name (a test checks both).

Light on purpose (pydantic only, no torch): the CLI builds its parser from it at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ternaus_backend.errors import InputError
from ternaus_backend.options import SkipJsonSchema, internal_field, options_error

if TYPE_CHECKING:  # the models package imports torch
    from ternaus_backend.models.metadata import Thresholds

#: Network precisions (``engine.PRECISIONS``); ``auto``: bf16 where it is fast, else float32.
Precision = Literal["auto", "float32", "bfloat16", "float16"]
#: Engines that run the network (``cpu_engines.ENGINES``); the non-torch ones run on a CPU only.
Engine = Literal["torch", "onnxruntime", "openvino"]


class ExtractOptions(BaseModel):
    """Options of one extraction; ``None`` (``null``) means: as the model's metadata says."""

    model_config = ConfigDict(extra="forbid")

    tile_size_px: int | None = Field(
        None,
        ge=32,
        title="Tile size",
        validation_alias=AliasChoices("tile_size_px", "tile"),
        description="window side in px, a multiple of 32; default: sized to the raster up to "
        "the device's limit, never below the model's tile size",
    )
    overlap_px: int | None = Field(
        None,
        ge=0,
        title="Overlap",
        validation_alias=AliasChoices("overlap_px", "overlap"),
        description="overlap of neighbouring windows in px; default: the model's",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        le=256,
        title="Batch size",
        description="windows per network call; default: chosen for the device (1 on a CPU, by "
        "memory on a GPU)",
    )
    simplify_px: float = Field(
        1.0,
        ge=0,
        title="Simplify",
        validation_alias=AliasChoices("simplify_px", "simplify"),
        description="polygon simplification tolerance in px",
    )
    regularize: bool = Field(False, title="Square corners", description="square building corners")
    body_threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        title="Building threshold",
        validation_alias=AliasChoices("body_threshold", "threshold"),
        description="building probability above which a pixel is building; default: the model's",
    )
    min_area_px: int | None = Field(
        None,
        ge=0,
        title="Minimum area",
        validation_alias=AliasChoices("min_area_px", "min_area"),
        description="drop buildings smaller than this many px; default: the model's",
    )
    native_resolution: bool = Field(
        False,
        title="Native resolution",
        description="read the raster at its own pixel size; by default it is resampled on the "
        "fly to the model's ground resolution when they differ by more than 5 %",
    )
    tta: bool = Field(
        False,
        title="Flip TTA",
        description="flip test-time augmentation: average the probabilities over 4 flips of "
        "each window (4x the network's work)",
    )
    device: str | None = Field(
        None,
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        title="Device",
        description="cpu or cuda[:N]; default (auto): CUDA when present",
    )
    precision: Precision | None = Field(
        None,
        title="Precision",
        description="network precision; default auto: bf16 on a CPU with native bf16 units, "
        "else float32; bf16 or fp16 on a GPU",
    )
    compile: bool | None = Field(
        None,
        title="Compile",
        description="wrap the network in torch.compile (worth it for long GPU runs); default: "
        "TERNAUS_COMPILE=1",
    )
    engine: Engine | None = Field(
        None,
        title="Engine",
        description="what runs the network: torch (default, CPU or GPU), or on a CPU only "
        "onnxruntime (float32) or openvino (bf16 where the CPU has bf16 units, else float32); "
        "the network is converted once and cached",
    )

    #: Side of the blocks polygons are made in, and their halo (the pipeline's own tuning).
    block_px: SkipJsonSchema[int] = internal_field(2048, ge=64)
    halo_px: SkipJsonSchema[int] = internal_field(256, ge=0)

    def __init__(self, **data: Any) -> None:
        """Validates; a bad value is an InputError naming the option (an API request turns it
        into a 422: :func:`~ternaus_backend.options.request_options`)."""
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise InputError(options_error(error, type(self))) from None

    @field_validator("tile_size_px")
    @classmethod
    def _tile_multiple_of_32(cls, tile: int | None) -> int | None:
        if tile is not None and tile % 32:
            raise ValueError(
                f"the tile size must be a multiple of 32 px (e.g. 256 or 512), got {tile}"
            )
        return tile

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> ExtractOptions:
        tile, overlap = self.tile_size_px, self.overlap_px
        if tile and overlap is not None and overlap >= tile:
            raise ValueError(
                f"the overlap ({overlap} px) must be smaller than the tile ({tile} px)"
            )
        return self

    def thresholds(self, model_thresholds: Thresholds) -> Thresholds:
        """The model's thresholds with this run's overrides."""
        update = {"body": self.body_threshold, "min_area_px": self.min_area_px}
        return model_thresholds.model_copy(
            update={key: value for key, value in update.items() if value is not None}
        )
