"""Networks (TernausNetV2 and light encoders), the encoder registry and model files."""

from __future__ import annotations

from ternaus_backend.models.adapt import adapt_first_layer
from ternaus_backend.models.metadata import ModelMetadata, spacenet2_metadata
from ternaus_backend.models.model_file import (
    convert_checkpoint,
    describe_model,
    load_authors_checkpoint,
    load_model,
    save_model,
)
from ternaus_backend.models.registry import (
    ENCODERS,
    create_model,
    create_model_from_metadata,
    metadata_for,
)

__all__ = [
    "ENCODERS",
    "ModelMetadata",
    "adapt_first_layer",
    "convert_checkpoint",
    "create_model",
    "create_model_from_metadata",
    "describe_model",
    "load_authors_checkpoint",
    "load_model",
    "metadata_for",
    "save_model",
    "spacenet2_metadata",
]
