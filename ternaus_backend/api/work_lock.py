"""One backend per work folder: a lock file held for the server's life.

Two servers on one work folder would each think the other's queued and running jobs were left
by a crash (and mark them interrupted), and clean each other's folders. :class:`WorkFolderLock`
takes an exclusive, non-blocking lock on ``<work folder>/server.lock`` (``fcntl.flock``; on
Windows ``msvcrt.locking``) and writes its pid there; a second server gets
:class:`WorkFolderBusyError` naming the folder and that pid. The operating system drops the lock
when the process ends, however it ends, so a killed server never blocks the next one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ternaus_backend.errors import TernausError

log = logging.getLogger(__name__)

#: The lock file's name inside the work folder.
LOCK_FILE = "server.lock"
_PID_OFFSET = 16  # Windows locks byte 0; the pid is written after it


class WorkFolderBusyError(TernausError):
    """Another backend process holds the work folder."""

    http_status = 409


def _lock(fd: int) -> None:
    """Locks ``fd`` exclusively without waiting; OSError when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


class WorkFolderLock:
    """The exclusive lock of ``folder`` for this process (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def holder_pid(self) -> int | None:
        """The pid the lock file names (the server holding it, or the last one that did)."""
        try:
            text = self.path.read_bytes()[_PID_OFFSET:].decode("ascii", "replace").strip()
            return int(text.strip("\0 \n")) if text else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        """Takes the lock; WorkFolderBusyError when another process holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise WorkFolderBusyError(
                f"Cannot create the lock file {self.path}; set TERNAUS_WORK_DIR to a writable "
                "folder.",
                details=str(error),
            ) from error
        try:
            _lock(fd)
        except OSError as error:
            os.close(fd)
            pid = self.holder_pid()
            who = f"pid {pid}" if pid is not None else "another process"
            raise WorkFolderBusyError(
                f"The work folder {self.folder} is in use by another Ternaus backend ({who}); "
                "stop that backend, or start this one with another work folder "
                "(TERNAUS_WORK_DIR).",
                details=str(error),
            ) from error
        try:
            os.ftruncate(fd, _PID_OFFSET)
            os.lseek(fd, _PID_OFFSET, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # the lock holds without the pid
            log.warning("cannot write the pid into %s", self.path)
        self._fd = fd

    def release(self) -> None:
        """Drops the lock (nothing when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        except OSError:
            pass
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None
