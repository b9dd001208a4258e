"""The backend's state in the dock: the backend check (device, version, models) and "Install
backend…" (a venv with pip, then the check again).

The work is :func:`~ternaus_qgis.tasks.backend_task.read_status` and
:func:`~ternaus_qgis.tasks.install_task.install_backend`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..backend_process import INSTALLED_ORIGIN, BackendConnection, find_backend_command
from ..core.installer import InstallPlan, InstallResult
from ..core.jobs import format_seconds
from ..core.models import choices_from_infos
from ..exceptions import BackendMissingError, LayerError, TernausPluginError
from ..tasks.backend_task import BackendStatus, read_status
from ..tasks.install_task import install_backend
from .messages import push_error, push_success, push_warning
from .workflow import Job, Workflow


def ask_install_plan(parent) -> InstallPlan | None:
    """The install dialog; its plan, or ``None`` when the user cancelled."""
    from .install_dialog import InstallBackendDialog

    dialog = InstallBackendDialog(parent)
    return dialog.plan if dialog.exec_() else None


class BackendStatusController(Workflow):
    """Connect (start the local backend if needed), then show the device and list the models;
    offer "Install backend…" when no backend is found."""

    def collect(self) -> BackendConnection:
        return self.backend

    def job(self, backend: BackendConnection) -> Job:
        return (
            "Ternaus: connecting to the backend",
            lambda progress: read_status(backend, progress),
        )

    def show_running(self) -> None:
        self.dock.set_backend_text("connecting…")

    def show_result(self, status: BackendStatus) -> None:
        self.dock.set_install_offered(False)
        health = status.info.health
        where = "local" if status.info.local else status.info.url
        self.dock.set_backend_text(
            f"ready ({where}): {status.info.device_text}, ternaus {health.get('version', '?')}"
        )
        self.dock.set_models(choices_from_infos(status.models))
        for warning in status.info.warnings:  # once per URL (e.g. a token over plain http)
            push_warning(self.bar, warning)
        for problem in status.problems:
            push_error(self.bar, LayerError(f"A model file cannot be used: {problem}"))

    def show_error(self, error: TernausPluginError) -> None:
        missing = isinstance(error, BackendMissingError)
        self.dock.set_install_offered(missing)
        if missing:
            self.dock.set_backend_text("not installed: press Install backend…")
        else:
            self.dock.set_backend_text(f"not available: {error.message}")
        push_error(self.bar, error)


class InstallController(Workflow):
    """Ask what to install where, then install the backend (venv + pip) with progress and a log;
    ``installed`` is called once it is (the dock connects to the new backend)."""

    def __init__(self, dock, message_bar, backend, installed: Callable[[], None]) -> None:
        super().__init__(dock, message_bar, backend)
        self.installed = installed
        #: Shows the install dialog and returns its plan (None: cancelled); tests replace it.
        self.ask_plan: Callable[[object], InstallPlan | None] = ask_install_plan

    def collect(self) -> InstallPlan | None:
        return self.ask_plan(self.dock)

    def job(self, plan: InstallPlan) -> Job:
        return "Ternaus: installing the backend", lambda progress: install_backend(plan, progress)

    def show_running(self) -> None:
        self.dock.set_installing(True)
        self.dock.set_install_progress(0, "Installing the backend…")

    def show_progress(self, percent: float, stage: str) -> None:
        self.dock.set_install_progress(percent, stage)

    def show_cancelling(self) -> None:
        self.dock.set_backend_text("Cancelling the installation…")

    def show_result(self, result: InstallResult) -> None:
        self.dock.set_installing(False)
        self.dock.set_install_offered(False)
        text = (
            f"Backend installed in {format_seconds(result.seconds)} ({result.version_text}) "
            f"in {result.venv_dir}."
        )
        try:
            command, origin = find_backend_command()
        except TernausPluginError:
            command, origin = None, ""
        if command is not None and origin != INSTALLED_ORIGIN:
            text += (
                f" Note: the plugin uses {command} from {origin} first; clear that to use the "
                "new one."
            )
        push_success(self.bar, text, result.log_path)
        self.backend.stop()  # the next call starts the backend that is found now
        self.installed()

    def show_error(self, error: TernausPluginError) -> None:
        self.dock.set_installing(False)
        self.dock.set_backend_text(f"not installed: {error.message}")
        log_path = self.request.log_path if self.request is not None else None
        if log_path is not None and not log_path.is_file():
            log_path = None
        push_error(self.bar, error, log_path)
