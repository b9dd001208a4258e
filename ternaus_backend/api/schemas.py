"""Request and response bodies of the HTTP API (they make up /v1/openapi.json).

Paths are paths on the backend's machine (the plugin and the backend share it); relative paths
are taken relative to the backend's working folder, so send absolute ones.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ternaus_backend.api.results import JobResult
from ternaus_backend.errors import InputError
from ternaus_backend.evaluation.options import (
    ChangesOptions,
    CompareOptions,
    EvaluateOptions,
    WhereToLabelOptions,
)
from ternaus_backend.models.metadata import ModelMetadata
from ternaus_backend.options import request_options
from ternaus_backend.pipeline.options import ExtractOptions
from ternaus_backend.pipeline.raster import check_bbox
from ternaus_backend.training.config import TrainConfig

# ---------------------------------------------------------------------------------- errors


class ErrorBody(BaseModel):
    """What went wrong and what to do next (``message``), plus ``details`` for logs."""

    message: str
    details: str | None = None


class ErrorOut(BaseModel):
    """The body of every error response."""

    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Bad input (e.g. a path that does not exist)"},
    401: {"model": ErrorOut, "description": "Token missing or wrong"},
    403: {
        "model": ErrorOut,
        "description": "A path outside the folders the backend may use (see --allow-dir)",
    },
    404: {"model": ErrorOut, "description": "No such job or model"},
    409: {"model": ErrorOut, "description": "Not possible in the job's current state"},
    413: {"model": ErrorOut, "description": "Request body larger than the backend accepts"},
    422: {"model": ErrorOut, "description": "Invalid request body, or a model that does not fit"},
}


#: The extra answer of job submissions.
SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorOut, "description": "Too many jobs waiting (TERNAUS_MAX_QUEUED_JOBS)"},
}


# ---------------------------------------------------------------------------------- requests


class PredictRequest(BaseModel):
    """Extract building polygons from an RGB raster (+ multispectral) into a GeoPackage."""

    model_config = ConfigDict(extra="forbid")

    rgb: Path = Field(description="RGB raster (GeoTIFF)")
    ms: Path | None = Field(
        None, description="multispectral raster of the scene (for 11-band models)"
    )
    model: Path | None = Field(None, description="model file; default: the backend's default model")
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="extent [xmin, ymin, xmax, ymax]; default: the whole raster"
    )
    bbox_crs: str | None = Field(
        None, description="CRS of the bbox if not the raster's, e.g. EPSG:4326"
    )
    assume_crs: str | None = Field(
        None,
        description="CRS of rasters that have a geotransform but declare no CRS, e.g. EPSG:32636",
    )
    out: Path | None = Field(
        None, description="output GeoPackage (*.gpkg); default: a file in the job's folder"
    )
    overwrite: bool = Field(False, description="replace 'out' if it exists (default: refuse)")
    options: ExtractOptions = Field(
        default_factory=ExtractOptions,
        description="options of the extraction (the same as the flags of `ternaus predict`); "
        "left out: the model's or the backend's choice",
    )

    @field_validator("options", mode="before")
    @classmethod
    def _front_door_options(cls, value: Any) -> Any:
        return request_options(ExtractOptions, value)

    @field_validator("bbox")
    @classmethod
    def _ordered_bbox(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is None:
            return None
        try:
            return check_bbox(value)  # type: ignore[arg-type]
        except InputError as error:
            raise ValueError(error.message) from None


class EvaluateRequest(EvaluateOptions):
    """SpaceNet building F1 of predicted polygons against ground truth."""

    model_config = ConfigDict(extra="forbid")

    pred: Path = Field(description="predicted polygons (GeoPackage, GeoJSON, ...)")
    truth: Path = Field(description="ground-truth polygons (GeoPackage, GeoJSON, ...)")
    area: Path | None = Field(
        None, description="score only polygons that intersect this area's polygons"
    )
    out: Path | None = Field(
        None,
        description="GeoPackage for the error layers 'result' (match, iou) and 'missed'; "
        "default: a file in the job's folder",
    )


class CompareRequest(CompareOptions):
    """What a map is missing: our result against a map's building layer (OSM or any)."""

    model_config = ConfigDict(extra="forbid")

    pred: Path = Field(description="our result's polygons, with their 'confidence'")
    reference: Path = Field(description="the map's building polygons (OpenStreetMap or any)")
    area: Path | None = Field(
        None, description="compare only buildings that intersect this area's polygons"
    )
    out: Path | None = Field(
        None,
        description="GeoPackage for the layers 'unmapped' (rank, confidence), 'unseen' and "
        "'offsets' (dx_m, dy_m, pairs); default: a file in the job's folder",
    )


class ChangesRequest(ChangesOptions):
    """What changed between two dates' building layers of one place."""

    model_config = ConfigDict(extra="forbid")

    before: Path = Field(description="buildings of the earlier date")
    after: Path = Field(description="buildings of the later date")
    area: Path | None = Field(
        None, description="compare only buildings that intersect this area's polygons"
    )
    out: Path | None = Field(
        None,
        description="GeoPackage for the layers 'new', 'demolished' and 'changed'; default: a "
        "file in the job's folder",
    )


