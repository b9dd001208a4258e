"""BackendStatusTask: connect (starting the local backend if needed), read health and models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import settings
from ..backend_process import BackendConnection, BackendInfo
from ..exceptions import TernausPluginError
from .base import TernausTask, log


@dataclass
class BackendStatus:
    """The backend's health and the models it offers (the backend's list + files the user added)."""

    info: BackendInfo
    models: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # added model files that cannot be read


def read_status(backend: BackendConnection, report=None, cancelled=None) -> BackendStatus:
    """Health and models of the backend (blocking: worker threads only)."""
    client, info = backend.client(report, cancelled)
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


class BackendStatusTask(TernausTask):
    """Runs :func:`read_status` in the background; the dock then shows device and models."""

    def __init__(self, backend: BackendConnection, on_done, on_error) -> None:
        super().__init__("Ternaus: connecting to the backend", on_done, on_error)
        self.backend = backend

    def work(self) -> BackendStatus:
        return read_status(
            self.backend, lambda text: (log(text), self.set_stage(0, text)), self.isCanceled
        )
