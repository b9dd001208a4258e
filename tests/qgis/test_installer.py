"""Install backend (issue 9, item 5): the installer's command lines and progress, cancel stopping
pip, the dock offering the install when no backend is found, and (slow) a real install from the
wheel ``make wheel`` builds, through the real QgsTask, after which the plugin finds and starts it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from ternaus_qgis import backend_process, settings
from ternaus_qgis.core import installer
from ternaus_qgis.core.installer import InstallPlan, PipProgress, Step
from ternaus_qgis.exceptions import BackendMissingError, CancelledByUser, InstallError

from .conftest import wait_until

#: What pip 23 printed while installing the backend wheel here (shortened).
PIP_LINES = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple
Processing ./tw/ternaus_backend-0.1.0-py3-none-any.whl
Requirement already satisfied: torch==2.13.0 in ./tvenv/lib/python3.11/site-packages (2.13.0+cpu)
Processing /opt/pypi/files/numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl
Collecting rasterio>=1.3
  Downloading rasterio-1.4.4-cp311-cp311-manylinux_2_28_x86_64.whl (35.9 MB)
Collecting shapely>=2.0
  Using cached shapely-2.2.0-cp311-cp311-manylinux_2_28_x86_64.whl (2.3 MB)
WARNING: Location 'file:///opt/pypi-more/simple/fiona/' is ignored
Installing collected packages: numpy, shapely, rasterio, ternaus-backend
Successfully installed numpy-1.26.4 rasterio-1.4.4 shapely-2.2.0 ternaus-backend-0.1.0
"""

REQUIRES = [
    "torch==2.13.0",
    "numpy<2",
    "rasterio>=1.3",
    'pytest>=8; extra == "dev"',
]


def fake_wheel(folder: Path, requires: list[str] = REQUIRES) -> Path:
    """A wheel with only metadata (enough for the plan; pip is not run on it)."""
    path = folder / "ternaus_backend-0.1.0-py3-none-any.whl"
    metadata = "Metadata-Version: 2.1\nName: ternaus-backend\nVersion: 0.1.0\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ternaus_backend-0.1.0.dist-info/METADATA", metadata)
    return path


def plan_for(tmp_path: Path, **kwargs) -> InstallPlan:
    defaults = dict(
        python=Path(sys.executable),
        venv_dir=tmp_path / "backend-venv",
        wheel=fake_wheel(tmp_path),
        log_path=tmp_path / "backend-venv-install.log",
    )
    defaults.update(kwargs)
    return InstallPlan(**defaults)


# ------------------------------------------------------------------------------ command lines
def test_a_fresh_install_creates_the_venv_then_installs_pinned_torch_then_the_wheel(tmp_path):
    plan = plan_for(tmp_path)
    steps = plan.steps()
    venv_python = str(installer.venv_python(plan.venv_dir))
    assert steps[0].args == [sys.executable, "-m", "venv", str(plan.venv_dir)]
    assert steps[1].args[:4] == [venv_python, "-m", "pip", "install"]
    assert steps[1].args[-1] == "torch==2.13.0"  # the wheel's own pin, never an unpinned torch
    # the dependencies with the CPU engines the Extract tab offers
    assert steps[2].args[-1] == f"{plan.wheel}[engines]" and "--no-deps" not in steps[2].args
    assert steps[3].args[-3:] == ["--force-reinstall", "--no-deps", str(plan.wheel)]
    assert steps[4].args[:2] == [venv_python, "-c"] and "rasterio" in steps[4].args[2]
    for step in steps[1:4]:
        assert "--no-cache-dir" not in step.args  # pip's cache stays usable
        assert "inplace-abn" not in " ".join(step.args)


def test_an_update_reuses_the_venv_and_a_torch_index_is_an_extra_index(tmp_path):
    venv = tmp_path / "backend-venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / installer.MARKER).write_text("{}")
    plan = plan_for(tmp_path, torch_index_url="https://download.pytorch.org/whl/cpu")
    steps = plan.steps()
    assert not plan.fresh() and "venv" not in steps[0].args
    assert steps[0].args[-3:] == [
        "--extra-index-url",
        "https://download.pytorch.org/whl/cpu",
        "torch==2.13.0",
    ]


