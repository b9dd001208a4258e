"""The results of jobs, one model per job kind (the ``result`` of ``GET /v1/jobs/{id}``).

The runners build these models from what the pipeline returns; the job manager stores them as
JSON (``model_dump(mode="json")``). Each carries ``kind``, the job's kind, so ``JobOut.result`` is
a union discriminated by it. Results stored by older versions have no ``kind``: ``JobOut`` adds
the job's, and a result that fits no model (a field added since) is served as a plain object.

Every model allows extra fields, so nothing a result holds is lost when it is read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Result(BaseModel):
    """A job's result: every field described; unknown fields kept."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    warnings: list[str] = Field(
        default_factory=list, description="what the user should know about the run"
    )


class _LayersResult(_Result):
    """A result written to a GeoPackage of several layers."""

    out: Path | None = Field(description="the GeoPackage written (download it from result_url)")
    layers: list[str] = Field(default_factory=list, description="the GeoPackage's layers")


class ShiftOut(BaseModel):
    """How far one layer lies from the other: the median over ``pairs`` matched buildings."""

    dx_m: float = Field(description="metres east")
    dy_m: float = Field(description="metres north")
    pairs: int = Field(description="matched pairs of buildings the median is over")


# ---------------------------------------------------------------------------------- predict


class PredictResult(_Result):
    """What an extraction produced: the GeoPackage (layer ``buildings``) and how it ran. A job
    run on the Dask cluster has ``cluster`` and ``blocks`` and none of the grid's fields."""

    kind: Literal["predict"] = "predict"
    out: Path = Field(description="the GeoPackage written (download it from result_url)")
    buildings: int = Field(description="buildings extracted")
    layer: str = Field("buildings", description="the GeoPackage's layer of buildings")
    area_km2: float = Field(description="ground area processed, in square kilometres")
    seconds: float = Field(description="how long the extraction took")
    model: Path = Field(description="the model file used")
    width_px: int | None = Field(
        None, description="width of the processing grid (not on a cluster)"
    )
    height_px: int | None = Field(
        None, description="height of the processing grid (not on a cluster)"
    )
    resolution_m: float | None = Field(
        None, description="ground size of the grid's pixels in metres (not on a cluster)"
    )
    resampled: bool | None = Field(
        None, description="the raster was resampled to the model's resolution (not on a cluster)"
    )
    clipped: int | None = Field(
        None, description="buildings clipped at the extent's edge (not on a cluster)"
    )
    stages: dict[str, float] | None = Field(
        None, description="seconds per stage (not on a cluster)"
    )
    cluster: str | None = Field(None, description="the Dask scheduler it ran on (cluster only)")
    blocks: int | None = Field(None, description="blocks the raster was split into (cluster only)")


# ---------------------------------------------------------------------------------- train


class EpochOut(BaseModel):
    """What one training epoch measured."""

    model_config = ConfigDict(extra="allow")

    epoch: int = Field(description="the epoch's number, from 1")
    train_loss: float | None = Field(None, description="mean training loss")
    val_loss: float | None = Field(None, description="validation loss (None: no validation)")
    val_iou: float | None = Field(None, description="validation pixel IoU")
    val_f1: float | None = Field(None, description="validation building F1 (SpaceNet rules)")
    val_tp: int = Field(0, description="validation true positives")
    val_fp: int = Field(0, description="validation false positives")
    val_fn: int = Field(0, description="validation false negatives")
    seconds: float = Field(0.0, description="how long the epoch took")
    crops_per_s: float = Field(0.0, description="training crops per second")
    best: bool = Field(False, description="the best epoch so far (its model was saved)")


class TrainResult(_Result):
    """Where the best model is and how it scored; ``status`` cancelled: stopped on request,
    the best model so far kept."""

    kind: Literal["train"] = "train"
    status: Literal["completed", "cancelled"] = Field(description="how the run ended")
    model_path: Path | None = Field(description="the best model (None: no epoch was validated)")
    checkpoint_path: Path = Field(description="the resumable checkpoint beside the model")
    epochs_completed: int = Field(description="epochs run to their end")
    best_epoch: int | None = Field(None, description="the epoch of the best model")
    best_val_f1: float | None = Field(None, description="validation F1 of the best epoch")
    best_val_loss: float | None = Field(None, description="validation loss of the best epoch")
    history: list[EpochOut] = Field(default_factory=list, description="every epoch, in order")
    notes: list[str] = Field(default_factory=list, description="how the run was set up")
    seconds: float = Field(0.0, description="how long the training took")
    crops_per_s: float = Field(0.0, description="training crops per second over the run")
    calibration: dict[str, Any] | None = Field(
        None,
        description="the confidence calibration fitted after training: buildings, ece_before, "
        "ece_after and the reliability diagrams; None without labelled validation areas",
    )


# ---------------------------------------------------------------------------------- evaluate


