"""Workflow: the base of the dock's controllers, one per workflow (GUI thread).

A workflow collects a request from its widgets, runs it as one
:class:`~ternaus_qgis.tasks.job_task.JobTask`, shows the task's progress, and then its result or
its error (on the message bar, :mod:`.messages`). A subclass says only what differs: how the
request is collected (:meth:`Workflow.collect`), what the task runs (:meth:`Workflow.job`), and
how each state is shown (the ``show_*`` methods).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QObject

from ..backend_process import BackendConnection
from ..exceptions import TernausPluginError
from ..tasks.job_task import JobProgress, JobTask
from .messages import push_error

#: What a task runs: its description in QGIS's task list, and its work (in a worker thread).
Job = tuple[str, Callable[[JobProgress], Any]]


class Workflow(QObject):
    """One workflow: at most one running task, its latest result and error.

    ``task`` is the running task (``None`` when idle; tests wait on it), ``request`` the latest
    request started, ``last`` the latest result and ``last_error`` the latest error (a refused
    request included).
    """

    def __init__(self, dock, message_bar, backend: BackendConnection) -> None:
        super().__init__(dock)
        self.dock = dock
        self.bar = message_bar
        self.backend = backend
        self.task: JobTask | None = None
        self.request: Any = None
        self.last: Any = None
        self.last_error: TernausPluginError | None = None

    # ------------------------------------------------------------------ what a subclass says
    def collect(self) -> Any:
        """The request from the widgets (GUI thread: layers are read and exported here);
        ``None`` when the user declined. Raises a :class:`TernausPluginError` the user can fix."""
        raise NotImplementedError

    def job(self, request: Any) -> Job:
        """The task's description and work for ``request``; the work runs in a worker thread, so
        it must not touch widgets, the canvas or the project's layers."""
        raise NotImplementedError

    def show_running(self) -> None:
        """The widgets while the task runs (buttons, an empty bar)."""

    def show_progress(self, percent: float, stage: str) -> None:
        """A progress report of the running task (percent 0-100, stage text)."""

    def show_partial(self, item: Any) -> None:
        """An intermediate result of the running task (e.g. a validated epoch)."""

    def show_cancelling(self) -> None:
        """The widgets after Cancel, until the task has stopped."""

    def show_result(self, result: Any) -> None:
        """The task's result: layers, texts, a success message."""

    def show_error(self, error: TernausPluginError) -> None:
        """The task failed, or was cancelled: by default on the message bar."""
        push_error(self.bar, error)

    def show_refusal(self, error: TernausPluginError) -> None:
        """The request could not be collected (nothing ran): by default on the message bar."""
        push_error(self.bar, error)

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Collect the request and start its task (nothing while a task runs)."""
        if self.task is not None:
            return
        try:
            request = self.collect()
        except TernausPluginError as error:
            self.last_error = error
            self.show_refusal(error)
            return
        if request is not None:
            self.start(request)

    def start(self, request: Any) -> None:
        """Run ``request`` as a task in QGIS's task manager (nothing while a task runs)."""
        if self.task is not None:
            return
        description, work = self.job(request)
        self.request = request
        self.task = JobTask(description, work, self._finished, self.fail)
        self.task.stage_changed.connect(self._progress)
        self.task.partial.connect(self.show_partial)
        self.show_running()
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        """Cancel the running task (its error is then a ``CancelledByUser``)."""
        if self.task is not None:
            self.show_cancelling()
            self.task.cancel()

    def fail(self, error: TernausPluginError) -> None:
        """End the workflow with ``error`` (the task's, or one met while showing its result)."""
        self.task = None
        self.last_error = error
        self.show_error(error)

    def shutdown(self) -> None:
        """Cancel running work and forget its callbacks (plugin unload)."""
        if self.task is not None:
            self.task.detach()
        self.task = None

    def _progress(self, percent: float, stage: str) -> None:
        if self.task is not None:
            self.show_progress(percent, stage)

    def _finished(self, result: Any) -> None:
        self.task = None
        self.last = result
        self.show_result(result)