def test_the_torch_requirement_comes_from_the_wheel():
    assert installer.torch_requirement(["numpy<2", "torch (==2.13.0)"]) == "torch==2.13.0"
    assert installer.torch_requirement(['torch==2.13.0; python_version >= "3.10"']) == (
        "torch==2.13.0"
    )
    assert installer.torch_requirement(["torchvision==0.1", "numpy"]) == "torch"


def test_the_real_pyproject_pins_torch(tmp_path):
    tomllib = pytest.importorskip("tomllib")
    from tests.helpers import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert installer.torch_requirement(project["dependencies"]) == "torch==2.13.0"


def test_a_file_that_is_no_backend_wheel_is_refused(tmp_path):
    broken = tmp_path / "ternaus_backend-0.1.0-py3-none-any.whl"
    broken.write_text("not a zip")
    with pytest.raises(InstallError, match="not a readable wheel"):
        installer.wheel_requirements(broken)
    other = tmp_path / "other.whl"
    fake_wheel(tmp_path).rename(other)
    with pytest.raises(InstallError, match="not a Ternaus backend wheel"):
        installer.wheel_requirements(other)


def test_wheels_are_found_newest_version_first(tmp_path):
    for version in ("0.1.0", "0.10.0", "0.9.1"):
        (tmp_path / f"ternaus_backend-{version}-py3-none-any.whl").write_text("")
    (tmp_path / "other-1.0-py3-none-any.whl").write_text("")
    names = [p.name for p in installer.find_wheels(tmp_path, tmp_path / "missing")]
    assert names == [
        "ternaus_backend-0.10.0-py3-none-any.whl",
        "ternaus_backend-0.9.1-py3-none-any.whl",
        "ternaus_backend-0.1.0-py3-none-any.whl",
    ]


