"""Installing the backend from the plugin: a virtual environment of its own, filled by pip.

For a user who installed only the plugin zip. The backend wheel (``make wheel``; bundled in the
plugin zip by ``make package-with-backend``, or a file the user chose) goes into a new virtual
environment, by default ``<QGIS profile>/ternaus/backend-venv``, made by the Python QGIS runs (never
into QGIS's own Python). Steps, each one command line (:meth:`InstallPlan.steps`):

1. ``python -m venv <folder>`` (skipped when the folder already holds an environment we made);
2. ``pip install torch==<the wheel's pin>`` (alone first: by far the largest download, optionally
   from another index such as PyTorch's CPU-only one);
3. ``pip install <wheel>[engines]``: the backend and its pinned dependencies (numpy<2,
   rasterio, ...) with the faster CPU engines (ONNX Runtime, OpenVINO: the Extract tab's
   *Engine*); ``inplace-abn`` is not installed (the backend's pure-PyTorch ABN is used);
4. ``pip install --force-reinstall --no-deps <wheel>`` (a rebuilt wheel of the same version);
5. a check that imports the backend, torch and rasterio in the new environment.

Everything pip prints goes to a log file the user can open; the progress bar follows pip's lines
(:class:`PipProgress`). A cancel stops the running command (its whole process group). Only when
every step passed is the marker file :data:`MARKER` written; the plugin's backend finder uses an
installed environment only when the marker is there. A failed or cancelled fresh install removes
its half-made environment; a failed update leaves the earlier one as it was.

Standard library only, no Qt: the task (:mod:`ternaus_qgis.tasks.install_task`) calls
:func:`run_install` in a worker thread, and the tests call it directly.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import CancelledByUser, InstallError

#: The wheel's optional dependencies installed with it: the CPU engines the dock offers.
EXTRAS = "engines"
#: Written into the environment after a complete install (what, from which wheel, when).
MARKER = "ternaus-install.json"
#: The folder under QGIS's settings folder (the profile) where the environment goes by default.
DEFAULT_FOLDER = ("ternaus", "backend-venv")
#: The distribution name of the backend (pyproject.toml ``[project] name``).
DISTRIBUTION = "ternaus-backend"
#: Environment variables of QGIS's own Python that must not reach another interpreter.
DROPPED_ENV = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONEXECUTABLE")
#: Imports the backend needs at run time; a clean import of all of them means a usable install.
CHECK_CODE = (
    "import importlib.metadata as m, rasterio, torch, ternaus_backend.cli; "
    f"print('ternaus-backend', m.version({DISTRIBUTION!r}), 'torch', torch.__version__)"
)
#: Seconds a cancelled command gets to stop before it is killed.
STOP_GRACE_S = 10.0


def bin_dir(venv: Path) -> Path:
    """The folder of a virtual environment's executables (``bin``; ``Scripts`` on Windows)."""
    return venv / ("Scripts" if sys.platform == "win32" else "bin")


def venv_python(venv: Path) -> Path:
    return bin_dir(venv) / ("python.exe" if sys.platform == "win32" else "python")


def backend_executable(venv: Path) -> Path:
    return bin_dir(venv) / ("ternaus.exe" if sys.platform == "win32" else "ternaus")


def default_venv_dir(settings_dir: str | Path) -> Path:
    """``<settings folder>/ternaus/backend-venv`` (``QgsApplication.qgisSettingsDirPath()``)."""
    return Path(settings_dir).joinpath(*DEFAULT_FOLDER)


def installed_backend(venv: Path) -> Path | None:
    """The ``ternaus`` executable of a complete install in ``venv`` (``None``: none there)."""
    executable = backend_executable(venv)
    if (venv / MARKER).is_file() and executable.is_file() and os.access(executable, os.X_OK):
        return executable
    return None


def is_our_venv(folder: Path) -> bool:
    """``folder`` holds an environment this installer made (complete or not)."""
    return (folder / "pyvenv.cfg").is_file() and (
        (folder / MARKER).is_file() or (folder / ".ternaus-installing").is_file()
    )


