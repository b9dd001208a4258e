"""InstallBackendTask: "Install backend…" in the background (venv + pip, progress, a log)."""

from __future__ import annotations

from ..core.installer import InstallPlan, InstallResult, run_install
from .base import TernausTask, log


class InstallBackendTask(TernausTask):
    """Runs :func:`~ternaus_qgis.core.installer.run_install`; Cancel stops pip.

    ``on_done`` gets an :class:`~ternaus_qgis.core.installer.InstallResult`; ``on_error`` an
    ``InstallError`` (details: the log's last lines) or ``CancelledByUser``.
    """

    def __init__(self, plan: InstallPlan, on_done=None, on_error=None) -> None:
        super().__init__("Ternaus: installing the backend", on_done, on_error)
        self.plan = plan

    def work(self) -> InstallResult:
        log(f"Installing the backend into {self.plan.venv_dir}; log: {self.plan.log_path}")
        result = run_install(self.plan, self.set_stage, self.isCanceled)
        log(f"Backend installed in {result.seconds:.0f} s: {result.version_text}")
        return result
