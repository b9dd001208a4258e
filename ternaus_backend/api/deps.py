"""Dependencies of the routes, as ``Annotated`` aliases: ``SettingsDep``, ``JobsDep``,
``FoldersDep``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ternaus_backend.api.allowed_folders import AllowedFolders
from ternaus_backend.api.jobs import JobManager
from ternaus_backend.settings import Settings


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_jobs(request: Request) -> JobManager:
    """The app's job manager."""
    return request.app.state.jobs


def get_folders(request: Request) -> AllowedFolders:
    """The folders requests may name."""
    return request.app.state.folders


SettingsDep = Annotated[Settings, Depends(get_settings)]
FoldersDep = Annotated[AllowedFolders, Depends(get_folders)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