def test_a_python_is_found_for_the_venv():
    python = installer.find_python()
    assert python is not None and python.name.startswith("python")
    version = subprocess.run(
        [str(python), "-c", "import sys, venv; print(sys.version_info >= (3, 10))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == "True"


def test_qgis_python_variables_do_not_reach_pip(monkeypatch):
    monkeypatch.setenv("PYTHONHOME", "/qgis/apps/python")
    monkeypatch.setenv("PYTHONPATH", "/qgis/python")
    env = installer.clean_env()
    assert "PYTHONHOME" not in env and "PYTHONPATH" not in env and env["PIP_NO_INPUT"] == "1"


# ------------------------------------------------------------------------------ progress
def test_pip_lines_move_the_progress_forward_with_readable_texts():
    progress = PipProgress(expected_packages=6)
    seen = []
    for line in PIP_LINES.splitlines():
        if progress.feed(line):
            seen.append((progress.fraction, progress.text))
    fractions = [fraction for fraction, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    texts = [text for _, text in seen]
    assert "Collecting ternaus_backend 0.1.0" in texts
    assert "Downloading rasterio 1.4.4 (35.9 MB)" in texts
    assert "Installing 4 packages" in texts
    assert max(f for f, t in seen if t.startswith(("Collecting", "Downloading"))) <= 0.6


# ------------------------------------------------------------------------------ running
def python_step(title: str, code: str, weight: float = 1.0) -> Step:
    return Step(title, [sys.executable, "-c", code], weight)


def test_run_install_reports_progress_logs_and_marks_a_complete_install(tmp_path, monkeypatch):
    plan = plan_for(tmp_path)
    venv = plan.venv_dir
    make_venv = (
        "import os, pathlib, sys; v = pathlib.Path(sys.argv[1]); (v / 'bin').mkdir(parents=True); "
        "(v / 'pyvenv.cfg').write_text(''); t = v / 'bin' / 'ternaus'; "
        "t.write_text('#!/bin/sh\\n'); os.chmod(t, 0o755)"
    )
    steps = [
        Step("Creating the environment", [sys.executable, "-c", make_venv, str(venv)], 1),
        python_step(
            "Installing PyTorch", "print('Collecting torch'); print('Successfully installed')"
        ),
        python_step("Checking the installation", "print('ternaus-backend 0.1.0 torch 2.13.0')"),
    ]
    monkeypatch.setattr(InstallPlan, "steps", lambda self, requirements=None: steps)
    reports = []
    result = installer.run_install(plan, lambda p, t: reports.append((p, t)))
    assert result.version_text == "ternaus-backend 0.1.0 torch 2.13.0"
    assert installer.installed_backend(venv) == venv / "bin" / "ternaus"
    assert json.loads((venv / installer.MARKER).read_text())["wheel"] == str(plan.wheel)
    percents = [p for p, _ in reports]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert any("Installing PyTorch: Collecting torch" in t for _, t in reports)
    log = plan.log_path.read_text()
    assert "Collecting torch" in log and "Done in" in log


def test_a_failed_fresh_install_removes_its_venv_and_says_where_the_log_is(tmp_path, monkeypatch):
    plan = plan_for(tmp_path)
    venv = plan.venv_dir
    steps = [
        Step(
            "Creating the environment",
            [sys.executable, "-m", "venv", "--without-pip", str(venv)],
            1,
        ),
        python_step(
            "Installing PyTorch",
            "import sys; print('ERROR: No matching distribution found for torch==2.13.0'); "
            "sys.exit(1)",
        ),
    ]
    monkeypatch.setattr(InstallPlan, "steps", lambda self, requirements=None: steps)
    with pytest.raises(InstallError) as caught:
        installer.run_install(plan)
    assert "found no matching package" in caught.value.message
    assert str(plan.log_path) in caught.value.message
    assert "No matching distribution" in caught.value.details
    assert not venv.exists(), "the half-made environment was left behind"
    assert "exit code 1" in plan.log_path.read_text()


def test_failures_are_explained_with_what_to_do():
    step = Step("Installing the backend's dependencies", [], 1)
    too_old = ["ERROR: Package 'ternaus-backend' requires a different Python: 3.9.5"]
    assert "Python 3.10 or later" in installer.explain_failure(step, too_old)
    no_venv = ["The virtual environment was not created successfully because ensurepip is not"]
    assert "python3-venv" in installer.explain_failure(step, no_venv)
    assert "disk is full" in installer.explain_failure(step, ["OSError: [Errno 28] No space left"])


def test_a_folder_that_is_not_ours_is_never_installed_into(tmp_path):
    plan = plan_for(tmp_path)
    plan.venv_dir.mkdir()
    (plan.venv_dir / "my_thesis.docx").write_text("precious")
    with pytest.raises(InstallError, match="not empty"):
        installer.run_install(plan)
    assert (plan.venv_dir / "my_thesis.docx").read_text() == "precious"


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


@pytest.mark.skipif(sys.platform == "win32", reason="process groups as on POSIX")
def test_cancel_stops_the_command_and_what_it_started(tmp_path):
    """A cancel while pip runs stops pip and its own subprocesses (builds) at once."""
    code = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "print('child', child.pid, flush=True); time.sleep(120)"
    )
    pids = []

    def on_line(text: str) -> None:
        if text.startswith("child"):
            pids.append(int(text.split()[1]))

    started = time.monotonic()
    with open(tmp_path / "log.txt", "w") as log, pytest.raises(CancelledByUser):
        installer.run_command([sys.executable, "-c", code], log, on_line, lambda: bool(pids))
    assert time.monotonic() - started < installer.STOP_GRACE_S
    deadline = time.monotonic() + 5
    while pids and process_alive(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids and not process_alive(pids[0]), "pip's subprocess outlived the cancel"
    assert "cancelled by the user" in (tmp_path / "log.txt").read_text()


# ------------------------------------------------------------------------------ the finder
@pytest.fixture
def only_installed_backend(qgis_app, tmp_path, monkeypatch):
    """The backend finder with every source but the installed environment switched off."""
    settings.set("backend/command", "")
    monkeypatch.delenv("TERNAUS_BACKEND", raising=False)
    monkeypatch.setattr(backend_process, "RECORDED_PATH_FILE", tmp_path / "none.txt")
    monkeypatch.setattr(backend_process, "PLUGIN_DIR", tmp_path / "no-checkout" / "ternaus_qgis")
    venv = tmp_path / "backend-venv"
    settings.set("backend/venv", str(venv))
    yield venv
    settings.set("backend/venv", "")


def test_the_finder_uses_an_installed_backend_only_when_complete(only_installed_backend, tmp_path):
    venv = only_installed_backend
    with pytest.raises(BackendMissingError) as caught:
        backend_process.find_backend_command()
    assert "Install backend…" in caught.value.message
    assert str(venv) in caught.value.details
    executable = installer.backend_executable(venv)
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    with pytest.raises(BackendMissingError):  # no marker yet: an unfinished install
        backend_process.find_backend_command()
    (venv / installer.MARKER).write_text("{}")
    assert backend_process.find_backend_command() == (executable, backend_process.INSTALLED_ORIGIN)
    other = tmp_path / "elsewhere" / "ternaus"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    settings.set("backend/command", str(other))
    try:  # an explicit choice comes first
        assert backend_process.find_backend_command() == (other, "the plugin setting")
    finally:
        settings.set("backend/command", "")


def test_the_default_install_folder_is_in_the_qgis_profile(qgis_app):
    from qgis.core import QgsApplication

    settings.set("backend/venv", "")
    expected = Path(QgsApplication.qgisSettingsDirPath()) / "ternaus" / "backend-venv"
    assert backend_process.installed_venv_dir() == expected


# ------------------------------------------------------------------------------ the dock
@pytest.fixture
def plugin_without_backend(iface, project, only_installed_backend):
    from ternaus_qgis.plugin import TernausPlugin

    settings.set("backend/mode", "local")
    instance = TernausPlugin(iface)
    instance.initGui()
    wait_until(lambda: instance.controller.backend_status.task is None, what="the backend check")
    yield instance
    if instance.dock is not None:
        instance.unload()


def test_the_dock_offers_install_when_no_backend_is_found(iface, plugin_without_backend):
    dock = plugin_without_backend.dock
    assert not dock.install_row.isHidden() and not dock.install_button.isHidden()
    assert dock.install_progress.isHidden()
    assert "Install backend" in dock.backend_label.text()
    assert any("Install backend…" in item.text() for item in iface.bar.items())


def test_an_install_that_fails_shows_the_error_and_offers_install_again(
    iface, plugin_without_backend, tmp_path
):
    controller = plugin_without_backend.controller.installer
    dock = plugin_without_backend.dock
    plan = plan_for(tmp_path, python=tmp_path / "no-python", venv_dir=tmp_path / "venv2")
    controller.ask_plan = lambda parent: plan
    QTest.mouseClick(dock.install_button, Qt.LeftButton)
    wait_until(lambda: controller.task is None, 30, "the install task to end")
    assert isinstance(controller.last_error, InstallError)
    assert "No Python interpreter" in controller.last_error.message
    assert not dock.install_button.isHidden() and dock.install_progress.isHidden()


def test_the_install_dialog_preselects_the_bundled_wheel_and_collects_a_plan(
    only_installed_backend, tmp_path, monkeypatch
):
    from ternaus_qgis.gui import install_dialog

    plugin_dir = tmp_path / "plugins" / "ternaus_qgis"
    (plugin_dir / "wheels").mkdir(parents=True)
    wheel = fake_wheel(plugin_dir / "wheels")
    monkeypatch.setattr(install_dialog, "PLUGIN_DIR", plugin_dir)
    dialog = install_dialog.InstallBackendDialog()
    assert dialog.wheel_edit.filePath() == str(wheel)
    assert dialog.folder_edit.filePath() == str(only_installed_backend)
    assert Path(dialog.python_edit.filePath()).name.startswith("python")
    dialog.torch_index_edit.setText(install_dialog.CPU_TORCH_INDEX)
    dialog.accept()
    plan = dialog.plan
    assert plan is not None and plan.wheel == wheel and plan.venv_dir == only_installed_backend
    assert plan.log_path == only_installed_backend.parent / "backend-venv-install.log"
    assert settings.get("backend/torch_index") == install_dialog.CPU_TORCH_INDEX
    settings.set("backend/torch_index", "")
    dialog.wheel_edit.setFilePath("")
    dialog.plan = None
    dialog.accept()
    assert dialog.plan is None and "Choose the backend wheel" in dialog.error_label.text()


# ------------------------------------------------------------------------------ the real thing
def pip_processes_in(venv: Path) -> list[int]:
    """Processes whose command line names ``venv`` (pip runs as ``<venv>/bin/python -m pip``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(venv) in command and process_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def backend_wheel(tmp_path_factory) -> Path:
    """The backend wheel, built by the code behind ``make wheel``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    try:
        from build_wheel import build_wheel
    finally:
        sys.path.pop(0)
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.mark.slow
def test_install_from_the_wheel_then_the_plugin_starts_that_backend(
    iface, plugin_without_backend, backend_wheel, only_installed_backend
):
    controller = plugin_without_backend.controller.installer
    dock = plugin_without_backend.dock
    venv = only_installed_backend
    python = installer.find_python()
    assert python is not None
    plan = InstallPlan(python, venv, backend_wheel, venv.parent / "backend-venv-install.log")
    controller.ask_plan = lambda parent: plan
    percents = []
    QTest.mouseClick(dock.install_button, Qt.LeftButton)
    assert controller.task is not None and not dock.install_progress.isHidden()
    controller.task.progressChanged.connect(percents.append)
    started = time.monotonic()
    wait_until(lambda: controller.task is None, 1500, "the backend install")
    seconds = time.monotonic() - started
    assert controller.last is not None, controller.last_error and (
        controller.last_error.message + "\n" + (controller.last_error.details or "")
    )
    print(f"\nbackend installed in {seconds:.0f} s")
    assert percents == sorted(percents) and len(percents) > 5
    executable = installer.backend_executable(venv)
    assert controller.last.executable == executable
    assert "ternaus-backend 0.1.0" in controller.last.version_text
    help_text = subprocess.run(
        [str(executable), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "serve" in help_text
    # The default model travels in the wheel.
    default = subprocess.run(
        [
            str(installer.venv_python(venv)),
            "-c",
            "from ternaus_backend.pipeline.extract import DEFAULT_MODEL as m; "
            "print(m.is_file(), m)",
        ],
        cwd=venv.parent,  # not the checkout, whose ternaus_backend/ `python -c` would import first
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert default.startswith("True") and str(venv) in default
    # The CPU engines the Extract tab offers came with it.
    engines = subprocess.run(
        [str(installer.venv_python(venv)), "-c", "import onnxruntime, openvino, onnxscript"],
        cwd=venv.parent,
        capture_output=True,
        text=True,
    )
    assert engines.returncode == 0, engines.stderr
    assert backend_process.find_backend_command() == (executable, backend_process.INSTALLED_ORIGIN)
    # The plugin now starts the installed backend and lists its default model.
    wait_until(
        lambda: dock.backend_label.text().startswith(("ready", "not available")),
        180,
        "the installed backend to answer",
    )
    assert dock.backend_label.text().startswith("ready"), dock.backend_label.text()
    assert dock.install_row.isHidden()
    assert "default" in dock.model_combo.itemText(0)
    process = backend_process.connection().local.process
    assert process is not None and process.args[0] == str(executable)
    plugin_without_backend.unload()
    assert process.poll() is not None


@pytest.mark.slow
def test_cancel_during_a_real_install_stops_pip_and_removes_the_half_made_venv(
    qgis_app, tmp_path, backend_wheel
):
    from qgis.core import QgsApplication

    from ternaus_qgis.tasks.install_task import install_backend
    from ternaus_qgis.tasks.job_task import JobTask

    venv = tmp_path / "cancelled-venv"
    plan = InstallPlan(installer.find_python(), venv, backend_wheel, tmp_path / "install.log")
    errors = []
    task = JobTask("install", lambda progress: install_backend(plan, progress), None, errors.append)
    QgsApplication.taskManager().addTask(task)
    wait_until(lambda: task.stage.startswith("Installing PyTorch"), 120, "pip to start")
    wait_until(lambda: pip_processes_in(venv), 60, "pip to run")
    task.cancel()
    wait_until(lambda: bool(errors), 60, "the task to end")
    assert isinstance(errors[0], CancelledByUser)
    assert not pip_processes_in(venv), "pip kept running after the cancel"
    assert not venv.exists()
    assert "cancelled by the user" in plan.log_path.read_text()
    assert os.path.isfile(plan.log_path)
