"""The options of the layer jobs (evaluate, compare, changes, where to label), declared once.

As :class:`~ternaus_backend.pipeline.options.ExtractOptions` is for an extraction: each model is
what ``ternaus <job>`` makes its flags from (:func:`~ternaus_backend.options.add_option_arguments`;
the short name of a ``validation_alias`` is the historic flag, e.g. ``--iou``), what the HTTP
API's request for the job inherits (its fields are the request's, its JSON schema the OpenAPI
one), and what the QGIS plugin's Processing algorithms take their defaults and ranges from (a
test checks them). The inputs and outputs (paths) stay in each front door.

Light on purpose (pydantic only): the CLI builds its parser from these at start-up.
"""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

__all__ = ["ChangesOptions", "CompareOptions", "EvaluateOptions", "WhereToLabelOptions"]


class EvaluateOptions(BaseModel):
    """Scoring a result against reference buildings by the SpaceNet rules."""

    model_config = ConfigDict(extra="forbid")

    iou_threshold: float = Field(
        0.5,
        ge=0,
        lt=1,
        title="IoU threshold",
        validation_alias=AliasChoices("iou_threshold", "iou"),
        description="IoU above which a match counts",
    )
    min_area: float = Field(
        0.0,
        ge=0,
        title="Minimum area",
        description="ignore polygons smaller than this (in the reference CRS's units squared)",
    )


class CompareOptions(BaseModel):
    """Our buildings against a map's (OpenStreetMap or any)."""

    model_config = ConfigDict(extra="forbid")

    iou_threshold: float = Field(
        0.3,
        ge=0,
        lt=1,
        title="IoU threshold",
        validation_alias=AliasChoices("iou_threshold", "iou"),
        description="IoU above which two buildings match (after the shift)",
    )
    cell_m: float = Field(
        250.0, gt=0, title="Offset cell", description="grid cell of the offsets, in metres"
    )
    min_pairs: int = Field(
        3, ge=1, title="Pairs per cell", description="matched pairs a cell needs for its offset"
    )


class ChangesOptions(BaseModel):
    """Two dates' buildings of one place."""

    model_config = ConfigDict(extra="forbid")

    match_iou: float = Field(
        0.3,
        ge=0,
        lt=1,
        title="Matching IoU",
        description="IoU above which two buildings are the same building",
    )
    change_iou: float = Field(
        0.7,
        ge=0,
        lt=1,
        title="Change IoU",
        validation_alias=AliasChoices("change_iou", "iou"),
        description="matched buildings below this IoU count as changed",
    )


class WhereToLabelOptions(BaseModel):
    """The grid of cells ranked by the model's doubt."""

    model_config = ConfigDict(extra="forbid")

    cell_m: float = Field(
        100.0, gt=0, title="Cell size", description="side of a cell on the ground, in metres"
    )
    top: int = Field(
        3, ge=0, title="Top cells", description="cells marked top (field 'top'), best-ranked first"
    )