class EvaluateResult(_LayersResult):
    """SpaceNet scores of the predicted polygons; the error layers ``result`` and ``missed``."""

    kind: Literal["evaluate"] = "evaluate"
    tp: int = Field(description="true positives (matched buildings)")
    fp: int = Field(description="false positives")
    fn: int = Field(description="false negatives (missed buildings)")
    precision: float = Field(description="tp / (tp + fp)")
    recall: float = Field(description="tp / (tp + fn)")
    f1: float = Field(description="harmonic mean of precision and recall")
    results_scored: int = Field(description="predicted polygons scored (inside the area)")
    references_scored: int = Field(description="ground-truth polygons scored")
    repaired_pred: int = Field(0, description="invalid predicted polygons repaired")
    repaired_truth: int = Field(0, description="invalid ground-truth polygons repaired")
    pred: Path = Field(description="the predicted polygons scored")
    truth: Path = Field(description="the ground-truth polygons")
    area: Path | None = Field(None, description="the area scored (None: everywhere)")
    iou_threshold: float = Field(description="IoU above which a match counted")


# ---------------------------------------------------------------------------------- compare


class _MatchedLayersResult(_LayersResult):
    """Two layers matched in one metric CRS after their shift."""

    shift: ShiftOut = Field(description="the shift applied before matching")
    metric_crs: str | None = Field(description="the metric CRS the layers were matched in")
    area: Path | None = Field(None, description="the area compared (None: everywhere)")


class CompareResult(_MatchedLayersResult):
    """What a map is missing: layers ``unmapped``, ``unseen`` and ``offsets``."""

    kind: Literal["compare"] = "compare"
    results_scored: int = Field(description="our buildings compared (inside the area)")
    references_scored: int = Field(description="the map's buildings compared")
    matched: int = Field(description="our buildings matched with the map's")
    unmapped: int = Field(description="our buildings the map lacks")
    unseen: int = Field(description="the map's buildings we did not see")
    offset: ShiftOut | None = Field(description="where our buildings lie from the map's")
    cells: int = Field(description="grid cells with an offset")
    iou_threshold: float = Field(description="IoU above which two buildings matched")
    cell_m: float = Field(description="grid cell of the offsets, in metres")
    pred: Path = Field(description="our result's polygons")
    reference: Path = Field(description="the map's building polygons")


class ChangesResult(_MatchedLayersResult):
    """What changed between two dates: layers ``new``, ``demolished`` and ``changed``."""

    kind: Literal["changes"] = "changes"
    before: int = Field(description="buildings of the earlier date")
    after: int = Field(description="buildings of the later date")
    new: int = Field(description="buildings only the later date has")
    demolished: int = Field(description="buildings only the earlier date has")
    changed: int = Field(description="matched buildings below change_iou")
    unchanged: int = Field(description="matched buildings at or above change_iou")
    match_iou: float = Field(description="IoU above which two buildings were the same")
    change_iou: float = Field(description="matched buildings below it counted as changed")
    before_path: Path = Field(description="the earlier date's buildings")
    after_path: Path = Field(description="the later date's buildings")


# ---------------------------------------------------------------------------------- where to label


class CellOut(BaseModel):
    """One proposed cell and what the model was unsure of there."""

    model_config = ConfigDict(extra="allow")

    rank: int = Field(description="1: label first")
    score: float = Field(description="near_threshold + flip_disagreement + low_confidence_share")
    near_threshold: float = Field(description="share of pixels near the decision threshold")
    flip_disagreement: float = Field(description="share of pixels a flip changes")
    low_confidence_share: float = Field(description="share of buildings of low confidence")
    low_confidence_buildings: int = Field(description="buildings of low confidence")
    buildings: int = Field(description="buildings in the cell")
    mean_confidence: float | None = Field(None, description="mean confidence of its buildings")
    covered: float = Field(description="share of the cell inside the image and area")
    top: bool = Field(description="among the best-ranked cells asked for")
    bounds: list[float] = Field(description="xmin, ymin, xmax, ymax in ``crs``")


class WhereToLabelResult(_LayersResult):
    """Cells ranked by how unsure the model is there: layers ``cells`` and ``buildings``."""

    kind: Literal["where_to_label"] = "where_to_label"
    cells: int = Field(description="cells ranked")
    excluded: int = Field(0, description="cells left out as already labelled")
    cell_m: float = Field(description="side of a cell on the ground, in metres")
    cell_px: int = Field(description="side of a cell in pixels")
    buildings: int = Field(description="buildings the model found")
    top: list[CellOut] = Field(description="the best-ranked cells, best first")
    body_threshold: float | None = Field(None, description="the model's building threshold")
    crs: str | None = Field(None, description="the CRS of the cells")
    seconds: float = Field(description="how long the ranking took")
    rgb: Path = Field(description="the RGB raster ranked")
    model: Path = Field(description="the model file used")
    aoi: Path | None = Field(None, description="the area ranked (None: the whole image)")


#: Any job's result, told apart by ``kind``.
JobResult = Annotated[
    PredictResult
    | TrainResult
    | EvaluateResult
    | CompareResult
    | ChangesResult
    | WhereToLabelResult,
    Field(discriminator="kind"),
]

#: The result model of each job kind.
RESULT_MODELS: dict[str, type[_Result]] = {
    "predict": PredictResult,
    "train": TrainResult,
    "evaluate": EvaluateResult,
    "compare": CompareResult,
    "changes": ChangesResult,
    "where_to_label": WhereToLabelResult,
}
