"""The work of "Install backend…" (venv + pip, progress, a log), run by a
:class:`~ternaus_qgis.tasks.job_task.JobTask`; Cancel stops pip."""

from __future__ import annotations

from ..core.installer import InstallPlan, InstallResult, run_install
from ..core.jobs import Progress


def install_backend(plan: InstallPlan, progress: Progress) -> InstallResult:
    """Run ``plan`` (blocking: worker threads only), logged at both ends.

    Raises ``InstallError`` (details: the log's last lines) or ``CancelledByUser``.
    """
    progress.log(f"Installing the backend into {plan.venv_dir}; log: {plan.log_path}")
    result = run_install(plan, progress.report, progress.cancelled)
    progress.log(f"Backend installed in {result.seconds:.0f} s: {result.version_text}")
    return result
