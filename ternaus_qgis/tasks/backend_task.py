"""The backend check: connect (starting the local backend if needed), read health and models.

:func:`read_status` is the work of the dock's backend check (a
:class:`~ternaus_qgis.tasks.job_task.JobTask`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import settings
from ..backend_process import BackendConnection, BackendInfo
from ..core.jobs import Progress
from ..exceptions import TernausPluginError


@dataclass
class BackendStatus:
    """The backend's health and the models it offers (the backend's list + files the user added)."""

    info: BackendInfo
    models: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # added model files that cannot be read


def read_status(backend: BackendConnection, progress: Progress) -> BackendStatus:
    """Health and models of the backend (blocking: worker threads only); each step of starting
    the backend is logged and shown as the stage."""
    client, info = backend.client(
        lambda text: (progress.log(text), progress.report(0, text)), progress.cancelled
    )
    models = client.models()
    status = BackendStatus(info=info, models=models)
    known = {m["path"] for m in models}
    for path in settings.extra_models():
        if path in known:
            continue
        try:
            status.models.append(client.inspect_model(path))
        except TernausPluginError as error:
            status.problems.append(f"{path}: {error.message}")
    return status
