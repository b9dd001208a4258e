"""Model files: the list the plugin offers, the default model and the metadata of any model file."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter

from ternaus_backend.api.deps import FoldersDep, SettingsDep
from ternaus_backend.api.runners import default_model, existing_file
from ternaus_backend.api.schemas import ERROR_RESPONSES, InspectRequest, ModelInfo
from ternaus_backend.errors import TernausError
from ternaus_backend.models.metadata import ModelMetadata

router = APIRouter(prefix="/models", tags=["models"], responses=ERROR_RESPONSES)

log = logging.getLogger(__name__)

#: File name endings of model files listed from the models folder.
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth")


def describe(path: Path, is_default: bool = False) -> ModelInfo:
    """The :class:`ModelInfo` of a model file (our safetensors files: from the header only)."""
    from ternaus_backend.models.model_file import describe_model

    info = describe_model(path)
    meta = ModelMetadata.model_validate(info.pop("metadata"))
    return ModelInfo(
        **info, metadata=meta, uses_multispectral=meta.uses_multispectral, is_default=is_default
    )


@router.get("", response_model=list[ModelInfo], summary="The models this backend offers")
def list_models(settings: SettingsDep) -> list[ModelInfo]:
    """The default model first, then every readable model file in the models folder
    (``TERNAUS_MODELS_DIR``), by name. Files that cannot be read are left out (and logged)."""
    models: list[ModelInfo] = []
    try:
        models.append(describe(default_model(settings), is_default=True))
    except TernausError as error:
        log.warning("no default model: %s", error.message)
    folder = settings.models_dir
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in MODEL_SUFFIXES or not path.is_file():
                continue
            try:
                models.append(describe(path.resolve()))
            except TernausError as error:
                log.warning("model file %s left out: %s", path, error.message)
    return models


@router.get("/default", response_model=ModelInfo, summary="The default model")
def default(settings: SettingsDep) -> ModelInfo:
    """The model used when a predict request names none."""
    return describe(default_model(settings), is_default=True)


@router.post("/inspect", response_model=ModelInfo, summary="Metadata of a model file")
def inspect(body: InspectRequest, folders: FoldersDep) -> ModelInfo:
    """Bands, normalisation, tile size, thresholds and provenance of a model file (inside the
    folders the backend may use, else 403)."""
    return describe(existing_file(body.path, "model file", folders))