# ---------------------------------------------------------------------------------------- inputs
def python_candidates() -> list[Path]:
    """Interpreters that may create the environment, best first (not checked; may not exist).

    Inside QGIS ``sys.executable`` is often QGIS itself; its Python is then found next to it or in
    ``sys.base_prefix`` (Debian: ``/usr/bin/python3.11``; Windows/OSGeo4W: ``apps/Python3x``;
    macOS: ``QGIS.app/Contents/MacOS/bin``), else on the PATH. The same version as QGIS's Python
    comes first.
    """
    major, minor = sys.version_info[:2]
    exe = ".exe" if sys.platform == "win32" else ""
    names = [f"python{major}.{minor}{exe}", f"python{major}{exe}", f"python{exe}"]
    executable = Path(sys.executable)
    folders = [Path(sys.base_prefix) / "bin", Path(sys.base_prefix)]
    folders += [executable.parent, executable.parent / "bin"]
    found: list[Path] = []
    base = getattr(sys, "_base_executable", "")
    if base and Path(base).name.lower().startswith("python"):
        found.append(Path(base))
    for folder in folders:
        found += [folder / name for name in names]
    for name in names:
        which = shutil.which(name)
        if which:
            found.append(Path(which))
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def find_python() -> Path | None:
    """The first existing interpreter of :func:`python_candidates` (``None``: none found)."""
    for path in python_candidates():
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def find_wheels(*folders: Path) -> list[Path]:
    """Backend wheels in ``folders`` (e.g. the plugin's ``wheels/``, a checkout's ``dist/``),
    newest version first."""
    wheels: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            wheels += folder.glob("ternaus_backend-*.whl")

    def key(path: Path) -> tuple:
        version = path.name.split("-")[1]
        numbers = tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+]", version))
        return numbers, path.stat().st_mtime

    return sorted(wheels, key=key, reverse=True)


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel (``InstallError``: not a readable backend wheel)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            if not names:
                raise KeyError("METADATA")
            text = archive.read(names[0]).decode("utf-8", errors="replace")
    except (OSError, zipfile.BadZipFile, KeyError) as error:
        raise InstallError(
            f"{wheel} is not a readable wheel: choose the ternaus_backend-*.whl that came with "
            "the plugin or that 'make wheel' built.",
            details=repr(error),
        ) from None
    if not Path(wheel).name.startswith("ternaus_backend-"):
        raise InstallError(
            f"{Path(wheel).name} is not a Ternaus backend wheel (ternaus_backend-*.whl)."
        )
    return [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    ]


def torch_requirement(requirements: list[str]) -> str:
    """The wheel's torch requirement (``torch==2.13.0``; without its markers), or ``torch``."""
    for requirement in requirements:
        spec = requirement.split(";", 1)[0].strip()
        if re.match(r"torch\b(?![-_.\w])", spec):
            return spec.replace(" ", "").replace("(", "").replace(")", "")
    return "torch"


# ---------------------------------------------------------------------------------------- plan
@dataclass
class Step:
    """One command of an install: what the user sees, the command line, its share of the bar,
    and how many packages pip is expected to collect (for the progress estimate)."""

    title: str
    args: list[str]
    weight: float
    expected_packages: int = 0


@dataclass
class InstallPlan:
    """What to install where. Collected by the dialog (GUI thread), run by the task."""

    python: Path
    venv_dir: Path
    wheel: Path
    log_path: Path
    #: e.g. https://download.pytorch.org/whl/cpu for a CPU-only torch (empty: pip's own index).
    torch_index_url: str = ""
    pip_options: list[str] = field(default_factory=lambda: ["--progress-bar", "off"])

    def fresh(self) -> bool:
        """A new environment is created (not an update of one made before)."""
        return not is_our_venv(self.venv_dir)

    def steps(self, requirements: list[str] | None = None) -> list[Step]:
        """The command lines, in order (``requirements``: the wheel's, read when not given)."""
        if requirements is None:
            requirements = wheel_requirements(self.wheel)
        python = str(venv_python(self.venv_dir))
        pip = [python, "-m", "pip", "install", *self.pip_options]
        steps = []
        if self.fresh():
            create = [str(self.python), "-m", "venv", str(self.venv_dir)]
            steps.append(Step("Creating the environment", create, 3))
        torch_args = [torch_requirement(requirements)]
        if self.torch_index_url:
            torch_args = ["--extra-index-url", self.torch_index_url, *torch_args]
        wheel = str(self.wheel)
        steps += [
            Step("Installing PyTorch", pip + torch_args, 45, expected_packages=10),
            Step(
                "Installing the backend's dependencies",
                pip + [f"{wheel}[{EXTRAS}]"],
                42,
                expected_packages=52,
            ),
            Step("Installing the backend", pip + ["--force-reinstall", "--no-deps", wheel], 5, 1),
            Step("Checking the installation", [python, "-c", CHECK_CODE], 5),
        ]
        return steps


