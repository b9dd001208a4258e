"""A real ``ternaus serve`` in a subprocess on a free loopback port, for tests over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

READY = "TERNAUS_BACKEND_READY "


class LiveBackend:
    """One ``ternaus serve`` process; ``url`` is its API root (``http://127.0.0.1:N/v1``)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ternaus_backend.cli", "serve", "--port", "0", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.log = log
        self.access_log: list[str] = []
        self.url = self._wait_ready()
        self.base = self.url.removesuffix("/v1")

    def _wait_ready(self, timeout_s: float = 120.0) -> str:
        deadline = time.monotonic() + timeout_s
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(READY):
            self.stop()
            pytest.fail(f"ternaus serve did not start: {line!r}\n{self.log.read_text()}")
        url = line[len(READY) :].strip()
        # uvicorn logs each request on stdout: keep reading it, or the server blocks once the
        # pipe is full
        threading.Thread(target=self._drain, daemon=True).start()
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"ternaus serve did not answer: {self.log.read_text()}")

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.access_log.append(line)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=60)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def start_backend(tmp_path: Path) -> Iterator[Callable[..., LiveBackend]]:
    """``start_backend(*args, **env)``: a running ``ternaus serve`` with its job folder in
    ``tmp_path/jobs`` and models folder ``tmp_path/models``; stopped after the test."""
    started: list[LiveBackend] = []

    def start(*args: str, **env: str) -> LiveBackend:
        environment = {
            **os.environ,
            "TERNAUS_WORK_DIR": str(tmp_path / "jobs"),
            "TERNAUS_MODELS_DIR": str(tmp_path / "models"),
            "TERNAUS_TOKEN": "",
            "TERNAUS_ALLOWED_DIRS": "",
            "TERNAUS_ALLOW_NETWORK_FILES": "",
            **env,
        }
        backend = LiveBackend(list(args), environment, tmp_path / f"serve-{len(started)}.log")
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop()


def wait_for_job(http: httpx.Client, job_id: str, timeout_s: float = 120.0) -> dict:
    """Polls a job until it has finished; fails the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled", "interrupted"):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job did not finish: {job}")
        time.sleep(0.1)
