"""Files between QGIS and a backend on another machine: inputs uploaded, outputs downloaded.

A local backend (or a remote one that reads this machine's files: setting
``backend/same_machine``) gets paths as they are. Any other backend gets each input through
``/v1/uploads`` in chunks (a failed chunk is sent again, not the file) and writes its outputs in
its job folder, from where they are downloaded to where the user asked for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import settings
from ..backend_process import BackendInfo
from ..client import BackendClient
from .jobs import Progress


def needs_upload(info: BackendInfo) -> bool:
    """True when the backend cannot read this machine's files."""
    return not info.local and not settings.get("backend/same_machine")


def backend_path(
    client: BackendClient, info: BackendInfo, path: Path | None, what: str, progress: Progress
) -> str | None:
    """The path of ``path`` as the backend reads it: the same, or that of its upload."""
    if path is None or not needs_upload(info):
        return None if path is None else str(path)
    progress.log(f"Uploading {what} ({Path(path).stat().st_size / 1e6:.1f} MB) to {info.url}")
    return client.upload(
        Path(path),
        lambda pct: progress.report(5.0 * pct / 100.0, f"Uploading {what} ({pct:.0f} %)"),
        progress.cancelled,
    )


def fetch_output(
    client: BackendClient, info: BackendInfo, job: dict[str, Any], destination: Path
) -> Path | None:
    """Download a finished job's output to ``destination`` when the backend is remote; ``None``
    when the backend wrote it there itself."""
    if not needs_upload(info):
        return None
    destination.parent.mkdir(parents=True, exist_ok=True)
    return client.download(job.get("result_url") or f"/v1/jobs/{job['id']}/result", destination)