@dataclass
class InstallResult:
    """A complete install: the ``ternaus`` executable, what the check printed, how long it took."""

    venv_dir: Path
    executable: Path
    log_path: Path
    version_text: str
    seconds: float


# ---------------------------------------------------------------------------------------- progress
class PipProgress:
    """Turns pip's output lines into a fraction of the step (0-1) and a short text.

    pip does not say how much is left, so resolving and downloading (``Collecting``/``Processing``
    lines) fill the first 60 % against the step's expected package count; ``Installing collected
    packages`` jumps to 65 % (unpacking torch takes minutes); ``Successfully installed`` is 100 %.
    """

    RESOLVED = 0.6

    def __init__(self, expected_packages: int = 0) -> None:
        self.expected = max(1, expected_packages)
        self.collected = 0
        self.fraction = 0.0
        self.text = ""

    def feed(self, line: str) -> bool:
        """Read one line; ``True`` when the fraction or the text changed."""
        line = line.strip()
        match = re.match(r"(Collecting|Processing|Downloading|Using cached)\s+(\S+)(.*)", line)
        if match:
            verb, what, rest = match.groups()
            name = Path(what).name if verb == "Processing" else what
            if verb in ("Collecting", "Processing"):
                self.collected += 1
                share = min(self.collected / self.expected, 0.95)
                self.fraction = max(self.fraction, self.RESOLVED * share)
                self.text = f"Collecting {_package_name(name)}"
            elif verb == "Downloading":
                size = re.search(r"\(([^)]+)\)", rest)
                self.text = f"Downloading {_package_name(name)}" + (
                    f" ({size.group(1)})" if size else ""
                )
            return True
        if line.startswith("Installing collected packages:"):
            count = len(line.split(":", 1)[1].split(","))
            self.fraction = max(self.fraction, 0.65)
            self.text = f"Installing {count} package{'s' if count != 1 else ''}"
            return True
        if line.startswith("Successfully installed"):
            self.fraction, self.text = 1.0, "Installed"
            return True
        return False


def _package_name(requirement: str) -> str:
    """``torch-2.13.0+cpu-cp311-....whl`` -> ``torch 2.13.0+cpu``; ``numpy<2`` stays."""
    if requirement.endswith((".whl", ".tar.gz", ".zip")):
        parts = requirement.split("-")
        return f"{parts[0]} {parts[1]}" if len(parts) > 1 else parts[0]
    return requirement


# ---------------------------------------------------------------------------------------- running
def clean_env() -> dict[str, str]:
    """QGIS's environment without its Python's variables, pip never waiting for input."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", PIP_NO_INPUT="1")
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return env


def stop_process(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Stop a command and everything it started (pip's build subprocesses): terminate, then kill.

    On POSIX the command leads its own process group; whatever of the group is left once the
    command has ended (a build that ignored SIGTERM) is killed too.
    """
    if sys.platform == "win32":
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            continue


def run_command(
    args: list[str],
    log,
    on_line: Callable[[str], None],
    cancelled: Callable[[], bool],
) -> tuple[int, list[str]]:
    """Run one command, its output into ``log`` and ``on_line``; ``(exit code, last lines)``.

    ``CancelledByUser`` when ``cancelled()`` turned true (the command is stopped first).
    """
    log.write(f"\n$ {subprocess.list2cmdline(args)}\n")
    log.flush()
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=clean_env(),
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        start_new_session=sys.platform != "win32",
        creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for text in process.stdout:
            lines.put(text)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    tail: list[str] = []
    try:
        while True:
            if cancelled():
                stop_process(process)
                log.write("(cancelled by the user)\n")
                log.flush()
                raise CancelledByUser("Backend installation cancelled.")
            try:
                text = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if text is None:
                break
            log.write(text)
            log.flush()
            tail = (tail + [text.rstrip()])[-40:]
            on_line(text)
        return process.wait(), tail
    finally:
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()


