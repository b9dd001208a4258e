"""Which folders the HTTP API may read and write: every path a request names is checked here.

The backend's own folders are always allowed: the job folders (``TERNAUS_WORK_DIR``), the models
folder (``TERNAUS_MODELS_DIR``) and the default model's folder. Besides those, the folders of
``TERNAUS_ALLOWED_DIRS`` / ``ternaus serve --allow-dir`` (default: the user's home and the system
temporary folder, where the QGIS plugin exports layers). System folders (``/etc``, ``/usr``,
``/proc``, ...) are never allowed through those, even when one of them contains them (``/``).

Paths are resolved (``~``, ``..``, symbolic links) before they are compared, and the check comes
before any look at the file, so the answer (403) says nothing about whether a file exists.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ternaus_backend.api.errors import ForbiddenPathError
from ternaus_backend.errors import InputError
from ternaus_backend.settings import Settings

#: Folders never allowed through TERNAUS_ALLOWED_DIRS (unless inside a folder of the backend's
#: own or the user's home, e.g. a home of /root).
SYSTEM_FOLDERS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib",
    "/var/log",
    "/var/run",
    "/var/spool",
    "/private/etc",
    "/private/var/db",
    "/System",
)

#: How a refusal says to allow a folder.
ALLOW_HINT = "start the backend with --allow-dir FOLDER (or set TERNAUS_ALLOWED_DIRS)"


def resolved(path: str | Path) -> Path:
    """``path`` absolute, with ``~``, ``..`` and symbolic links resolved (missing parts kept);
    InputError for text that is no path (NUL bytes, unencodable characters, ``~nobody``)."""
    try:
        return Path(os.path.realpath(Path(path).expanduser().absolute()))
    except (RuntimeError, ValueError, OSError) as error:  # ValueError: NUL, UnicodeEncodeError
        raise InputError(
            f"{str(path)!r} is not a usable path ({error}); give the absolute path of a file on "
            "the backend's machine."
        ) from error


def system_folders() -> list[Path]:
    """The system folders of this machine (Windows: the Windows and program folders)."""
    if sys.platform == "win32":
        names = ("SystemRoot", "ProgramFiles", "ProgramFiles(x86)", "ProgramData")
        return [resolved(os.environ[n]) for n in names if os.environ.get(n)]
    return [resolved(p) for p in SYSTEM_FOLDERS]


def default_allowed_dirs() -> list[Path]:
    """The folders allowed when TERNAUS_ALLOWED_DIRS is not set: home and the temp folder."""
    return [Path.home(), Path(tempfile.gettempdir())]


def job_download(path: Path, job_dir: Path, job_id: str) -> Path | None:
    """``path`` when it is a regular file (no symbolic link, no ``..``) inside ``job_dir``;
    None when it no longer exists; ForbiddenPathError for anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    folder = resolved(job_dir)
    full = resolved(path)
    if (
        ".." in Path(path).parts
        or not stat.S_ISREG(info.st_mode)  # lstat: a symbolic link is not a regular file
        or full.parent == full
        or not full.is_relative_to(folder)
        or full != Path(os.path.abspath(path))  # a linked folder on the way
    ):
        raise ForbiddenPathError(
            f"The output {path} of job {job_id} is not a regular file inside the job's folder, "
            "and downloads serve only those; open it on the backend's machine, or run the job "
            "again without 'out' to have its output in the job's folder."
        )
    return full


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == folder or path.is_relative_to(folder) for folder in folders)


class AllowedFolders:
    """The folders requests may name; :meth:`check` refuses any other path with 403."""

    def __init__(self, own: Iterable[Path], allowed: Iterable[Path]) -> None:
        root = Path(Path.home().anchor or "/")
        home = resolved(Path.home())
        #: the backend's own folders and the user's home: allowed whole
        self.trusted = [resolved(p) for p in own] + ([home] if home != root else [])
        #: the other allowed folders, without the system folders inside them
        self.allowed = [resolved(p) for p in allowed]
        self.system = system_folders()
        #: the uploads' folder: inputs inside it must be finished uploads (None: no check)
        self.uploads_root: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AllowedFolders:
        """The job folders, models folder and default model's folder, plus the allowed dirs."""
        from ternaus_backend.pipeline.extract import DEFAULT_MODEL

        own = [settings.work_dir, settings.models_dir, DEFAULT_MODEL.parent]
        if settings.default_model is not None:
            own.append(Path(settings.default_model).expanduser().absolute().parent)
        allowed = settings.allowed_dirs
        folders = cls(own, default_allowed_dirs() if allowed is None else allowed)
        folders.uploads_root = resolved(settings.work_dir / "uploads")
        return folders

    def folders(self) -> list[Path]:
        """Every allowed folder, for messages."""
        return list(dict.fromkeys(self.trusted + self.allowed))

    def allows(self, path: str | Path) -> bool:
        """Whether requests may name ``path`` (after resolving it)."""
        full = resolved(path)
        if _inside(full, self.trusted):
            return True
        return _inside(full, self.allowed) and not _inside(full, self.system)

    def check(self, path: str | Path, role: str) -> Path:
        """``path`` resolved; ForbiddenPathError (403) when it lies outside the allowed folders."""
        if not self.allows(path):
            shown = ", ".join(str(p) for p in self.folders())
            given = os.path.normpath(Path(path).expanduser().absolute())  # usable: resolved
            raise ForbiddenPathError(
                f"The {role} {given} is outside the folders this backend may use ({shown}); move "
                f"it into one of them, or {ALLOW_HINT}. System folders are never allowed."
            )
        return resolved(path)
