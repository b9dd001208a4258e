"""Progress reporting and cancellation shared by extraction and training.

Long jobs take a ``ProgressCallback`` (called with a ``ProgressEvent``) and a ``CancelToken``.
The CLI turns events into tqdm bars, the HTTP API stores the latest one on the job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ternaus_backend.errors import CancelledError


@dataclass
class ProgressEvent:
    """One progress report: ``stage`` names the step, ``done`` of ``total`` units finished."""

    stage: str
    done: int
    total: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """The default callback: ignores events."""


class CancelToken:
    """A thread-safe flag a job checks between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("The job was cancelled; finished results were kept.")
