"""The FastAPI application: ``create_app(settings)`` with every router under /v1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from ternaus_backend import __version__
from ternaus_backend.api.allowed_folders import AllowedFolders
from ternaus_backend.api.errors import add_exception_handlers
from ternaus_backend.api.jobs import JobManager
from ternaus_backend.api.request_limits import RequestSizeLimit
from ternaus_backend.api.routes import health, jobs, models, uploads
from ternaus_backend.api.security import AccessGuard
from ternaus_backend.api.uploads import UploadStore
from ternaus_backend.settings import Settings

log = logging.getLogger(__name__)

API_PREFIX = "/v1"

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(models.router)
api_router.include_router(jobs.router)
api_router.include_router(uploads.router)

DESCRIPTION = """Building footprints from imagery (TernausNetV2), for the Ternaus QGIS plugin.

Long work runs as jobs: submit
(`POST /v1/jobs/predict|evaluate|compare|changes|where_to_label|train`), poll
(`GET /v1/jobs/{id}`), cancel (`POST /v1/jobs/{id}/cancel`), download (`GET /v1/jobs/{id}/result`).
Paths are paths on the backend's machine. Errors are `{"error": {"message", "details"}}`.
When the backend has a token, every request except `GET /v1/health` needs
`Authorization: Bearer <token>`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The backend's HTTP app; ``settings`` default to the TERNAUS_* environment."""
    settings = settings or Settings()
    job_manager = JobManager(
        settings.work_dir,
        settings.max_workers,
        settings.max_queued_jobs,
        retention_days=settings.job_retention_days,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        log.info("stopping: cancelling unfinished jobs")
        job_manager.shutdown(wait=True)

    app = FastAPI(
        title="Ternaus backend",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.jobs = job_manager
    app.state.uploads = UploadStore(
        settings.work_dir / "uploads",
        settings.job_retention_days,
        in_use=job_manager.unfinished_requests,
        users=job_manager.unfinished_jobs_naming,
        max_open=settings.max_open_uploads,
    )
    app.state.uploads.clean()
    app.state.folders = AllowedFolders.from_settings(settings)
    app.include_router(api_router, prefix=API_PREFIX)
    add_exception_handlers(app)
    app.add_middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(AccessGuard, token=settings.token_value())  # outermost: runs first
    return app