def explain_failure(step: Step, tail: list[str]) -> str:
    """What to tell the user when ``step`` failed with ``tail`` as its last lines."""
    text = "\n".join(tail)
    if "ensurepip" in text or "No module named venv" in text:
        return (
            "The Python environment could not be created: this Python has no 'venv' module "
            "(on Debian/Ubuntu: sudo apt install python3-venv), or choose another Python."
        )
    if "requires a different Python" in text:
        return (
            "The backend needs Python 3.10 or later and the chosen Python is older: choose "
            "another one in the Install backend dialog."
        )
    if re.search(r"No matching distribution|Could not find a version", text):
        return (
            f"{step.title} failed: pip found no matching package (no internet, or no build of it "
            "for this Python or system). The log says which one."
        )
    if re.search(r"No space left|Errno 28", text):
        return f"{step.title} failed: the disk is full. Free some space (about 3 GB) and retry."
    if re.search(r"Failed to establish|ConnectionError|Read timed out|Temporary failure", text):
        return f"{step.title} failed: pip could not reach the package index. Check the connection."
    return f"{step.title} failed. The log says why."


def run_install(
    plan: InstallPlan,
    report: Callable[[float, str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> InstallResult:
    """Run ``plan`` (blocking: worker threads only). ``report(percent, text)`` follows the steps.

    Raises ``InstallError`` (the message says what to do; details: the log's last lines and its
    path) or ``CancelledByUser``.
    """
    report = report or (lambda _percent, _text: None)
    cancelled = cancelled or (lambda: False)
    started = time.monotonic()
    venv = plan.venv_dir
    if not plan.wheel.is_file():
        raise InstallError(f"The backend wheel {plan.wheel} does not exist: choose another file.")
    requirements = wheel_requirements(plan.wheel)
    fresh = plan.fresh()
    existed = venv.exists()
    if fresh and existed and any(venv.iterdir()):
        raise InstallError(
            f"{venv} is not empty and is not a backend environment made by the plugin: "
            "choose an empty or new folder."
        )
    if fresh and not (plan.python.is_file() and os.access(plan.python, os.X_OK)):
        raise InstallError(
            f"No Python interpreter at {plan.python}: choose the python3 QGIS uses, or another "
            "Python 3.10 or later."
        )
    steps = plan.steps(requirements)
    total = sum(step.weight for step in steps)
    plan.log_path.parent.mkdir(parents=True, exist_ok=True)
    done_weight = 0.0
    with open(plan.log_path, "w", encoding="utf-8") as log:
        log.write(f"Ternaus backend installation into {venv}\nwheel: {plan.wheel}\n")
        try:
            for step in steps:
                progress = PipProgress(step.expected_packages)

                def on_line(text: str, step=step, progress=progress, base=done_weight) -> None:
                    if progress.feed(text):
                        percent = 100.0 * (base + step.weight * progress.fraction) / total
                        report(percent, f"{step.title}: {progress.text}")

                report(100.0 * done_weight / total, step.title + "…")
                code, tail = run_command(step.args, log, on_line, cancelled)
                if step.title == "Creating the environment" and code == 0:
                    (venv / ".ternaus-installing").write_text("")
                if code != 0:
                    log.write(f"(exit code {code})\n")
                    raise InstallError(
                        f"{explain_failure(step, tail)} Log: {plan.log_path}",
                        details=f"Log: {plan.log_path}\n\n" + "\n".join(tail),
                    )
                done_weight += step.weight
            version_text = tail[-1] if tail else ""
            marker = {
                "wheel": str(plan.wheel),
                "python": str(plan.python),
                "check": version_text,
                "installed": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "log": str(plan.log_path),
            }
            (venv / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            (venv / ".ternaus-installing").unlink(missing_ok=True)
            seconds = time.monotonic() - started
            log.write(f"\nDone in {seconds:.0f} s: {version_text}\n")
        except BaseException:
            if fresh and venv.exists():  # half made by this run: remove it (keep a chosen folder)
                shutil.rmtree(venv, ignore_errors=True)
                if existed:
                    venv.mkdir(parents=True, exist_ok=True)
                log.write(f"(removed the unfinished environment {venv})\n")
            raise
    report(100.0, "Installed")
    return InstallResult(venv, backend_executable(venv), plan.log_path, version_text, seconds)
