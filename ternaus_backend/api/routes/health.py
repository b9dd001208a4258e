"""GET /v1/health: the backend is up, and what it runs on (open without a token)."""

from __future__ import annotations

import torch
from fastapi import APIRouter

from ternaus_backend import __version__
from ternaus_backend.api.deps import SettingsDep
from ternaus_backend.api.runners import default_model
from ternaus_backend.api.schemas import Health
from ternaus_backend.errors import TernausError

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Is the backend up; device and versions")
def health(settings: SettingsDep) -> Health:
    """Version, compute device, torch version, In-Place ABN, default model and whether a token
    is needed. The plugin calls this first."""
    from ternaus_backend.models.abn import HAS_INPLACE_ABN

    cuda = torch.cuda.is_available()
    try:
        model: str | None = str(default_model(settings))
    except TernausError:
        model = None
    return Health(
        version=__version__,
        device="cuda" if cuda else "cpu",
        gpu_name=torch.cuda.get_device_name(0) if cuda else None,
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda,
        inplace_abn=HAS_INPLACE_ABN,
        default_model=model,
        max_workers=settings.max_workers,
        auth_required=settings.token is not None,
    )