class WhereToLabelRequest(WhereToLabelOptions):
    """Where to label next: cells over an image ranked by how unsure the model is there."""

    model_config = ConfigDict(extra="forbid")

    rgb: Path = Field(description="RGB raster (GeoTIFF)")
    ms: Path | None = Field(
        None, description="multispectral raster of the scene (for 11-band models)"
    )
    model: Path | None = Field(None, description="model file; default: the backend's default model")
    aoi: Path | None = Field(
        None, description="rank only cells inside this area's polygons (pixels outside ignored)"
    )
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="extent [xmin, ymin, xmax, ymax]; default: the whole raster (or AOI)"
    )
    bbox_crs: str | None = Field(
        None, description="CRS of the bbox if not the raster's, e.g. EPSG:4326"
    )
    exclude: Path | None = Field(
        None,
        description="polygons already labelled (e.g. the training area): cells at least half "
        "inside them are left out",
    )
    device: str | None = Field(
        None, pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="cpu or cuda[:N]; default: auto"
    )
    out: Path | None = Field(
        None,
        description="GeoPackage for the layers 'cells' (rank, score, near_threshold, "
        "flip_disagreement, low_confidence_share, low_confidence_buildings, buildings, top) and "
        "'buildings'; default: a file in the job's folder",
    )
    overwrite: bool = Field(False, description="replace 'out' if it exists (default: refuse)")

    @field_validator("bbox")
    @classmethod
    def _ordered_bbox(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is None:
            return None
        try:
            return check_bbox(value)  # type: ignore[arg-type]
        except InputError as error:
            raise ValueError(error.message) from None


class TrainRequest(TrainConfig):
    """Train or fine-tune a model (the fields of the training configuration).

    ``out`` may be left out: the model is then written to the job's folder.
    """

    model_config = ConfigDict(extra="forbid")

    out: Path | None = Field(  # type: ignore[assignment]
        None, description="where to save the best model (*.safetensors); default: the job's folder"
    )


class InspectRequest(BaseModel):
    """A model file to describe."""

    model_config = ConfigDict(extra="forbid")

    path: Path


# ---------------------------------------------------------------------------------- responses


class Health(BaseModel):
    """The backend is up; what it runs on."""

    status: Literal["ok"] = "ok"
    version: str
    api_version: str = "v1"
    device: Literal["cuda", "cpu"]
    gpu_name: str | None = None
    torch_version: str
    cuda_version: str | None = None
    inplace_abn: bool = Field(description="the compiled In-Place ABN kernel is installed")
    default_model: str | None = Field(None, description="the default model file, if installed")
    max_workers: int
    auth_required: bool = Field(description="requests need 'Authorization: Bearer <token>'")


class ModelInfo(BaseModel):
    """A model file and its metadata (the plugin fills its options from it)."""

    path: str
    format: str
    source: str
    size_bytes: int
    num_tensors: int
    num_parameters: int
    uses_multispectral: bool = Field(description="the model needs a multispectral raster too")
    is_default: bool = Field(False, description="the model used when a request names none")
    metadata: ModelMetadata


class EstimateOut(BaseModel):
    """What a predict job will take, worked out when it was submitted."""

    pixels: int = Field(description="pixels of the processing grid")
    km2: float = Field(description="ground area in square kilometres")
    temp_bytes: int = Field(description="temporary disk space (the stitched probability map)")
    eta_s: float = Field(description="rough duration in seconds (light encoder; heavier: slower)")
    temp_dir: str = Field(description="where the temporary goes")
    free_bytes: int = Field(description="free space there at submission")
    warnings: list[str] = Field(
        default_factory=list,
        description="what to know before it runs, e.g. a raster upsampled more than 4x per side",
    )
    cluster: str | None = Field(
        None, description="the Dask cluster the job runs on (TERNAUS_DASK_SCHEDULER), if any"
    )


class ProgressOut(BaseModel):
    """The latest progress report of a job."""

    stage: str
    done: int
    total: int
    fraction: float
    info: dict[str, Any] = Field(default_factory=dict)


class JobOut(BaseModel):
    """A job and where it stands."""

    id: str
    kind: Literal["predict", "train", "evaluate", "compare", "changes", "where_to_label"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"] = Field(
        description="interrupted: the backend stopped while the job was queued or running; "
        "submit it again"
    )
    cancel_requested: bool = False
    progress: ProgressOut | None = None
    estimate: EstimateOut | None = Field(
        None, description="predict jobs: pixels, km², temporary disk and rough duration"
    )
    result: JobResult | dict[str, Any] | None = Field(
        None,
        union_mode="left_to_right",
        description="what the job produced, by its kind (a plain object: a result stored by an "
        "older version that fits no model)",
    )
    result_url: str | None = Field(
        None, description="where to download the output (GeoPackage, model) once there is one"
    )
    error: ErrorBody | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    work_dir: str
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _result_kind(cls, data: Any) -> Any:
        """A result stored without ``kind`` (older versions) gets the job's."""
        result = data.get("result") if isinstance(data, dict) else None
        if isinstance(result, dict) and "kind" not in result and "kind" in data:
            data = {**data, "result": {**result, "kind": data["kind"]}}
        return data

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> JobOut:
        url = f"/v1/jobs/{snapshot['id']}/result" if snapshot.pop("has_file", False) else None
        return cls(**snapshot, result_url=url)
