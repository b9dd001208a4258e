"""One backend per work folder (issue 18, item 5): a second server on the same folder refuses to
start, naming the folder and the first server's pid; it starts once the first has stopped."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ternaus_backend.api.jobs import JobManager
from ternaus_backend.api.work_lock import WorkFolderBusyError


def test_a_second_server_on_the_same_work_folder_refuses_to_start(start_backend, tmp_path):
    first = start_backend()
    env = {
        **os.environ,
        "TERNAUS_WORK_DIR": str(tmp_path / "jobs"),
        "TERNAUS_MODELS_DIR": str(tmp_path / "models"),
        "TERNAUS_TOKEN": "",
    }
    second = subprocess.run(
        [sys.executable, "-m", "ternaus_backend.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2, second
    assert "TERNAUS_BACKEND_READY" not in second.stdout
    message = second.stderr
    assert f"The work folder {tmp_path / 'jobs'} is in use" in message
    assert f"(pid {first.process.pid})" in message and "TERNAUS_WORK_DIR" in message
    with first.client() as http:  # the first one is unharmed
        assert http.get("/v1/health").status_code == 200
    first.stop()
    third = start_backend()  # the folder is free again
    with third.client() as http:
        assert http.get("/v1/jobs").json() == []


def test_the_job_manager_holds_the_folder_until_shutdown(tmp_path):
    first = JobManager(tmp_path)
    with pytest.raises(WorkFolderBusyError, match=f"pid {os.getpid()}"):
        JobManager(tmp_path)
    first.shutdown()
    JobManager(tmp_path).shutdown()
