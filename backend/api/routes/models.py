"""Model files: the default model and the metadata of any model file."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from ternaus_backend.api.deps import SettingsDep
from ternaus_backend.api.runners import default_model, existing_file
from ternaus_backend.api.schemas import ERROR_RESPONSES, InspectRequest, ModelInfo
from ternaus_backend.models.metadata import ModelMetadata

router = APIRouter(prefix="/models", tags=["models"], responses=ERROR_RESPONSES)


def describe(path: Path) -> ModelInfo:
    """The :class:`ModelInfo` of a model file (our safetensors files: from the header only)."""
    from ternaus_backend.models.model_file import describe_model

    info = describe_model(path)
    meta = ModelMetadata.model_validate(info.pop("metadata"))
    return ModelInfo(**info, metadata=meta, uses_multispectral=meta.uses_multispectral)


@router.get("/default", response_model=ModelInfo, summary="The default model")
def default(settings: SettingsDep) -> ModelInfo:
    """The model used when a predict request names none."""
    return describe(default_model(settings))


@router.post("/inspect", response_model=ModelInfo, summary="Metadata of a model file")
def inspect(body: InspectRequest) -> ModelInfo:
    """Bands, normalisation, tile size, thresholds and provenance of a model file."""
    return describe(existing_file(body.path, "model file"))
