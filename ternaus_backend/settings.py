"""Backend settings, read from ``TERNAUS_*`` environment variables (pydantic-settings).

``TERNAUS_HOST``, ``TERNAUS_PORT``, ``TERNAUS_TOKEN``, ``TERNAUS_WORK_DIR``,
``TERNAUS_DEFAULT_MODEL``, ``TERNAUS_MODELS_DIR``, ``TERNAUS_MAX_WORKERS``,
``TERNAUS_MAX_QUEUED_JOBS``, ``TERNAUS_JOB_RETENTION_DAYS``, ``TERNAUS_MAX_REQUEST_BYTES``,
``TERNAUS_MAX_OPEN_UPLOADS``,
``TERNAUS_ALLOWED_DIRS`` (folders separated by ``os.pathsep``: ``:``, on Windows ``;``) and
``TERNAUS_ALLOW_NETWORK_FILES``; empty variables count as unset.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_work_dir() -> Path:
    """A per-user folder for job files: the user's cache folder, ``.../ternaus/jobs``."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ternaus" / "jobs"


def default_models_dir() -> Path:
    """A per-user folder of model files: the user's data folder, ``.../ternaus/models``."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "ternaus" / "models"


class Settings(BaseSettings):
    """How the HTTP backend runs."""

    model_config = SettingsConfigDict(env_prefix="TERNAUS_", env_ignore_empty=True, extra="ignore")

    host: str = Field("127.0.0.1", description="interface to listen on (loopback by default)")
    port: int = Field(8765, ge=0, le=65535, description="TCP port (0: any free port)")
    token: SecretStr | None = Field(
        None, description="bearer token every request except /v1/health must carry"
    )
    work_dir: Path = Field(
        default_factory=default_work_dir, description="folder for job outputs, one folder per job"
    )
    default_model: Path | None = Field(
        None, description="model file used when a request names none (default: the embedded one)"
    )
    models_dir: Path = Field(
        default_factory=default_models_dir,
        description="folder whose model files (*.safetensors, *.pt) GET /v1/models lists",
    )
    max_workers: int = Field(1, ge=1, description="jobs run at the same time; others wait queued")
    max_queued_jobs: int = Field(
        16, ge=1, description="jobs that may wait queued; more are refused (429) until some start"
    )
    job_retention_days: float = Field(
        14.0,
        ge=0,
        description="finished jobs (their rows, folders and outputs there) and uploads are "
        "removed this many days after they finished or were last written (0: kept for ever)",
    )
    max_request_bytes: int = Field(
        64 * 2**20, ge=1024, description="largest request body accepted; larger ones get 413"
    )
    max_open_uploads: int = Field(
        16,
        ge=1,
        description="uploads that may be unfinished (not completed) at once; more are refused "
        "(429) until some are completed or deleted",
    )
    allowed_dirs: Annotated[list[Path] | None, NoDecode] = Field(
        None,
        description="folders whose files requests may name, besides the job folders, the models "
        "folder and the default model's folder (default: the user's home and the system "
        "temporary folder); system folders such as /etc are never allowed",
    )
    allow_network_files: bool = Field(
        False,
        description="let inputs (or the VRTs they are) read /vsicurl/, /vsis3/, http(s) and other "
        "network paths; off: such inputs are refused (see ternaus_backend.network_files)",
    )

    dask_scheduler: str | None = Field(
        None,
        description="hand large predict jobs to this Dask cluster (tcp://HOST:8786, or local:N "
        "for N local worker processes) instead of running them in the server's process",
    )
    dask_min_megapixels: float = Field(
        100.0,
        ge=0,
        description="predict jobs of at least this many processing-grid megapixels go to "
        "dask_scheduler (0: every job)",
    )

    @field_validator("token")
    @classmethod
    def _printable_ascii_token(cls, value: SecretStr | None) -> SecretStr | None:
        """HTTP headers carry ASCII: a token with other characters could never match."""
        text = value.get_secret_value() if value is not None else ""
        if value is not None and not (text.isascii() and text.isprintable() and " " not in text):
            raise ValueError(
                "the token must be printable ASCII without spaces (letters, digits and "
                "punctuation): HTTP headers cannot carry other characters; choose another token"
            )
        return value

    @field_validator("allowed_dirs", mode="before")
    @classmethod
    def _split_folders(cls, value: Any) -> Any:
        """TERNAUS_ALLOWED_DIRS holds folders separated by os.pathsep."""
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()] or None
        return value

    def token_value(self) -> str | None:
        """The token as plain text, or None when no token is required."""
        return self.token.get_secret_value() if self.token is not None else None
